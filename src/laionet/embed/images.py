"""Image embeddings: the image side of `laionet embed`.

The dataset is read as `laionet predict` reads it (a parquet of uids and URLs or paths, folder:DIR,
imagenet-val:DIR, imagenet-v2:DIR), sorted by uid, and embedded in chunks of `chunk_rows` rows: each image
is fetched and decoded once (`laionet.fetch`, streamed), transformed, batched and encoded. A finished
chunk's part waits in the work folder beside the output, so a rerun skips it; when all are done the parts
are renamed into the output folder in chunk order. Images that fail (fetch, decode, transform, model) are
not embedded: their uid, status and error go to `failures.parquet`, their counts to the manifest.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from laionet.embed.store import embedding_table
from laionet.errors import LaionetError

OUTPUT = "embeddings"
FAILED = "failures"
FAILURE_SCHEMA = pa.schema([("uid", pa.int64()), ("status", pa.string()), ("error", pa.string())])


@dataclass(frozen=True)
class ImageEmbedOptions:
    encoder: str
    checkpoint: str | None = None
    batch_size: int = 64
    device: str | None = None
    precision: str = "auto"
    dtype: str = "float32"
    chunk_rows: int = 10_000  # rows per chunk: the unit of resume, and one part of the output
    labels: str | None = None
    image_col: str | None = None
    fetch: object | None = None  # a laionet.fetch.FetchConfig (default: its defaults)
    progress: bool = True
    overwrite: bool = False
    runner: str = "local"  # or "ray": downloads as Ray tasks, the model in a Ray actor pool (ray_images.py)
    ray_address: str | None = None


@dataclass
class ChunkResult:
    """What became of each row of a chunk, in uid order; failed rows have zero vectors."""

    uids: np.ndarray
    status: list[str]
    error: list[str | None]
    vectors: np.ndarray  # (rows, dim) float32, unit rows where status is "ok"

    def tables(self, dtype: str) -> tuple[pa.Table, pa.Table, dict]:
        """The chunk's part (ok rows), its failures, and its stats."""
        ok = np.array([s == "ok" for s in self.status], dtype=bool)
        part = embedding_table(self.uids[ok], self.vectors[ok], dtype)
        failed = ~ok
        failures = pa.table({"uid": self.uids[failed],
                             "status": [s for s, f in zip(self.status, failed) if f],
                             "error": [e for e, f in zip(self.error, failed) if f]}, schema=FAILURE_SCHEMA)
        return part, failures, {"rows": len(self.uids), "embedded": int(ok.sum()),
                                "status": dict(Counter(self.status))}


def embed_results(uids: list[int], results: Iterable, embedder, batch_size: int, bar=None) -> ChunkResult:
    """Embed fetched images (objects with uid, status, error, image), whoever fetched them."""
    from laionet.predict.batches import encoded_batches

    status: dict[int, tuple[str, str | None]] = {}
    vectors: dict[int, np.ndarray] = {}
    for ids, rows in encoded_batches(results, embedder.transform, embedder.encode, batch_size, status, bar):
        vectors.update(zip(ids, rows))
    matrix = np.zeros((len(uids), embedder.dim), dtype=np.float32)
    codes, errors = [], []
    for row, uid in enumerate(uids):
        code, error = status.get(uid, ("internal_error", "no fetch result"))
        if code == "ok":
            matrix[row] = vectors[uid]
        codes.append(code)
        errors.append(error)
    return ChunkResult(np.asarray(uids, dtype=np.int64), codes, errors, matrix)


def embed_chunk(chunk: pa.Table, embedder, options: ImageEmbedOptions, bar=None) -> ChunkResult:
    from laionet.predict.run import _iter_images

    uids = chunk.column("uid").to_pylist()
    results = _iter_images(zip(uids, chunk.column("image").to_pylist()), options.fetch)
    return embed_results(uids, results, embedder, options.batch_size, bar)


def embed_images(dataset: str, out: Path, options: ImageEmbedOptions) -> dict:
    """Embed every image of `dataset` into the folder `out`; returns the summary for the manifest."""
    from laionet.embed.folder import FAILURES, prepare_output
    from laionet.embed.image_encoders import check_image_embedder, load_image_embedder
    from laionet.io.shards import ShardStore, open_chunked_run, workdir_beside
    from laionet.predict.run import read_unique_items
    from laionet.progress import Progress

    started = time.perf_counter()
    out = Path(out)
    if options.batch_size < 1 or options.chunk_rows < 1:
        raise LaionetError("--batch-size and --chunk-rows must be at least 1")
    check_image_embedder(options.encoder, options.checkpoint, options.precision)
    items = read_unique_items(dataset, options.labels, options.image_col)
    workdir = workdir_beside(out)
    if options.overwrite:
        ShardStore(workdir, [], {}).reset()
    prepare_output(out, workdir, options.overwrite)
    chunked = open_chunked_run(out, [OUTPUT, FAILED], _fingerprint(dataset, items, options), items.num_rows,
                               options.chunk_rows, options.overwrite)
    store, todo = chunked.store, chunked.todo

    embedder = load_image_embedder(options.encoder, options.device, options.checkpoint, options.precision) \
        if todo and options.runner == "local" else None
    device = embedder.device if embedder is not None else None
    bar = Progress("embed", items.num_rows, initial=chunked.done_rows, enabled=options.progress, unit="images")
    work_started = time.perf_counter()
    try:
        if options.runner == "ray" and todo:
            from laionet.embed.ray_images import embed_chunks_ray

            device = embed_chunks_ray([(name, items.slice(start, options.chunk_rows)) for name, start in todo],
                                      store, options, bar)
        else:
            for name, start in todo:
                part, failures, stats = embed_chunk(items.slice(start, options.chunk_rows), embedder, options,
                                                    bar).tables(options.dtype)
                store.write(name, {OUTPUT: part, FAILED: failures}, stats)
    finally:
        bar.close()
    work_seconds = time.perf_counter() - work_started

    part_rows = store.publish_parts(OUTPUT, chunked.names, out)
    failed = store.concatenate(FAILED, chunked.names, out / FAILURES, FAILURE_SCHEMA)
    status: Counter = Counter()
    for name in chunked.names:
        status.update(store.stats(name)["status"])
    store.reset()
    computed = items.num_rows - chunked.done_rows
    return {"encoder": options.encoder, "modality": "image", "dataset": dataset, "rows_in": items.num_rows,
            "rows": sum(part_rows), "parts": len(part_rows), "failed": failed, "status": dict(status),
            "device": device or "resumed", "runner": options.runner, "chunks_resumed": len(chunked.chunks) - len(todo),
            "images_per_second": round(computed / work_seconds, 2) if computed and work_seconds > 0 else None,
            "seconds": round(time.perf_counter() - started, 3)}


def _fingerprint(dataset: str, items: pa.Table, options: ImageEmbedOptions) -> dict:
    """What the chunks depend on: a rerun with anything else is refused rather than mixed in."""
    from laionet.predict.run import _column_bytes, _file_id, fetch_fingerprint

    digest = hashlib.sha256()
    for column in ("uid", "image"):
        digest.update(_column_bytes(items, column))
    return {"stage": "embed-image", "dataset": dataset, "rows": items.num_rows, "items": digest.hexdigest(),
            "encoder": options.encoder, "checkpoint": _file_id(options.checkpoint), "precision": options.precision,
            "dtype": options.dtype, "chunk_rows": options.chunk_rows,
            "fetch": fetch_fingerprint(options.fetch)}
