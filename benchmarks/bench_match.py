"""Benchmark `laionet match` against the original per-row substring labeller, in one run.

What is timed:
- laionet: the WHOLE process `laionet match CAPTIONS --vocab VOCAB -o OUT --no-progress --overwrite`
  (interpreter start, imports, parquet read, matching, writing), wall clock, best of --repeat runs, on
  --rows synthetic LAION-like captions (benchmarks/synthetic.py). Also, once each, for information: the
  always-installed `--engine aho-corasick`, one worker (`--workers 1`, i.e. per core), and `--preset clean`.
- baseline: the original algorithm (benchmarks/original_matcher.py: pandas iterrows -> Pool.imap with
  chunksize 1, the whole lemma2wnid dict pickled with every row, a linear scan over all 1,825 lemmas per
  caption) with 1 process ("per core") and with os.cpu_count() processes, on the first --baseline-rows
  rows of the same file. Only the labelling loop is timed (pool start to the last result), not the load.

Correctness, in the same run: the (row, wnid, lemma) triples of the baseline on its subsample must equal
laionet's matches for those rows (both engines), and the same on the real 5k LAION sample (original
per-row function called serially). Exits 1 on a mismatch; a missed speed target is only reported.

Results go to benchmarks/results/match-<hostname>.json (match-quick-<hostname>.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

import original_matcher  # noqa: E402
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

TARGET_CAPTIONS_PER_S = 3_000_000
TARGET_SPEEDUP_PER_CORE = 1000


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="synthetic captions to match (default 4,000,000; --quick 20,000)")
    parser.add_argument("--baseline-rows", type=int,
                        help="rows the original algorithm labels (default 20,000; --quick 500)")
    parser.add_argument("--repeat", type=int, help="laionet runs; the best counts (default 3; --quick 1)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="processes of the multi-process baseline (default: os.cpu_count())")
    parser.add_argument("--seed", type=int, default=0, help="synthetic caption seed (default 0)")
    parser.add_argument("--synsets", type=Path, default=synthetic.SYNSETS, help="ILSVRC2012_synsets.txt")
    parser.add_argument("--sample", type=Path, default=synthetic.SAMPLE,
                        help="real LAION captions (TEXT column) for the word model and the correctness check")
    parser.add_argument("--sample-rows", type=int,
                        help="rows of the real sample checked against the original (default all; --quick 1,000)")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the informational runs (aho-corasick, --workers 1, --preset clean)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test (< 30 s)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rows = args.rows or (20_000 if quick else 4_000_000)
    args.baseline_rows = min(args.rows, args.baseline_rows or (500 if quick else 20_000))
    args.repeat = max(1, args.repeat or (1 if quick else 3))
    args.sample_rows = args.sample_rows or (1_000 if quick else None)
    return args


def laionet_match(captions: Path, vocab: Path, out: Path, repeat: int, *extra: str) -> dict:
    runs = []
    for _ in range(repeat):
        seconds, stderr = run_cli(["match", captions, "--vocab", vocab, "-o", out, "--no-progress", "--overwrite",
                                   *extra])
        runs.append(seconds)
    info = read_json(out.with_name(out.name + ".manifest.json"))["stages"]["match"]
    best = min(runs)
    return {"args": list(extra), "engine": info["engine"], "preset": info["preset"], "rows": info["rows_in"],
            "runs_s": [round(s, 3) for s in runs], "best_s": round(best, 3),
            "captions_per_s": round(info["rows_in"] / best), "stage_s_last_run": info["seconds"],
            "matches": info["counts"].get("matches"), "rows_matched": info["counts"].get("rows_matched"),
            "classes_matched": info["classes_matched"], "cli_summary": stderr.splitlines()[-1] if stderr else ""}


def laionet_triples(matches: Path, below_uid: int | None = None) -> set[tuple[int, str, str]]:
    table = pq.read_table(matches, columns=["uid", "wnid", "lemma"])
    if below_uid is not None:
        table = table.filter(pc.less(table.column("uid"), below_uid))
    return set(zip(table.column("uid").to_pylist(), table.column("wnid").to_pylist(),
                   table.column("lemma").to_pylist()))


def read_head(path: Path, rows: int):
    """The first `rows` rows as the original loaded a part: a pandas DataFrame of Python str objects."""
    parquet = pq.ParquetFile(path)
    batches, have = [], 0
    for batch in parquet.iter_batches(batch_size=min(rows, 65_536), columns=["TEXT"]):
        batches.append(batch)
        have += batch.num_rows
        if have >= rows:
            break
    table = pa.Table.from_batches(batches).slice(0, rows)
    return table.to_pandas().astype(object)  # object dtype, as pandas < 3 gave the original


def compare(name: str, expected: set, got: set) -> dict:
    ok = expected == got
    result = {"check": name, "ok": ok, "triples": len(expected)}
    if not ok:
        result["only_baseline"] = sorted(expected - got)[:20]
        result["only_laionet"] = sorted(got - expected)[:20]
    print(f"  {'OK      ' if ok else 'MISMATCH'} {name}: {len(expected):,} baseline vs {len(got):,} laionet triples")
    if not ok:
        print(f"           only in baseline: {result['only_baseline'][:5]}")
        print(f"           only in laionet:  {result['only_laionet'][:5]}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    BENCH_DIR.mkdir(exist_ok=True)
    started = time.perf_counter()
    print(f"bench_match: {args.rows:,} synthetic captions, baseline on {args.baseline_rows:,}, "
          f"best of {args.repeat}{' (quick)' if args.quick else ''}")

    warning = busy_warning()
    if warning:
        print(warning)
    captions = synthetic.cached_caption_file(args.rows, args.seed)
    vocab_paper, vocab_clean = BENCH_DIR / "vocab-paper.parquet", BENCH_DIR / "vocab-clean.parquet"
    vocab_s, _ = run_cli(["vocab", "--source", f"synsets:{args.synsets}", "--preset", "paper", "-o", vocab_paper])
    startup_s, _ = run_cli(["--version"])

    # ---- laionet, whole process ----
    results = {"benchmark": "match", "quick": args.quick, "machine": machine_info(),
               "params": {"rows": args.rows, "baseline_rows": args.baseline_rows, "repeat": args.repeat,
                          "processes": args.processes, "seed": args.seed, "captions": str(captions),
                          "vocab": str(vocab_paper)},
               "vocab_build_s": round(vocab_s, 3), "cli_startup_s": round(startup_s, 3)}
    texts = pq.read_table(captions, columns=["TEXT"]).column("TEXT")
    results["captions"] = {"rows": len(texts), "mean_chars": round(pc.mean(pc.utf8_length(texts)).as_py(), 1),
                           "file_bytes": captions.stat().st_size}
    del texts

    matches = BENCH_DIR / "matches.parquet"
    print("timing laionet match ...", flush=True)
    main_run = laionet_match(captions, vocab_paper, matches, args.repeat)
    results["laionet"] = main_run
    auto_triples = laionet_triples(matches, args.baseline_rows)

    extras = {}
    ac_triples = None
    if not args.no_extras:
        if main_run["engine"] != "aho-corasick":
            matches_ac = BENCH_DIR / "matches-aho-corasick.parquet"
            extras["aho_corasick"] = laionet_match(captions, vocab_paper, matches_ac, 1, "--engine", "aho-corasick")
            ac_triples = laionet_triples(matches_ac, args.baseline_rows)
        if (os.cpu_count() or 1) > 1:
            extras["workers_1"] = laionet_match(captions, vocab_paper, BENCH_DIR / "matches-w1.parquet", 1,
                                                "--workers", "1")
        run_cli(["vocab", "--source", f"synsets:{args.synsets}", "--preset", "clean", "-o", vocab_clean])
        extras["clean"] = laionet_match(captions, vocab_clean, BENCH_DIR / "matches-clean.parquet", 1,
                                        "--preset", "clean")
    results["laionet_extras"] = extras

    # ---- baseline: the original algorithm ----
    lemma2wnid = original_matcher.build_lemma2wnid(args.synsets)
    frame = read_head(captions, args.baseline_rows)
    baseline = {}
    baseline_triples = {}
    for processes in dict.fromkeys((1, args.processes)):
        print(f"timing the original algorithm, {processes} process(es), {len(frame):,} rows ...", flush=True)
        start = time.perf_counter()
        _, lemma2indices, errors = original_matcher.label_dataframe(frame, lemma2wnid, processes)
        seconds = time.perf_counter() - start
        baseline[processes] = {"processes": processes, "rows": len(frame), "seconds": round(seconds, 3),
                               "captions_per_s": round(len(frame) / seconds, 1), "errors": len(errors)}
        baseline_triples[processes] = original_matcher.triples(lemma2indices, lemma2wnid)
    results["baseline"] = list(baseline.values())

    # ---- correctness ----
    print("correctness:")
    checks = []
    for processes, triples in baseline_triples.items():
        checks.append(compare(f"synthetic rows 0..{args.baseline_rows - 1}, original ({processes} proc) vs "
                              f"laionet [{main_run['engine']}]", triples, auto_triples))
    if ac_triples is not None:
        checks.append(compare(f"synthetic rows 0..{args.baseline_rows - 1}, original vs laionet [aho-corasick]",
                              baseline_triples[1], ac_triples))
    sample_matches = BENCH_DIR / "matches-sample.parquet"
    run_cli(["match", args.sample, "--vocab", vocab_paper, "-o", sample_matches, "--no-progress", "--overwrite"])
    sample = pq.read_table(args.sample, columns=["TEXT"]).column("TEXT").to_pylist()[:args.sample_rows]
    sample_triples = set()
    for index, text in enumerate(sample):  # the original per-row function, serially (no pool: same result)
        _, lemmas, _, _ = original_matcher.label_row((index, {"TEXT": text}, lemma2wnid))
        sample_triples.update((index, lemma2wnid[lemma], lemma) for lemma in lemmas or ())
    checks.append(compare(f"real sample {args.sample.name} ({len(sample):,} rows), original vs laionet",
                          sample_triples, laionet_triples(sample_matches, len(sample))))
    results["correctness"] = checks
    all_ok = all(c["ok"] for c in checks)

    # ---- report ----
    base1 = baseline[1]["captions_per_s"]
    baseN = baseline[args.processes]["captions_per_s"]
    speed = main_run["captions_per_s"]
    results["speedup"] = {"vs_baseline_1_process": round(speed / base1, 1),
                          f"vs_baseline_{args.processes}_processes": round(speed / baseN, 1)}
    results["targets"] = {
        "captions_per_s": {"target": TARGET_CAPTIONS_PER_S, "measured": speed, "met": speed >= TARGET_CAPTIONS_PER_S},
        "speedup_vs_1_process": {"target": TARGET_SPEEDUP_PER_CORE, "measured": round(speed / base1, 1),
                                 "met": speed / base1 >= TARGET_SPEEDUP_PER_CORE},
    }
    results["all_correct"] = all_ok
    results["bench_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["busy_warning"] = warning

    print()
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cpu_count']} cores; "
          f"captions: {results['captions']['rows']:,} x {results['captions']['mean_chars']} chars mean")
    rows = []

    def add(label, run):
        rows.append((label, f"{run['rows']:,}", f"{run['best_s']:.2f}", fmt_rate(run["captions_per_s"]),
                     fmt_ratio(run["captions_per_s"] / base1), fmt_ratio(run["captions_per_s"] / baseN)))

    add(f"laionet match [{main_run['engine']}], best of {args.repeat}", main_run)
    labels = {"aho_corasick": "laionet match --engine aho-corasick", "workers_1": "laionet match --workers 1",
              "clean": "laionet match --preset clean"}
    for key, run in extras.items():
        add(f"{labels[key]} [{run['engine']}]", run)
    for processes, run in baseline.items():
        rows.append((f"original, {processes} process{'es' if processes > 1 else ''}", f"{run['rows']:,}",
                     f"{run['seconds']:.2f}", fmt_rate(run["captions_per_s"]), fmt_ratio(run["captions_per_s"] / base1),
                     fmt_ratio(run["captions_per_s"] / baseN)))
    print_table(rows, ("run", "rows", "seconds", "captions/s", "vs orig 1 proc", f"vs orig {args.processes} proc"))
    print(f"(laionet seconds: whole process incl. ~{startup_s:.2f} s interpreter start and imports)")
    print()
    for name, target in results["targets"].items():
        print(f"target {name}: >= {target['target']:,} -> measured {target['measured']:,} "
              f"{'MET' if target['met'] else 'NOT MET'}")
    print(f"correctness: {'OK' if all_ok else 'MISMATCH'}")
    path = write_results("match-quick" if args.quick else "match", results)
    print(f"results -> {path}  ({results['bench_s']} s)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
