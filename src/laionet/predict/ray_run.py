"""`laionet predict --runner ray`: downloads as Ray Data CPU tasks, the models in a pool of (GPU) actors.

The pending chunks go through one Ray Data pipeline per window of a million rows (`map_image_chunks_ray`):
their (uid, image) rows -> `download_batch` (plain tasks: fetch and decode with `laionet.fetch.iter_images`,
the decoded RGB image travels re-encoded as lossless PNG) -> `PredictActor` (an actor pool; each actor
loads every model once per window, then runs `predict_results`, the local runner's own batching and row
assembly). The driver gathers each
chunk's rows as they come back and writes a chunk through the same ShardStore as the local runner as soon as
it is complete, so the work folder, resume and the final file are the same whichever runner ran the chunk.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from contextlib import closing

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from laionet.errors import LaionetError
from laionet.predict.run import OUTPUT, SCHEMA, PredictOptions, _iter_images, _LocalResult, _one_line, predict_results

DOWNLOAD_ROWS = 256  # rows per download task
# rows handed to one Ray Data pipeline: what sits in the object store at a time, however many images are
# pending; the actors (and their models) are started once per window
WINDOW_ROWS = 1_000_000
DOWNLOADED = pa.schema([("uid", pa.int64()), ("status", pa.string()), ("error", pa.string()),
                        ("png", pa.binary())])
# the predictions plus what the driver needs: the fetch status (the chunk's stats), the device, a LaionetError
PREDICTED = pa.schema(list(SCHEMA) + [("fetch_status", pa.string()), ("device", pa.string()),
                                      ("run_error", pa.string())])


def download_batch(batch: pa.Table, fetch) -> pa.Table:
    """Fetch and decode the rows' images: uid, status, error and the RGB image as PNG (null unless ok)."""
    uids = batch.column("uid").to_pylist()
    got = {}
    for result in _iter_images(zip(uids, batch.column("image").to_pylist()), fetch):
        got[result.uid] = (result.status, result.error, _png(result.image) if result.status == "ok" else None)
    rows = [got.get(uid, ("internal_error", "no fetch result", None)) for uid in uids]
    return pa.table([uids] + [list(column) for column in zip(*rows)] if rows else [[], [], [], []],
                    schema=DOWNLOADED)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless: the actor sees the very same pixels
    return buffer.getvalue()


def decoded_results(batch: pa.Table) -> list[_LocalResult]:
    """A downloaded batch (DOWNLOADED) back as fetch results with decoded RGB images, for an actor."""
    from PIL import Image

    results = []
    for uid, code, error, data in zip(batch.column("uid").to_pylist(), batch.column("status").to_pylist(),
                                      batch.column("error").to_pylist(), batch.column("png").to_pylist()):
        image = None
        if code == "ok":
            try:
                image = Image.open(io.BytesIO(data)).convert("RGB")
            except Exception as exc:
                code, error = "decode_error", _one_line(exc)
        results.append(_LocalResult(uid, "", code, error, image))
    return results


class PredictActor:
    """A Ray Data actor: loads every model once, then predicts each batch of downloaded images."""

    def __init__(self, options: PredictOptions, restrict: frozenset | None, cwd: str):
        from laionet.predict.models import load_classifier

        if os.path.isdir(cwd):  # relative model and checkpoint paths resolve as they do in the driver
            os.chdir(cwd)
        self.options, self.restrict = options, restrict
        self.classifiers, self.error = [], ""
        try:
            self.classifiers = [load_classifier(r.spec, options.device, r.checkpoint, options.precision,
                                                r.head_synsets) for r in options.models]
        except LaionetError as exc:
            self.error = str(exc)  # reported with the first batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        uids = batch.column("uid").to_pylist()
        fetched = dict(zip(uids, batch.column("status").to_pylist()))
        results = decoded_results(batch)
        try:
            if self.error:
                raise LaionetError(self.error)
            table, _ = predict_results(uids, results, self.classifiers, self.options, self.restrict)
        except LaionetError as exc:
            # returned, not raised: Ray drops a raised error's cause on the way to the driver
            return pa.table({name: [str(exc) if name == "run_error" else None] for name in PREDICTED.names},
                            schema=PREDICTED)
        n = table.num_rows
        return pa.table(table.columns + [[fetched[uid] for uid in table.column("uid").to_pylist()],
                                         [self.classifiers[0].device] * n, [None] * n], schema=PREDICTED)


def predict_chunks_ray(chunks: list[tuple[str, pa.Table]], store, options: PredictOptions,
                       restrict: frozenset | None, bar=None) -> str | None:
    """Predict and write each (name, chunk) through `store`; the device the models ran on."""
    device = None
    mapped = map_image_chunks_ray(chunks, options, PredictActor, (options, restrict, os.getcwd()), bar)
    with closing(mapped):
        for name, parts in mapped:
            table, stats, chunk_device = _collect(parts)
            device = device or chunk_device
            store.write(name, {OUTPUT: table}, stats)
    return device


