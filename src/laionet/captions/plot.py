"""`laionet captions plot`: the figures and numbers of §9.2 from OUT/synsets.parquet.

    p_cdf.png              the empirical CDF of p, a marker at --marker (0.05) and the share below it
    p_by_similarity.png    mean p per bin of text-to-synset similarity ± 1.96·√(p̄(1−p̄)/n)
    similarity_hist.png    the histogram of the true-class similarity (the same bins)
    summary.json           the numbers: share of p below the marker, mean p, captions with p above it,
                           and, for low-similarity captions (the bottom --low-quantile by similarity, in
                           the vocabulary), the mean number of more similar classes

Rows with a null p (the clean rule's captions outside the vocabulary) are left out of everything about p.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from laionet.captions.synsets import FILE
from laionet.errors import LaionetError
from laionet.io.atomic import write_text_atomic

Z = 1.96
FIGURES = ("p_cdf.png", "p_by_similarity.png", "similarity_hist.png")
SUMMARY = "summary.json"


def _column(table, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for null."""
    return np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], dtype=np.float64)


def read_results(folder: Path) -> dict[str, np.ndarray]:
    path = folder / FILE
    if not path.is_file():
        raise LaionetError(f"{folder}: no {FILE} (run `laionet captions synsets ... -o {folder}` first)")
    table = pq.read_table(path, columns=["in_vocab", "text_to_query_similarity", "more_similar_classes", "p"])
    return {"in_vocab": np.asarray(table.column("in_vocab").to_pylist(), dtype=bool),
            "similarity": _column(table, "text_to_query_similarity"),
            "more": _column(table, "more_similar_classes"), "p": _column(table, "p")}


def binned_p(similarity: np.ndarray, p: np.ndarray, bins: int) -> list[dict]:
    """Mean p per bin of the similarity histogram (rows with a p) with its interval ± 1.96·√(p̄(1−p̄)/n)."""
    has_similarity = ~np.isnan(similarity)
    if not has_similarity.any():
        return []
    edges = np.histogram_bin_edges(similarity[has_similarity], bins=bins)  # the histogram's bins
    keep = has_similarity & ~np.isnan(p)
    s, v = similarity[keep], p[keep]
    index = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)  # last bin closed, as np.histogram
    rows = []
    for b in range(bins):
        values = v[index == b]
        n = len(values)
        mean = float(values.mean()) if n else None
        half = Z * float(np.sqrt(mean * (1 - mean) / n)) if n else None
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": n, "mean_p": mean, "half_width": half})
    return rows


def summarise(results: dict[str, np.ndarray], marker: float, bins: int, low_quantile: float) -> dict:
    p = results["p"][~np.isnan(results["p"])]
    sim = results["similarity"]
    low: dict = {"quantile": low_quantile, "threshold": None, "captions": 0, "mean_more_similar_classes": None,
                 "mean_p": None}
    ranked = results["in_vocab"] & ~np.isnan(sim)
    if ranked.any():
        threshold = float(np.quantile(sim[ranked], low_quantile))
        chosen = ranked & (sim <= threshold)
        low.update(threshold=threshold, captions=int(chosen.sum()),
                   mean_more_similar_classes=float(results["more"][chosen].mean()),
                   mean_p=float(np.nanmean(results["p"][chosen])) if (~np.isnan(results["p"][chosen])).any() else None)
    return {"rows": len(results["p"]), "rows_with_p": len(p), "marker": marker,
            "share_below_marker": float((p < marker).mean()) if len(p) else None,
            "captions_above_marker": int((p > marker).sum()),
            "mean_p": float(p.mean()) if len(p) else None,
            "mean_similarity": float(np.nanmean(sim)) if (~np.isnan(sim)).any() else None,
            "low_similarity": low, "bins": binned_p(sim, results["p"], bins)}


def plot_folder(folder: str | Path, marker: float = 0.05, bins: int = 50, low_quantile: float = 0.1) -> dict:
    """Write the figures and summary.json into `folder`; return the summary."""
    from laionet.evaluate.plot import _pyplot, _save

    folder = Path(folder)
    if bins < 1 or not 0 < low_quantile < 1 or not 0 <= marker <= 1:
        raise LaionetError("--bins must be at least 1, --low-quantile in (0, 1) and --marker in [0, 1]")
    results = read_results(folder)
    summary = summarise(results, marker, bins, low_quantile)
    plt = _pyplot()
    p = np.sort(results["p"][~np.isnan(results["p"])])

    fig, ax = plt.subplots(figsize=(5, 4))
    if len(p):
        ax.step(p, np.arange(1, len(p) + 1) / len(p), where="post")
        ax.axvline(marker, color="red", linestyle="--",
                   label=f"p = {marker:g}: {summary['share_below_marker']:.1%} below")
        ax.legend(loc="lower right")
    ax.set(xlabel="proportion of more similar false classes (p)", ylabel="CDF", ylim=(0, 1.01))
    _save(fig, folder / FIGURES[0])

    fig, ax = plt.subplots(figsize=(5, 4))
    filled = [b for b in summary["bins"] if b["n"]]
    if filled:
        centers = np.array([(b["low"] + b["high"]) / 2 for b in filled])
        means = np.array([b["mean_p"] for b in filled])
        halves = np.array([b["half_width"] for b in filled])
        ax.plot(centers, means, marker=".")
        ax.fill_between(centers, means - halves, means + halves, alpha=0.3)
    ax.set(xlabel="text-to-synset similarity", ylabel="mean p (± 1.96 SE)")
    _save(fig, folder / FIGURES[1])

    fig, ax = plt.subplots(figsize=(5, 4))
    sims = results["similarity"][~np.isnan(results["similarity"])]
    if len(sims):
        ax.hist(sims, bins=bins)
    ax.set(xlabel="text-to-synset similarity", ylabel="captions")
    _save(fig, folder / FIGURES[2])

    write_text_atomic(folder / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary
