"""laionet index / search / search-dataset: faiss indexes checked against numpy brute force, resume after a
crash, fingerprints, the memory-budget choice, the results' schema, the dataset join, and real captions."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

faiss = pytest.importorskip("faiss")

from laionet.cli import main  # noqa: E402
from laionet.embed.store import write_part  # noqa: E402
from laionet.errors import LaionetError  # noqa: E402
from laionet.index import build as build_module  # noqa: E402
from laionet.index import search as search_module  # noqa: E402
from laionet.index.build import IndexOptions, build_index  # noqa: E402
from laionet.index.choose import choose_index, flat_bytes, ivf_pq_bytes, parse_memory, pq_sizes  # noqa: E402
from laionet.index.dataset import search_dataset  # noqa: E402
from laionet.index.search import SearchOptions, open_index, search_index  # noqa: E402
from laionet.io.shards import ShardStore  # noqa: E402

PART_SHIFT = 100_000_000  # LAION-style uids: part × 1e8 + row


def clustered(rng, rows: int, dim: int, centres: int = 100, noise: float = 0.6) -> np.ndarray:
    """Unit vectors around random centres, the spread in a shared low-dimensional subspace (as real
    embeddings: low intrinsic dimension), plus a little isotropic noise."""
    shared = np.random.default_rng(dim)  # the same centres and subspace for the collection and the queries
    c = shared.standard_normal((centres, dim)) / np.sqrt(dim)
    basis = np.linalg.qr(shared.standard_normal((dim, max(2, dim // 4))))[0].T
    spread = rng.standard_normal((rows, len(basis))) @ basis / np.sqrt(len(basis))
    x = c[rng.integers(0, centres, rows)] + noise * spread + 0.02 * rng.standard_normal((rows, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_folder(folder, parts: list[np.ndarray], encoder: str | None = None) -> np.ndarray:
    """Parts with uids part × 1e8 + row; returns all uids in order."""
    uids = []
    for index, vectors in enumerate(parts):
        part_uids = np.arange(len(vectors), dtype=np.int64) + index * PART_SHIFT
        write_part(folder, index, part_uids, vectors)
        uids.append(part_uids)
    (folder / "manifest.json").write_text(json.dumps({"stages": {"embed": {"encoder": encoder}}}))
    return np.concatenate(uids)


def brute_force(collection: np.ndarray, uids: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ collection.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), uids[order]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("emb") / "synthetic"
    parts = [clustered(rng, rows, 32) for rows in (1500, 1200, 1300)]
    uids = write_folder(folder, parts)
    queries = clustered(np.random.default_rng(8), 200, 32)
    qfolder = folder.with_name("queries")
    write_part(qfolder, 0, np.arange(200, dtype=np.int64) + 10**12, queries)
    return folder, np.concatenate(parts), uids, qfolder, queries


def read_results(path):
    return pq.read_table(path).to_pandas()


# ------------------------------------------------------------------ exact and compressed


def test_exact_index_equals_numpy_brute_force(synthetic, tmp_path):
    folder, vectors, uids, qfolder, queries = synthetic
    info = build_index(folder, tmp_path / "idx", IndexOptions(progress=False))
    assert info["factory"] == "Flat" and info["rows"] == len(uids)
    search_index(tmp_path / "idx", str(qfolder), tmp_path / "r.parquet", SearchOptions(k=5, progress=False))
    got = read_results(tmp_path / "r.parquet").sort_values(["query_uid", "rank"])
    want_scores, want_uids = brute_force(vectors, uids, queries, 5)
    assert np.array_equal(got["uid"].to_numpy().reshape(-1, 5), want_uids)
    assert np.allclose(got["score"].to_numpy().reshape(-1, 5), want_scores, atol=1e-5)


def test_compressed_index_recall(synthetic, tmp_path):
    folder, vectors, uids, qfolder, queries = synthetic
    _, want = brute_force(vectors, uids, queries, 1)
    for budget, refine in (("4GB", True), ("300KB", False)):
        out = tmp_path / f"idx-{budget}"
        info = build_index(folder, out, IndexOptions(kind="ivf-pq", max_memory=budget, progress=False))
        assert "PQ" in info["factory"] and info["refine"] is refine
        assert info["expected_bytes"] <= parse_memory(budget)
        search_index(out, str(qfolder), tmp_path / "r.parquet", SearchOptions(k=10, progress=False))
        got = read_results(tmp_path / "r.parquet").sort_values(["query_uid", "rank"])["uid"].to_numpy().reshape(-1, 10)
        if refine:  # PQ candidates reranked exactly: the true nearest neighbour comes first
            assert float(np.mean(got[:, 0] == want[:, 0])) >= 0.99, info["factory"]
        else:  # PQ alone (1 byte per 4 dims here): the true nearest neighbour is among the first 10
            assert float(np.mean((got == want[:, :1]).any(axis=1))) >= 0.95, info["factory"]


def test_exact_flag_scans_the_collection(synthetic, tmp_path):
    folder, vectors, uids, qfolder, queries = synthetic
    build_index(folder, tmp_path / "idx", IndexOptions(kind="ivf-flat", progress=False))
    search_index(tmp_path / "idx", str(qfolder), tmp_path / "r.parquet", SearchOptions(k=3, exact=True,
                                                                                        progress=False))
    got = read_results(tmp_path / "r.parquet").sort_values(["query_uid", "rank"])
    want_scores, want_uids = brute_force(vectors, uids, queries, 3)
    assert np.array_equal(got["uid"].to_numpy().reshape(-1, 3), want_uids)
    assert np.allclose(got["score"].to_numpy().reshape(-1, 3), want_scores, atol=1e-5)


# ------------------------------------------------------------------ resume and fingerprints


def _index_bytes(folder) -> tuple[bytes, np.ndarray]:
    loaded = open_index(folder)
    return bytes(faiss.serialize_index(loaded.index)), loaded.uids


def test_resume_after_crash_gives_the_uninterrupted_index(synthetic, tmp_path, monkeypatch):
    folder, _, uids, _, _ = synthetic
    options = IndexOptions(kind="ivf-flat", progress=False, checkpoint_seconds=0)  # save after every part
    build_index(folder, tmp_path / "whole", options)

    real_write = build_module.write_text_atomic
    calls = {"n": 0}

    def crash_on_second_progress(path, text):  # the part's index is saved, its progress record is not
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, text)

    monkeypatch.setattr(build_module, "write_text_atomic", crash_on_second_progress)
    with pytest.raises(KeyboardInterrupt):
        build_index(folder, tmp_path / "resumed", options)
    monkeypatch.setattr(build_module, "write_text_atomic", real_write)
    work = tmp_path / "resumed" / build_module.WORK
    assert json.loads((work / "progress.json").read_text())["parts_done"] == 1
    assert (work / "index-00002.faiss").exists()  # saved but never committed: must not count

    added = []
    real_add = build_module.unit_rows
    monkeypatch.setattr(build_module, "unit_rows", lambda v: (added.append(len(v)), real_add(v))[1])
    info = build_index(folder, tmp_path / "resumed", options)
    assert added == [1200, 1300]  # only the parts not committed, once each
    assert info["rows"] == len(uids)
    whole, resumed = _index_bytes(tmp_path / "whole"), _index_bytes(tmp_path / "resumed")
    assert whole[0] == resumed[0]
    assert np.array_equal(whole[1], uids) and np.array_equal(resumed[1], uids)
    assert not work.exists()


def test_checkpoints_are_paced(synthetic, tmp_path, monkeypatch):
    """Each save rewrites the whole index: by default only after the last part of a quick build, and never
    sooner than four times the last save's duration."""
    saves = []
    real_save = build_module.save_checkpoint
    monkeypatch.setattr(build_module, "save_checkpoint", lambda *a: (saves.append(a[3]), real_save(*a)))
    build_index(synthetic[0], tmp_path / "idx", IndexOptions(kind="ivf-flat", progress=False))
    assert saves == [len(build_module.open_embeddings(synthetic[0]).parts)]  # once: after the last part
    assert build_module.CheckpointPace(0.0).due()  # 0: every part
    pace = build_module.CheckpointPace(0.001)
    time.sleep(0.01)
    assert pace.due()
    with pace.saving():
        pass
    time.sleep(0.01)
    assert pace.due()
    pace.last_save_seconds = 3600.0  # a slow save: the next one waits four times as long
    assert not pace.due()
    assert not build_module.CheckpointPace(3600.0).due()


