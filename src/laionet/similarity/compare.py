"""`laionet compare`: intra-class similarity of one dataset against others (spec §8.4, §10.3, §11.9).

Inputs are `laionet similarity` folders (pairs.parquet: label, i_uid, j_uid, similarity). The FIRST folder
is compared with each of the others, over the classes both have:

- the paper's per-class test, on classes where both have at least `min_pairs` pairs: per dataset
  mean ± 1.96·std/√(pairs−1) (std with ddof 0, pairs = number of pairwise similarities), the difference
  of means (first − other) with half-width √(e₁² + e₂²); "significantly lower" = upper bound < 0,
  "significantly higher" = lower bound > 0. It treats pairs as independent, so its intervals are too
  narrow (§11.9);
- the same test with a bootstrap over images (`laionet.similarity.bootstrap`): each dataset's images
  resampled independently, the 2.5/97.5 percentiles of the difference of resampled means;
- pooled distributions: per class common to ALL datasets, min(pairs, draws_per_class) similarities drawn
  with replacement per dataset (with `equal_draws`, the same number for every dataset: the minimum, as
  the paper's V2 section), pooled into density histograms.

Outputs in OUT: per_class.parquet, summary.json, summary.parquet (comparison, method, classes,
share_lower_mean, share_significantly_lower, share_significantly_higher), pooled.png, differences.png
(the CLI adds manifest.json).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.similarity.bootstrap import bootstrap_means, class_matrix, keyed_rng, percentile_interval
from laionet.similarity.run import PAIRS, Z

PAIR_COLUMNS = ("label", "i_uid", "j_uid", "similarity")
PER_CLASS = "per_class.parquet"
SUMMARY_JSON = "summary.json"
SUMMARY = "summary.parquet"
POOLED_PLOT = "pooled.png"
DIFFERENCES_PLOT = "differences.png"

SUMMARY_SCHEMA = pa.schema([("comparison", pa.string()), ("method", pa.string()), ("classes", pa.int64()),
                            ("share_lower_mean", pa.float64()), ("share_significantly_lower", pa.float64()),
                            ("share_significantly_higher", pa.float64())])


@dataclass(frozen=True)
class CompareOptions:
    names: tuple[str, ...] | None = None
    min_pairs: int = 7
    bootstrap: int = 1000
    seed: int = 0
    bins: int = 70
    draws_per_class: int = 100
    equal_draws: bool = False
    progress: bool = True


@dataclass
class ClassPairs:
    i_uid: np.ndarray
    j_uid: np.ndarray
    values: np.ndarray  # float64

    @property
    def pairs(self) -> int:
        return len(self.values)

    @property
    def images(self) -> int:
        return len(np.unique(np.concatenate([self.i_uid, self.j_uid])))


@dataclass
class Dataset:
    name: str
    path: Path
    classes: dict[str, ClassPairs]


def read_similarity_folder(path: str | Path, name: str) -> Dataset:
    """The pairs of a `laionet similarity` output, grouped by class."""
    path = Path(path).expanduser()
    pairs_file = path / PAIRS
    if not path.is_dir() or not pairs_file.is_file():
        raise LaionetError(f"{path}: not a `laionet similarity` output (no {PAIRS})")
    try:
        table = pq.read_table(pairs_file)
    except Exception as exc:
        raise LaionetError(f"{pairs_file}: not a readable parquet file ({' '.join(str(exc).split())})") from exc
    missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
    if missing:
        raise LaionetError(f"{pairs_file}: no column {', '.join(missing)}; not a `laionet similarity` output")
    table = table.select(list(PAIR_COLUMNS)).filter(pc.is_valid(table.column("similarity")))
    # group by integer label codes (sorting millions of strings, or making Python strings of them, is slow)
    encoded = table.column("label").cast(pa.string()).combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    i_uid = table.column("i_uid").to_numpy().astype(np.int64)[order]
    j_uid = table.column("j_uid").to_numpy().astype(np.int64)[order]
    values = table.column("similarity").to_numpy().astype(np.float64)[order]
    names = encoded.dictionary.to_pylist()
    starts = np.flatnonzero(np.diff(codes, prepend=-1)) if len(codes) else np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], len(codes))
    classes = {names[codes[s]]: ClassPairs(i_uid[s:e], j_uid[s:e], values[s:e]) for s, e in zip(starts, ends)}
    return Dataset(name, path, classes)


def dataset_names(paths: list[str], names: tuple[str, ...] | None) -> list[str]:
    if names:
        if len(names) != len(paths):
            raise LaionetError(f"--names gives {len(names)} names for {len(paths)} folders")
        chosen = [n.strip() for n in names]
    else:
        chosen = [Path(p).expanduser().resolve().name for p in paths]
    if len(set(chosen)) != len(chosen) or not all(chosen):
        raise LaionetError(f"dataset names must be distinct and non-empty ({', '.join(chosen)}); give --names a,b,…")
    return chosen


def paper_stats(values: np.ndarray) -> dict:
    """mean, std (ddof 0) and the paper's half-width 1.96·std/√(pairs−1) (None below 2 pairs)."""
    pairs = len(values)
    mean, std = float(values.mean()), float(values.std())
    half = Z * std / np.sqrt(pairs - 1) if pairs > 1 else None
    return {"pairs": pairs, "mean": mean, "std": std, "half": half}


