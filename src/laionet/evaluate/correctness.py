"""Per-sample correctness (spec §7.1) and per-class counts.

top_1 = the first predicted wnid is one of the row's wnids; top_5 = any of the first five is. A row without
a usable prediction stays null and is not counted, as in the original (its n counts non-null values).
"""

from __future__ import annotations

import polars as pl

TOPK = (1, 5)


def correctness_from_lists(lists: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """key, top_1, top_5 for the predicted rows that have a label; `pairs` holds each row's full wnid set."""
    joined = lists.join(pairs, on="key", how="inner")
    hit1 = pl.col("top5").list.first() == pl.col("wnid")
    hit5 = pl.col("top5").list.head(5).list.contains(pl.col("wnid"))
    has = pl.col("top5").is_not_null()
    if joined.height == joined.get_column("key").n_unique():  # one wnid per row: no set to reduce over
        return joined.select("key", pl.when(has).then(hit1.fill_null(False)).alias("top_1"),
                             pl.when(has).then(hit5.fill_null(False)).alias("top_5"))
    rows = joined.group_by("key", maintain_order=True).agg(
        hit1.fill_null(False).any().alias("top_1"), hit5.fill_null(False).any().alias("top_5"),
        has.first().alias("has"))
    return rows.select("key", *[pl.when(pl.col("has")).then(pl.col(f"top_{k}")).alias(f"top_{k}") for k in TOPK])


def keep_first(frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, int]:
    """The frames stacked, keeping the first row of each key (the original de-duplicated its prediction
    CSVs so); and the number of rows dropped as duplicates. Rows whose key is null (an id that does not
    fit the ground truth's key type) match nothing and are left out first."""
    stacked = (pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]).drop_nulls("key")
    unique = stacked.unique("key", keep="first", maintain_order=True)
    return unique, stacked.height - unique.height


def class_counts(correct: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """wnid, n_1, correct_1, n_5, correct_5 over the labelled rows of each class (pairs restricted to the
    classes evaluated); n counts non-null correctness values only."""
    joined = pairs.join(correct, on="key", how="left")
    aggs = []
    for k in TOPK:
        column = pl.col(f"top_{k}")
        aggs += [column.count().cast(pl.Int64).alias(f"n_{k}"), column.sum().cast(pl.Int64).alias(f"correct_{k}")]
    return joined.group_by("wnid").agg(aggs).sort("wnid")
