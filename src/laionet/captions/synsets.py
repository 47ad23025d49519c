"""`laionet captions synsets`: how similar each caption is to its own class, and to all the others (§9.2).

The class queries of the vocabulary (default NAME_DEF, "{name} which is {definition}") are encoded once;
the captions are encoded chunk by chunk (identical captions once, longest first) and compared with every
query in one matrix product. Per caption we keep, instead of the original's 999-column table (2.8 GB):

    text_to_query_similarity   cosine with the caption's own class query
    rank                       1 + the number of classes strictly more similar (ties count in its favour)
    more_similar_classes       the number of OTHER vocabulary classes strictly more similar
    p                          the proportion of more similar false classes

Rules for p (§9.2, §11.13):

    paper   more_similar_classes / (number of vocabulary classes): the true class is in the denominator
            (the original's mean over all 999 synsets of [sim(y) < sim(j)]); a caption whose wnid is not
            in the vocabulary (the husky and machine-crane images under the original class file) gets p = 0
    clean   more_similar_classes / (classes − 1): false classes only; such captions get a null p

A caption whose wnid is not in the vocabulary still gets its text_to_query_similarity when the wnid is
in the WordNet tables (the original built that query from WordNet), but no rank.

`all_similarities` (a .npy path) also keeps the full float16 matrix, rows in uid order, columns in the
vocabulary's row order, written chunk by chunk through a memmap. Chunks resume (`open_chunked_run`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.errors import LaionetError

OUTPUT = "synsets"
FILE = "synsets.parquet"
MANIFEST = "manifest.json"
RULES = ("paper", "clean")
MISSING_TEXT = "None"  # the original's stand-in for a missing caption (spec §3.2)
SCHEMA = pa.schema([("uid", pa.int64()), ("filename", pa.string()), ("wnid", pa.string()),
                    ("in_vocab", pa.bool_()), ("text_to_query_similarity", pa.float32()),
                    ("rank", pa.int32()), ("more_similar_classes", pa.int32()), ("p", pa.float64())])
PRODUCT_ROWS = 1024  # captions per matrix product: bounds memory for a 21k-class vocabulary


@dataclass(frozen=True)
class SynsetsOptions:
    encoder: str = "hf-clip:openai/clip-vit-base-patch32"
    checkpoint: str | None = None
    query: str = "name_def"
    rule: str = "paper"
    text_col: str = "TEXT"
    batch_size: int | None = None  # None: by device (score.encoders.default_batch_size)
    device: str | None = None
    precision: str = "auto"
    chunk_rows: int = 10_000
    all_similarities: str | None = None
    progress: bool = True
    overwrite: bool = False


def more_similar(sims: np.ndarray, true_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarity to the true class, number of classes strictly more similar) per row of `sims`;
    rows with true_rows < 0 (class not in the vocabulary) get NaN and -1."""
    known = true_rows >= 0
    own = np.full(len(sims), np.nan, dtype=np.float32)
    own[known] = sims[np.flatnonzero(known), true_rows[known]]
    counts = np.full(len(sims), -1, dtype=np.int64)
    counts[known] = (sims[known] > own[known, None]).sum(axis=1)
    return own, counts


def proportion(counts: np.ndarray, classes: int, rule: str) -> np.ndarray:
    """p per row from the count of more similar classes (-1: not in the vocabulary) under `rule`; NaN = null."""
    if rule == "paper":
        return np.where(counts >= 0, counts / classes, 0.0)
    denominator = classes - 1
    if denominator < 1:
        raise LaionetError("the clean rule needs a vocabulary of at least 2 classes")
    return np.where(counts >= 0, counts / denominator, np.nan)


