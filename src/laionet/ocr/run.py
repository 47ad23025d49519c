"""`laionet ocr`: recognise the text in every image and flag rows whose image shows their class name (spec §4.3).

Each image is fetched once (`laionet.fetch.iter_images`: local paths and URLs) and given to a `TextReader`
(easyocr by default). `recognized_text` is the recognised strings joined by spaces and lowercased, or one of
the original's markers: 'NO TEXT' (nothing detected), 'RECOGNITION ERROR' (the reader failed on the image),
'DOWNLOAD ERROR' (the image could not be fetched or decoded; `status`/`error` say why).
`wnid_is_in_recognized_text` applies `name_in_text` with the vocabulary `name` of the row's wnid (of any of
them when the column holds a list); markers and rows whose wnid is not in the vocabulary are False.

Chunking, resume and the dataset inputs are `laionet.predict`'s. Output: one row per input row, by uid.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.ocr.match import name_in_text
from laionet.predict.run import _column_bytes, _iter_images, _one_line, fetch_fingerprint, read_items, read_unique_items

NO_TEXT = "NO TEXT"
RECOGNITION_ERROR = "RECOGNITION ERROR"
DOWNLOAD_ERROR = "DOWNLOAD ERROR"
MARKERS = (NO_TEXT, RECOGNITION_ERROR, DOWNLOAD_ERROR)
TEXT_COL = "recognized_text"
FLAG_COL = "wnid_is_in_recognized_text"
SCHEMA = pa.schema([("uid", pa.int64()), (TEXT_COL, pa.string()), (FLAG_COL, pa.bool_()),
                    ("status", pa.string()), ("error", pa.string())])
OUTPUT = "ocr"


@dataclass(frozen=True)
class OcrOptions:
    engine: str = "easyocr"
    languages: tuple[str, ...] = ("en",)
    device: str | None = None
    model_dir: str | None = None
    chunk_rows: int = 1_000
    labels: str | None = None
    image_col: str | None = None
    fetch: object | None = None
    progress: bool = True
    overwrite: bool = False
    reader: object | None = field(default=None, compare=False)  # a ready TextReader (tests, other engines)


def read_names(vocab: str | Path) -> dict[str, str]:
    """wnid -> class name (the vocabulary's `name`, the original's `query_name(wnid)`)."""
    from laionet.vocab.build import read_vocab

    table = read_vocab(vocab)
    names = dict(zip(table.column("wnid").to_pylist(), table.column("name").to_pylist()))
    if not names:
        raise LaionetError(f"{vocab}: the vocabulary is empty")
    return {wnid: name for wnid, name in names.items() if wnid and isinstance(name, str) and name.strip()}


def row_wnids(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [w for w in value if w]


def flag_row(text: str | None, wnids, names: dict[str, str]) -> bool:
    """The original's rule against every wnid of the row; markers are not text and never match."""
    if text is None or text in MARKERS:
        return False
    return any(name_in_text(names[w], text) for w in row_wnids(wnids) if w in names)


def join_texts(texts: list[str]) -> str:
    """The reader's strings joined by spaces and lowercased; 'NO TEXT' when there are none."""
    parts = [t.strip() for t in texts if t and t.strip()]
    return " ".join(parts).lower() if parts else NO_TEXT


def ocr_dataset(dataset: str, vocab: str | Path, out: str | Path, options: OcrOptions,
                merged_output: str | Path | None = None) -> dict:
    """Recognise the text of every image of `dataset`, flag against `vocab` names, write `out`; return a summary."""
    from laionet.io.shards import open_chunked_run
    from laionet.ocr.engines import load_reader
    from laionet.progress import Progress

    started = time.perf_counter()
    out = Path(out)
    if options.chunk_rows < 1:
        raise LaionetError("--chunk-rows must be at least 1")
    names = read_names(vocab)
    items = read_unique_items(dataset, options.labels, options.image_col)
    if "wnid" not in items.column_names:
        raise LaionetError(f"{dataset}: no wnid column; the OCR flag compares each image's text with its class name")

    engine_label = getattr(options.reader, "name", None) or f"{options.engine}:{'+'.join(options.languages)}"
    fingerprint = _fingerprint(dataset, items, names, engine_label, options)
    chunked = open_chunked_run(out, [OUTPUT], fingerprint, items.num_rows, options.chunk_rows, options.overwrite)
    store, chunks, todo, done_rows = chunked.store, chunked.chunks, chunked.todo, chunked.done_rows

    reader = None
    if todo:
        reader = options.reader or load_reader(options.engine, options.languages, options.device, options.model_dir)
    bar = Progress("ocr", items.num_rows, initial=done_rows, enabled=options.progress, unit="images")
    work_started = time.perf_counter()
    try:
        for name, start in todo:
            table, stats = ocr_chunk(items.slice(start, options.chunk_rows), reader, names, options, bar)
            store.write(name, {OUTPUT: table}, stats)
    finally:
        bar.close()
    work_seconds = time.perf_counter() - work_started

    rows = store.concatenate(OUTPUT, [name for name, _ in chunks], out, SCHEMA)
    info = _summary(out, items, names)
    store.reset()
    if merged_output:
        info["merged_output"] = str(merged_output)
        info["merged_rows"] = merge_ocr(dataset, out, merged_output, options.labels)
    images_done = items.num_rows - done_rows
    info.update(dataset=dataset, vocab=str(vocab), engine=getattr(reader, "name", None) or engine_label, rows_out=rows,
                device=getattr(reader, "device", None), images_computed=images_done,
                images_per_second=images_done / work_seconds if work_seconds > 0 and images_done else None,
                seconds=time.perf_counter() - started)
    return info


