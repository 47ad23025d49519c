"""`laionet search`: the k nearest collection rows of each query, from an index built by `laionet index`.

QUERIES is an embedding folder (or one embeddings parquet / .npy), or a caption parquet: its `--text-col`
is embedded in batches with `--encoder` (default: the encoder the index's embeddings were made with), and
its rows get uids as everywhere else (a `uid` column when it has one, else laionet.io.inputs' scheme).

Output, one parquet: `query_uid, uid, score, rank`: for each query its hits by score, highest first, rank
0..k-1; faiss's -1 ids (fewer than k vectors reachable) are dropped. `exact=True` ignores the index and
scans the collection's embedding folder with a flat inner product, part by part (for measuring recall).

Resume: the queries are searched chunk by chunk (a part of the query folder, or `chunk_rows` captions), each
chunk's hits saved as it finishes in a work folder beside OUT (`.OUT.work`, fingerprinted: a rerun with another
index, other queries or other parameters is refused); a rerun skips, and does not embed, the finished chunks.
When all are done they are concatenated, in chunk order, into OUT and the work folder is removed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laionet.embed.store import EMBEDDING, EmbeddingSet, open_embeddings
from laionet.errors import LaionetError
from laionet.index.build import INDEX_FILE, MANIFEST, UIDS_FILE, faiss_module, read_npy, unit_rows
from laionet.io.inputs import DEFAULT_SHARD_ROWS
from laionet.io.shards import open_store_beside

HNSW_EF_SEARCH = 128
OUTPUT = "results"  # the work folder's one output
SCHEMA = pa.schema([("query_uid", pa.int64()), ("uid", pa.int64()), ("score", pa.float32()), ("rank", pa.int32())])


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10
    nprobe: int | None = None  # None: the index's default (recorded by `laionet index`)
    k_factor: int | None = None  # refine indexes: candidates reranked per result
    exact: bool = False
    batch_size: int = 4096
    text_col: str = "TEXT"
    encoder: str | None = None
    device: str | None = None
    encode_batch_size: int | None = None  # None: by device (score.encoders.default_batch_size)
    chunk_rows: int = 10_000  # caption queries per resumable chunk (a query folder resumes part by part)
    overwrite: bool = False  # discard the partial results of an interrupted search
    progress: bool = True


@dataclass
class LoadedIndex:
    folder: Path
    index: object
    uids: np.ndarray
    info: dict

    @property
    def dim(self) -> int:
        return int(self.info.get("dim") or self.index.d)


def open_index(folder: str | Path, load_index: bool = True) -> LoadedIndex:
    from laionet.io.manifest import read_manifest

    folder = Path(folder).expanduser()
    if not (folder / INDEX_FILE).is_file() or not (folder / UIDS_FILE).is_file():
        raise LaionetError(f"{folder}: not a finished `laionet index` folder (no {INDEX_FILE} and {UIDS_FILE})")
    info = (read_manifest(folder / MANIFEST) or {}).get("stages", {}).get("index", {})
    index = faiss_module().read_index(str(folder / INDEX_FILE)) if load_index else None
    return LoadedIndex(folder, index, read_npy(folder / UIDS_FILE), info)


def set_search_parameters(index, nprobe: int | None, k_factor: int | None) -> None:
    faiss = faiss_module()
    if nprobe is not None:
        try:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
        except RuntimeError:
            pass  # not an IVF index: nothing to probe
    if k_factor is not None and isinstance(index, faiss.IndexRefine):
        index.k_factor = float(k_factor)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH  # faiss's default (16) loses a good share of the top-1s


# ---------------------------------------------------------------- queries


def is_embedding_input(path: Path) -> bool:
    if path.is_dir() or path.suffix == ".npy":
        return True
    try:
        return EMBEDDING in pq.read_schema(path).names
    except Exception:  # noqa: BLE001 - not parquet: open_embeddings / plan_inputs name the problem
        return False


def caption_plan(paths: list[str], text_col: str | None, shard_rows: int = DEFAULT_SHARD_ROWS):
    """laionet.io.inputs' plan for caption files; a `uid` column, when present, gives the uids."""
    from laionet.io.inputs import Columns, open_parquet, plan_inputs, resolve_inputs

    first = resolve_inputs(paths)[0]
    names = open_parquet(first).schema_arrow.names
    return plan_inputs(paths, Columns(text=text_col, id="uid" if "uid" in names else None), shard_rows=shard_rows)