def read_captions(path: str | Path, text_col: str) -> pa.Table:
    """uid, filename (null if absent), wnid and the caption column of a captions parquet, in uid order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LaionetError(f"captions file not found: {path} (make one with `laionet captions import`)")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise LaionetError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("uid", "wnid", text_col) if c not in names]
    if missing:
        raise LaionetError(f"{path}: no column {missing[0]}; it has {', '.join(names)}")
    columns = ["uid", "wnid", text_col] + (["filename"] if "filename" in names else [])
    table = pq.read_table(path, columns=columns)
    if "filename" not in names:
        table = table.append_column("filename", pa.nulls(table.num_rows, pa.string()))
    if not pa.types.is_integer(table.schema.field("uid").type) or table.column("uid").null_count:
        raise LaionetError(f"{path}: column uid must hold integers without nulls")
    if not pa.types.is_string(table.schema.field(text_col).type) and not pa.types.is_large_string(
            table.schema.field(text_col).type):
        raise LaionetError(f"{path}: column {text_col} is not text")
    table = table.select(["uid", "filename", "wnid", text_col]).cast(
        pa.schema([("uid", pa.int64()), ("filename", pa.string()), ("wnid", pa.string()), (text_col, pa.string())]))
    if pc.count_distinct(table.column("uid")).as_py() != table.num_rows:
        raise LaionetError(f"{path}: uids are not unique")
    return table.sort_by("uid")


def outside_queries(wnids: set[str], query: str) -> dict[str, str]:
    """Query texts for wnids outside the vocabulary that the WordNet tables know (as the original did)."""
    from laionet.vocab import tables
    from laionet.vocab.templates import render

    return {w: render(query, tables.head_name(w), tables.definition(w), tables.lemmas_by_wnid()[tables.resolve(w)])
            for w in sorted(wnids) if w and tables.known(w)}


def synsets_chunk(chunk: pa.Table, captions: np.ndarray, queries: np.ndarray, row_of_wnid: dict[str, int],
                  extra: dict[str, np.ndarray], rule: str, matrix=None) -> tuple[pa.Table, dict]:
    """Output rows for the captions of `chunk` (embeddings `captions`); `matrix` receives all similarities."""
    wnids = chunk.column("wnid").to_pylist()
    true_rows = np.array([row_of_wnid.get(w, -1) for w in wnids], dtype=np.int64)
    own = np.empty(len(wnids), dtype=np.float32)
    counts = np.empty(len(wnids), dtype=np.int64)
    for start in range(0, len(wnids), PRODUCT_ROWS):
        part = slice(start, start + PRODUCT_ROWS)
        sims = captions[part] @ queries.T
        own[part], counts[part] = more_similar(sims, true_rows[part])
        if matrix is not None:
            matrix[part] = sims.astype(np.float16)
    for i in np.flatnonzero(true_rows < 0):  # own-class cosine from a query outside the vocabulary
        query = extra.get(wnids[i])
        own[i] = float(captions[i] @ query) if query is not None else np.nan
    p = proportion(counts, len(queries), rule)
    known = true_rows >= 0
    table = pa.table({
        "uid": chunk.column("uid"), "filename": chunk.column("filename"), "wnid": chunk.column("wnid"),
        "in_vocab": pa.array(known),
        "text_to_query_similarity": pa.array(own, pa.float32(), mask=np.isnan(own)),
        "rank": pa.array(counts + 1, pa.int32(), mask=~known),
        "more_similar_classes": pa.array(counts, pa.int32(), mask=~known),
        "p": pa.array(p, pa.float64(), mask=np.isnan(p)),
    }, schema=SCHEMA)
    return table, {"rows": len(wnids), "in_vocab": int(known.sum())}


def synsets_captions(captions_path: str | Path, vocab: str | Path, out: str | Path, options: SynsetsOptions) -> dict:
    """Write OUT/synsets.parquet (and the optional full matrix); return the run's summary."""
    from laionet.io.shards import open_chunked_run
    from laionet.progress import Progress
    from laionet.score.encoders import check_encoder, encode_unique, load_text_encoder
    from laionet.zeroshot.run import read_queries

    started = time.perf_counter()
    out = Path(out)
    if options.rule not in RULES:
        raise LaionetError(f"unknown rule {options.rule!r}: use paper or clean")
    if (options.batch_size is not None and options.batch_size < 1) or options.chunk_rows < 1:
        raise LaionetError("--batch-size and --chunk-rows must be at least 1")
    spec = check_encoder(options.encoder, options.checkpoint, options.precision)
    wnids, texts = read_queries(vocab, options.query)
    items = read_captions(captions_path, options.text_col)
    row_of_wnid = {w: i for i, w in enumerate(wnids)}
    extra_texts = outside_queries(set(items.column("wnid").to_pylist()) - set(row_of_wnid), options.query)

    fingerprint = _fingerprint(captions_path, items, wnids, texts, options)
    out.mkdir(parents=True, exist_ok=True)
    chunked = open_chunked_run(out / FILE, [OUTPUT], fingerprint, items.num_rows, options.chunk_rows,
                               options.overwrite)
    matrix, matrix_tmp = _open_matrix(options.all_similarities, chunked, items.num_rows, len(wnids))

    device, encode_seconds = None, 0.0
    if chunked.todo:
        encoder = load_text_encoder(spec, options.device, options.checkpoint, options.precision)
        device = encoder.device
        queries = encoder.encode(texts, batch_size=options.batch_size)
        extra_list = list(extra_texts)
        extra_rows = encoder.encode([extra_texts[w] for w in extra_list], batch_size=options.batch_size)
        extra = dict(zip(extra_list, extra_rows))
    bar = Progress("captions synsets", items.num_rows, initial=chunked.done_rows, enabled=options.progress,
                   unit="captions")
    try:
        for name, start in chunked.todo:
            chunk = items.slice(start, options.chunk_rows)
            texts_in = [MISSING_TEXT if t is None else t for t in chunk.column(options.text_col).to_pylist()]
            t0 = time.perf_counter()
            embedded, _ = encode_unique(encoder, texts_in, options.batch_size)
            encode_seconds += time.perf_counter() - t0
            rows = matrix[start:start + chunk.num_rows] if matrix is not None else None
            table, stats = synsets_chunk(chunk, embedded, queries, row_of_wnid, extra, options.rule, rows)
            if matrix is not None:
                matrix.flush()  # the chunk's matrix rows are on disk before its completion marker
            chunked.store.write(name, {OUTPUT: table}, stats)
            bar.update(chunk.num_rows)
    finally:
        bar.close()

    rows_out = chunked.store.concatenate(OUTPUT, chunked.names, out / FILE, SCHEMA)
    if matrix is not None:
        del matrix
        matrix_tmp.replace(Path(options.all_similarities).expanduser())
    chunked.store.reset()
    info = summarise(out / FILE)
    computed = items.num_rows - chunked.done_rows
    info.update(captions=str(captions_path), vocab=str(vocab), classes=len(wnids), query=options.query,
                rule=options.rule, encoder=str(spec), device=device, rows_out=rows_out,
                captions_computed=computed, queries_outside_vocab=len(extra_texts),
                captions_per_second=computed / encode_seconds if encode_seconds else None,
                all_similarities=_matrix_info(options.all_similarities, wnids),
                seconds=time.perf_counter() - started)
    return info


