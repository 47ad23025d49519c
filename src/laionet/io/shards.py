"""Shard outputs and resume.

Each stage writes one parquet file per shard and output name into a work folder, to a temporary name
first and renamed when complete, with the shard's counts in a JSON file beside it. A shard whose files
exist is done: a rerun skips it, so nothing is computed twice, lost or duplicated. When all shards are
done their files are concatenated, in shard order, into the stage's outputs (or, for outputs too big for
one file, such as embeddings, renamed into a folder of parts) and the work folder is removed. The work
folder remembers what it was started with; a rerun with other inputs or parameters is refused rather
than mixed in.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.atomic import atomic_path, write_text_atomic


class ShardStore:
    def __init__(self, workdir: str | Path, outputs: list[str], fingerprint: dict):
        self.workdir = Path(workdir)
        self.outputs = outputs
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))

    def open(self) -> None:
        marker = self.workdir / "fingerprint.json"
        if marker.exists():
            previous = json.loads(marker.read_text(encoding="utf-8"))
            if previous != self.fingerprint:
                raise LaionetError(f"{self.workdir}: holds partial results of a run with other inputs or "
                                   f"parameters; remove it, or rerun with --overwrite")
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(marker, json.dumps(self.fingerprint, indent=1, sort_keys=True))

    def reset(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _file(self, output: str, shard_name: str) -> Path:
        return self.workdir / output / f"{shard_name}.parquet"

    def _stats_file(self, shard_name: str) -> Path:
        return self.workdir / "stats" / f"{shard_name}.json"

    def is_done(self, shard_name: str) -> bool:
        return self._stats_file(shard_name).exists()

    def write(self, shard_name: str, tables: dict[str, pa.Table], stats: dict) -> None:
        # outputs first, the stats file last: it is the shard's completion marker
        for output in self.outputs:
            with atomic_path(self._file(output, shard_name)) as tmp:
                pq.write_table(tables[output], tmp)
        write_text_atomic(self._stats_file(shard_name), json.dumps(stats, default=str))

    def stats(self, shard_name: str) -> dict:
        return json.loads(self._stats_file(shard_name).read_text(encoding="utf-8"))

    def concatenate(self, output: str, shard_names: list[str], path: str | Path, schema: pa.Schema,
                    row_group_size: int = 128 * 1024) -> int:
        """Stream the shard files of `output`, in order, into one parquet file. Returns its row count."""
        rows = 0
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(tmp, schema) as writer:
                for name in shard_names:
                    table = pq.ParquetFile(self._file(output, name)).read()  # no pyarrow.dataset (pandas) import
                    if table.num_rows:
                        writer.write_table(table.cast(schema), row_group_size=row_group_size)
                        rows += table.num_rows
        return rows

    def publish_parts(self, output: str, shard_names: list[str], folder: str | Path,
                      part_name=lambda index: f"part-{index:05d}.parquet") -> list[int]:
        """Move the shard files of `output` into `folder` as part-00000.parquet, part-00001.parquet, ... in
        shard order (a rename, no copy). Returns each part's row count. Safe to run again after a crash
        midway: a shard file already moved is found at its new name."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for index, name in enumerate(shard_names):
            source, target = self._file(output, name), folder / part_name(index)
            if source.exists():
                os.replace(source, target)  # same filesystem: the work folder sits beside the output
            elif not target.exists():
                raise LaionetError(f"{self.workdir}: shard {name} of '{output}' is missing; rerun with --overwrite")
            rows.append(pq.ParquetFile(target).metadata.num_rows)
        return rows

    def first_schema(self, output: str, shard_names: list[str]) -> pa.Schema:
        return pq.read_schema(self._file(output, shard_names[0]))


@dataclass
class ChunkedRun:
    """Rows of one table processed in fixed-size chunks through a ShardStore (predict, zeroshot, ocr)."""

    store: ShardStore
    chunks: list[tuple[str, int]]  # (chunk name, first row), all of them, in order
    todo: list[tuple[str, int]]  # the chunks not yet done
    done_rows: int  # rows covered by chunks already done (a resumed run)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.chunks]


def workdir_beside(out: Path) -> Path:
    """A command's work folder: `.NAME.work` beside its output, on the same filesystem, so finished files
    are renamed into place rather than copied."""
    return out.with_name(f".{out.name}.work")


def open_store_beside(out: Path, outputs: list[str], fingerprint: dict, overwrite: bool) -> ShardStore:
    """The opened work folder of `out`, emptied first with `overwrite` (else an interrupted run resumes)."""
    store = ShardStore(workdir_beside(out), outputs, fingerprint)
    if overwrite:
        store.reset()
    store.open()
    return store


def open_chunked_run(out: Path, outputs: list[str], fingerprint: dict, rows: int, chunk_rows: int,
                     overwrite: bool) -> ChunkedRun:
    """The work folder beside `out`, and which of its chunks of `chunk_rows` rows are still to do."""
    store = open_store_beside(out, outputs, fingerprint, overwrite)
    chunks = [(f"chunk-{i // chunk_rows:06d}", i) for i in range(0, rows, chunk_rows)]
    todo = [(name, start) for name, start in chunks if not store.is_done(name)]
    done_rows = rows - sum(min(chunk_rows, rows - start) for _, start in todo)
    return ChunkedRun(store, chunks, todo, done_rows)
