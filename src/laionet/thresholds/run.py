"""`laionet thresholds`: (text, image) threshold pairs of equal dataset size, the paper's A–D (spec §9.5).

The text similarity column comes from `laionet score` (`similarity`), the image one from
`laionet zeroshot --similarity-col` (`image_to_query_similarity`), in DATASET or joined by uid from
another file (`image_from`). The target size is given, or n(reference text, reference image).

Comparison (spec §11.10: the original mixed them): `ge` counts text ≥ t and image ≥ i as the paper's
threshold notebook did, `gt` uses > as every filter does. Under the `paper` preset the thresholds are
solved with `ge` and the datasets written with `gt`, as the original (which is why its A–D sizes are not
all exactly n_ref); under `clean` both use `gt`. An explicit comparison sets both.

Outputs in OUT: thresholds.parquet (text_threshold, image_threshold, rows, classes, and with datasets
written: file, rows_written), one parquet per pair with `write_datasets`, and manifest.json (the CLI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.thresholds.solve import count, exact_image_threshold, golden_image_threshold, passes

THRESHOLDS = "thresholds.parquet"
SOLVERS = ("exact", "golden")
PRESET_COMPARISONS = {"paper": ("ge", "gt"), "clean": ("gt", "gt")}  # (solve, write)


@dataclass(frozen=True)
class ThresholdOptions:
    text_col: str
    image_col: str
    text_thresholds: tuple[float, ...]
    reference: tuple[float, float] = (0.82, 0.20)
    target: int | None = None
    solver: str = "exact"
    preset: str = "paper"
    compare: str | None = None  # overrides the preset's comparisons
    label_col: str = "wnid"
    image_from: str | None = None
    write_datasets: bool = False

    def comparisons(self) -> tuple[str, str]:
        return (self.compare, self.compare) if self.compare else PRESET_COMPARISONS[self.preset]


def dataset_name(t: float, i: float) -> str:
    """The original's naming, mm_{t}_{i}, with the image threshold to 6 significant digits."""
    return f"mm_{t:g}_{i:.6g}.parquet"


def _column(table: pa.Table, name: str, path: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise LaionetError(f"{path}: no {what} column '{name}'; it has {', '.join(table.column_names)}")
    return table.column(name)


def _floats(column: pa.ChunkedArray, name: str, path: str) -> np.ndarray:
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise LaionetError(f"{path}: column '{name}' is {column.type}, not a similarity (float)")
    return column.cast(pa.float64()).fill_null(np.nan).to_numpy()


def read_dataset(path: str, options: ThresholdOptions) -> pa.Table:
    from laionet.io.inputs import open_parquet

    table = open_parquet(path).read()
    if options.image_from:
        other = open_parquet(options.image_from).read()
        uids = _column(other, "uid", options.image_from, "uid")
        _column(table, "uid", path, "uid")
        if pc.count_distinct(uids).as_py() != len(uids):
            raise LaionetError(f"{options.image_from}: uids are not unique (one model per file)")
        image = _column(other, options.image_col, options.image_from, "image similarity")
        if options.image_col in table.column_names:
            table = table.drop_columns([options.image_col])
        joined = pa.table({"uid": uids, options.image_col: image})
        order = pc.index_in(table.column("uid"), value_set=joined.column("uid"))
        table = table.append_column(options.image_col, joined.column(options.image_col).take(order))
    return table


def solve_thresholds(dataset: str, out: str | Path, options: ThresholdOptions) -> dict:
    """Write OUT/thresholds.parquet (and the datasets); return a summary for the manifest."""
    from laionet.io.atomic import atomic_path

    started = time.perf_counter()
    if options.solver not in SOLVERS:
        raise LaionetError(f"unknown solver '{options.solver}': use {' or '.join(SOLVERS)}")
    solve_cmp, write_cmp = options.comparisons()
    table = read_dataset(dataset, options)
    source = options.image_from or dataset
    text = _floats(_column(table, options.text_col, dataset, "text similarity"), options.text_col, dataset)
    image = _floats(_column(table, options.image_col, source, "image similarity"), options.image_col, source)
    labels = _column(table, options.label_col, dataset, "label")

    target = options.target
    if target is None:
        target = count(text, image, *options.reference, solve_cmp)
    if target < 0:
        raise LaionetError("--target must be at least 0")

    rows = []
    for t in options.text_thresholds:
        keep_text = passes(text, t, solve_cmp)
        if options.solver == "exact":
            i, size = exact_image_threshold(image[keep_text], target, solve_cmp)
        else:
            i = golden_image_threshold(text, image, t, target, solve_cmp)
            size = count(text, image, t, i, solve_cmp)
        keep = keep_text & passes(image, i, solve_cmp)
        classes = pc.count_distinct(labels.filter(pa.array(keep))).as_py() if keep.any() else 0
        rows.append({"text_threshold": t, "image_threshold": i, "rows": size, "classes": classes})

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if options.write_datasets:
        for row in rows:
            keep = passes(text, row["text_threshold"], write_cmp) & passes(image, row["image_threshold"], write_cmp)
            name = dataset_name(row["text_threshold"], row["image_threshold"])
            with atomic_path(out / name) as tmp:
                pq.write_table(table.filter(pa.array(keep)), tmp)
            row.update(file=name, rows_written=int(keep.sum()))
    with atomic_path(out / THRESHOLDS) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return {"dataset": dataset, "image_from": options.image_from, "rows_in": table.num_rows,
            "image_missing": int(np.isnan(image).sum()), "target": int(target),
            "reference": list(options.reference) if options.target is None else None,
            "solver": options.solver, "compare_solve": solve_cmp, "compare_write": write_cmp,
            "pairs": rows, "seconds": time.perf_counter() - started}