def summarise(path: Path) -> dict:
    table = pq.read_table(path, columns=["in_vocab", "text_to_query_similarity", "p"])
    p = table.column("p").to_numpy(zero_copy_only=False)
    p = p[~np.isnan(p)] if len(p) else p
    in_vocab = int(pc.sum(table.column("in_vocab")).as_py() or 0)
    return {"rows": table.num_rows, "in_vocab": in_vocab, "not_in_vocab": table.num_rows - in_vocab,
            "with_similarity": table.num_rows - table.column("text_to_query_similarity").null_count,
            "p_null": table.column("p").null_count,
            "mean_p": float(p.mean()) if len(p) else None,
            "share_p_below_0_05": float((p < 0.05).mean()) if len(p) else None}


def _open_matrix(path: str | None, chunked, rows: int, classes: int):
    """A float16 memmap (rows × classes) under a temporary name beside `path`, reopened on resume."""
    if path is None:
        return None, None
    final = Path(path).expanduser()
    if final.suffix != ".npy":
        raise LaionetError(f"--all-similarities: give a .npy file name, got {path}")
    tmp = final.with_name(f".{final.name}.partial.npy")
    final.parent.mkdir(parents=True, exist_ok=True)
    if chunked.done_rows and not tmp.is_file():
        raise LaionetError(f"{tmp}: the partial matrix of the interrupted run is missing; rerun with --overwrite")
    if chunked.done_rows:
        matrix = np.lib.format.open_memmap(tmp, mode="r+")
        if matrix.shape != (rows, classes) or matrix.dtype != np.float16:
            raise LaionetError(f"{tmp}: partial matrix of another run; remove it, or rerun with --overwrite")
    else:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(rows, classes))
    return matrix, tmp


def _matrix_info(path: str | None, wnids: list[str]) -> dict | None:
    if path is None:
        return None
    return {"path": str(Path(path).expanduser()), "dtype": "float16", "rows": "synsets.parquet row order (uid)",
            "columns": wnids}


def _fingerprint(path, items: pa.Table, wnids: list[str], texts: list[str], options: SynsetsOptions) -> dict:
    """What the chunks depend on: a rerun with anything else is refused rather than mixed in."""
    from laionet.predict.run import _file_id

    digest = hashlib.sha256()
    for column in ("uid", "wnid", options.text_col):
        digest.update("\n".join(map(str, items.column(column).to_pylist())).encode("utf-8", "surrogatepass"))
    queries = hashlib.sha256("\n".join(f"{w}\t{t}" for w, t in zip(wnids, texts)).encode()).hexdigest()
    return {"captions": str(path), "rows": items.num_rows, "items": digest.hexdigest(), "queries": queries,
            "encoder": options.encoder, "checkpoint": _file_id(options.checkpoint), "precision": options.precision,
            "rule": options.rule, "chunk_rows": options.chunk_rows,
            "all_similarities": str(Path(options.all_similarities).expanduser().resolve())
            if options.all_similarities else None}
