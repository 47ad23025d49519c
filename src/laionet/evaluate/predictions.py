"""Prediction inputs, whatever their layout, as per-model tables of predicted top-5 lists or correctness.

Three layouts are read (spec §6.3, §7.1):
- ours: `predictions.parquet` with uid, model, top5 (wnids, best first), status, error;
- the original's CSVs `{prefix}_{model}_predictions_{dd-mm-YYYY_HH-MM-SS}.csv`: an index column and
  columns 0..4 holding the top-1..top-5 wnids;
- per-sample correctness columns `top_{1,5}_is_correct_{model}` (nullable bool), as in the original's
  `ILSVRC2012_val.parquet`, so that published results can be recomputed without the predictions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from laionet.errors import LaionetError
from laionet.evaluate.readers import (
    as_key,
    find_key_column,
    parquet_columns,
    read_csv_strings,
    read_parquet,
    require_file,
)

CSV_NAME = re.compile(r"^(?P<prefix>.*)_(?P<model>[^_]+)_predictions_(?P<time>\d{2}-\d{2}-\d{4}_\d{2}-\d{2}-\d{2})$")
CORRECT_COLUMN = re.compile(r"^top_(?P<k>[15])_is_correct_(?P<model>.+)$")
CSV_TOP5 = ("0", "1", "2", "3", "4")


@dataclass
class Source:
    path: Path
    kind: str  # "predictions" (ours), "csv" (the original's), or "correctness"
    models: list[str]
    key: str  # the column identifying a row


def _csv_stamp(path: Path) -> tuple:
    # The original's time stamps (dd-mm-YYYY) do not sort by name; sort a folder's CSVs by time.
    match = CSV_NAME.match(path.stem)
    when = datetime.strptime(match["time"], "%d-%m-%Y_%H-%M-%S") if match else datetime.min
    return when, path.name


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            parquets = sorted(path.glob("*.parquet"))
            csvs = sorted(path.glob("*.csv"), key=_csv_stamp)
            if not parquets and not csvs:
                raise LaionetError(f"{path}: no .parquet or .csv files in this folder")
            files += parquets + csvs
        else:
            files.append(require_file(path))
    return files


def _csv_source(path: Path, model: str | None) -> Source:
    if model is None:
        match = CSV_NAME.match(path.stem)
        if match is None:
            raise LaionetError(f"{path}: cannot read the model name from the file name (expected "
                               "PREFIX_MODEL_predictions_dd-mm-YYYY_HH-MM-SS.csv); give it with --model")
        model = match["model"]
    header = _csv_header(path)
    missing = [c for c in CSV_TOP5 if c not in header]
    if missing:
        raise LaionetError(f"{path}: no column {missing[0]!r}; expected an index column and columns 0..4 "
                           "holding the top-1..top-5 wnids")
    return Source(path, "csv", [model], header[0])


def _csv_header(path: Path) -> list[str]:
    try:
        return pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except Exception as exc:  # noqa: BLE001
        raise LaionetError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None


def _parquet_source(path: Path) -> Source:
    names = parquet_columns(path)
    if "top5" in names:
        if "model" not in names:
            raise LaionetError(f"{path}: no column 'model' (a predictions table has uid, model, top5, status)")
        key = find_key_column(path, names)
        models = read_parquet(path, ["model"]).get_column("model").drop_nulls().unique(maintain_order=True)
        return Source(path, "predictions", models.to_list(), key)
    models = list(dict.fromkeys(m["model"] for m in map(CORRECT_COLUMN.match, names) if m))
    if models:
        return Source(path, "correctness", models, find_key_column(path, names))
    raise LaionetError(f"{path}: neither a predictions table (uid, model, top5, status) nor per-sample "
                       "correctness columns (top_1_is_correct_MODEL)")


def discover(paths: list[str | Path], model: str | None = None) -> list[Source]:
    """The prediction sources in the order given (which decides duplicates: the first one wins)."""
    sources = []
    for path in _expand([Path(p) for p in paths]):
        sources.append(_csv_source(path, model) if path.suffix == ".csv" else _parquet_source(path))
    return sources


def models_of(sources: list[Source]) -> list[str]:
    return list(dict.fromkeys(m for s in sources for m in s.models))


def load_lists(source: Source, model: str, key_dtype: pl.DataType) -> pl.DataFrame:
    """key, top5 (list of wnids; null when there is no usable prediction) for one model of a list source."""
    if source.kind == "csv":
        frame = read_csv_strings(source.path)
        top5 = pl.concat_list([pl.col(c) for c in CSV_TOP5]).list.drop_nulls()
        frame = frame.select(as_key(pl.col(source.key), key_dtype).alias("key"), top5.alias("top5"))
    else:
        names = parquet_columns(source.path)
        status = pl.col("status") if "status" in names else pl.lit("ok")
        frame = (pl.scan_parquet(source.path).filter(pl.col("model") == model)
                 .select(as_key(pl.col(source.key), key_dtype).alias("key"),
                         pl.when(status == "ok").then(pl.col("top5")).alias("top5"))
                 .collect())
    # an empty list is no prediction either
    return frame.with_columns(pl.when(pl.col("top5").list.len() > 0).then(pl.col("top5")).alias("top5"))


def load_correctness(source: Source, model: str, key_dtype: pl.DataType) -> pl.DataFrame:
    """key, top_1, top_5 (nullable bools) for one model of a correctness source."""
    names = parquet_columns(source.path)
    columns = {k: f"top_{k}_is_correct_{model}" for k in (1, 5)}
    frame = read_parquet(source.path, [source.key] + [c for c in columns.values() if c in names])
    return frame.select(
        as_key(pl.col(source.key), key_dtype).alias("key"),
        *[(pl.col(c).cast(pl.Boolean) if c in names else pl.lit(None, pl.Boolean)).alias(f"top_{k}")
          for k, c in columns.items()])
