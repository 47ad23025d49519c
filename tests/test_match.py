"""Matching: the fast matcher against the plain oracle, the paper's rule, the clean preset's fixes."""

from __future__ import annotations

import random
import string

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionet.match.engines import hyperscan_available
from laionet.match.matcher import Matcher, lemma_table
from laionet.match.oracle import OracleMatcher
from laionet.presets import CLEAN, PAPER
from laionet.vocab import build_vocab

ENGINES = ["aho-corasick"] + (["hyperscan"] if hyperscan_available() else [])


def fast_matches(matcher, texts):
    out = matcher.match(pa.array(np.arange(len(texts)), pa.int64()), pa.array(texts, pa.large_string()))
    return sorted(zip(out["uid"].to_pylist(), out["wnid"].to_pylist(), out["lemma"].to_pylist()))


def oracle_matches(lemmas, preset, texts):
    oracle = OracleMatcher(lemmas, preset)
    return sorted((i, w, lemma) for i, t in enumerate(texts) for w, lemma in oracle.match(t))


def spec_rule(text, lemmas):
    """Spec §1.3 verbatim, separate from the oracle module: punctuation -> space, pad, substring."""
    for char in string.punctuation:
        text = text.replace(char, " ")
    return {lemma for lemma in lemmas if f" {lemma} " in f" {text} "}


@pytest.fixture(scope="module")
def paper_lemmas(synsets_file):
    return lemma_table(build_vocab(f"synsets:{synsets_file}", "paper"))


@pytest.fixture(scope="module")
def clean_lemmas(synsets_file):
    return lemma_table(build_vocab(f"synsets:{synsets_file}", "clean"))


@pytest.fixture(scope="module")
def sample_texts(sample_parquet):
    return pq.read_table(sample_parquet).column("TEXT").to_pylist()


@pytest.mark.parametrize("engine", ENGINES)
def test_paper_on_real_captions_equals_the_original_rule(paper_lemmas, sample_texts, engine):
    got = fast_matches(Matcher(paper_lemmas, PAPER, engine), sample_texts)
    assert got == oracle_matches(paper_lemmas, PAPER, sample_texts)
    by_row = {}
    for row, _, lemma in got:
        by_row.setdefault(row, set()).add(lemma)
    for row, text in enumerate(sample_texts):
        assert by_row.get(row, set()) == spec_rule(text, paper_lemmas)
    assert 250 <= len(by_row) <= 300  # "about 270 of them match" (data README)


def test_clean_on_real_captions_equals_the_oracle(clean_lemmas, sample_texts):
    got = fast_matches(Matcher(clean_lemmas, CLEAN), sample_texts)
    assert got == oracle_matches(clean_lemmas, CLEAN, sample_texts)


def random_captions(lemmas, n, seed):
    """Captions stressing the edges: lemmas at both ends, adjacent, nested, repeated, with punctuation,
    odd case and whitespace, non-ASCII text."""
    rng = random.Random(seed)
    pool = list(lemmas) + ["mountain lion", "sea lion", "Border collie", "lion", "collie", "tiger cat"]
    fillers = ["a", "the", "photo", "of", "my", "-", "!!", "é", "日本", "\t", "  ", "’s", "(", ")", "x"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 8)):
            word = rng.choice(pool) if rng.random() < 0.4 else rng.choice(fillers)
            if rng.random() < 0.2:
                word = word.upper() if rng.random() < 0.5 else word.title()
            parts.append(word)
        sep = rng.choice([" ", " ", "-", ", ", "/"])
        out.append(sep.join(parts))
    return out + [None, ""]


@pytest.mark.parametrize("engine", ENGINES)
def test_paper_on_adversarial_captions(paper_lemmas, engine):
    texts = random_captions(paper_lemmas, 3000, seed=1)
    assert fast_matches(Matcher(paper_lemmas, PAPER, engine), texts) == oracle_matches(paper_lemmas, PAPER, texts)


def test_clean_on_adversarial_captions(clean_lemmas):
    texts = random_captions(clean_lemmas, 3000, seed=2)
    assert fast_matches(Matcher(clean_lemmas, CLEAN), texts) == oracle_matches(clean_lemmas, CLEAN, texts)


