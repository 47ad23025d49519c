"""`laionet embed --modality image --runner ray`: downloads as Ray Data CPU tasks, the model in an actor pool.

The pieces of `laionet predict --runner ray` (predict/ray_run.py): per pending chunk, `from_items(uid,
image)` -> `download_batch` (fetch and decode; the RGB image travels as lossless PNG) -> `EmbedActor` (loads
the embedder once, then runs `embed_results`, the local runner's own batching). The driver puts the
chunk back in uid order and writes it through the same ShardStore as the local runner, so the work folder,
resume and the output are the same whichever runner ran the chunk.
"""

from __future__ import annotations

import math
import os

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
    try:
        import ray
        import ray.data
    except ImportError:
        raise LaionetError("the ray runner needs Ray: pip install 'laionet[ray]'") from None
    from laionet.embed.images import FAILED, OUTPUT
    from laionet.predict.ray_run import DOWNLOAD_ROWS, download_batch
    from laionet.runners.ray_runner import init_ray, quiet_ray_data

    started_here = init_ray(ray, options.ray_address)
    device = None
    try:
        with quiet_ray_data(ray):
            gpus = int(ray.cluster_resources().get("GPU", 0))
            size, remote_args = (gpus, {"num_gpus": 1}) if gpus else (1, {"num_gpus": 0, "num_cpus": 1})
            for name, chunk in chunks:
                rows = chunk.select(["uid", "image"]).to_pylist()
                data = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / DOWNLOAD_ROWS)))
                downloaded = data.map_batches(download_batch, batch_size=DOWNLOAD_ROWS, batch_format="pyarrow",
                                              fn_args=(options.fetch,))
                embedded = downloaded.map_batches(
                    EmbedActor, batch_size=options.batch_size, batch_format="pyarrow",
                    fn_constructor_args=(options, os.getcwd()),
                    compute=ray.data.ActorPoolStrategy(size=size), **remote_args)
                result, device = _collect(embedded, bar)
                part, failures, stats = result.tables(options.dtype)
                store.write(name, {OUTPUT: part, FAILED: failures}, stats)
    finally:
        if started_here:
            ray.shutdown()
    return device


def _collect(embedded, bar) -> tuple[ChunkResult, str | None]:
    """The chunk back in uid order (the local runner's order), and the device."""
    parts = []
    for part in embedded.iter_batches(batch_format="pyarrow", batch_size=None):
        errors = [e for e in part.column("run_error").to_pylist() if e]
        if errors:
            raise LaionetError(errors[0])
        if part.num_rows:
            parts.append(part)
            if bar is not None:
                bar.update(part.num_rows)
    table = pa.concat_tables(parts).sort_by("uid") if parts else EMBEDDED.empty_table()
    dim = int(table.column("dim")[0].as_py()) if table.num_rows else 0
    vectors = np.zeros((table.num_rows, dim), dtype=np.float32)
    for row, values in enumerate(table.column("embedding").to_pylist()):
        if values is not None:
            vectors[row] = values
    device = table.column("device")[0].as_py() if table.num_rows else None
    return ChunkResult(table.column("uid").to_numpy().astype(np.int64), table.column("status").to_pylist(),
                       table.column("error").to_pylist(), vectors), device