def ocr_chunk(chunk: pa.Table, reader, names: dict[str, str], options: OcrOptions, bar=None) -> tuple[pa.Table, dict]:
    """The rows of `chunk` in SCHEMA, in uid order."""
    uids = chunk.column("uid").to_pylist()
    wnids = dict(zip(uids, chunk.column("wnid").to_pylist()))
    results: dict[int, tuple[str, str, str | None]] = {}  # uid -> (text, status, error)
    for result in _iter_images(zip(uids, chunk.column("image").to_pylist()), options.fetch):
        if result.status != "ok":
            results[result.uid] = (DOWNLOAD_ERROR, result.status, result.error)
        else:
            try:
                results[result.uid] = (join_texts(reader.read(result.image)), "ok", None)
            except Exception as exc:  # one unusual image must not end the run
                results[result.uid] = (RECOGNITION_ERROR, "recognition_error", _one_line(exc))
        if bar is not None:
            bar.update(1)

    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for uid in uids:
        text, code, error = results.get(uid, (DOWNLOAD_ERROR, "internal_error", "no fetch result"))
        columns["uid"].append(uid)
        columns[TEXT_COL].append(text)
        columns[FLAG_COL].append(flag_row(text, wnids[uid], names))
        columns["status"].append(code)
        columns["error"].append(error)
    counts = Counter(code for _, code, _ in results.values())
    return pa.table(columns, schema=SCHEMA), {"rows": len(uids), "status": dict(counts)}


def merge_ocr(dataset: str, ocr: str | Path, out: str | Path, labels: str | None = None) -> int:
    """`dataset` (all its columns, in its row order) with `recognized_text` and `wnid_is_in_recognized_text`
    from `ocr` added by uid (replacing earlier ones), written atomically to `out`. Returns the row count.
    `laionet evaluate` then drops the flagged rows by default."""
    from laionet.io.atomic import atomic_path
    from laionet.predict.datasets import is_dataset_spec

    if is_dataset_spec(dataset):
        table = read_items(dataset, labels)
    else:
        table = pq.read_table(Path(dataset).expanduser())
        if "uid" not in table.column_names:
            raise LaionetError(f"{dataset}: no uid column to join the OCR results on")
    table = table.drop_columns([c for c in (TEXT_COL, FLAG_COL) if c in table.column_names])
    results = pq.read_table(ocr, columns=["uid", TEXT_COL, FLAG_COL])
    by_uid = dict(zip(results.column("uid").to_pylist(),
                      zip(results.column(TEXT_COL).to_pylist(), results.column(FLAG_COL).to_pylist())))
    found = [by_uid.get(uid, (None, None)) for uid in table.column("uid").to_pylist()]
    table = table.append_column(pa.field(TEXT_COL, pa.string()), pa.array([t for t, _ in found], pa.string()))
    table = table.append_column(pa.field(FLAG_COL, pa.bool_()), pa.array([f for _, f in found], pa.bool_()))
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows


def _summary(out: Path, items: pa.Table, names: dict[str, str]) -> dict:
    table = pq.read_table(out, columns=[TEXT_COL, FLAG_COL, "status"])
    texts = table.column(TEXT_COL).to_pylist()
    flagged = pc.sum(table.column(FLAG_COL)).as_py() or 0
    rows = table.num_rows
    in_vocab = sum(any(w in names for w in row_wnids(v)) for v in items.column("wnid").to_pylist())
    return {"rows_in": items.num_rows, "status": dict(Counter(table.column("status").to_pylist())),
            "texts": {"text": sum(t not in MARKERS and t is not None for t in texts),
                      **{m.lower().replace(" ", "_"): texts.count(m) for m in MARKERS}},
            "flagged": flagged, "flagged_share": flagged / rows if rows else None,
            "rows_with_wnid_in_vocab": in_vocab}


def _fingerprint(dataset: str, items: pa.Table, names: dict[str, str], engine: str, options: OcrOptions) -> dict:
    """What the chunks depend on: a rerun with anything else is refused rather than mixed in."""
    digest = hashlib.sha256()
    for column in ("uid", "image", "wnid"):
        digest.update(_column_bytes(items, column))
    vocab = hashlib.sha256("\n".join(f"{w}\t{n}" for w, n in sorted(names.items())).encode()).hexdigest()
    return {"dataset": dataset, "rows": items.num_rows, "items": digest.hexdigest(), "names": vocab,
            "engine": engine, "model_dir": options.model_dir, "chunk_rows": options.chunk_rows,
            "fetch": fetch_fingerprint(options.fetch)}