def test_paper_quirks_are_kept(paper_lemmas):
    m = Matcher(paper_lemmas, PAPER)
    rows = dict.fromkeys(range(6))
    texts = ["a mountain lion", "Mountain Lion", "three-toed sloth", "lion tiger", "lion,tiger", "sea-lion"]
    got = fast_matches(m, texts)
    for row, _, lemma in got:
        rows[row] = (rows[row] or set()) | {lemma}
    assert rows[0] == {"mountain lion", "lion"}  # nested lemmas both match: multi-label later
    assert rows[1] is None  # case-sensitive
    assert rows[2] is None  # lemmas with punctuation are dead
    assert rows[3] == {"lion", "tiger"} and rows[4] == {"lion", "tiger"}  # adjacent words share a space
    assert rows[5] == {"sea lion", "lion"}  # caption punctuation becomes a space


def test_clean_fixes_the_quirks(clean_lemmas):
    m = Matcher(clean_lemmas, CLEAN)
    texts = ["a mountain lion", "Mountain Lion", "three-toed sloth", "lion tiger", "Jack-O’-Lantern!"]
    rows = {}
    for row, _, lemma in fast_matches(m, texts):
        rows.setdefault(row, set()).add(lemma)
    assert rows[0] == {"mountain lion"}  # longest match wins
    assert rows[1] == {"mountain lion"}  # case folded
    assert rows[2] == {"three-toed sloth"}  # lemma punctuation normalised too
    assert rows[3] == {"lion", "tiger"}
    assert rows[4] == {"jack-o'-lantern"}  # Unicode apostrophe is punctuation too


def test_empty_batch_and_no_patterns(paper_lemmas):
    assert Matcher(paper_lemmas, PAPER).match(pa.array([], pa.int64()), pa.array([], pa.string())).num_rows == 0
    assert Matcher({}, PAPER).match(pa.array([1], pa.int64()), pa.array(["lion"])).num_rows == 0


def test_reachable_classes_on_the_sample(paper_lemmas, clean_lemmas, sample_texts):
    """What the README reports: classes each preset reaches with at least one single-label caption."""
    def single_label_classes(lemmas, preset):
        per_row = {}
        for row, wnid, _ in fast_matches(Matcher(lemmas, preset), sample_texts):
            per_row.setdefault(row, set()).add(wnid)
        return {next(iter(w)) for w in per_row.values() if len(w) == 1}

    paper = single_label_classes(paper_lemmas, PAPER)
    clean = single_label_classes(clean_lemmas, CLEAN)
    assert len(clean) > len(paper) > 100


def edge_captions(lemmas):
    """Row edges and bytes the haystack must get exactly right."""
    lemma = next(lemma for lemma in lemmas if " " not in lemma and lemma.isalpha())
    two_words = next(lemma for lemma in lemmas if lemma.count(" ") == 1 and lemma.replace(" ", "").isalpha())
    first, second = two_words.split(" ")
    return [
        lemma, f"{lemma}!", f"!{lemma}", f"({lemma})", f"{lemma}\t", f"\t{lemma}", f"{lemma}\n", f"é{lemma}",
        f"{lemma}é", f"{lemma}日本", f"日本 {lemma}", f" {lemma} ", f"{lemma}{lemma}", f"{lemma} {lemma}",
        "", "!", " ", "\t", "日本",
        # a two-word lemma split over two rows, in both orders and with punctuation at the cut
        f"x {first}", f"{second} x", f"{first}", f"{second}", f"x {first}-", f"-{second}",
        f"{first}-{second}", f"{first}\t{second}", f"{first}  {second}", f"{first}:{second}.",
        f"{lemma} " * 5000 + "x", "é" * 10_000 + f" {lemma}",
    ]


def slice_texts(texts, sizes):
    """`texts` as a ChunkedArray of large_string chunks of the given sizes, each a slice (non-zero offset)."""
    whole = pa.array(["pad"] * 3 + texts, pa.large_string()).slice(3)
    chunks, start = [], 0
    for size in sizes:
        chunks.append(whole.slice(start, size))
        start += size
    return pa.chunked_array(chunks + [whole.slice(start)], pa.large_string())


