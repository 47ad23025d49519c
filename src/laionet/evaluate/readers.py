"""Reading the evaluation's input tables (parquet, CSV, the original's pickles) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from laionet.errors import LaionetError

# Columns that may hold a row's identity, in the order they are tried.
KEY_FALLBACKS = ("uid", "__index_level_0__", "key", "index", "imagename", "image_name", "filename", "file_name")


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_file(path: Path) -> Path:
    if not path.exists():
        raise LaionetError(f"{path}: no such file")
    if path.is_dir():
        raise LaionetError(f"{path}: is a folder, expected a file")
    return path


def parquet_columns(path: Path) -> list[str]:
    require_file(path)
    try:
        return pq.read_schema(path).names
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise LaionetError(f"{path}: not a readable parquet file ({_reason(exc)})") from None


def stored_index(path: Path) -> str | None:
    """The pandas index column stored in a parquet file (e.g. the original's image file names), if any."""
    try:
        meta = (pq.read_schema(path).metadata or {}).get(b"pandas")
        stored = [c for c in json.loads(meta).get("index_columns", []) if isinstance(c, str)] if meta else []
    except Exception:  # noqa: BLE001 - pandas metadata is only a hint
        return None
    return stored[0] if len(stored) == 1 else None


def read_parquet(path: Path, columns: list[str]) -> pl.DataFrame:
    names = parquet_columns(path)
    missing = [c for c in columns if c not in names]
    if missing:
        raise LaionetError(f"{path}: no column {missing[0]!r} (columns: {', '.join(names[:20])})")
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise LaionetError(f"{path}: not a readable parquet file ({_reason(exc)})") from None


def read_csv_strings(path: Path) -> pl.DataFrame:
    """A CSV with every column read as text (the original read its prediction CSVs with dtype=str)."""
    require_file(path)
    try:
        return pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # noqa: BLE001
        raise LaionetError(f"{path}: not a readable CSV file ({_reason(exc)})") from None


def read_pickle(path: Path) -> object:
    """Load one of the original's pickles without running code in it (plain containers, strings, numbers)."""
    from laionet.release import _restricted_load

    require_file(path)
    return _restricted_load(path)


def find_key_column(path: Path, names: list[str], key_col: str | None = None) -> str:
    """The column that identifies a row: the one asked for, the stored pandas index, or a usual name."""
    if key_col is not None:
        if key_col not in names:
            raise LaionetError(f"{path}: no column {key_col!r} (columns: {', '.join(names[:20])})")
        return key_col
    index = stored_index(path) if path.suffix == ".parquet" else None
    if index in names:
        return index
    found = next((c for c in KEY_FALLBACKS if c in names), None)
    if found is None:
        raise LaionetError(f"{path}: no row id column (tried {', '.join(KEY_FALLBACKS)}; name one with --key-col)")
    return found


def as_key(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A key column cast to the ground truth's key type; ids that cannot be cast become null (no match)."""
    return column.cast(dtype, strict=False) if dtype == pl.Int64 else column.cast(pl.String)