def significance(low: float | None, high: float | None) -> str | None:
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return None
    return "lower" if high < 0 else "higher" if low > 0 else "none"


class BootstrapCache:
    """Resampled class means per (dataset, label), computed once: the first dataset is in every comparison."""

    def __init__(self, resamples: int, seed: int, bar=None):
        self.resamples, self.seed, self.bar = resamples, seed, bar
        self._means: dict[tuple[str, str], np.ndarray] = {}

    def means(self, dataset: Dataset, label: str) -> np.ndarray:
        key = (dataset.name, label)
        if key not in self._means:
            c = dataset.classes[label]
            matrix = class_matrix(c.i_uid, c.j_uid, c.values, label)
            self._means[key] = bootstrap_means(matrix, self.resamples,
                                               keyed_rng("bootstrap", self.seed, dataset.name, label))
            if self.bar is not None:
                self.bar.update(1)
        return self._means[key]


def compare_pair(first: Dataset, other: Dataset, options: CompareOptions, cache: BootstrapCache) -> list[dict]:
    """One row per class common to both (tested or not)."""
    rows = []
    for label in sorted(set(first.classes) & set(other.classes)):
        a, b = paper_stats(first.classes[label].values), paper_stats(other.classes[label].values)
        tested = min(a["pairs"], b["pairs"]) >= options.min_pairs
        diff = a["mean"] - b["mean"]
        row = {"comparison": f"{first.name} vs {other.name}", "first": first.name, "other": other.name,
               "label": label, "tested": tested, "diff": diff}
        for suffix, dataset, stats in (("first", first, a), ("other", other, b)):
            row[f"n_{suffix}"] = dataset.classes[label].images
            row[f"pairs_{suffix}"] = stats["pairs"]
            row[f"mean_{suffix}"] = stats["mean"]
            row[f"ci_low_{suffix}"] = stats["mean"] - stats["half"] if stats["half"] is not None else None
            row[f"ci_high_{suffix}"] = stats["mean"] + stats["half"] if stats["half"] is not None else None
        paper_low = paper_high = boot_low = boot_high = None
        if tested:
            half = float(np.hypot(a["half"], b["half"]))
            paper_low, paper_high = diff - half, diff + half
            if options.bootstrap:
                boot = cache.means(first, label) - cache.means(other, label)
                boot_low, boot_high = percentile_interval(boot)
        row.update(paper_low=paper_low, paper_high=paper_high, paper_significance=significance(paper_low, paper_high),
                   boot_low=boot_low, boot_high=boot_high, boot_significance=significance(boot_low, boot_high))
        rows.append(row)
    return rows


def shares(rows: list[dict], method: str) -> dict:
    tested = [r for r in rows if r["tested"] and r[f"{method}_significance"] is not None]
    count = len(tested)

    def share(predicate) -> float | None:
        return sum(1 for r in tested if predicate(r)) / count if count else None

    return {"classes": count, "share_lower_mean": share(lambda r: r["diff"] < 0),
            "share_significantly_lower": share(lambda r: r[f"{method}_significance"] == "lower"),
            "share_significantly_higher": share(lambda r: r[f"{method}_significance"] == "higher")}