def test_rerun_with_other_parameters_is_refused(synthetic, tmp_path, monkeypatch):
    folder = synthetic[0]
    out = tmp_path / "idx"
    monkeypatch.setattr(build_module, "save_checkpoint", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build_index(folder, out, IndexOptions(kind="ivf-flat", progress=False))
    monkeypatch.undo()
    with pytest.raises(LaionetError, match="other inputs or parameters"):
        build_index(folder, out, IndexOptions(kind="ivf-flat", seed=1, progress=False))
    build_index(folder, out, IndexOptions(kind="ivf-flat", progress=False))  # same parameters: resumes
    again = build_index(folder, out, IndexOptions(kind="ivf-flat", progress=False))
    assert again.get("already_built")
    with pytest.raises(LaionetError, match="other inputs or parameters"):
        build_index(folder, out, IndexOptions(kind="flat", progress=False))
    assert build_index(folder, out, IndexOptions(kind="flat", overwrite=True, progress=False))["factory"] == "Flat"


def test_vectors_not_unit_norm_are_normalised(tmp_path):
    rng = np.random.default_rng(3)
    vectors = clustered(rng, 300, 16)
    write_part(tmp_path / "emb", 0, np.arange(300), vectors * rng.uniform(1.5, 3, (300, 1)).astype(np.float32))
    info = build_index(tmp_path / "emb", tmp_path / "idx", IndexOptions(progress=False))
    assert info["normalised_rows"] == 300
    write_part(tmp_path / "q", 0, np.arange(10), vectors[:10] * 7)
    search_index(tmp_path / "idx", str(tmp_path / "q"), tmp_path / "r.parquet", SearchOptions(k=1, progress=False))
    got = read_results(tmp_path / "r.parquet")
    assert got["uid"].tolist() == list(range(10)) and np.allclose(got["score"], 1.0, atol=1e-5)


# ------------------------------------------------------------------ the memory budget


@pytest.mark.parametrize("n,dim", [(2_000_000, 512), (800_000, 384)])
def test_budget_choice(n, dim):
    large = choose_index(n, dim, parse_memory("100GB"))
    assert large.refine and large.factory.endswith(",RFlat") and "PQ" in large.factory
    small_budget = flat_bytes(n, dim) // 4  # far below the float vectors: no refine, the largest PQ that fits
    small = choose_index(n, dim, small_budget)
    assert not small.refine and small.expected_bytes <= small_budget
    bigger = [m for m in pq_sizes(dim) if m > small.pq_bytes]
    assert all(ivf_pq_bytes(n, dim, small.nlist, m, False) > small_budget for m in bigger)
    assert small.factory == f"IVF{small.nlist},PQ{small.pq_bytes}"
    assert small.nlist & (small.nlist - 1) == 0 and small.nlist * 39 <= small.train_size
    with pytest.raises(LaionetError, match="too small"):
        choose_index(n, dim, parse_memory("1MB"))
    exact = choose_index(10_000, dim, parse_memory("4GB"))
    assert exact.factory == "Flat" and exact.expected_bytes == flat_bytes(10_000, dim)
    assert choose_index(10_000, dim, flat_bytes(10_000, dim) - 1).factory != "Flat"  # no room: compressed


def test_expected_memory_is_close_to_the_real_index(synthetic, tmp_path):
    folder = synthetic[0]
    for kind in ("flat", "ivf-pq"):
        info = build_index(folder, tmp_path / kind, IndexOptions(kind=kind, max_memory="300KB", progress=False))
        real = info["index_file_bytes"] + (tmp_path / kind / "uids.npy").stat().st_size
        assert 0.5 < real / info["expected_bytes"] < 1.5, (kind, real, info["expected_bytes"])


# ------------------------------------------------------------------ search output and errors


def test_search_results_schema_and_ranks(tmp_path):
    rng = np.random.default_rng(5)
    write_folder(tmp_path / "emb", [clustered(rng, 12, 8), clustered(rng, 8, 8)])
    build_index(tmp_path / "emb", tmp_path / "idx", IndexOptions(progress=False))
    write_part(tmp_path / "q", 0, np.array([5, 9, 11]), clustered(rng, 3, 8))
    result = CliRunner().invoke(main, ["search", str(tmp_path / "idx"), str(tmp_path / "q"), "-k", "50",
                                       "-o", str(tmp_path / "r.parquet"), "--no-progress", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.names == ["query_uid", "uid", "score", "rank"]
    assert [str(t) for t in table.schema.types] == ["int64", "int64", "float", "int32"]
    frame = table.to_pandas()
    assert sorted(frame["query_uid"].unique()) == [5, 9, 11]
    for _, hits in frame.groupby("query_uid"):
        assert len(hits) == 20  # only 20 vectors: faiss's -1 fillers dropped
        assert hits["rank"].tolist() == list(range(20))
        assert np.all(np.diff(hits["score"].to_numpy()) <= 1e-6)
        assert sorted(hits["uid"]) == sorted(list(range(12)) + [PART_SHIFT + i for i in range(8)])
    assert (tmp_path / "r.parquet.manifest.json").exists()


def _one_line_error(args) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("laionet: error:"), result.output
    return lines[0]


def test_bad_inputs_give_one_line_errors(synthetic, tmp_path):
    folder, _, _, qfolder, _ = synthetic
    assert "no such embedding folder" in _one_line_error(["index", str(tmp_path / "nope"), "-o", str(tmp_path / "i")])
    assert "bad memory size" in _one_line_error(["index", str(folder), "-o", str(tmp_path / "i"), "--max-memory", "x"])
    build_index(folder, tmp_path / "idx", IndexOptions(progress=False))
    write_part(tmp_path / "q16", 0, np.arange(3), clustered(np.random.default_rng(1), 3, 16))
    assert "dimension 16" in _one_line_error(["search", str(tmp_path / "idx"), str(tmp_path / "q16"), "-k", "3",
                                              "-o", str(tmp_path / "r.parquet")])
    assert "-k must be at least 1" in _one_line_error(["search", str(tmp_path / "idx"), str(qfolder), "-k", "0",
                                                       "-o", str(tmp_path / "r.parquet")])
    assert "not a finished" in _one_line_error(["search", str(tmp_path / "nope"), str(qfolder),
                                                "-o", str(tmp_path / "r.parquet")])
    assert "no such query" in _one_line_error(["search", str(tmp_path / "idx"), str(tmp_path / "nope"),
                                               "-o", str(tmp_path / "r.parquet")])
    assert not (tmp_path / "r.parquet").exists()


# ------------------------------------------------------------------ search: resume after an interruption


@pytest.fixture
def query_parts(synthetic, tmp_path):
    """A Flat index of the synthetic collection, and its 200 queries as a folder of 3 parts (3 chunks)."""
    folder, _, _, _, queries = synthetic
    build_index(folder, tmp_path / "idx", IndexOptions(progress=False))
    qfolder = tmp_path / "q3"
    write_folder(qfolder, [queries[:80], queries[80:150], queries[150:]])
    return tmp_path / "idx", qfolder


def crash_on_write(monkeypatch, at: int) -> None:
    """ShardStore.write saves `at - 1` chunks, then a KeyboardInterrupt (a killed search)."""
    real_write, calls = ShardStore.write, {"n": 0}

    def write(self, *args):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt("killed")
        real_write(self, *args)

    monkeypatch.setattr(ShardStore, "write", write)


def searched_chunks(monkeypatch) -> list[int]:
    """The query chunks a search reads, in order."""
    chunks, real_batches = [], search_module.Queries.batches
    monkeypatch.setattr(search_module.Queries, "batches", lambda self, chunk: (chunks.append(chunk),
                                                                               real_batches(self, chunk))[1])
    return chunks


def test_interrupted_search_resumes_with_the_uninterrupted_results(query_parts, tmp_path, monkeypatch):
    index, qfolder = query_parts
    options = SearchOptions(k=5, batch_size=32, progress=False)
    whole = search_index(index, str(qfolder), tmp_path / "whole.parquet", options)
    assert (whole["chunks"], whole["chunks_resumed"], whole["query_rows"]) == (3, 0, 200)

    out = tmp_path / "r.parquet"
    crash_on_write(monkeypatch, at=2)
    with pytest.raises(KeyboardInterrupt):
        search_index(index, str(qfolder), out, options)
    monkeypatch.undo()
    work = tmp_path / ".r.parquet.work"
    assert not out.exists() and len(list((work / "stats").glob("*.json"))) == 1

    faiss_calls = []
    real_search = search_module._search_faiss
    def counted_search(loaded, vectors, k):
        faiss_calls.append(len(vectors))
        return real_search(loaded, vectors, k)

    monkeypatch.setattr(search_module, "_search_faiss", counted_search)
    chunks = searched_chunks(monkeypatch)
    info = search_index(index, str(qfolder), out, options)
    assert chunks == [1, 2] and faiss_calls == [32, 32, 6, 32, 18]  # the last two parts only, in batches
    assert (info["chunks"], info["chunks_resumed"], info["query_rows"], info["hits"]) == (3, 1, 200, whole["hits"])
    assert out.read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert not work.exists()


def test_search_rerun_with_other_parameters_is_refused(query_parts, tmp_path, monkeypatch):
    index, qfolder = query_parts
    out = tmp_path / "r.parquet"
    args = ["search", str(index), str(qfolder), "-o", str(out), "--no-progress", "-k", "3"]
    crash_on_write(monkeypatch, at=3)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130 and "run the same command again to resume" in result.output
    monkeypatch.undo()
    assert "other inputs or parameters" in _one_line_error(args[:-1] + ["4"])
    assert not out.exists()

    chunks = searched_chunks(monkeypatch)
    result = CliRunner().invoke(main, args[:-1] + ["4", "--overwrite"])  # partial k=3 results discarded
    assert result.exit_code == 0, result.output
    assert chunks == [0, 1, 2] and not (tmp_path / ".r.parquet.work").exists()
    search_index(index, str(qfolder), tmp_path / "k4.parquet", SearchOptions(k=4, progress=False))
    assert out.read_bytes() == (tmp_path / "k4.parquet").read_bytes()
    stage = json.loads((tmp_path / "r.parquet.manifest.json").read_text())["stages"]["search"]
    assert (stage["k"], stage["chunks"], stage["chunks_resumed"], stage["hits"]) == (4, 3, 0, 800)

    result = CliRunner().invoke(main, args)  # a finished search run again: searched again, with its own -k
    assert result.exit_code == 0, result.output
    assert set(pq.read_table(out).column("rank").to_pylist()) == {0, 1, 2}


@pytest.mark.slow  # loads MiniLM three times
def test_interrupted_caption_search_does_not_embed_finished_chunks(sample_parquet, minilm_path, tmp_path,
                                                                   monkeypatch):
    """Caption queries in chunks of --chunk-rows: a resumed search embeds only the captions of the chunks
    not yet saved, and writes what an uninterrupted search writes."""
    from laionet.score import encoders

    spec = f"sentence-transformers:{minilm_path}"
    write_folder(tmp_path / "emb", [clustered(np.random.default_rng(2), 400, 384)], encoder=spec)
    build_index(tmp_path / "emb", tmp_path / "idx", IndexOptions(progress=False))
    texts = pq.read_table(sample_parquet, columns=["TEXT"]).column("TEXT").to_pylist()[:120]
    pq.write_table(pa.table({"TEXT": texts}), tmp_path / "captions.parquet", row_group_size=40)
    encoded = []
    real_load = encoders.load_text_encoder

    def counting_encoder(*args, **kwargs):
        encoder = real_load(*args, **kwargs)
        real_encode = encoder.encode
        encoder.encode = lambda batch, **kw: (encoded.extend(batch), real_encode(batch, **kw))[1]
        return encoder

    monkeypatch.setattr(encoders, "load_text_encoder", counting_encoder)

    def search(out) -> CliRunner:
        return CliRunner().invoke(main, ["search", str(tmp_path / "idx"), str(tmp_path / "captions.parquet"),
                                         "-k", "3", "-o", str(out), "--chunk-rows", "50", "--batch-size", "16",
                                         "--no-progress"])

    assert search(tmp_path / "whole.parquet").exit_code == 0 and encoded == texts
    real_write = ShardStore.write
    crash_on_write(monkeypatch, at=2)
    assert search(tmp_path / "r.parquet").exit_code == 130
    monkeypatch.setattr(ShardStore, "write", real_write)
    encoded.clear()
    result = search(tmp_path / "r.parquet")
    assert result.exit_code == 0 and "1 of 3 chunks resumed" in result.output, result.output
    assert encoded == texts[40:]  # the first chunk's captions are not embedded again
    assert (tmp_path / "r.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


# ------------------------------------------------------------------ search results into a dataset


def _reference_dataset(results, query_label: dict, top: int, min_score, collection: dict) -> dict:
    """A plain loop: (uid, label) -> (best score, its query), from the hits that pass."""
    best: dict = {}
    for q, u, s, r in results:
        if r >= top or (min_score is not None and not s > min_score) or q not in query_label:
            continue
        key = (u, query_label[q])
        if key not in best or (s, -q) > (best[key][0], -best[key][1]):
            best[key] = (s, q)
    return {key: (s, q, collection[key[0]]) for key, (s, q) in best.items()}


def test_search_dataset_join_and_dedup(tmp_path):
    rng = np.random.default_rng(11)
    collection = {i: (f"http://x/{i}.jpg", f"caption {i}") for i in range(30)}
    pq.write_table(pa.table({"URL": [v[0] for v in collection.values()], "TEXT": [v[1] for v in collection.values()]}),
                   tmp_path / "laion.parquet")
    labels = ["n01", "n02", "n01", "n03", "n02", None, "n01", "n03"]
    pq.write_table(pa.table({"TEXT": [f"q {i}" for i in range(8)], "wnid": labels}), tmp_path / "queries.parquet")
    rows = [(q, int(u), float(np.float32(s)), r) for q in range(8)
            for r, (u, s) in enumerate(zip(rng.choice(12, 3, replace=False), np.sort(rng.uniform(0.5, 1, 3))[::-1]))]
    pq.write_table(pa.table({"query_uid": pa.array([r[0] for r in rows], pa.int64()),
                             "uid": pa.array([r[1] for r in rows], pa.int64()),
                             "score": pa.array([r[2] for r in rows], pa.float32()),
                             "rank": pa.array([r[3] for r in rows], pa.int32())}), tmp_path / "results.parquet")
    query_label = {i: w for i, w in enumerate(labels) if w is not None}
    for top, min_score in ((1, None), (3, 0.7)):
        info = search_dataset(str(tmp_path / "results.parquet"), [str(tmp_path / "queries.parquet")],
                              [str(tmp_path / "laion.parquet")], tmp_path / "ds.parquet", "wnid", top, min_score)
        got = pq.read_table(tmp_path / "ds.parquet").to_pylist()
        want = _reference_dataset(rows, query_label, top, min_score, collection)
        assert {(r["uid"], r["wnid"]): (pytest.approx(r["score"]), r["query_uid"], (r["URL"], r["TEXT"]))
                for r in got} == want
        assert len(got) == len(want) == info["rows_out"]  # one row per (uid, label)
    assert info["rows_with_several_labels"] > 0  # the fixture makes some: check the modes on them
    search_dataset(str(tmp_path / "results.parquet"), [str(tmp_path / "queries.parquet")],
                   [str(tmp_path / "laion.parquet")], tmp_path / "drop.parquet", "wnid", 3, 0.7, multi_label="drop")
    dropped = pq.read_table(tmp_path / "drop.parquet").to_pylist()
    multi = {u for (u, _), n in _count_labels(want).items() if n > 1}
    assert {(r["uid"], r["wnid"]) for r in dropped} == {key for key in want if key[0] not in multi}
    search_dataset(str(tmp_path / "results.parquet"), [str(tmp_path / "queries.parquet")],
                   [str(tmp_path / "laion.parquet")], tmp_path / "best.parquet", "wnid", 3, 0.7, multi_label="best")
    best = {r["uid"]: r["wnid"] for r in pq.read_table(tmp_path / "best.parquet").to_pylist()}
    best_label = {}  # per uid: the label of its best hit, ties to the smaller query_uid
    for (uid, label), _ in sorted(want.items(), key=lambda kv: (-kv[1][0], kv[1][1])):
        best_label.setdefault(uid, label)
    assert best == best_label and len(best) < len(want)

    # what `laionet similarity` reads: unique uids, a label column, an image column
    from laionet.similarity.run import read_labelled_items

    items = read_labelled_items(str(tmp_path / "drop.parquet"), "wnid", None, None)
    assert items.num_rows == len(dropped) and set(items.column("label").to_pylist()) <= set(labels)


def _count_labels(pairs) -> dict:
    counts: dict = {}
    for uid, _ in pairs:
        counts[(uid, None)] = counts.get((uid, None), 0) + 1
    return counts


# ------------------------------------------------------------------ ray


@pytest.mark.slow
def test_ray_build_equals_local_build(synthetic, tmp_path, ray_cluster):
    folder = synthetic[0]
    build_index(folder, tmp_path / "local", IndexOptions(kind="ivf-flat", progress=False))
    info = build_index(folder, tmp_path / "ray", IndexOptions(kind="ivf-flat", runner="ray", parts_per_task=2,
                                                              progress=False))
    assert info["runner"] == "ray"
    local, ray = _index_bytes(tmp_path / "local"), _index_bytes(tmp_path / "ray")
    assert local[0] == ray[0] and np.array_equal(local[1], ray[1])


# ------------------------------------------------------------------ DONE-WHEN: real captions


@pytest.fixture(scope="module")
def caption_embeddings(tmp_path_factory, sample_parquet, minilm_path):
    """MiniLM embeddings of 2,500 of the sample's real captions as the collection (2 parts, ordinal uids), and
    as queries 500 of those captions with every third word dropped (a caption phrased differently, as
    ImageNet-Captions texts against LAION's): a caption parquet, and their embeddings as a folder."""
    from laionet.score.encoders import load_text_encoder

    spec = f"sentence-transformers:{minilm_path}"
    texts = pq.read_table(sample_parquet, columns=["TEXT"]).column("TEXT").to_pylist()[:2500]
    queries = [" ".join(w for i, w in enumerate(t.split()) if i % 3 != 2) or t for t in texts[::5]]
    encoder = load_text_encoder(spec, device="cpu")
    vectors, query_vectors = encoder.encode(texts, batch_size=128), encoder.encode(queries, batch_size=128)
    root = tmp_path_factory.mktemp("captions")
    folder = root / "emb"
    write_part(folder, 0, np.arange(1250), vectors[:1250])
    write_part(folder, 1, np.arange(1250, 2500), vectors[1250:])
    for path in (folder, root / "query-emb"):
        path.mkdir(exist_ok=True)
        (path / "manifest.json").write_text(json.dumps({"stages": {"embed": {"encoder": spec}}}))
    write_part(root / "query-emb", 0, np.arange(len(queries)), query_vectors)
    pq.write_table(pa.table({"TEXT": queries}), root / "queries.parquet")
    return folder, root / "queries.parquet", root / "query-emb"


@pytest.mark.slow  # MiniLM over 3,500 captions: ~25 s on 2 idle cores, ~100 s when other jobs share them
def test_real_captions_compressed_search_agrees_with_exact(caption_embeddings, tmp_path):
    folder, queries, query_embeddings = caption_embeddings
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(folder), "-o", str(tmp_path / "idx"), "--kind", "ivf-pq",
                                  "--no-progress"])
    assert result.exit_code == 0, result.output
    info = open_index(tmp_path / "idx").info
    assert info["factory"].startswith("IVF") and ",PQ" in info["factory"]  # PQ codes find the candidates
    assert info["nprobe"] < info["nlist"]  # the default probes only part of the lists
    # the captions are embedded by `laionet search` itself, with the encoder the index records
    result = runner.invoke(main, ["search", str(tmp_path / "idx"), str(queries), "-k", "5",
                                  "-o", str(tmp_path / "approx.parquet"), "--no-progress"])
    assert result.exit_code == 0, result.output
    search_index(tmp_path / "idx", str(query_embeddings), tmp_path / "exact.parquet",
                 SearchOptions(k=5, exact=True, progress=False))
    approx, exact = (read_results(tmp_path / f"{n}.parquet") for n in ("approx", "exact"))
    top1 = approx[approx["rank"] == 0].merge(exact[exact["rank"] == 0], on="query_uid")
    assert len(top1) == 500 and set(top1["query_uid"]) == set(range(500))
    agreement = float(np.mean(top1["uid_x"] == top1["uid_y"]))
    assert agreement >= 0.99, agreement


def test_index_of_captions_embeds_them_first(sample_parquet, minilm_path, tmp_path):
    """`laionet index CAPTIONS --encoder SPEC`: embedded into OUT/embeddings, then indexed; searching the same
    captions finds each distinct caption itself first; a rerun reuses both, other parameters are refused."""
    texts = pq.read_table(sample_parquet, columns=["TEXT"]).column("TEXT").to_pylist()[:300]
    pq.write_table(pa.table({"TEXT": texts}), tmp_path / "captions.parquet")
    spec = f"sentence-transformers:{minilm_path}"
    args = ["index", str(tmp_path / "captions.parquet"), "--encoder", spec, "-o", str(tmp_path / "idx"),
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    info = open_index(tmp_path / "idx").info
    assert info["encoder"] == spec and info["rows"] == 300 and info["factory"] == "Flat"
    result = CliRunner().invoke(main, ["search", str(tmp_path / "idx"), str(tmp_path / "captions.parquet"), "-k", "1",
                                       "-o", str(tmp_path / "r.parquet"), "--no-progress"])
    assert result.exit_code == 0, result.output
    hits = pq.read_table(tmp_path / "r.parquet").to_pylist()
    found_itself = [texts[h["uid"]] == texts[h["query_uid"]] for h in hits]
    assert len(hits) == 300 and all(found_itself)
    assert all(h["score"] > 0.999 for h in hits)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "already built" in again.output
    other = CliRunner().invoke(main, args[:-1] + ["--text-col", "TEXT", "--no-progress"])
    assert other.exit_code == 2 and "other inputs or parameters" in other.output
    assert "not an embedding folder" in _one_line_error(["index", str(tmp_path / "captions.parquet"),
                                                         "-o", str(tmp_path / "i2")])
