"""`laionet zeroshot`: CLIP zero-shot classification over a vocabulary, to `predictions.parquet` (spec §7.4).

Every class query of the vocabulary (e.g. NAME_DEF, "{name} which is {definition}") is embedded once with
the CLIP text tower; every image is embedded with the image tower as it streams in; the top-5 wnids by
cosine (dot product of unit vectors) are written in `laionet predict`'s format (uid, model, top5, status,
error), so `laionet evaluate` scores it. Images that fail keep their fetch status and get a null top5, so
they are not counted as errors (the original's NaN bug, spec §7.1).

With `similarity_col`, also `image_to_query_similarity`: the cosine of the image with its own row's class
query (the dataset's `wnid`), the original's `image_to_name_def_wnid_similarity` (spec §9.5: CLIP
logits_per_image diagonal / 100); null where the image failed or the row's wnid is not in the vocabulary.

Streaming, chunking, resume and the dataset inputs are `laionet.predict`'s.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.predict.run import (
    SCHEMA as PREDICTIONS_SCHEMA,
)
from laionet.predict.run import (
    TOP_K,
    _column_bytes,
    _file_id,
    _iter_images,
    _summary,
    fetch_fingerprint,
    read_unique_items,
)

DEFAULT_ENCODER = "hf-clip:openai/clip-vit-base-patch32"
SIMILARITY_COL = "image_to_query_similarity"
OUTPUT = "predictions"


@dataclass(frozen=True)
class ZeroshotOptions:
    encoder: str = DEFAULT_ENCODER
    checkpoint: str | None = None
    query: str = "name_def"  # the vocabulary column holding each class's text
    similarity_col: bool = False
    batch_size: int = 32
    device: str | None = None
    precision: str = "auto"
    chunk_rows: int = 10_000
    labels: str | None = None
    image_col: str | None = None
    fetch: object | None = None
    progress: bool = True
    overwrite: bool = False


def output_schema(similarity_col: bool) -> pa.Schema:
    if similarity_col:
        return PREDICTIONS_SCHEMA.append(pa.field(SIMILARITY_COL, pa.float32()))
    return PREDICTIONS_SCHEMA


def read_queries(vocab: str | Path, query: str) -> tuple[list[str], list[str]]:
    """(wnids, query texts) of a vocabulary parquet, in its row order."""
    from laionet.vocab.build import read_vocab

    table = read_vocab(vocab)
    if query not in table.column_names:
        raise LaionetError(f"{vocab}: no query column '{query}'; it has {', '.join(table.column_names)}")
    wnids = table.column("wnid").to_pylist()
    texts = table.column(query).to_pylist()
    if not wnids:
        raise LaionetError(f"{vocab}: the vocabulary is empty")
    bad = [w for w, t in zip(wnids, texts) if not w or not isinstance(t, str) or not t.strip()]
    if bad:
        raise LaionetError(f"{vocab}: {len(bad)} classes have no '{query}' text or no wnid, e.g. {bad[0]}")
    if len(set(wnids)) != len(wnids):
        raise LaionetError(f"{vocab}: wnids are not unique")
    return wnids, texts


def zeroshot_dataset(dataset: str, vocab: str | Path, out: str | Path, options: ZeroshotOptions,
                     save_dataset: str | Path | None = None) -> dict:
    """Zero-shot top-5 for every row of `dataset` against the classes of `vocab`; write `out`, return a summary."""
    from laionet.io.atomic import atomic_path
    from laionet.io.shards import open_chunked_run
    from laionet.progress import Progress
    from laionet.score.encoders import load_text_encoder
    from laionet.zeroshot.image_encoders import check_image_encoder, load_image_encoder

    started = time.perf_counter()
    out = Path(out)
    if options.batch_size < 1 or options.chunk_rows < 1:
        raise LaionetError("--batch-size and --chunk-rows must be at least 1")
    spec = check_image_encoder(options.encoder, options.checkpoint, options.precision)
    wnids, texts = read_queries(vocab, options.query)
    items = read_unique_items(dataset, options.labels, options.image_col)
    if options.similarity_col and "wnid" not in items.column_names:
        raise LaionetError(f"{dataset}: --similarity-col needs each row's class, and the dataset has no wnid column")
    if save_dataset:
        with atomic_path(save_dataset) as tmp:
            pq.write_table(items, tmp)

    schema = output_schema(options.similarity_col)
    fingerprint = _fingerprint(dataset, items, wnids, texts, options)
    chunked = open_chunked_run(out, [OUTPUT], fingerprint, items.num_rows, options.chunk_rows, options.overwrite)
    store, chunks, todo, done_rows = chunked.store, chunked.chunks, chunked.todo, chunked.done_rows

    device = None
    query_seconds = 0.0
    if todo:
        image_encoder = load_image_encoder(spec, options.device, options.checkpoint, options.precision)
        text_encoder = load_text_encoder(spec, image_encoder.device, options.checkpoint, options.precision)
        device = image_encoder.device
        if text_encoder.dim != image_encoder.dim:
            raise LaionetError(f"'{spec}': text embeddings have {text_encoder.dim} dimensions and image "
                               f"embeddings {image_encoder.dim}; not a CLIP-style model")
        t0 = time.perf_counter()
        queries = text_encoder.encode(texts, batch_size=max(options.batch_size, 256))
        query_seconds = time.perf_counter() - t0
        del text_encoder
    bar = Progress("zeroshot", items.num_rows, initial=done_rows, enabled=options.progress, unit="images")
    work_started = time.perf_counter()
    try:
        for name, start in todo:
            chunk = items.slice(start, options.chunk_rows)
            table, stats = zeroshot_chunk(chunk, image_encoder, queries, wnids, options, bar)
            store.write(name, {OUTPUT: table}, stats)
    finally:
        bar.close()
    work_seconds = time.perf_counter() - work_started

    rows = store.concatenate(OUTPUT, [name for name, _ in chunks], out, schema)
    info = _summary(out, items, [spec.label], options)
    info["accuracy"] = _accuracy(out, items, spec.label)
    if options.similarity_col:
        values = pq.read_table(out, columns=[SIMILARITY_COL]).column(SIMILARITY_COL)
        info["similarity"] = {"rows": len(values) - values.null_count,
                              "mean": pc.mean(values).as_py() if len(values) > values.null_count else None}
    store.reset()
    images_done = items.num_rows - done_rows
    info.update(dataset=dataset, vocab=str(vocab), classes=len(wnids), query=options.query, rows_out=rows,
                encoder=str(spec), model=spec.label, device=device, images_computed=images_done,
                query_seconds=query_seconds,
                images_per_second=images_done / work_seconds if work_seconds > 0 and images_done else None,
                seconds=time.perf_counter() - started)
    return info


def zeroshot_chunk(chunk: pa.Table, encoder, queries: np.ndarray, wnids: list[str], options: ZeroshotOptions,
                   bar=None) -> tuple[pa.Table, dict]:
    """The rows of `chunk` in output form (uid order): top-5 wnids by cosine and, if asked, the own-class cosine."""
    from laionet.predict.batches import encoded_batches

    uids = chunk.column("uid").to_pylist()
    index = {wnid: i for i, wnid in enumerate(wnids)}
    own = dict(zip(uids, chunk.column("wnid").to_pylist())) if "wnid" in chunk.column_names else {}
    status: dict[int, tuple[str, str | None]] = {}
    tops: dict[int, list[str]] = {}
    similarity: dict[int, float | None] = {}
    k = min(TOP_K, len(wnids))
    results = _iter_images(zip(uids, chunk.column("image").to_pylist()), options.fetch)
    for ids, embeddings in encoded_batches(results, encoder.transform, encoder.encode, options.batch_size, status,
                                           bar):
        sims = embeddings @ queries.T  # cosines, (batch, classes)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        for row, uid in enumerate(ids):
            tops[uid] = [wnids[j] for j in order[row]]
            j = index.get(own.get(uid))
            similarity[uid] = float(sims[row, j]) if j is not None else None

    columns: dict[str, list] = {name: [] for name in output_schema(options.similarity_col).names}
    for uid in uids:
        code, error = status.get(uid, ("internal_error", "no fetch result"))
        ok = code == "ok"
        columns["uid"].append(uid)
        columns["model"].append(encoder.name)
        columns["top5"].append(tops.get(uid) if ok else None)
        columns["status"].append(code)
        columns["error"].append(error)
        if options.similarity_col:
            columns[SIMILARITY_COL].append(similarity.get(uid) if ok else None)
    counts = Counter(code for code, _ in status.values())
    return pa.table(columns, schema=output_schema(options.similarity_col)), {"rows": len(uids), "status": dict(counts)}


def _accuracy(out: Path, items: pa.Table, name: str) -> dict:
    """Top-1 / top-5 over the rows that have a prediction and a label: failed images are not errors (§7.1)."""
    if "wnid" not in items.column_names:
        return {}
    truth = dict(zip(items.column("uid").to_pylist(), items.column("wnid").to_pylist()))
    part = pq.read_table(out, columns=["uid", "top5"])
    pairs = [(top, truth.get(uid)) for uid, top in zip(part.column("uid").to_pylist(), part.column("top5").to_pylist())
             if top is not None and truth.get(uid)]
    if not pairs:
        return {}
    return {name: {"top1": sum(top[0] == y for top, y in pairs) / len(pairs),
                   "top5": sum(y in top for top, y in pairs) / len(pairs), "rows": len(pairs)}}


def _fingerprint(dataset: str, items: pa.Table, wnids: list[str], texts: list[str], options: ZeroshotOptions) -> dict:
    """What the chunks depend on: a rerun with anything else is refused rather than mixed in."""
    digest = hashlib.sha256()
    for column in ("uid", "image") + (("wnid",) if options.similarity_col else ()):
        digest.update(_column_bytes(items, column))
    queries = hashlib.sha256("\n".join(f"{w}\t{t}" for w, t in zip(wnids, texts)).encode()).hexdigest()
    return {"dataset": dataset, "rows": items.num_rows, "items": digest.hexdigest(), "queries": queries,
            "encoder": options.encoder, "checkpoint": _file_id(options.checkpoint), "precision": options.precision,
            "similarity_col": options.similarity_col, "chunk_rows": options.chunk_rows,
            "fetch": fetch_fingerprint(options.fetch)}
