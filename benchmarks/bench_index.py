"""Benchmark `laionet index` / `laionet search` (the compressed index) against exact search, in one run.

Data: --rows (default 1,000,000) synthetic unit vectors of dimension --dim (512, CLIP ViT-B/32's), seeded
and clustered like real embeddings rather than uniform: --centres (2,000) unit-norm centres; each vector is
a centre plus Gaussian noise in a shared random 64-dimensional subspace (scale 0.5, so the intrinsic
dimension is low, as for real text embeddings) plus a little isotropic noise (0.05), then L2-normalised.
Queries: --queries (2,000) more vectors of the same mixture, not in the collection. Written as an
embedding folder (laionet.embed.store, 10 parts), cached under .bench/index/.

What is timed:
- build: the WHOLE process `laionet index EMB -o IDX --no-progress --overwrite` (default choice for the
  default 4GB budget), wall clock; the manifest's training time is reported too.
- query rate: in this process, the same queries in batches of --batch (1,000) through the built index
  (laionet.index.search: read_index, default nprobe/k_factor) and through an exact IndexFlatIP over all
  the vectors, k = 10; best of --repeat. Also the whole `laionet search` process, for information.
- recall@1: share of queries whose top-1 uid from the index equals the exact top-1, plus a sweep over nprobe.

Target: recall@1 ≥ 0.95 at ≥ 10× the exact query rate (reported, never an exit code); exits 1 only when
the index gives wrong ids (recall@1 < 0.5: a mapping bug, not a tuning matter).
Results: benchmarks/results/index-<hostname>.json (index-quick-… with --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

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

TARGET_RECALL = 0.95
TARGET_SPEEDUP = 10.0
PARTS = 10
SUBSPACE = 64


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="collection vectors (default 1,000,000; --quick 60,000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--centres", type=int, help="mixture centres (default 2,000; --quick 200)")
    parser.add_argument("--queries", type=int, help="query vectors (default 2,000; --quick 500)")
    parser.add_argument("--batch", type=int, default=1000, help="queries per search call")
    parser.add_argument("--repeat", type=int, default=2, help="timed query passes; the best counts")
    parser.add_argument("--max-memory", default="4GB", help="laionet index --max-memory")
    parser.add_argument("--kind", help="laionet index --kind (default auto; --quick ivf-pq, as 60k rows would be flat)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    args = parser.parse_args(argv)
    args.rows = args.rows or (60_000 if args.quick else 1_000_000)
    args.centres = args.centres or (200 if args.quick else 2_000)
    args.queries = args.queries or (500 if args.quick else 2_000)
    args.kind = args.kind or ("ivf-pq" if args.quick else "auto")
    return args


def mixture(rows: int, dim: int, centres: np.ndarray, basis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    which = rng.integers(0, len(centres), rows)
    x = centres[which] + 0.5 * (rng.standard_normal((rows, SUBSPACE), dtype=np.float32) @ basis) / np.sqrt(SUBSPACE)
    x += 0.05 * rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(args) -> tuple[Path, np.ndarray]:
    """The cached embedding folder and the query matrix."""
    from laionet.embed.store import write_part

    folder = BENCH_DIR / "index" / f"emb-{args.rows}-{args.dim}-{args.centres}-{args.seed}"
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((args.dim, SUBSPACE)))[0].T.astype(np.float32)
    queries = mixture(args.queries, args.dim, centres, basis, np.random.default_rng(args.seed + 1))
    if not (folder / "manifest.json").exists():
        per_part = -(-args.rows // PARTS)
        for part in range(PARTS):
            start, stop = part * per_part, min(args.rows, (part + 1) * per_part)
            vectors = mixture(stop - start, args.dim, centres, basis, np.random.default_rng([args.seed, part]))
            write_part(folder, part, np.arange(start, stop, dtype=np.int64), vectors)
        (folder / "manifest.json").write_text('{"stages": {"embed": {"encoder": null}}}\n')
    return folder, np.ascontiguousarray(queries, dtype=np.float32)


def best_rate(search, queries: np.ndarray, batch: int, repeat: int) -> tuple[float, np.ndarray]:
    """(queries per second, best of `repeat`; the top-1 ids of the last pass)."""
    best, top1 = None, None
    for _ in range(repeat):
        start = time.perf_counter()
        firsts = [search(queries[i:i + batch])[:, 0] for i in range(0, len(queries), batch)]
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
        top1 = np.concatenate(firsts)
    return len(queries) / best, top1


def main(argv: list[str] | None = None) -> int:
    import faiss

    from laionet.embed.store import open_embeddings, write_part
    from laionet.index.search import open_index, set_search_parameters

    args = parse_args(argv)
    BENCH_DIR.mkdir(exist_ok=True)
    print(f"bench_index: {args.rows:,} clustered synthetic vectors of dim {args.dim} ({args.centres:,} centres), "
          f"{args.queries:,} queries{' (quick)' if args.quick else ''}")
    warning = busy_warning()
    if warning:
        print(warning)
    results = {"benchmark": "index", "quick": args.quick, "machine": machine_info(), "params": vars(args)}
    started = time.perf_counter()
    folder, queries = make_data(args)
    results["data_s"] = round(time.perf_counter() - started, 1)

    index_dir = BENCH_DIR / "index" / "idx"
    print("building the index (laionet index, whole process) ...", flush=True)
    build_s, stderr = run_cli(["index", folder, "-o", index_dir, "--max-memory", args.max_memory, "--kind", args.kind,
                               "--no-progress",
                               "--overwrite"])
    info = read_json(index_dir / "manifest.json")["stages"]["index"]
    results["build"] = {"wall_s": round(build_s, 1), "train_s": info["train_seconds"], "factory": info["factory"],
                        "reason": info["reason"], "expected_bytes": info["expected_bytes"],
                        "index_file_bytes": info["index_file_bytes"], "nprobe": info["nprobe"],
                        "k_factor": info["k_factor"], "cli_summary": stderr.splitlines()[-1] if stderr else ""}

    print("exact search (IndexFlatIP) ...", flush=True)
    _, vectors = open_embeddings(folder).read_all()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(vectors)
    del vectors
    # the bench's uids are 0..n-1, so the exact index's positions are uids
    exact_rate, exact_top1 = best_rate(lambda q: exact.search(q, 10)[1], queries, args.batch, args.repeat)
    exact.reset()  # free its 2 GB before the index is loaded

    print("index search ...", flush=True)
    loaded = open_index(index_dir)
    set_search_parameters(loaded.index, info["nprobe"], info["k_factor"])
    index_rate, index_top1 = best_rate(lambda q: loaded.uids[loaded.index.search(q, 10)[1]], queries, args.batch,
                                       args.repeat)
    recall = float(np.mean(index_top1 == exact_top1))
    sweep = []
    if info["nprobe"]:
        for nprobe in sorted({max(1, info["nprobe"] // 4), max(1, info["nprobe"] // 2), info["nprobe"],
                              info["nprobe"] * 2}):
            set_search_parameters(loaded.index, nprobe, info["k_factor"])
            rate_, top1 = best_rate(lambda q: loaded.uids[loaded.index.search(q, 10)[1]], queries, args.batch, 1)
            sweep.append({"nprobe": nprobe, "queries_per_s": round(rate_, 1),
                          "recall_at_1": round(float(np.mean(top1 == exact_top1)), 4)})

    query_dir = BENCH_DIR / "index" / "queries"
    write_part(query_dir, 0, np.arange(len(queries), dtype=np.int64) + 10**12, queries)
    search_s, _ = run_cli(["search", index_dir, query_dir, "-k", "10", "-o", BENCH_DIR / "index" / "results.parquet",
                           "--no-progress"])

    speedup = index_rate / exact_rate
    results.update({"exact_queries_per_s": round(exact_rate, 1), "index_queries_per_s": round(index_rate, 1),
                    "speedup": round(speedup, 2), "recall_at_1": round(recall, 4), "nprobe_sweep": sweep,
                    "search_cli_wall_s": round(search_s, 2),
                    "targets": {"recall_at_1": TARGET_RECALL, "speedup": TARGET_SPEEDUP,
                                "met": recall >= TARGET_RECALL and speedup >= TARGET_SPEEDUP},
                    "load_after": machine_info().get("loadavg_1m_5m_15m")})
    print()
    print_table([("exact IndexFlatIP", fmt_rate(exact_rate), "1.0000", "1.0x"),
                 (f"laionet {info['factory']} nprobe {info['nprobe']}", fmt_rate(index_rate), f"{recall:.4f}",
                  fmt_ratio(speedup))] +
                [(f"  nprobe {row['nprobe']}", fmt_rate(row["queries_per_s"]), f"{row['recall_at_1']:.4f}",
                  fmt_ratio(row["queries_per_s"] / exact_rate)) for row in sweep],
                ("search", "queries/s", "recall@1", "vs exact"))
    print(f"\nbuild (whole process): {build_s:.1f}s, of which training {info['train_seconds']:.1f}s; "
          f"laionet search process for {len(queries):,} queries: {search_s:.1f}s")
    print(f"target recall@1 ≥ {TARGET_RECALL} at ≥ {TARGET_SPEEDUP:.0f}× exact: "
          f"{'met' if results['targets']['met'] else 'NOT met'}")
    path = write_results("index-quick" if args.quick else "index", results)
    print(f"results -> {path}")
    return 0 if recall >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
