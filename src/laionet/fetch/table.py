"""A dataset parquet in, a fetch-status parquet out: `uid, url, status, error, width, height, mode, bytes`.

One output row per input row, sorted by uid. With a webdataset folder the ok images are saved too, and a
rerun into the same folder does not fetch again what its complete shards already hold.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.fetch.config import STATUSES, FetchConfig
from laionet.fetch.engine import iter_images
from laionet.fetch.webdataset import ShardWriter
from laionet.io.atomic import atomic_path
from laionet.io.inputs import open_parquet
from laionet.progress import Progress

URL_CANDIDATES = ("URL", "url", "image", "path")
OUTPUT_SCHEMA = pa.schema([("uid", pa.int64()), ("url", pa.string()), ("status", pa.string()),
                           ("error", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                           ("mode", pa.string()), ("bytes", pa.int64())])


def read_sources(dataset: Path, url_col: str | None, id_col: str | None) -> tuple[np.ndarray, list, str, str]:
    """(uids, urls, url column, uid origin) from the dataset, checked."""
    if not Path(dataset).is_file():
        raise LaionetError(f"{dataset}: no such file")
    parquet = open_parquet(str(dataset))
    names = parquet.schema_arrow.names
    url_col = _pick_column(dataset, names, url_col, URL_CANDIDATES, "url")
    if id_col is None and "uid" in names:
        id_col = "uid"
    elif id_col is not None and id_col not in names:
        raise LaionetError(f"{dataset}: no column {id_col!r} (the id column); columns are: {', '.join(names)}")
    table = parquet.read(columns=[c for c in dict.fromkeys([url_col, id_col]) if c])
    url_type = table.schema.field(url_col).type
    if not (pa.types.is_string(url_type) or pa.types.is_large_string(url_type) or pa.types.is_string_view(url_type)):
        raise LaionetError(f"{dataset}: column {url_col!r} holds {url_type}, not URLs or paths")
    urls = table.column(url_col).to_pylist()
    if id_col is None:
        return np.arange(len(urls), dtype=np.int64), urls, url_col, "row ordinal"
    ids = table.column(id_col)
    if not pa.types.is_integer(ids.type):
        raise LaionetError(f"{dataset}: id column {id_col!r} holds {ids.type}, not integers")
    if ids.null_count:
        raise LaionetError(f"{dataset}: id column {id_col!r} has {ids.null_count} null value(s)")
    return ids.to_numpy().astype(np.int64), urls, url_col, f"column {id_col}"


def _pick_column(dataset, names, given, candidates, what) -> str:
    if given is not None:
        if given not in names:
            raise LaionetError(f"{dataset}: no column {given!r} (the {what} column); columns are: {', '.join(names)}")
        return given
    for name in candidates:
        if name in names:
            return name
    raise LaionetError(f"{dataset}: no {what} column found (tried {', '.join(candidates)}); name it with --{what}-col")


def fetch_table(dataset: Path, out: Path, config: FetchConfig, url_col: str | None = None, id_col: str | None = None,
                save_images: Path | None = None, shard_size: int = 1000, progress: bool = True) -> dict:
    uids, urls, url_col, uid_origin = read_sources(dataset, url_col, id_col)
    n = len(urls)
    columns = {name: [None] * n for name in ("status", "error", "width", "height", "mode", "bytes")}
    writer = ShardWriter(save_images, per_shard=shard_size) if save_images is not None else None
    saved = writer.completed() if writer is not None else {}
    todo = []
    for row, (uid, url) in enumerate(zip(uids.tolist(), urls)):
        record = saved.get(uid)
        if record is not None and record.get("url") == url:  # fetched by an earlier run
            for name in columns:
                columns[name][row] = record.get(name)
        else:
            todo.append((row, url))  # keyed by row, so duplicate uids still get a row each

    start = time.perf_counter()
    bar = Progress("fetch", total=n, initial=n - len(todo), enabled=progress, unit="images")
    try:
        with writer if writer is not None else contextlib.nullcontext():
            for result in iter_images(todo, config):
                row = result.uid
                size = len(result.raw) if result.raw is not None else None
                values = {"status": result.status, "error": result.error, "width": result.width,
                          "height": result.height, "mode": result.mode, "bytes": size}
                for name, value in values.items():
                    columns[name][row] = value
                if writer is not None and result.ok:
                    writer.write(int(uids[row]), result.raw, {"url": result.source, **values})
                bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    table = pa.table({"uid": uids, "url": urls, **columns}, schema=OUTPUT_SCHEMA)
    table = table.take(pc.sort_indices(table, [("uid", "ascending")]))
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    counts = Counter(columns["status"])
    return {"rows": n, "fetched": len(todo), "resumed": n - len(todo), "seconds": round(seconds, 3),
            "url_col": url_col, "uid": uid_origin,
            "counts": {status: counts[status] for status in STATUSES if counts[status]}}
