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
    return sorted((i, w, l) for i, t in enumerate(texts) for w, l in oracle.match(t))


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
