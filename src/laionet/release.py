"""Import the original LAIONet release, and export labels in its pickle layout (spec §2.2, §4.1, §4.4, §12).

The original shipped its labels as pickles: a plain dict wnid -> list of global LAION indices
(uid = part * 100_000_000 + row), every class a key even when empty. Unpickling runs code, so these
files are read with a restricted unpickler that builds only plain containers, strings and numbers
(plus the few numpy types a list of indices may come as); anything else is refused before it is called.
"""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.atomic import atomic_path

SIMILARITY_PREFIX = "text_to_name_def_wnid_similarity_"
PREFERRED_ENCODER = "clip-vit-base-patch32"  # the paper's headline LAIONet, when several are present
UID_FALLBACKS = ("__index_level_0__", "uid", "index")


def _latin1_encode(text, encoding="utf-8"):
    # Protocol-2 pickles carry numpy's raw bytes as `_codecs.encode(str, "latin1")`; nothing else is needed.
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 text")
    return text.encode("latin1")


def _allowed() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric

    allowed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "str_"): np.str_,
    }
    for builtins in ("builtins", "__builtin__"):  # protocol 2 pickles sets through a global
        allowed[(builtins, "set")] = set
        allowed[(builtins, "frozenset")] = frozenset
    # numpy 1.x wrote numpy.core.*, numpy 2 writes numpy._core.*; map both without importing the deprecated shim.
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # numpy arrays at protocol 5
    for name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "longlong", "ulonglong", "intc", "uintc"):
        allowed[("numpy", name)] = getattr(np, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path
        self._allowed = _allowed()

    def find_class(self, module, name):
        # Exact (module, name) pairs only: dotted names like "dtype.__reduce__" never match.
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise LaionetError(f"{self._path}: refusing to unpickle {module}.{name}: only plain containers, "
                               "strings and numbers are allowed") from None

    def persistent_load(self, pid):
        raise LaionetError(f"{self._path}: refusing to unpickle a persistent id: only plain containers, "
                           "strings and numbers are allowed")


def _restricted_load(path: Path) -> object:
    if not path.is_file():
        raise LaionetError(f"{path}: no such file")
    try:
        with open(path, "rb") as file:
            return _RestrictedUnpickler(file, path).load()
    except LaionetError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LaionetError(f"{path}: not a readable pickle file ({reason})") from None


def _as_indices(value) -> list[int] | None:
    """The value as a list of non-negative Python ints, or None when it is not one."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            return None
        value = value.tolist()  # numpy integers become ints; floats stay floats and are refused below
    if not isinstance(value, (list, tuple, set, frozenset)):
        return None
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0 for v in value):
        return None
    indices = [int(v) for v in value]
    return sorted(indices) if isinstance(value, (set, frozenset)) else indices


def safe_load_pickle(path: str | Path) -> dict[str, list[int]]:
    """Load a label pickle of the original (wnid -> global indices) without running code in it.

    Returns a plain dict of str -> list[int], numpy strings and integers converted, key order kept.
    """
    path = Path(path)
    obj = _restricted_load(path)
    if not isinstance(obj, dict):
        raise LaionetError(f"{path}: expected a dict of wnid -> list of indices, got {type(obj).__name__}")
    labels: dict[str, list[int]] = {}
    for key, value in obj.items():
        indices = _as_indices(value)
        if not isinstance(key, str) or indices is None:
            raise LaionetError(f"{path}: key {key!r} is not a string mapping to a list of non-negative integers "
                               f"(got {type(value).__name__}); is it a wnid -> indices label pickle?")
        labels[str(key)] = indices
    return labels


def _label_pairs(labels: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uids, wnid codes, wnids): one entry per distinct (uid, wnid) pair, sorted by uid then code."""
    wnids = list(labels)
    uids = np.fromiter((u for indices in labels.values() for u in indices), dtype=np.int64)
    codes = np.repeat(np.arange(len(wnids), dtype=np.int64), [len(v) for v in labels.values()])
    order = np.lexsort((codes, uids))
    uids, codes = uids[order], codes[order]
    distinct = np.ones(len(uids), dtype=bool)
    distinct[1:] = (uids[1:] != uids[:-1]) | (codes[1:] != codes[:-1])  # a uid listed twice under one wnid
    return uids[distinct], codes[distinct], wnids


def import_labels(labels_path: str | Path) -> pa.Table:
    """The label pickle as a table of (uid, wnid), sorted by uid; a uid under several wnids gives several rows."""
    uids, codes, wnids = _label_pairs(safe_load_pickle(labels_path))
    return pa.table({"uid": pa.array(uids, pa.int64()), "wnid": pa.array([wnids[c] for c in codes], pa.string())})


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise LaionetError(f"{path}: no such file")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise LaionetError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None


def _uid_column(table: pa.Table, path: Path) -> str:
    """The column holding the global LAION index: the pandas index if stored, else a plain uid/index column."""
    meta = (table.schema.metadata or {}).get(b"pandas")
    if meta:
        stored = [c for c in json.loads(meta).get("index_columns", []) if isinstance(c, str)]
        if len(stored) == 1 and stored[0] in table.column_names:
            return stored[0]
    found = next((c for c in UID_FALLBACKS if c in table.column_names), None)
    if found is None:
        raise LaionetError(f"{path}: no global LAION index found (no stored pandas index and no "
                           f"{', '.join(UID_FALLBACKS)} column)")
    return found


def _similarity_column(names: list[str], path: Path) -> str | None:
    candidates = [c for c in names if c.startswith(SIMILARITY_PREFIX)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    # The parent parquet held one column per encoder; the file name says which one LAIONet was filtered by.
    named = [c for c in candidates if c in path.name]
    preferred = [c for c in candidates if c == SIMILARITY_PREFIX + PREFERRED_ENCODER]
    return (named or preferred or candidates)[0]


def import_release(parquet_path: str | Path, labels_path: str | Path, out_path: str | Path,
                   similarity_col: str | None = None) -> dict:
    """Turn the released laionet_v1.parquet + wnid2indices_v1.pkl into our laionet.parquet layout.

    Keeps every original column, adds `uid` (from the index) and `wnid` (from the labels), and, when present,
    `query` (copy of `name_def_wnid`) and `similarity` (float32 copy of the text-to-query similarity column,
    `similarity_col` or auto-detected). LAION's own image-text `similarity` column is kept as `laion_similarity`.
    Rows in no label list or in several are dropped. Output sorted by uid, written atomically.
    """
    parquet_path, out_path = Path(parquet_path), Path(out_path)
    labels = safe_load_pickle(labels_path)
    table = _read_parquet(parquet_path)
    uid_col = _uid_column(table, parquet_path)
    try:
        uid_array = table.column(uid_col).combine_chunks().cast(pa.int64())  # safe cast: fails on fractions
    except (pa.ArrowException, TypeError) as exc:
        raise LaionetError(f"{parquet_path}: index column {uid_col!r} is not integer ({exc})") from None
    if uid_array.null_count:
        raise LaionetError(f"{parquet_path}: index column {uid_col!r} has null values")
    row_uids = uid_array.to_numpy()
    if len(np.unique(row_uids)) != len(row_uids):
        raise LaionetError(f"{parquet_path}: index column {uid_col!r} has duplicate values")

    label_uids, codes, wnids = _label_pairs(labels)
    uniq, first, n_wnids = np.unique(label_uids, return_index=True, return_counts=True)
    if len(uniq):
        pos = np.minimum(np.searchsorted(uniq, row_uids), len(uniq) - 1)
        labelled = uniq[pos] == row_uids
        multi = labelled & (n_wnids[pos] > 1)
    else:
        pos = np.zeros(len(row_uids), dtype=np.int64)
        labelled = multi = np.zeros(len(row_uids), dtype=bool)
    keep = labelled & ~multi

    if similarity_col is not None and similarity_col not in table.column_names:
        raise LaionetError(f"{parquet_path}: no column {similarity_col!r}")
    similarity_col = similarity_col or _similarity_column(table.column_names, parquet_path)

    kept = table.filter(pa.array(keep))
    kept_uids = row_uids[keep]
    order = np.argsort(kept_uids, kind="stable")
    kept = kept.take(pa.array(order))
    kept_wnids = [wnids[c] for c in codes[first[pos[keep]]][order]]

    # Our columns replace same-named original ones. LAION's own `similarity` is image-text, not text-query:
    # renamed so that it is never mistaken for ours.
    ours = {"uid", "wnid"} | ({"query"} if "name_def_wnid" in kept.column_names else set())
    columns = {}
    for name in kept.column_names:
        if name == uid_col or name in ours:
            continue
        columns["laion_similarity" if name == "similarity" else name] = kept.column(name)
    columns["uid"] = pa.array(kept_uids[order], pa.int64())
    columns["wnid"] = pa.array(kept_wnids, pa.string())
    if "name_def_wnid" in kept.column_names:
        columns["query"] = kept.column("name_def_wnid").cast(pa.string())
    if similarity_col:
        columns["similarity"] = kept.column(similarity_col).cast(pa.float32())
    out = pa.table(columns)  # no pandas metadata: the old index column is gone
    with atomic_path(out_path) as tmp:
        pq.write_table(out, tmp)

    return {
        "rows_in": table.num_rows,
        "labelled": int(labelled.sum()),
        "unlabelled": int((~labelled).sum()),
        "multi_label": int(multi.sum()),
        "missing_rows": int(len(uniq) - np.isin(uniq, row_uids).sum()),
        "rows_out": out.num_rows,
        "classes": len(set(kept_wnids)),
    }


def export_labels(dataset_path: str | Path, out_path: str | Path, wnids: list[str] | None = None) -> dict:
    """Write the original's label pickle {wnid: [uids ascending]} from a dataset with `uid` and `wnid`.

    With `wnids` (e.g. every vocabulary class), each is a key even when empty, as the original's 978 keys;
    without, the dataset's classes in sorted order.
    """
    dataset_path = Path(dataset_path)
    if not dataset_path.is_file():
        raise LaionetError(f"{dataset_path}: no such file")
    try:
        names = pq.read_schema(dataset_path).names
    except (pa.ArrowException, OSError) as exc:
        raise LaionetError(f"{dataset_path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("uid", "wnid") if c not in names]
    if missing:
        raise LaionetError(f"{dataset_path}: missing column(s) {', '.join(missing)}; is it a laionet dataset?")
    table = pq.read_table(dataset_path, columns=["uid", "wnid"])

    grouped: dict[str, list[int]] = {}
    for uid, wnid in zip(table.column("uid").to_pylist(), table.column("wnid").to_pylist()):
        if uid is None or wnid is None:
            raise LaionetError(f"{dataset_path}: null uid or wnid")
        grouped.setdefault(wnid, []).append(int(uid))
    if wnids is not None:
        unknown = sorted(set(grouped) - set(wnids))
        if unknown:
            raise LaionetError(f"{dataset_path}: wnid {unknown[0]!r} is not in the given class list "
                               f"({len(unknown)} unknown wnid(s))")
        keys = list(dict.fromkeys(wnids))
    else:
        keys = sorted(grouped)
    labels = {str(w): sorted(grouped.get(w, [])) for w in keys}

    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as file:
            pickle.dump(labels, file, protocol=4)
    return {"keys": len(labels), "non_empty": sum(1 for v in labels.values() if v),
            "indices": sum(len(v) for v in labels.values())}