def iter_caption_texts(plan, shard, batch_rows: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(uids, captions) of one shard of `plan`, in batches of `batch_rows`."""
    from laionet.io.inputs import read_shard

    table = read_shard(shard, plan, [plan.text_col])
    for start in range(0, table.num_rows, batch_rows):
        piece = table.slice(start, batch_rows)
        texts = piece.column(plan.text_col).to_pylist()
        if any(t is None for t in texts):
            raise LaionetError(f"{shard.path}: column '{plan.text_col}' has null captions")
        yield piece.column("uid").to_numpy().astype(np.int64), texts


class Queries:
    """Query vectors in chunks (the unit of resume) of batches, from an embedding folder (a chunk per part) or
    from captions embedded on the fly (a chunk per shard of `chunk_rows` captions)."""

    def __init__(self, path: str, index: LoadedIndex, options: SearchOptions):
        self.path = Path(path).expanduser()
        self.options = options
        self.encoder_spec = None
        self.text_col = None
        if not self.path.exists():
            raise LaionetError(f"{path}: no such query file or folder")
        if is_embedding_input(self.path):
            self.embeddings: EmbeddingSet | None = open_embeddings(self.path)
            self.files, self.chunk_rows = self.embeddings.parts, self.embeddings.part_rows
            dim = self.embeddings.dim
            indexed = index.info.get("encoder")
            if self.embeddings.encoder and indexed and self.embeddings.encoder != indexed:
                raise LaionetError(f"{path}: embedded with {self.embeddings.encoder}, the index with "
                                   f"{index.info['encoder']}; their similarities would mean nothing")
        else:
            self.embeddings = None
            self.plan = caption_plan([str(self.path)], options.text_col, options.chunk_rows)
            self.files, self.chunk_rows = self.plan.files, [shard.num_rows for shard in self.plan.shards]
            self.text_col = self.plan.text_col
            self.encoder_spec = options.encoder or index.info.get("encoder")
            if not self.encoder_spec:
                raise LaionetError(f"{path}: captions need an --encoder (the index records none)")
            from laionet.score.encoders import load_text_encoder

            self.encoder = load_text_encoder(self.encoder_spec, options.device)
            dim = self.encoder.dim
        if dim != index.dim:
            raise LaionetError(f"{path}: query vectors have dimension {dim}, the index {index.dim}")
        self.dim = dim
        self.rows = sum(self.chunk_rows)
        self.chunk_names = [f"chunk-{i:06d}" for i in range(len(self.chunk_rows))]

    def batches(self, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(uids, unit vectors) of one chunk, `batch_size` queries at a time."""
        size = self.options.batch_size
        if self.embeddings is not None:
            uids, vectors = self.embeddings.read_part(chunk)
            for start in range(0, len(uids), size):
                yield uids[start:start + size], unit_rows(vectors[start:start + size])[0]
        else:
            for uids, texts in iter_caption_texts(self.plan, self.plan.shards[chunk], size):
                yield uids, self.encoder.encode(texts, batch_size=self.options.encode_batch_size)


# ---------------------------------------------------------------- search


def search_index(index_dir: str | Path, queries: str, out: str | Path, options: SearchOptions) -> dict:
    """Search every query chunk not yet in the work folder beside `out`, then write `out` from all of them."""
    from laionet.progress import Progress

    started = time.perf_counter()
    check_options(options)
    loaded = open_index(index_dir, load_index=not options.exact)
    query_set = Queries(queries, loaded, options)
    nprobe = None if options.exact else options.nprobe or loaded.info.get("nprobe")
    k_factor = None if options.exact else options.k_factor or loaded.info.get("k_factor")
    if not options.exact:
        set_search_parameters(loaded.index, nprobe, k_factor)
        searcher = lambda vectors: _search_faiss(loaded, vectors, options.k)  # noqa: E731
    else:
        searcher = ExactScan(loaded, options.k)

    out = Path(out)
    store = open_store_beside(out, [OUTPUT], _fingerprint(loaded, query_set, options, nprobe, k_factor),
                              options.overwrite)
    names = query_set.chunk_names
    todo = [i for i, name in enumerate(names) if not store.is_done(name)]
    searched = sum(query_set.chunk_rows[i] for i in todo)
    bar = Progress("search", query_set.rows, initial=query_set.rows - searched, enabled=options.progress,
                   unit="queries")
    try:
        for chunk in todo:
            table = search_chunk(query_set.batches(chunk), searcher, bar)
            store.write(names[chunk], {OUTPUT: table}, {"query_rows": query_set.chunk_rows[chunk]})
    finally:
        bar.close()
    hits = store.concatenate(OUTPUT, names, out, SCHEMA)
    store.reset()
    seconds = time.perf_counter() - started
    return {"index": str(index_dir), "queries": str(queries), "query_rows": query_set.rows, "hits": hits,
            "k": options.k, "exact": options.exact, "nprobe": nprobe, "k_factor": k_factor,
            "factory": loaded.info.get("factory"), "encoder": query_set.encoder_spec, "chunks": len(names),
            "chunks_resumed": len(names) - len(todo), "seconds": round(seconds, 3),
            "queries_per_second": round(searched / seconds, 1) if seconds and searched else None}


def check_options(options: SearchOptions) -> None:
    if options.k < 1:
        raise LaionetError(f"-k must be at least 1, got {options.k}")
    if options.batch_size < 1 or options.chunk_rows < 1:
        raise LaionetError("--batch-size and --chunk-rows must be at least 1")
    if options.nprobe is not None and options.nprobe < 1:
        raise LaionetError("--nprobe must be at least 1")


def _fingerprint(loaded: LoadedIndex, query_set: Queries, options: SearchOptions, nprobe, k_factor) -> dict:
    """What the saved chunks depend on; batch sizes and the device only change how fast they come."""
    from laionet.predict.run import _file_id

    return {"stage": "search", "index": [_file_id(str(loaded.folder / name)) for name in (INDEX_FILE, UIDS_FILE)],
            "queries": [_file_id(str(path)) for path in query_set.files], "chunks": query_set.chunk_rows,
            "k": options.k, "nprobe": nprobe, "k_factor": k_factor, "exact": options.exact,
            "text_col": query_set.text_col, "encoder": query_set.encoder_spec}


def search_chunk(batches: Iterator[tuple[np.ndarray, np.ndarray]], searcher, bar) -> pa.Table:
    """The hits of one chunk's queries, batch after batch."""
    tables = []
    for query_uids, vectors in batches:
        scores, uids = searcher(np.ascontiguousarray(vectors, dtype=np.float32))
        tables.append(results_table(query_uids, scores, uids))
        bar.update(len(query_uids))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _search_faiss(loaded: LoadedIndex, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, positions = loaded.index.search(vectors, k)
    uids = np.where(positions >= 0, loaded.uids[np.clip(positions, 0, None)], -1)
    return scores, np.where(positions >= 0, uids, -1)


class ExactScan:
    """Flat inner product over the collection's embedding folder (the one the index was built from), part by
    part, keeping a running top-k: exact, and memory-bound by one part."""

    def __init__(self, loaded: LoadedIndex, k: int):
        source = loaded.info.get("embeddings")
        if not source or not Path(source).exists():
            raise LaionetError(f"{loaded.folder}: --exact needs the embeddings the index was built from "
                               f"({source or 'not recorded'})")
        self.embeddings = open_embeddings(source)
        self.k = k

    def __call__(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = faiss_module()
        best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_uids = np.zeros((len(queries), 0), dtype=np.int64)
        for part_uids, vectors in self.embeddings.iter_parts():
            flat = faiss.IndexFlatIP(vectors.shape[1])
            flat.add(np.ascontiguousarray(unit_rows(vectors)[0], dtype=np.float32))
            scores, positions = flat.search(queries, min(self.k, len(part_uids)))
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_uids = np.concatenate([best_uids, part_uids[positions]], axis=1)
            order = np.argsort(-best_scores, axis=1, kind="stable")[:, : self.k]
            best_scores = np.take_along_axis(best_scores, order, axis=1)
            best_uids = np.take_along_axis(best_uids, order, axis=1)
        return best_scores, best_uids


def results_table(query_uids: np.ndarray, scores: np.ndarray, uids: np.ndarray) -> pa.Table:
    """Long table of the hits, -1 ids dropped, ranked 0.. within each query in faiss's (descending) order."""
    keep = uids >= 0
    rank = np.cumsum(keep, axis=1) - 1
    rows = np.repeat(np.asarray(query_uids, dtype=np.int64), keep.sum(axis=1))
    return pa.table({"query_uid": rows, "uid": uids[keep].astype(np.int64),
                     "score": scores[keep].astype(np.float32), "rank": rank[keep].astype(np.int32)}, schema=SCHEMA)