def pooled_draws(datasets: list[Dataset], options: CompareOptions) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per class common to all datasets, min(pairs, draws_per_class) similarities with replacement, pooled."""
    common = sorted(set.intersection(*(set(d.classes) for d in datasets)))
    draws: dict[str, list[np.ndarray]] = {d.name: [] for d in datasets}
    for label in common:
        sizes = {d.name: min(d.classes[label].pairs, options.draws_per_class) for d in datasets}
        if options.equal_draws:
            sizes = dict.fromkeys(sizes, min(sizes.values()))
        for d in datasets:
            rng = keyed_rng("pooled", options.seed, d.name, label)
            values = d.classes[label].values
            draws[d.name].append(values[rng.integers(0, len(values), size=sizes[d.name])])
    return common, {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in draws.items()}


PER_CLASS_SCHEMA = pa.schema(
    [("comparison", pa.string()), ("first", pa.string()), ("other", pa.string()), ("label", pa.string()),
     ("tested", pa.bool_())]
    + [(f"{stat}_{suffix}", pa.int64() if stat in ("n", "pairs") else pa.float64())
       for suffix in ("first", "other") for stat in ("n", "pairs", "mean", "ci_low", "ci_high")]
    + [("diff", pa.float64()), ("paper_low", pa.float64()), ("paper_high", pa.float64()),
       ("paper_significance", pa.string()), ("boot_low", pa.float64()), ("boot_high", pa.float64()),
       ("boot_significance", pa.string())])


def compare_datasets(paths: list[str], out: str | Path, options: CompareOptions) -> dict:
    """Write the outputs of `laionet compare` to OUT; return the summary (also OUT/summary.json)."""
    from laionet.io.atomic import atomic_path, write_text_atomic
    from laionet.progress import Progress
    from laionet.similarity.plot import plot_differences, plot_pooled

    started = time.perf_counter()
    if len(paths) < 2:
        raise LaionetError("compare needs at least two similarity folders (the first is compared with the others)")
    if options.min_pairs < 2:
        raise LaionetError("--min-pairs must be at least 2 (the paper's interval needs pairs − 1 > 0)")
    if options.bootstrap < 0 or options.draws_per_class < 1 or options.bins < 1:
        raise LaionetError("--bootstrap must be ≥ 0, --draws-per-class and --bins ≥ 1")
    names = dataset_names(paths, options.names)
    datasets = [read_similarity_folder(p, n) for p, n in zip(paths, names)]
    first, others = datasets[0], datasets[1:]

    for other in others:
        if not set(first.classes) & set(other.classes):
            raise LaionetError(f"{first.name} ({first.path}) and {other.name} ({other.path}) have no class in common")
    to_bootstrap = set()
    if options.bootstrap:
        for other in others:
            for label in set(first.classes) & set(other.classes):
                if min(first.classes[label].pairs, other.classes[label].pairs) >= options.min_pairs:
                    to_bootstrap |= {(first.name, label), (other.name, label)}
    bar = Progress("bootstrap", len(to_bootstrap), enabled=options.progress, unit="classes")
    cache = BootstrapCache(options.bootstrap, options.seed, bar)
    try:
        rows, comparisons = [], []
        for other in others:
            pair_rows = compare_pair(first, other, options, cache)
            rows += pair_rows
            entry = {"comparison": f"{first.name} vs {other.name}", "first": first.name, "other": other.name,
                     "classes_common": len(pair_rows), "paper": shares(pair_rows, "paper")}
            if options.bootstrap:
                entry["bootstrap"] = shares(pair_rows, "boot")
            comparisons.append(entry)
    finally:
        bar.close()

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PER_CLASS) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=PER_CLASS_SCHEMA), tmp)
    tidy = [{"comparison": c["comparison"], "method": method, **c[key]}
            for c in comparisons for method, key in (("paper", "paper"), ("bootstrap", "bootstrap")) if key in c]
    with atomic_path(out / SUMMARY) as tmp:
        pq.write_table(pa.Table.from_pylist(tidy, schema=SUMMARY_SCHEMA), tmp)

    common, pooled = pooled_draws(datasets, options)
    pooled_info = {name: {"draws": int(len(v)), "mean": float(v.mean()) if len(v) else None}
                   for name, v in pooled.items()}
    plot_pooled(pooled, options.bins, out / POOLED_PLOT, len(common))
    plot_differences([r for r in rows if r["tested"]], [c["comparison"] for c in comparisons],
                     out / DIFFERENCES_PLOT)

    summary = {"datasets": {d.name: {"path": str(d.path), "classes": len(d.classes),
                                     "pairs": int(sum(c.pairs for c in d.classes.values()))} for d in datasets},
               "comparisons": comparisons,
               "pooled": {"classes": len(common), "equal_draws": options.equal_draws,
                          "draws_per_class": options.draws_per_class, "datasets": pooled_info},
               "min_pairs": options.min_pairs, "bootstrap": options.bootstrap, "seed": options.seed,
               "seconds": time.perf_counter() - started}
    write_text_atomic(out / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    return summary


def comparison_line(entry: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    paper = entry["paper"]
    text = (f"{entry['first']} vs {entry['other']}: {paper['classes']:,} classes, lower in "
            f"{pct(paper['share_lower_mean'])}, significantly lower {pct(paper['share_significantly_lower'])} / "
            f"higher {pct(paper['share_significantly_higher'])} (paper CI)")
    if "bootstrap" in entry:
        boot = entry["bootstrap"]
        text += (f"; {pct(boot['share_significantly_lower'])} / {pct(boot['share_significantly_higher'])} "
                 f"(image bootstrap)")
    return text
