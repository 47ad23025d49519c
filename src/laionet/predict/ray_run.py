"""`laionet predict --runner ray`: downloads as Ray Data CPU tasks, the models in a pool of (GPU) actors.

For each pending chunk: `from_items(uid, image)` -> `download_batch` (plain tasks: fetch and decode with
`laionet.fetch.iter_images`, the decoded RGB image travels re-encoded as lossless PNG) -> `PredictActor`
(an actor pool; each actor loads every model once, then runs `predict_results`, the local runner's own
batching and row assembly). The driver collects the chunk and writes it through the same ShardStore as the
local runner, so the work folder, resume and the final file are the same whichever runner ran the chunk.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from contextlib import closing

import pyarrow as pa
import pyarrow.compute as pc

from laionet.errors import LaionetError
from laionet.predict.run import OUTPUT, SCHEMA, PredictOptions, _iter_images, _LocalResult, _one_line, predict_results

DOWNLOAD_ROWS = 256  # rows per download task
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
    with closing(map_image_chunks_ray(chunks, options, PredictActor, (options, restrict, os.getcwd()))) as mapped:
        for name, predicted in mapped:
            table, stats, chunk_device = _collect(predicted, bar)
            device = device or chunk_device
            store.write(name, {OUTPUT: table}, stats)
    return device


def map_image_chunks_ray(chunks: list[tuple[str, pa.Table]], options, actor, actor_args: tuple):
    """Yield (name, Ray dataset) for each (name, chunk of uid and image): the images downloaded in Ray CPU
    tasks, then `actor` (a Ray Data actor class, one per GPU when the cluster has GPUs, else one on a CPU)
    mapped over the downloaded batches of `options.batch_size`. Ray is started (or joined at
    `options.ray_address`) for the loop and stopped after it if it was started here: use it in
    `contextlib.closing` so that happens at once when the caller stops early."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise LaionetError("the ray runner needs Ray: pip install 'laionet[ray]'") from None
    from laionet.runners.ray_runner import init_ray, quiet_ray_data

    started_here = init_ray(ray, options.ray_address)
    try:
        with quiet_ray_data(ray):
            gpus = int(ray.cluster_resources().get("GPU", 0))
            size, remote_args = (gpus, {"num_gpus": 1}) if gpus else (1, {"num_gpus": 0, "num_cpus": 1})
            for name, chunk in chunks:
                rows = chunk.select(["uid", "image"]).to_pylist()
                data = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / DOWNLOAD_ROWS)))
                downloaded = data.map_batches(download_batch, batch_size=DOWNLOAD_ROWS, batch_format="pyarrow",
                                              fn_args=(options.fetch,))
                yield name, downloaded.map_batches(actor, batch_size=options.batch_size, batch_format="pyarrow",
                                                   fn_constructor_args=actor_args,
                                                   compute=ray.data.ActorPoolStrategy(size=size), **remote_args)
    finally:
        if started_here:
            ray.shutdown()


def _collect(predicted, bar) -> tuple[pa.Table, dict, str | None]:
    """The chunk in the local runner's order (models in the given order, then uid), its stats, the device."""
    parts, device = [], None
    for part in predicted.iter_batches(batch_format="pyarrow", batch_size=None):
        errors = [e for e in part.column("run_error").to_pylist() if e]
        if errors:
            raise LaionetError(errors[0])
        if part.num_rows:
            parts.append(part)
            device = device or part.column("device")[0].as_py()
            if bar is not None:
                bar.update(len(set(part.column("uid").to_pylist())))
    table = pa.concat_tables(parts) if parts else PREDICTED.empty_table()
    models = list(dict.fromkeys(table.column("model").to_pylist()))  # each batch lists them in the given order
    order = pa.array([models.index(m) for m in table.column("model").to_pylist()], pa.int32())
    table = table.append_column("_model", order).sort_by([("_model", "ascending"), ("uid", "ascending")])
    first = table.filter(pc.field("_model") == 0)
    stats = {"rows": first.num_rows, "status": dict(Counter(first.column("fetch_status").to_pylist()))}
    return table.select(SCHEMA.names).cast(SCHEMA), stats, device
