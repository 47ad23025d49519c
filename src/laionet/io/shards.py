"""Shard outputs and resume.

Each stage writes one parquet file per shard and output name into a work folder, to a temporary name
first and renamed when complete, with the shard's counts in a JSON file beside it. A shard whose files
exist is done: a rerun skips it, so nothing is computed twice, lost or duplicated. The shard files are
concatenated, in shard order, into the stage's outputs while later shards still run (`OrderedConcat`),
or, for outputs too big for one file such as embeddings, renamed into a folder of parts; then the work
folder is removed. The work folder remembers what it was started with; a rerun with other inputs or
parameters is refused rather than mixed in.
"""

from __future__ import annotations

import errno
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

    def concatenate(self, output: str, shard_names: list[str], path: str | Path, schema: pa.Schema) -> int:
        """Concatenate the shard files of `output`, in order, into one parquet file. Returns its row count."""
        return self.concatenation(output, shard_names, path, schema).finish()

    def concatenation(self, output: str, shard_names: list[str], path: str | Path,
                      schema: pa.Schema) -> OrderedConcat:
        """An `OrderedConcat` of the shard files of `output` into `path`, fed shard by shard as they finish.
        The growing file lives in the work folder, so a killed run leaves nothing beside `path`."""
        return OrderedConcat([self._file(output, name) for name in shard_names], path, schema,
                             self.workdir / f"{output}.concat.parquet")

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


class OrderedConcat:
    """Writes a list of shard files into one parquet file, in list order, while later shards still run.

    `ready(i)` says that file i is complete; every file from the first not yet written up to the first not
    ready is then appended, so the writing overlaps the work on the remaining shards instead of following
    it. `finish()` appends the rest and moves the file into place; until then it is written at `tmp` (in
    the work folder), and `abort()` (or an error in `finish`) removes it: a reader never sees half an
    output, and a killed run leaves nothing beside it.
    """

    ROW_GROUP_ROWS = 128 * 1024

    def __init__(self, files: list[Path], path: str | Path, schema: pa.Schema, tmp: Path):
        self.files, self.path, self.schema, self.tmp = files, Path(path), schema, tmp
        self.rows = 0
        self._ready: set[int] = set()
        self._next = 0  # the first file not yet written
        self._writer: pq.ParquetWriter | None = None

    def ready(self, index: int, write: bool = True) -> None:
        """File `index` is complete; with `write`, append what can be appended now."""
        self._ready.add(index)
        if write:
            self._append_ready()

    def finish(self) -> int:
        """Append every remaining file (all must be complete), move the result into place; its row count."""
        try:
            self._ready.update(range(len(self.files)))
            self._append_ready()
            self._open()  # an output with no rows is still a file, with the schema
            writer, self._writer = self._writer, None
            writer.close()
            _move_into_place(self.tmp, self.path)
            return self.rows
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the partial file (a no-op after `finish`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.tmp.unlink(missing_ok=True)

    def _open(self) -> None:
        if self._writer is None:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.tmp, self.schema)

    def _append_ready(self) -> None:
        while self._next < len(self.files) and self._next in self._ready:
            table = pq.ParquetFile(self.files[self._next]).read()  # no pyarrow.dataset (pandas) import
            if table.num_rows:
                self._open()
                self._writer.write_table(table.cast(self.schema), row_group_size=self.ROW_GROUP_ROWS)
                self.rows += table.num_rows
            self._next += 1


def _move_into_place(source: Path, path: Path) -> None:
    """Rename `source` onto `path`; across filesystems, copy it beside `path` first, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
        source.unlink()


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
