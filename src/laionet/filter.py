"""The filter stage: from scored single-label candidates to the dataset (spec §4.1, §4.4).

In order, each with its own drop count: rows whose caption names several classes (only present when
every pair was scored), rows whose NSFW tag is not allowed (`UNLIKELY` only, as the paper; a missing tag
counts as not allowed), rows with similarity not strictly above the threshold, and, with `top_k`, all but
the k most similar rows of each class (the paper's top-50 "skimmed" LAIONet; ties by uid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from laionet.errors import LaionetError
from laionet.io.atomic import atomic_path

REQUIRED = ("uid", "wnid", "similarity")


@dataclass
class FilterResult:
    counts: dict
    class_counts: dict[str, int]


def filter_scored(scored: str | Path, out: str | Path, threshold: float, nsfw_col: str | None = "NSFW",
                  nsfw_keep: tuple[str, ...] = ("UNLIKELY",), top_k: int | None = None) -> FilterResult:
    scored = Path(scored)
    if not scored.is_file():
        raise LaionetError(f"{scored}: no such file")
    try:
        frame = pl.read_parquet(scored)
    except Exception as exc:  # noqa: BLE001 - polars raises several types for a bad file
        raise LaionetError(f"{scored}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise LaionetError(f"{scored}: missing column(s) {', '.join(missing)}; is it the output of `laionet score`?")
    if top_k is not None and top_k < 1:
        raise LaionetError(f"--top-k must be at least 1, got {top_k}")
    counts = {"rows_in": frame.height}

    classes_per_uid = pl.col("wnid").n_unique().over("uid")
    kept = frame.filter(classes_per_uid == 1)
    counts["multi_label"] = frame.height - kept.height

    if nsfw_col and nsfw_col in kept.columns:
        before = kept.height
        kept = kept.filter(pl.col(nsfw_col).cast(pl.String).is_in(list(nsfw_keep)).fill_null(False))
        counts["nsfw"] = before - kept.height

    before = kept.height
    kept = kept.filter((pl.col("similarity") > threshold).fill_null(False))  # strict, as the paper
    counts["below_threshold"] = before - kept.height

    if top_k is not None:
        before = kept.height
        rank = pl.struct(pl.col("similarity").neg(), "uid").rank("ordinal").over("wnid")
        kept = kept.filter(rank <= top_k)
        counts["beyond_top_k"] = before - kept.height

    kept = kept.sort("uid")
    counts["rows_out"] = kept.height
    with atomic_path(out) as tmp:
        kept.write_parquet(tmp)
    class_counts = dict(kept.group_by("wnid").len().sort("wnid").iter_rows())
    counts["classes_out"] = len(class_counts)
    return FilterResult(counts, class_counts)