@pytest.mark.parametrize("engine", ENGINES)
def test_paper_on_row_edges(paper_lemmas, engine):
    texts = edge_captions(paper_lemmas)
    assert fast_matches(Matcher(paper_lemmas, PAPER, engine), texts) == oracle_matches(paper_lemmas, PAPER, texts)


@pytest.mark.parametrize("engine", ENGINES)
def test_small_slices_and_chunks_give_the_same_matches(paper_lemmas, sample_texts, engine, monkeypatch):
    """The matcher scans in slices of SCAN_ROWS rows, chunk by chunk: row numbers must carry across."""
    import laionet.match.matcher as matcher_module

    monkeypatch.setattr(matcher_module, "SCAN_ROWS", 7)
    texts = edge_captions(paper_lemmas) + sample_texts[:1000] + random_captions(paper_lemmas, 300, seed=3)
    chunked = slice_texts(texts, [0, 5, 13, 0, 400])
    out = Matcher(paper_lemmas, PAPER, engine).match(pa.array(np.arange(len(texts)) + 100, pa.int64()), chunked)
    got = sorted(zip([u - 100 for u in out["uid"].to_pylist()], out["wnid"].to_pylist(), out["lemma"].to_pylist()))
    assert got == oracle_matches(paper_lemmas, PAPER, texts)
    assert out["uid"].to_pylist() == sorted(out["uid"].to_pylist())


def test_clean_in_small_slices(clean_lemmas, sample_texts, monkeypatch):
    import laionet.match.matcher as matcher_module

    monkeypatch.setattr(matcher_module, "SCAN_ROWS", 11)
    texts = sample_texts[:500] + random_captions(clean_lemmas, 200, seed=4)
    assert fast_matches(Matcher(clean_lemmas, CLEAN), texts) == oracle_matches(clean_lemmas, CLEAN, texts)


@pytest.mark.parametrize("type_", [pa.string(), pa.large_string()])
def test_haystack_is_the_padded_translated_captions(paper_lemmas, type_):
    from laionet.match.haystack import build_haystack
    from laionet.match.oracle import paper_caption

    texts = edge_captions(paper_lemmas) + [None]
    array = pa.array(["pad"] + texts, type_).slice(1)  # a non-zero offset
    haystack = build_haystack(array, pad=" ", strip_punctuation=True)
    padded = [paper_caption(text or "").encode() for text in texts]
    assert bytes(haystack.data) == b"".join(padded)
    assert haystack.offsets.tolist() == np.cumsum([0] + [len(p) for p in padded]).tolist()


