"""Embedding folders: what `laionet embed` writes and `index`, `search` and `similarity` read.

A folder holds `part-00000.parquet`, `part-00001.parquet`, … and `manifest.json`. Each part has two
columns: `uid` (int64) and `embedding` (fixed_size_list<float32 or float16>[dim]), rows L2-normalised by
the writer. Parquet keeps the files self-describing (the dimension and dtype are in the schema) and a
part reads into a numpy matrix without a copy. Parts are written whole, to a temporary name first, so a
folder never holds half a part; the part number says where it belongs in the run.

Also accepted wherever a folder is: one parquet file with `uid` and `embedding`, or a `.npy` matrix
(uids 0..n-1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.atomic import atomic_path

UID = "uid"
EMBEDDING = "embedding"
PART_GLOB = "part-*.parquet"
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def embedding_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    if dtype not in DTYPES:
        raise LaionetError(f"bad embedding dtype '{dtype}': use {' or '.join(DTYPES)}")
    return pa.schema([(UID, pa.int64()), (EMBEDDING, pa.list_(DTYPES[dtype], dim))])


def embedding_table(uids, vectors: np.ndarray, dtype: str = "float32") -> pa.Table:
    """A table of `uid` and `embedding` rows from an (n, dim) matrix."""
    vectors = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be a matrix, got shape {vectors.shape}")
    n, dim = vectors.shape
    values = pa.array(vectors.reshape(-1), type=DTYPES[dtype])
    column = pa.FixedSizeListArray.from_arrays(values, dim)
    return pa.Table.from_arrays([pa.array(np.asarray(uids, dtype=np.int64)), column],
                                schema=embedding_schema(dim, dtype))


def write_part(folder: str | Path, index: int, uids, vectors: np.ndarray, dtype: str = "float32") -> Path:
    """Write part `index` of a folder atomically; returns its path."""
    path = Path(folder) / part_name(index)
    with atomic_path(path) as tmp:
        pq.write_table(embedding_table(uids, vectors, dtype), tmp)
    return path


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An (n, dim) float matrix from a fixed_size_list column (no copy for a single chunk)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_list(column.type):
        raise LaionetError(f"'{EMBEDDING}' must be a fixed-size list of floats, got {column.type}")
    if column.null_count:
        raise LaionetError(f"'{EMBEDDING}' has {column.null_count} null rows")
    dim = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim)


class EmbeddingSet:
    """The parts of an embedding folder (or one file), read part by part."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            self.parts = sorted(self.path.glob(PART_GLOB))
            if not self.parts:
                raise LaionetError(f"{self.path}: no embedding parts ({PART_GLOB}); is it a `laionet embed` output?")
        elif self.path.is_file():
            self.parts = [self.path]
        else:
            raise LaionetError(f"{self.path}: no such embedding folder or file")
        self._npy = self.path.suffix == ".npy"
        if self._npy:
            matrix = np.load(self.path, mmap_mode="r")
            if matrix.ndim != 2:
                raise LaionetError(f"{self.path}: expected a 2-d matrix, got shape {matrix.shape}")
            self.rows, self.dim, self.dtype = int(matrix.shape[0]), int(matrix.shape[1]), str(matrix.dtype)
            self.part_rows = [self.rows]
        else:
            schema = self._schema(self.parts[0])
            self.dim = schema.field(EMBEDDING).type.list_size
            value_type = schema.field(EMBEDDING).type.value_type
            self.dtype = next((name for name, t in DTYPES.items() if t == value_type), str(value_type))
            self.part_rows = [pq.ParquetFile(p).metadata.num_rows for p in self.parts]
            self.rows = sum(self.part_rows)
        self.info = _manifest_info(self.path) if self.path.is_dir() else {}

    def _schema(self, part: Path) -> pa.Schema:
        try:
            schema = pq.read_schema(part)
        except Exception as exc:
            raise LaionetError(f"{part}: not a readable parquet file ({' '.join(str(exc).split())})") from exc
        for column in (UID, EMBEDDING):
            if column not in schema.names:
                raise LaionetError(f"{part}: no '{column}' column; it has {', '.join(schema.names)}")
        if not pa.types.is_fixed_size_list(schema.field(EMBEDDING).type):
            raise LaionetError(f"{part}: '{EMBEDDING}' must be a fixed-size list, got {schema.field(EMBEDDING).type}")
        return schema

    @property
    def encoder(self) -> str | None:
        return self.info.get("encoder")

    def read_part(self, index: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(uids, vectors) of one part."""
        part = self.parts[index]
        if self._npy:
            matrix = np.load(part, mmap_mode="r")
            return np.arange(len(matrix), dtype=np.int64), np.asarray(matrix, dtype=dtype)
        schema = self._schema(part)
        if schema.field(EMBEDDING).type.list_size != self.dim:
            raise LaionetError(f"{part}: dimension {schema.field(EMBEDDING).type.list_size}, "
                               f"the first part has {self.dim}")
        table = pq.read_table(part, columns=[UID, EMBEDDING])
        uids = table.column(UID).to_numpy().astype(np.int64, copy=False)
        return uids, np.ascontiguousarray(vectors_of(table.column(EMBEDDING)), dtype=dtype)

    def iter_parts(self, dtype=np.float32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in range(len(self.parts)):
            yield self.read_part(index, dtype)

    def read_all(self, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        uids, vectors = zip(*self.iter_parts(dtype)) if self.parts else ((), ())
        return np.concatenate(uids), np.concatenate(vectors)

    def sample(self, n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
        """About `n` vectors drawn evenly from every part (for training an index), without reading all at once."""
        if n >= self.rows:
            return self.read_all(dtype)[1]
        rng = np.random.default_rng(seed)
        picked = []
        for index, rows in enumerate(self.part_rows):
            take = int(round(n * rows / self.rows))
            if take:
                _, vectors = self.read_part(index, dtype)
                picked.append(vectors[np.sort(rng.choice(rows, size=min(take, rows), replace=False))])
        return np.concatenate(picked) if picked else np.zeros((0, self.dim), dtype=dtype)


def open_embeddings(path: str | Path) -> EmbeddingSet:
    return EmbeddingSet(path)


def _manifest_info(folder: Path) -> dict:
    from laionet.io.manifest import read_manifest

    manifest = read_manifest(folder / "manifest.json") or {}
    return dict(manifest.get("stages", {}).get("embed", {}))
