"""Caption inputs: resolve files, check columns, plan shards, read them with their uids.

Inputs are parquet files or globs, local or any fsspec URL (s3://, gs://, https://, ...). A row's `uid`
follows the original scheme for LAION-400M parts (part x 100,000,000 + row position, spec §2.2), comes
from `--id-col` when one is named, and is otherwise the row's ordinal over all inputs in the given order.

A shard is a run of whole row groups of one file: the unit of work, retry and resume.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.arrays import int64_array

LAION_PART = re.compile(r"part-(\d{5})-[0-9a-f\-]+-c000(\.snappy)?\.parquet$")
INDEX_SHIFT_PER_PART = 100_000_000
DEFAULT_SHARD_ROWS = 1_000_000
# Column names tried, in order, when the user names none (LAION, DataComp, common crawls).
TEXT_CANDIDATES = ("TEXT", "caption", "text")
URL_CANDIDATES = ("URL", "url")
NSFW_CANDIDATES = ("NSFW", "nsfw")


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the caption, URL, id and NSFW tag (None: auto-detect or absent)."""

    text: str | None = None
    url: str | None = None
    id: str | None = None
    nsfw: str | None = None
    skip_null_text: bool = False


@dataclass(frozen=True)
class Shard:
    index: int
    path: str
    row_groups: tuple[int, ...]
    row_start: int  # position of the shard's first row in its file
    num_rows: int
    uid_base: int | None  # uid of the file's row 0, None when uids come from the id column
    skip: int = 0  # rows to skip at the start of the row groups (a row group split into slices)

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


@dataclass
class InputPlan:
    files: list[str]
    shards: list[Shard]
    text_col: str
    url_col: str | None
    nsfw_col: str | None
    id_col: str | None
    columns: list[str]  # all columns of the inputs (of the first file)
    rows: int
    uid_scheme: str
    fingerprints: list[dict] = field(default_factory=list)
    skip_null_text: bool = False


def resolve_inputs(patterns: list[str]) -> list[str]:
    """Expand globs; keep the order given, each glob sorted. Missing inputs are an error."""
    if not patterns:
        raise LaionetError("no input files given")
    files: list[str] = []
    for pattern in patterns:
        if "://" in pattern:
            import fsspec  # only for URLs: it costs a tenth of a second to import

            fs, _, paths = fsspec.get_fs_token_paths(pattern)
            found = sorted(fs.unstrip_protocol(p) for p in paths)
            if not any(ch in pattern for ch in "*?[") and found and not fs.exists(paths[0]):
                found = []
        elif any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern))
        else:
            found = [pattern] if Path(pattern).exists() else []
        if not found:
            raise LaionetError(f"{pattern}: no such file")
        for path in found:
            if not path.startswith(("/", ".")) and "://" not in path:
                path = str(Path(path))
            if Path(path).is_dir():
                raise LaionetError(f"{path}: is a directory; give parquet files or a glob like {path}/*.parquet")
            files.append(path)
    return files


def open_parquet(path: str) -> pq.ParquetFile:
    try:
        if "://" in path:
            import fsspec

            return pq.ParquetFile(fsspec.open(path, "rb").open())
        try:
            # a local file is mapped: pages come from the page cache without a copy into fresh buffers
            # (fewer first-touch page faults: 10-20 % of match's decode time)
            return pq.ParquetFile(path, memory_map=True)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or not Path(path).is_file():
                raise
            return pq.ParquetFile(path)  # a filesystem that cannot map files (some FUSE mounts): read it
    except FileNotFoundError:
        raise LaionetError(f"{path}: no such file") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise LaionetError(f"{path}: not a readable parquet file ({_short(exc)})") from None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _pick(name: str | None, candidates: tuple[str, ...], schema: pa.Schema, path: str, what: str,
          required: bool) -> str | None:
    if name is not None:
        if name not in schema.names:
            raise LaionetError(f"{path}: no column {name!r} (the {what} column); columns are: "
                               f"{', '.join(schema.names)}")
        return name
    for candidate in candidates:
        if candidate in schema.names:
            return candidate
    if required:
        raise LaionetError(f"{path}: no {what} column found (tried {', '.join(candidates)}); "
                           f"name it with --{what}-col")
    return None


