"""Ground truth, class weights and class sets (spec §7.1, §7.2).

The ground truth is a long table of (key, wnid) pairs: a row whose label is a set of wnids (the original
allowed that) gives one pair per wnid. It comes from our dataset parquet (uid, wnid), the original's
`imagename2wnid`-style mapping (two columns: key, wnid; parquet, CSV or pickle) or a label pickle
(wnid -> list of global LAION indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from laionet.errors import LaionetError
from laionet.evaluate.readers import find_key_column, parquet_columns, read_csv_strings, read_parquet, read_pickle

OCR_FLAG = "wnid_is_in_recognized_text"


@dataclass
class Truth:
    pairs: pl.DataFrame  # key, wnid: distinct pairs of the rows kept (OCR-flagged rows removed)
    class_counts: pl.DataFrame  # wnid, freq: rows per class before the OCR exclusion (default weights)
    rows: int  # labelled rows read
    ocr_flagged: int  # rows dropped because their image shows the class name

    @property
    def key_dtype(self) -> pl.DataType:
        return self.pairs.schema["key"]


def _long_pairs(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """key, wnid with a list of wnids exploded; integer keys stay Int64, anything else becomes text."""
    if isinstance(frame.schema["wnid"], pl.List):
        frame = frame.explode("wnid")
    if frame.schema["wnid"] != pl.String:
        raise LaionetError(f"{path}: the wnid column must hold text (or lists of text), not {frame.schema['wnid']}")
    key = frame.schema["key"]
    if not key.is_integer():
        frame = frame.with_columns(pl.col("key").cast(pl.String))
    elif key != pl.Int64:
        frame = frame.with_columns(pl.col("key").cast(pl.Int64))
    return frame.drop_nulls(["key", "wnid"])


def _from_mapping(obj: object, path: Path) -> pl.DataFrame:
    """A pickled dict: wnid -> list of indices (label pickle) or key -> wnid (imagename2wnid)."""
    if not isinstance(obj, dict) or not obj:
        raise LaionetError(f"{path}: expected a non-empty dict (wnid -> indices, or image name -> wnid)")
    first = next(iter(obj.values()))
    if isinstance(first, str):  # imagename2wnid; the original stored numpy.str_ values, which are str
        return pl.DataFrame({"key": list(obj), "wnid": [str(v) for v in obj.values()]},
                            schema={"key": pl.String, "wnid": pl.String})
    from laionet.release import safe_load_pickle

    labels = safe_load_pickle(path)
    return pl.DataFrame({"key": [u for v in labels.values() for u in v],
                         "wnid": [w for w, v in labels.items() for _ in v]},
                        schema={"key": pl.Int64, "wnid": pl.String})


def _read_labelled(path: Path, key_col: str | None) -> tuple[pl.DataFrame, pl.Series | None]:
    """(key, wnid) rows as stored, and the OCR flag per row when the file has one."""
    if path.suffix == ".pkl":
        return _from_mapping(read_pickle(path), path), None
    if path.suffix == ".csv":
        frame = read_csv_strings(path)
        names = frame.columns
    else:
        names = parquet_columns(path)
        frame = None
    if "wnid" in names:
        wnid_col = "wnid"
        key = find_key_column(path, names, key_col)
    elif len(names) == 2:  # an imagename2wnid-style mapping: key, wnid
        key = find_key_column(path, names, key_col) if key_col else names[0]
        wnid_col = next(c for c in names if c != key)
    else:
        raise LaionetError(f"{path}: no column 'wnid' (columns: {', '.join(names[:20])})")
    flag = OCR_FLAG if OCR_FLAG in names else None
    columns = [key, wnid_col] + ([flag] if flag else [])
    frame = frame.select(columns) if frame is not None else read_parquet(path, columns)
    flags = frame.get_column(flag).fill_null(False) if flag else None
    return frame.select(pl.col(key).alias("key"), pl.col(wnid_col).alias("wnid")), flags


def read_truth(path: str | Path, key_col: str | None = None, keep_ocr_flagged: bool = False) -> Truth:
    path = Path(path)
    frame, flags = _read_labelled(path, key_col)
    rows = frame.height
    counts = class_counts_of(_long_pairs(frame, path))
    flagged = int(flags.sum()) if flags is not None else 0
    if flags is not None and not keep_ocr_flagged:
        frame = frame.filter(~flags)
    pairs = _long_pairs(frame, path).unique(maintain_order=True)
    if pairs.height == 0:
        raise LaionetError(f"{path}: no labelled rows")
    return Truth(pairs, counts, rows, flagged if not keep_ocr_flagged else 0)


def class_counts_of(pairs: pl.DataFrame) -> pl.DataFrame:
    """wnid, freq: the number of distinct rows labelled with each class."""
    return (pairs.unique(["key", "wnid"]).group_by("wnid").agg(pl.len().cast(pl.Int64).alias("freq"))
            .sort("wnid"))


def read_class_counts(path: str | Path) -> pl.DataFrame:
    """Per-class row counts of a dataset (the paper's LAION weights: the full LAIONet, before OCR exclusion)."""
    path = Path(path)
    if path.suffix == ".pkl":
        obj = read_pickle(path)
        if isinstance(obj, dict) and obj and not isinstance(next(iter(obj.values())), str):
            from laionet.release import safe_load_pickle

            # len(wnid2laionindices_full[y]), as the notebook did; empty keys count 0
            labels = safe_load_pickle(path)
            return pl.DataFrame({"wnid": list(labels), "freq": [len(v) for v in labels.values()]},
                                schema={"wnid": pl.String, "freq": pl.Int64})
    if path.suffix == ".parquet":  # rows per class; a dataset need not have an id column for this
        column = read_parquet(path, ["wnid"]).get_column("wnid")
        column = column.explode() if isinstance(column.dtype, pl.List) else column
        return (column.drop_nulls().cast(pl.String).value_counts(name="freq")
                .with_columns(pl.col("freq").cast(pl.Int64)).sort("wnid"))
    frame, _ = _read_labelled(path, None)
    return class_counts_of(_long_pairs(frame, path))


def read_class_set(path: str | Path) -> set[str]:
    """The classes named by a file: a dataset or vocabulary (column wnid), a label pickle (its keys,
    empty ones included, as the original's 978 keys), or a text file with one wnid first on each line."""
    path = Path(path)
    if path.suffix == ".parquet":
        column = read_parquet(path, ["wnid"]).get_column("wnid")
        if isinstance(column.dtype, pl.List):
            column = column.explode()
        return set(column.drop_nulls().cast(pl.String).to_list())
    if path.suffix == ".pkl":
        obj = read_pickle(path)
        if not isinstance(obj, dict):
            raise LaionetError(f"{path}: expected a dict keyed by wnid")
        if obj and isinstance(next(iter(obj.values())), str):  # imagename2wnid: its values are the classes
            return {str(v) for v in obj.values()}
        return {str(k) for k in obj}
    if path.suffix == ".csv":
        frame = read_csv_strings(path)
        column = "wnid" if "wnid" in frame.columns else frame.columns[-1]
        return set(frame.get_column(column).drop_nulls().to_list())
    from laionet.evaluate.readers import require_file

    require_file(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LaionetError(f"{path}: not a readable text file ({exc})") from None
    # "n01440764", or the synsets-file layout "n01440764: tench, Tinca tinca"; '#' starts a comment
    tokens = (line.split("#", 1)[0].replace(":", " ").split() for line in lines)
    return {words[0] for words in tokens if words}