def map_image_chunks_ray(chunks: list[tuple[str, pa.Table]], options, actor, actor_args: tuple, bar=None):
    """Yield (name, output tables) for each (name, chunk of uid and image), as each chunk completes.

    One Ray Data pipeline per window of WINDOW_ROWS rows of chunks, so the models load once per actor and
    window, not once per chunk, and the object store holds one window's rows at a time: the
    images are downloaded in Ray CPU tasks (DOWNLOAD_ROWS rows each), then `actor` (a Ray Data actor class
    returning rows with `uid` and `run_error`; one actor per GPU when the cluster has GPUs, else one on a
    CPU) runs over the downloaded batches of `options.batch_size`. An output row belongs to the chunk of its
    uid; a chunk is complete when all its uids are back. Ray is started (or joined at
    `options.ray_address`) for the loop and stopped after it if it was started here: use it in
    `contextlib.closing` so that happens at once when the caller stops early."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise LaionetError("the ray runner needs Ray: pip install 'laionet[ray]'") from None
    from laionet.runners.ray_runner import init_ray, quiet_ray_data

    if not chunks:
        return
    inputs = [chunk.select(["uid", "image"]) for _, chunk in chunks]
    chunk_of = _ChunkOfUid([table.column("uid").to_numpy() for table in inputs])
    waiting = [table.num_rows for table in inputs]  # uids not yet back, per chunk
    collected: list[list[pa.Table]] = [[] for _ in chunks]
    for index, rows in enumerate(waiting):
        if rows == 0:
            yield chunks[index][0], []
    started_here = init_ray(ray, options.ray_address)
    try:
        with quiet_ray_data(ray):
            gpus = int(ray.cluster_resources().get("GPU", 0))
            size, remote_args = (gpus, {"num_gpus": 1}) if gpus else (1, {"num_gpus": 0, "num_cpus": 1})
            for window in _windows([table.num_rows for table in inputs], WINDOW_ROWS):
                blocks = [inputs[index].slice(start, DOWNLOAD_ROWS) for index in window
                          for start in range(0, inputs[index].num_rows, DOWNLOAD_ROWS)]
                if not blocks:
                    continue
                downloaded = ray.data.from_arrow(blocks).map_batches(
                    download_batch, batch_size=DOWNLOAD_ROWS, batch_format="pyarrow", fn_args=(options.fetch,))
                mapped = downloaded.map_batches(actor, batch_size=options.batch_size, batch_format="pyarrow",
                                                fn_constructor_args=actor_args,
                                                compute=ray.data.ActorPoolStrategy(size=size), **remote_args)
                for part in mapped.iter_batches(batch_format="pyarrow", batch_size=None):
                    errors = [e for e in part.column("run_error").to_pylist() if e]
                    if errors:
                        raise LaionetError(errors[0])
                    for index, piece in chunk_of.split(part):
                        collected[index].append(piece)
                        uids = len(set(piece.column("uid").to_pylist()))  # predict: one row per model and uid
                        waiting[index] -= uids
                        if bar is not None:
                            bar.update(uids)
                        if waiting[index] == 0:
                            yield chunks[index][0], collected[index]
                            collected[index] = []
    finally:
        if started_here:
            ray.shutdown()


def _windows(rows_per_chunk: list[int], window_rows: int) -> list[list[int]]:
    """Consecutive chunks grouped into windows of about `window_rows` rows (at least one chunk each)."""
    windows: list[list[int]] = [[]]
    rows = 0
    for index, chunk_rows in enumerate(rows_per_chunk):
        if windows[-1] and rows + chunk_rows > window_rows:
            windows.append([])
            rows = 0
        windows[-1].append(index)
        rows += chunk_rows
    return windows


class _ChunkOfUid:
    """Which chunk a uid is in (uids are unique across the chunks)."""

    def __init__(self, uids_per_chunk: list[np.ndarray]):
        uids = np.concatenate(uids_per_chunk).astype(np.int64)
        chunk = np.repeat(np.arange(len(uids_per_chunk)), [len(u) for u in uids_per_chunk])
        order = np.argsort(uids, kind="stable")
        self.uids, self.chunk = uids[order], chunk[order]

    def split(self, part: pa.Table) -> list[tuple[int, pa.Table]]:
        """`part`'s rows grouped by chunk, in chunk order."""
        if part.num_rows == 0:
            return []
        chunk = self.chunk[np.searchsorted(self.uids, part.column("uid").to_numpy().astype(np.int64))]
        return [(int(index), part.filter(pa.array(chunk == index))) for index in np.unique(chunk)]


def _collect(parts: list[pa.Table]) -> tuple[pa.Table, dict, str | None]:
    """The chunk in the local runner's order (models in the given order, then uid), its stats, the device."""
    table = pa.concat_tables(parts) if parts else PREDICTED.empty_table()
    device = table.column("device")[0].as_py() if table.num_rows else None
    models = list(dict.fromkeys(table.column("model").to_pylist()))  # each batch lists them in the given order
    order = pa.array([models.index(m) for m in table.column("model").to_pylist()], pa.int32())
    table = table.append_column("_model", order).sort_by([("_model", "ascending"), ("uid", "ascending")])
    first = table.filter(pc.field("_model") == 0)
    stats = {"rows": first.num_rows, "status": dict(Counter(first.column("fetch_status").to_pylist()))}
    return table.select(SCHEMA.names).cast(SCHEMA), stats, device