def plan_inputs(patterns: list[str], columns: Columns = Columns(), shard_rows: int = DEFAULT_SHARD_ROWS
                ) -> InputPlan:
    files = resolve_inputs(patterns)
    parquets = [open_parquet(path) for path in files]
    schema = parquets[0].schema_arrow
    text_col = _pick(columns.text, TEXT_CANDIDATES, schema, files[0], "text", required=True)
    url_col = _pick(columns.url, URL_CANDIDATES, schema, files[0], "url", required=False)
    nsfw_col = _pick(columns.nsfw, NSFW_CANDIDATES, schema, files[0], "nsfw", required=False)
    id_col = _pick(columns.id, (), schema, files[0], "id", required=False)
    laion = id_col is None and all(LAION_PART.search(Path(p).name) for p in files)
    uid_scheme = "column" if id_col else ("laion-part" if laion else "ordinal")

    shards: list[Shard] = []
    fingerprints = []
    ordinal = 0
    for path, parquet in zip(files, parquets):
        file_schema = parquet.schema_arrow
        _check_column_types(path, file_schema, text_col, id_col, nsfw_col)
        meta = parquet.metadata
        if meta.num_rows == 0:
            raise LaionetError(f"{path}: parquet file has no rows")
        if not columns.skip_null_text:
            _check_null_statistics(path, parquet, text_col)
        if uid_scheme == "laion-part":
            base = int(LAION_PART.search(Path(path).name).group(1)) * INDEX_SHIFT_PER_PART
        elif uid_scheme == "ordinal":
            base = ordinal
        else:
            base = None
        ordinal += meta.num_rows
        start = 0
        for row_groups, skip, size in _split(meta, shard_rows):
            shards.append(Shard(len(shards), path, row_groups, start, size, base, skip))
            start += size
        fingerprints.append({"path": path, "rows": meta.num_rows, "row_groups": meta.num_row_groups,
                             "size": _size(path), "created_by": meta.created_by})
    return InputPlan(files, shards, text_col, url_col, nsfw_col, id_col, list(schema.names), ordinal,
                     uid_scheme, fingerprints, columns.skip_null_text)


def _split(meta: pq.FileMetaData, shard_rows: int):
    """(row groups, rows to skip, rows) per shard: whole row groups up to `shard_rows` rows, and a row
    group bigger than that cut into slices."""
    group, rows = [], 0
    for rg in range(meta.num_row_groups):
        rg_rows = meta.row_group(rg).num_rows
        if group and rows + rg_rows > shard_rows:
            yield tuple(group), 0, rows
            group, rows = [], 0
        if rg_rows > shard_rows:
            for skip in range(0, rg_rows, shard_rows):
                yield (rg,), skip, min(shard_rows, rg_rows - skip)
            continue
        group.append(rg)
        rows += rg_rows
    if group:
        yield tuple(group), 0, rows


def _size(path: str) -> int | None:
    try:
        if "://" not in path:
            return os.path.getsize(path)
        import fsspec

        fs, _, (p,) = fsspec.get_fs_token_paths(path)
        return int(fs.size(p))
    except Exception:  # noqa: BLE001 - a size is only a fingerprint hint
        return None


def _check_column_types(path: str, schema: pa.Schema, text_col: str, id_col: str | None,
                        nsfw_col: str | None) -> None:
    if text_col not in schema.names:
        raise LaionetError(f"{path}: no column {text_col!r} (the text column)")
    text_type = schema.field(text_col).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
            or pa.types.is_string_view(text_type)):
        raise LaionetError(f"{path}: column {text_col!r} holds {text_type}, not text")
    if id_col is not None:
        if id_col not in schema.names:
            raise LaionetError(f"{path}: no column {id_col!r} (the id column)")
        if not pa.types.is_integer(schema.field(id_col).type):
            raise LaionetError(f"{path}: id column {id_col!r} holds {schema.field(id_col).type}, not integers")
    if nsfw_col is not None and nsfw_col in schema.names:
        nsfw_type = schema.field(nsfw_col).type
        if not (pa.types.is_string(nsfw_type) or pa.types.is_large_string(nsfw_type)
                or pa.types.is_string_view(nsfw_type) or pa.types.is_dictionary(nsfw_type)):
            raise LaionetError(f"{path}: NSFW column {nsfw_col!r} holds {nsfw_type}, not text")


