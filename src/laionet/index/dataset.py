"""`laionet search-dataset`: search results turned into a labelled dataset (spec §9.4).

Each query carries a label (`--query-label-col`, e.g. the wnid of an ImageNet-Captions caption). Every
collection row found for a query, within the `top` best hits and with score > `min_score` (strict, as the
paper's "> 0.7"), gets that label. Per label the rows are a union without duplicates (a row found by
several queries of one label appears once, with its best score and that query's uid); one row may carry
several labels, as in the original's wnid → indices sets, and then appears once per label, unless
`multi_label` says otherwise:

    keep   one row per (uid, label) (the original)
    best   one row per uid: the label of its best-scoring query
    drop   rows with several labels are left out (what `laionet similarity` and the paper preset want:
           unique uids, one class per image)

The collection's columns (URL, TEXT, …) are joined by uid; uids are laionet.io.inputs' (a `uid` column,
else LAION's part × 1e8 + row, else the ordinal), the same as the embeddings the index was built from.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.atomic import atomic_path

MULTI_LABEL = ("keep", "best", "drop")
RESULT_COLUMNS = ("query_uid", "uid", "score", "rank")


def read_results(path: str | Path) -> pa.Table:
    path = Path(path).expanduser()
    if not path.is_file():
        raise LaionetError(f"{path}: no such search results file")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001
        raise LaionetError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in RESULT_COLUMNS if c not in table.column_names]
    if missing:
        raise LaionetError(f"{path}: no column {', '.join(missing)}; is it a `laionet search` output?")
    return table.select(list(RESULT_COLUMNS))


def read_query_labels(queries: list[str], label_col: str, text_col: str | None) -> pa.Table:
    """`query_uid` and the label column of the query captions, with the uids `laionet search` gave them."""
    from laionet.index.search import caption_plan
    from laionet.io.inputs import read_shard

    plan = caption_plan(queries, text_col)
    if label_col not in plan.columns:
        raise LaionetError(f"{plan.files[0]}: no label column '{label_col}'; it has {', '.join(plan.columns)}")
    tables = [read_shard(shard, plan, [label_col]) for shard in plan.shards]
    table = pa.concat_tables(tables).rename_columns(["query_uid", label_col])
    return table.filter(pc.is_valid(table.column(label_col)))


def label_hits(results: pa.Table, labels: pa.Table, label_col: str, top: int, min_score: float | None,
               multi_label: str) -> tuple[pa.Table, dict]:
    """(uid, label, query_uid, score) rows, one per (uid, label) with its best score; and the counts."""
    counts = {"hits": results.num_rows}
    hits = results.filter(pc.less(results.column("rank"), top))
    if min_score is not None:
        hits = hits.filter(pc.greater(hits.column("score"), min_score))
    counts["hits_kept"] = hits.num_rows
    joined = hits.join(labels, "query_uid", join_type="inner")
    counts["hits_with_label"] = joined.num_rows
    # best score first, ties by query_uid, so "first row of each group" below is deterministic
    joined = joined.sort_by([("score", "descending"), ("query_uid", "ascending"), ("uid", "ascending")])
    pairs = _first_per_group(joined, ["uid", label_col])  # one row per (uid, label), its best hit
    labels_per_uid = pc.value_counts(pairs.column("uid"))
    several = labels_per_uid.field("values").filter(pc.greater(labels_per_uid.field("counts"), 1))
    counts["rows_with_several_labels"] = len(several)
    if multi_label == "drop" and len(several):
        pairs = pairs.filter(pc.invert(pc.is_in(pairs.column("uid"), several)))
    elif multi_label == "best":
        pairs = _first_per_group(pairs, ["uid"])  # pairs are still best-first
    pairs = pairs.select(["uid", label_col, "query_uid", "score"]).sort_by([(label_col, "ascending"),
                                                                            ("uid", "ascending")])
    return pairs, counts


def _first_per_group(table: pa.Table, keys: list[str]) -> pa.Table:
    """The first row of each group of equal `keys`, in table order (a group_by over row numbers)."""
    numbered = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    first = numbered.group_by(keys, use_threads=False).aggregate([("_row", "min")]).column("_row_min")
    return table.take(first.sort())  # the first rows, back in table order


def read_collection_rows(collection: list[str], uids: np.ndarray, text_col: str | None) -> pa.Table:
    """The collection rows whose uid is in `uids` (all their columns), streaming shard by shard and skipping
    shards whose uid range cannot hold any."""
    from laionet.index.search import caption_plan
    from laionet.io.inputs import read_shard

    plan = caption_plan(collection, text_col)
    wanted = np.unique(uids)
    wanted_array = pa.array(wanted, pa.int64())
    found = []
    for shard in plan.shards:
        if shard.uid_base is not None:  # uids of this shard are a known contiguous range
            low = shard.uid_base + shard.row_start
            first = np.searchsorted(wanted, low)
            if first == len(wanted) or wanted[first] >= low + shard.num_rows:
                continue
        table = read_shard(shard, plan)
        found.append(table.filter(pc.is_in(table.column("uid"), wanted_array)))
    if not found:
        return pa.table({"uid": pa.array([], pa.int64())})
    return pa.concat_tables(found, promote_options="default")


def search_dataset(results: str, queries: list[str], collection: list[str], out: str | Path, label_col: str = "wnid",
                   top: int = 1, min_score: float | None = None, multi_label: str = "keep",
                   query_text_col: str | None = None, collection_text_col: str | None = None) -> dict:
    started = time.perf_counter()
    if top < 1:
        raise LaionetError(f"--top must be at least 1, got {top}")
    if multi_label not in MULTI_LABEL:
        raise LaionetError(f"--multi-label must be one of {', '.join(MULTI_LABEL)}")
    hits = read_results(results)
    labels = read_query_labels(queries, label_col, query_text_col)
    labels = labels.cast(pa.schema([("query_uid", pa.int64()), (label_col, labels.schema.field(label_col).type)]))
    pairs, counts = label_hits(hits, labels, label_col, top, min_score, multi_label)
    rows = read_collection_rows(collection, pairs.column("uid").to_numpy(), collection_text_col)
    clash = [c for c in (label_col, "query_uid", "score") if c in rows.column_names]
    rows = rows.drop_columns(clash)
    dataset = pairs.join(rows, "uid", join_type="left outer")
    missing = dataset.num_rows - pairs.join(rows.select(["uid"]), "uid", join_type="inner").num_rows
    if missing:
        raise LaionetError(f"{missing} found uids are not in the collection {', '.join(collection)}; was the "
                           f"index built from these files?")
    columns = ["uid", label_col, "query_uid", "score"] + [c for c in rows.column_names if c != "uid"]
    dataset = dataset.select(columns).sort_by([(label_col, "ascending"), ("uid", "ascending")])
    with atomic_path(out) as tmp:
        pq.write_table(dataset, tmp)
    labels_out = pc.count_distinct(dataset.column(label_col)).as_py() if dataset.num_rows else 0
    return {**counts, "rows_out": dataset.num_rows, "uids_out": pc.count_distinct(dataset.column("uid")).as_py()
            if dataset.num_rows else 0, "labels_out": labels_out, "top": top, "min_score": min_score,
            "multi_label": multi_label, "seconds": round(time.perf_counter() - started, 3)}
