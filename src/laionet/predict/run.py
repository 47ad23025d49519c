"""`laionet predict`: several classifiers over one stream of images, to `predictions.parquet`.

Each image is fetched and decoded once (`laionet.fetch.iter_images`: local paths and URLs), then every
model applies its own transform and runs on batches of its own. Rows whose image failed keep the fetch
status and error and get no prediction (the original silently dropped them, spec §5.1, §11.7).

Work goes in chunks of rows, in uid order; a finished chunk's predictions are kept in a work folder
beside the output, so a rerun of the same command skips them (spec §5.2's resume, without the CSVs).
The output is one row per input row and model, sorted by (model, uid).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.predict.datasets import is_dataset_spec, load_dataset
from laionet.predict.models import Classifier, check_classifier, load_classifier, read_wnid_list

TOP_K = 5
SCHEMA = pa.schema([("uid", pa.int64()), ("model", pa.string()), ("top5", pa.list_(pa.string())),
                    ("status", pa.string()), ("error", pa.string())])
IMAGE_CANDIDATES = ("URL", "url", "image", "path")
OUTPUT = "predictions"
# the fetch settings that change what a run returns (not only how fast): part of every image run's fingerprint
_RESULT_FETCH_SETTINGS = ("convert_non_rgb", "min_size", "max_pixels", "max_bytes", "respect_noai")


def fetch_fingerprint(fetch) -> dict:
    """The settings of a FetchConfig (None: the defaults' names with None) that change what is returned."""
    return {name: getattr(fetch, name, None) for name in _RESULT_FETCH_SETTINGS}


@dataclass(frozen=True)
class ModelRequest:
    spec: str
    checkpoint: str | None = None
    head_synsets: str | None = None


@dataclass(frozen=True)
class PredictOptions:
    models: tuple[ModelRequest, ...]
    batch_size: int = 32
    device: str | None = None
    precision: str = "auto"
    restrict_to: str | None = None  # "imagenet-1k" or a file of wnids: rank only those classes
    chunk_rows: int = 10_000  # rows per resumable chunk
    labels: str | None = None  # imagenet-val ground truth / imagenet-v2 class_info.json
    image_col: str | None = None  # parquet input: the image column (default URL, url, image or path)
    fetch: object | None = None  # a laionet.fetch.FetchConfig (default: its defaults)
    progress: bool = True
    overwrite: bool = False
    runner: str = "local"  # or "ray": downloads as Ray tasks, models in a Ray actor pool (predict/ray_run.py)
    ray_address: str | None = None


def read_unique_items(dataset: str, labels: str | None, image_col: str | None) -> pa.Table:
    """`read_items`, sorted by uid, refusing a dataset whose uids repeat (one output row per image)."""
    items = read_items(dataset, labels, image_col).sort_by("uid")
    if pc.count_distinct(items.column("uid")).as_py() != items.num_rows:
        raise LaionetError(f"{dataset}: uids are not unique")
    return items


def read_items(dataset: str, labels: str | None = None, image_col: str | None = None) -> pa.Table:
    """`uid`, `image` (and `wnid`, `key` for local datasets) of a `KIND:DIR` spec or a parquet file."""
    if is_dataset_spec(dataset):
        return load_dataset(dataset, labels)
    path = Path(dataset).expanduser()
    if not path.is_file():
        raise LaionetError(f"dataset not found: {dataset} (a parquet file, or folder:DIR, imagenet-val:DIR, "
                           f"imagenet-v2:DIR)")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise LaionetError(f"cannot read {dataset} as parquet: {str(exc).splitlines()[0]}") from exc
    image_col = image_col or next((name for name in IMAGE_CANDIDATES if name in names), None)
    if "uid" not in names or image_col not in names:
        missing = "uid" if "uid" not in names else image_col or "an image column (URL, url, image or path)"
        raise LaionetError(f"{dataset}: no column {missing}; it has {', '.join(names)}")
    columns = ["uid", image_col] + [name for name in ("wnid",) if name in names]
    table = pq.read_table(path, columns=columns).rename_columns(["uid", "image"] + columns[2:])
    images = [_resolve_image(value, path.parent) for value in table.column("image").to_pylist()]
    return table.set_column(1, "image", pa.array(images, pa.string())).cast(
        pa.schema([("uid", pa.int64()), ("image", pa.string())] + [f for f in table.schema if f.name == "wnid"]))


def _resolve_image(value: str | None, base: Path) -> str | None:
    """Relative local paths in a parquet are relative to the parquet's folder."""
    if not value or "://" in value or Path(value).is_absolute():
        return value
    return str(base / value)


def check_models(options: PredictOptions) -> None:
    if not options.models:
        raise LaionetError("no model given: add --model SPEC (timm:NAME or hf:NAME_OR_PATH)")
    if options.batch_size < 1 or options.chunk_rows < 1:
        raise LaionetError("--batch-size and --chunk-rows must be at least 1")
    if options.runner not in ("local", "ray"):
        raise LaionetError(f"unknown runner {options.runner!r}: use local or ray")
    for request in options.models:
        check_classifier(request.spec, request.checkpoint, options.precision, request.head_synsets)


def restriction(restrict_to: str | None) -> frozenset | None:
    if restrict_to is None:
        return None
    if restrict_to in ("imagenet-1k",):
        from laionet.vocab.tables import class_list

        return frozenset(class_list(restrict_to))
    if not Path(restrict_to).expanduser().is_file():
        raise LaionetError(f"--restrict-to: use imagenet-1k or a file of wnids; not found: {restrict_to}")
    return frozenset(read_wnid_list(restrict_to))


def predict_dataset(dataset: str, out: str | Path, options: PredictOptions,
                    save_dataset: str | Path | None = None) -> dict:
    """Predict every row of `dataset` with every model; write `out` and return the run's summary."""
    from laionet.io.atomic import atomic_path
    from laionet.io.shards import open_chunked_run
    from laionet.progress import Progress

    started = time.perf_counter()
    out = Path(out)
    check_models(options)
    restrict = restriction(options.restrict_to)
    items = read_unique_items(dataset, options.labels, options.image_col)
    if save_dataset:
        with atomic_path(save_dataset) as tmp:
            pq.write_table(items, tmp)

    fingerprint = _fingerprint(dataset, items, options)
    chunked = open_chunked_run(out, [OUTPUT], fingerprint, items.num_rows, options.chunk_rows, options.overwrite)
    store, todo, done_rows = chunked.store, chunked.todo, chunked.done_rows

    names = [parse_label(r.spec) for r in options.models]
    if len(set(names)) != len(names):
        raise LaionetError(f"two models would share the name in the model column: {', '.join(names)}")
    classifiers = [load_classifier(r.spec, options.device, r.checkpoint, options.precision, r.head_synsets)
                   for r in options.models] if todo and options.runner == "local" else []
    device = classifiers[0].device if classifiers else None
    bar = Progress("predict", items.num_rows, initial=done_rows, enabled=options.progress, unit="images")
    work_started = time.perf_counter()
    try:
        if options.runner == "ray" and todo:
            from laionet.predict.ray_run import predict_chunks_ray

            device = predict_chunks_ray([(name, items.slice(start, options.chunk_rows)) for name, start in todo],
                                        store, options, restrict, bar)
        else:
            for name, start in todo:
                chunk = items.slice(start, options.chunk_rows)
                table, stats = predict_chunk(chunk, classifiers, options, restrict, bar)
                store.write(name, {OUTPUT: table}, stats)
    finally:
        bar.close()
    work_seconds = time.perf_counter() - work_started

    rows = _write_sorted(store, names, out)
    info = _summary(out, items, names, options)
    store.reset()
    images_done = items.num_rows - done_rows
    info.update(dataset=dataset, rows_out=rows, models=[str(r.spec) for r in options.models],
                device=device, images_computed=images_done,
                images_per_second=images_done / work_seconds if work_seconds > 0 and images_done else None,
                seconds=time.perf_counter() - started)
    return info


def parse_label(spec: str) -> str:
    from laionet.predict.models import parse_classifier_spec

    return parse_classifier_spec(spec).label


def predict_chunk(chunk: pa.Table, classifiers: list[Classifier], options: PredictOptions,
                  restrict: frozenset | None, bar=None) -> tuple[pa.Table, dict]:
    """Predictions of every model for the rows of `chunk`: a table in SCHEMA, sorted by (model, uid)."""
    uids = chunk.column("uid").to_pylist()
    results = _iter_images(zip(uids, chunk.column("image").to_pylist()), options.fetch)
    return predict_results(uids, results, classifiers, options, restrict, bar)


def predict_results(uids: list[int], results: Iterable, classifiers: list[Classifier], options: PredictOptions,
                    restrict: frozenset | None, bar=None) -> tuple[pa.Table, dict]:
    """`predict_chunk` for fetched images (objects with uid, status, error, image), whoever fetched them."""
    status: dict[int, tuple[str, str | None]] = {}
    model_status: list[dict[int, tuple[str, str]]] = [{} for _ in classifiers]
    tops: list[dict[int, list[str]]] = [{} for _ in classifiers]
    batches: list[list[tuple[int, object]]] = [[] for _ in classifiers]

    def flush(m: int) -> None:
        import torch

        if batches[m]:
            ids, tensors = zip(*batches[m])
            for uid, top in zip(ids, classifiers[m].predict(torch.stack(tensors), TOP_K, restrict)):
                tops[m][uid] = top
            batches[m].clear()

    for result in results:
        status[result.uid] = (result.status, result.error)
        if result.status == "ok":
            for m, classifier in enumerate(classifiers):
                try:
                    batches[m].append((result.uid, classifier.transform(result.image)))
                except Exception as exc:  # one unusual image must not end the run
                    model_status[m][result.uid] = ("transform_error", _one_line(exc))
                if len(batches[m]) >= options.batch_size:
                    flush(m)
        if bar is not None:
            bar.update(1)
    for m in range(len(classifiers)):
        flush(m)

    columns = {name: [] for name in SCHEMA.names}
    for m, classifier in enumerate(classifiers):
        for uid in uids:
            code, error = model_status[m].get(uid) or status.get(uid, ("internal_error", "no fetch result"))
            columns["uid"].append(uid)
            columns["model"].append(classifier.name)
            columns["top5"].append(tops[m].get(uid) if code == "ok" else None)
            columns["status"].append(code)
            columns["error"].append(error)
    counts = Counter(code for code, _ in status.values())
    return pa.table(columns, schema=SCHEMA), {"rows": len(uids), "status": dict(counts)}


def _iter_images(items: Iterable[tuple[int, str]], config) -> Iterator:
    """laionet.fetch when installed (local paths and URLs); else local files only."""
    try:
        from laionet.fetch import FetchConfig, iter_images
    except ImportError:
        yield from _iter_local_images(items)
        return
    yield from iter_images(items, config or FetchConfig())


@dataclass
class _LocalResult:
    uid: int
    source: str
    status: str
    error: str | None
    image: object | None


def _iter_local_images(items: Iterable[tuple[int, str]]) -> Iterator[_LocalResult]:
    """Local files without laionet.fetch's dependencies (aiohttp): decode and convert to RGB."""
    from PIL import Image

    for uid, source in items:
        if source and "://" in source:
            raise LaionetError("images from URLs need laionet.fetch: pip install 'laionet[images]'")
        try:
            with Image.open(source) as image:
                yield _LocalResult(uid, source, "ok", None, image.convert("RGB"))
        except FileNotFoundError as exc:
            yield _LocalResult(uid, source, "missing_file", _one_line(exc), None)
        except Exception as exc:
            yield _LocalResult(uid, source, "decode_error", _one_line(exc), None)


def _write_sorted(store, names: list[str], out: Path) -> int:
    """The chunks' predictions sorted by (model, uid): model by model, each sorted by uid."""
    import pyarrow.dataset as ds

    from laionet.io.atomic import atomic_path

    parts = ds.dataset(store.workdir / OUTPUT, format="parquet", schema=SCHEMA)
    rows = 0
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for name in sorted(set(names)):
            table = parts.to_table(filter=pc.field("model") == name).sort_by("uid")
            writer.write_table(table)
            rows += table.num_rows
    return rows


def _summary(out: Path, items: pa.Table, names: list[str], options: PredictOptions) -> dict:
    """Status counts per model and, when the dataset carries labels, each model's top-1 / top-5 accuracy."""
    predictions = pq.read_table(out)
    info: dict = {"rows_in": items.num_rows, "status": {}, "accuracy": {}}
    truth = dict(zip(items.column("uid").to_pylist(), items.column("wnid").to_pylist())) \
        if "wnid" in items.column_names else None
    for name in dict.fromkeys(names):
        part = predictions.filter(pc.field("model") == name)
        info["status"][name] = dict(Counter(part.column("status").to_pylist()))
        if truth:
            tops = part.column("top5").to_pylist()
            labels = [truth[uid] for uid in part.column("uid").to_pylist()]
            info["accuracy"][name] = {
                "top1": sum(bool(t) and t[0] == y for t, y in zip(tops, labels)) / len(labels),
                "top5": sum(bool(t) and y in t for t, y in zip(tops, labels)) / len(labels),
            }
    return info


def _fingerprint(dataset: str, items: pa.Table, options: PredictOptions) -> dict:
    """What the chunks depend on: a rerun with anything else is refused rather than mixed in."""
    digest = hashlib.sha256()
    for column in ("uid", "image"):
        digest.update(_column_bytes(items, column))
    models = [{"spec": r.spec, "checkpoint": _file_id(r.checkpoint), "head_synsets": _file_id(r.head_synsets)}
              for r in options.models]
    return {"dataset": dataset, "rows": items.num_rows, "items": digest.hexdigest(), "models": models,
            "precision": options.precision, "restrict_to": options.restrict_to, "chunk_rows": options.chunk_rows,
            # only the fetch settings that change which images pass, not how fast they come
            "fetch": fetch_fingerprint(options.fetch)}


def _column_bytes(items: pa.Table, column: str) -> bytes:
    return "\n".join(map(str, items.column(column).to_pylist())).encode("utf-8", "surrogatepass")


def _file_id(path: str | None) -> dict | None:
    if not path:
        return None
    stat = os.stat(Path(path).expanduser())
    return {"path": str(Path(path).expanduser().resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