def _check_null_statistics(path: str, parquet: pq.ParquetFile, text_col: str) -> None:
    """Fail fast, from the footer alone, when the statistics say a caption is null."""
    meta = parquet.metadata
    index = parquet.schema_arrow.get_field_index(text_col)
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(index).statistics
        if stats is not None and stats.has_null_count and stats.null_count > 0:
            raise null_text_error(path, text_col, stats.null_count, f"row group {rg}")


def null_text_error(path: str, text_col: str, count: int, where: str) -> LaionetError:
    return LaionetError(f"{path}: column {text_col!r} has {count} null caption(s) ({where}); "
                        f"pass --skip-null-text to drop such rows")


def read_shard(shard: Shard, plan: InputPlan, columns: list[str] | None = None) -> pa.Table:
    """Read a shard's columns (default: all) with a leading int64 `uid` column."""
    read_cols = _read_columns(plan, columns)
    parquet = open_parquet(shard.path)
    try:
        table = parquet.read_row_groups(list(shard.row_groups), columns=read_cols, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(shard, exc) from None
    return _with_uid(table.slice(shard.skip, shard.num_rows), shard, plan, columns, 0)


def iter_shard(shard: Shard, plan: InputPlan, columns: list[str] | None = None,
               batch_rows: int = 100_000) -> Iterator[pa.Table]:
    """A shard as consecutive tables of at most `batch_rows` rows, each as `read_shard` would give it.

    Decoding a slice and working on it at once keeps its buffers in the CPU caches and reuses them from
    slice to slice, where a whole shard of captions (about 60 MB per million) is touched afresh."""
    read_cols = _read_columns(plan, columns)
    parquet = open_parquet(shard.path)
    batches = parquet.iter_batches(batch_size=batch_rows, row_groups=list(shard.row_groups), columns=read_cols,
                                   use_threads=False)
    position, end = 0, shard.skip + shard.num_rows  # rows from the start of the shard's row groups
    if shard.num_rows == 0:  # still one table, so that a stage sees the columns
        yield _with_uid(parquet.schema_arrow.empty_table().select(read_cols), shard, plan, columns, 0)
    while position < end:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(shard, exc) from None
        if batch is None:
            break
        first, last = max(position, shard.skip), min(position + batch.num_rows, end)
        if first < last:
            table = pa.Table.from_batches([batch.slice(first - position, last - first)])
            yield _with_uid(table, shard, plan, columns, first - shard.skip)
        position += batch.num_rows


def _read_columns(plan: InputPlan, columns: list[str] | None) -> list[str]:
    wanted = plan.columns if columns is None else columns
    read_cols = list(dict.fromkeys(c for c in wanted if c != "uid"))
    if plan.id_col and plan.id_col not in read_cols:
        read_cols.append(plan.id_col)
    return read_cols


def _unreadable(shard: Shard, exc: Exception) -> LaionetError:
    return LaionetError(f"{shard.path}: cannot read row groups {shard.row_groups} ({_short(exc)})")


def _with_uid(table: pa.Table, shard: Shard, plan: InputPlan, columns: list[str] | None,
              offset: int) -> pa.Table:
    """`table` (the shard's rows from its row `offset` on) with a leading int64 `uid` column."""
    wanted = plan.columns if columns is None else columns
    if plan.id_col:
        uids = pc.cast(table.column(plan.id_col), pa.int64())
        if uids.null_count:
            raise LaionetError(f"{shard.path}: id column {plan.id_col!r} has null values")
        if plan.id_col not in wanted:
            table = table.drop_columns([plan.id_col])
    else:
        start = shard.uid_base + shard.row_start + offset
        uids = int64_array(np.arange(start, start + table.num_rows, dtype=np.int64))
    if "uid" in table.column_names:
        table = table.drop_columns(["uid"])
    return table.add_column(0, "uid", uids)