def test_forked_worker_setup_keeps_pandas_out():
    """pyarrow would import pandas (0.3 s) in every forked worker; the worker's setup stops that."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, pyarrow as pa\n"
            "from laionet.runners.local import _forked_init\n"
            "_forked_init()\n"
            "pa.array(np.arange(3)); pa.scalar(1); pa.chunked_array([[1]]).to_numpy()\n"
            "assert 'pandas' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_class_counts_count_distinct_captions_per_class():
    import polars as pl

    from laionet.match.stage import class_counts

    rng = np.random.default_rng(0)
    uids = rng.integers(0, 50, 2000) * 10**12  # big uids, as an id column may give
    wnids = [f"n{k:08d}" for k in rng.integers(0, 40, 2000)]
    table = pa.table({"uid": pa.array(uids, pa.int64()), "wnid": pa.array(wnids, pa.string())})
    table = pa.concat_tables([table.slice(0, 700), table.slice(700)])  # several chunks, with offsets
    expected = pl.from_arrow(table).unique().group_by("wnid").len().sort("wnid")
    got = class_counts(table)
    assert list(got.items()) == list(expected.iter_rows())
    assert class_counts(table.slice(0, 0)) == {}


def test_match_process_starts_without_polars_or_pandas():
    """Start-up time is a good part of a whole `laionet match` run: Polars and pandas stay out of it."""
    import subprocess
    import sys

    code = ("import sys, laionet.cli, laionet.pipeline, laionet.runners.local, laionet.match.stage\n"
            "assert 'polars' not in sys.modules and 'pandas' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage_in_slices_gives_the_whole_shard_result(tmp_path, paper_vocab_path, sample_parquet):
    """process_batches over small slices = process over the whole shard: matches, candidates, counts."""
    from laionet.io.inputs import Columns, iter_shard, plan_inputs, read_shard
    from laionet.match.stage import MatchStage
    from laionet.vocab.build import read_vocab

    plan = plan_inputs([str(sample_parquet)], Columns(), shard_rows=2_000)
    stage = MatchStage(read_vocab(paper_vocab_path), PAPER, plan, keep_candidates=True)
    shard = plan.shards[1]
    whole_tables, whole_counts = stage.process(read_shard(shard, plan), shard)
    sliced_tables, sliced_counts = stage.process_batches(iter_shard(shard, plan, batch_rows=333), shard)
    assert sliced_counts == whole_counts and whole_counts["matches"] > 50
    for name in ("matches", "candidates"):
        assert sliced_tables[name].equals(whole_tables[name])


def test_a_null_caption_is_reported_at_its_row_whatever_the_slice(tmp_path, paper_vocab_path):
    from laionet.errors import LaionetError
    from laionet.io.inputs import Columns, iter_shard, plan_inputs
    from laionet.match.stage import MatchStage
    from laionet.vocab.build import read_vocab

    texts = [f"a tabby cat {i}" for i in range(40)]
    texts[27] = None
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"TEXT": texts}), path, write_statistics=False)  # no footer shortcut
    plan = plan_inputs([str(path)], Columns(), shard_rows=20)
    stage = MatchStage(read_vocab(paper_vocab_path), PAPER, plan)
    stage.process_batches(iter_shard(plan.shards[0], plan, batch_rows=6), plan.shards[0])
    with pytest.raises(LaionetError, match="first at row 27"):
        stage.process_batches(iter_shard(plan.shards[1], plan, batch_rows=6), plan.shards[1])


def test_arrays_built_from_buffers_equal_pyarrows():
    from laionet.io.arrays import int64_array, numbers, string_array

    strings = ["tabby", "", "chow chow", "café ☕", "x" * 300]
    assert string_array(strings).equals(pa.array(strings, pa.string()))
    assert string_array([]).equals(pa.array([], pa.string()))
    values = np.array([5, -3, 2**40], dtype=np.int64)
    assert int64_array(values).equals(pa.array(values))
    sliced = pa.chunked_array([pa.array([1, 2, 3], pa.int64()).slice(1), pa.array([4], pa.int64())])
    assert numbers(sliced).tolist() == [2, 3, 4]
    assert numbers(pa.array([], pa.int64())).tolist() == []


def test_a_match_worker_loads_neither_pandas_nor_numpy_ma(tmp_path, paper_vocab_path, sample_parquet):
    """Each import in a forked worker delays every shard's start: a worker's whole shard, read to write,
    must not load pandas (0.3 s) or numpy.ma (15 ms; np.unique and pa.array/pa.scalar load it)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from laionet.io.inputs import Columns, plan_inputs\n"
            "from laionet.io.shards import ShardStore\n"
            "from laionet.match.stage import MatchStage\n"
            "from laionet.presets import PAPER\n"
            "from laionet.runners.base import process_shard\n"
            "from laionet.runners.local import _forked_init\n"
            "from laionet.vocab.build import read_vocab\n"
            f"plan = plan_inputs([{str(sample_parquet)!r}], Columns())\n"
            f"stage = MatchStage(read_vocab({str(paper_vocab_path)!r}), PAPER, plan, keep_candidates=True)\n"
            "stage.setup()\n"
            "assert 'numpy.ma' not in sys.modules and 'pandas' not in sys.modules\n"
            "_forked_init()\n"
            f"store = ShardStore({str(tmp_path / 'work')!r}, list(stage.outputs), {{}})\n"
            "store.open()\n"
            "counts = process_shard(stage, plan, plan.shards[0], store)\n"
            "assert counts['matches'] > 100, counts\n"
            "loaded = [m for m in ('pandas', 'numpy.ma') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)
