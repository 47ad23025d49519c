"""`laionet embed --modality image --runner ray`: downloads as Ray Data CPU tasks, the model in an actor pool.

The pipeline of `laionet predict --runner ray` (`laionet.predict.ray_run.map_image_chunks_ray`: one Ray Data
pipeline per window of a million pending rows, downloads as tasks, images as lossless PNG) with `EmbedActor`
(loads the embedder once per window, then runs `embed_results`, the local runner's own batching). The
driver puts each chunk back in uid order and writes it through the same ShardStore as the local runner, so
the work folder, resume and the output are the same whichever runner ran the chunk.
"""

from __future__ import annotations

import os
from contextlib import closing

import numpy as np
import pyarrow as pa

from laionet.embed.images import ChunkResult, ImageEmbedOptions, embed_results
from laionet.errors import LaionetError

# a chunk's rows as they come back from the actors; `embedding` is null for failed rows
EMBEDDED = pa.schema([("uid", pa.int64()), ("status", pa.string()), ("error", pa.string()),
                      ("embedding", pa.list_(pa.float32())), ("dim", pa.int64()), ("device", pa.string()),
                      ("run_error", pa.string())])


class EmbedActor:
    """A Ray Data actor: loads the embedder once, then embeds each batch of downloaded images."""

    def __init__(self, options: ImageEmbedOptions, cwd: str):
        from laionet.embed.image_encoders import load_image_embedder

        if os.path.isdir(cwd):  # relative model and checkpoint paths resolve as they do in the driver
            os.chdir(cwd)
        self.options, self.embedder, self.error = options, None, ""
        try:
            self.embedder = load_image_embedder(options.encoder, options.device, options.checkpoint,
                                                options.precision)
        except LaionetError as exc:
            self.error = str(exc)  # reported with the first batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        from laionet.predict.ray_run import decoded_results

        if self.error:
            # returned, not raised: Ray drops a raised error's cause on the way to the driver
            return pa.table({name: [self.error if name == "run_error" else None] for name in EMBEDDED.names},
                            schema=EMBEDDED)
        uids = batch.column("uid").to_pylist()
        result = embed_results(uids, decoded_results(batch), self.embedder, self.options.batch_size)
        ok = [s == "ok" for s in result.status]
        n = len(uids)
        return pa.table({"uid": result.uids, "status": result.status, "error": result.error,
                         "embedding": [row.tolist() if good else None for row, good in zip(result.vectors, ok)],
                         "dim": [self.embedder.dim] * n, "device": [self.embedder.device] * n,
                         "run_error": [None] * n}, schema=EMBEDDED)


def embed_chunks_ray(chunks: list[tuple[str, pa.Table]], store, options: ImageEmbedOptions, bar=None) -> str | None:
    """Embed and write each (name, chunk) through `store`; returns the device the model ran on."""
    from laionet.embed.images import FAILED, OUTPUT
    from laionet.predict.ray_run import map_image_chunks_ray

    device = None
    with closing(map_image_chunks_ray(chunks, options, EmbedActor, (options, os.getcwd()), bar)) as mapped:
        for name, parts in mapped:
            result, chunk_device = _collect(parts)
            device = device or chunk_device
            part, failures, stats = result.tables(options.dtype)
            store.write(name, {OUTPUT: part, FAILED: failures}, stats)
    return device


def _collect(parts: list[pa.Table]) -> tuple[ChunkResult, str | None]:
    """The chunk back in uid order (the local runner's order), and the device."""
    table = pa.concat_tables(parts).sort_by("uid") if parts else EMBEDDED.empty_table()
    dim = int(table.column("dim")[0].as_py()) if table.num_rows else 0
    vectors = np.zeros((table.num_rows, dim), dtype=np.float32)
    for row, values in enumerate(table.column("embedding").to_pylist()):
        if values is not None:
            vectors[row] = values
    device = table.column("device")[0].as_py() if table.num_rows else None
    return ChunkResult(table.column("uid").to_numpy().astype(np.int64), table.column("status").to_pylist(),
                       table.column("error").to_pylist(), vectors), device

