"""The vocabulary: the original lemma table under `paper`, query templates, sources, and bad input."""

from __future__ import annotations

from collections import Counter

import pytest

from laionet.errors import LaionetError
from laionet.vocab import QUERY_TEMPLATES, build_vocab
from laionet.vocab.build import vocab_info


def original_lemma_table(path) -> dict[str, str]:
    """Spec §1.2, written out independently: ILSVRC scope, exact strings, token counts, file order."""
    lines = path.read_text().splitlines()[1:]
    rows = [(line.split(": ", 1)[0], line.split(": ", 1)[1].split(", ")) for line in lines]
    counts = Counter(lemma for _, lemmas in rows for lemma in lemmas)
    return {lemma: wnid for wnid, lemmas in rows for lemma in lemmas if counts[lemma] == 1}


def flatten(vocab) -> dict[str, str]:
    return {lemma: wnid for wnid, lemmas in zip(vocab["wnid"].to_pylist(), vocab["match_lemmas"].to_pylist())
            for lemma in lemmas}


def test_paper_match_lemmas_are_the_original_table(synsets_file):
    vocab = build_vocab(f"synsets:{synsets_file}", "paper")
    table = flatten(vocab)
    expected = original_lemma_table(synsets_file)
    assert list(table.items()) == list(expected.items())  # order included
    assert len(table) == 1825 and len(set(table.values())) == 995
    empty = {w for w, m in zip(vocab["wnid"].to_pylist(), vocab["match_lemmas"].to_pylist()) if not m}
    assert empty == {"n03773504", "n03495258", "n01807496", "n03710637"}  # missile, harp, partridge, maillot
    assert vocab.num_rows == 999
    assert vocab_info(vocab)["preset"] == "paper"


def test_columns_and_query_templates(synsets_file):
    vocab = build_vocab(f"synsets:{synsets_file}", "paper")
    for column in ("wnid", "name", "definition", "lemmas", "match_lemmas", *QUERY_TEMPLATES):
        assert column in vocab.column_names
    rows = {r["wnid"]: r for r in vocab.to_pylist()}
    kit_fox = rows["n02119789"]
    assert kit_fox["name"] == "kit fox"
    assert kit_fox["name_def"] == ("kit fox which is small grey fox of southwestern United States; "
                                   "may be a subspecies of Vulpes velox")
    assert kit_fox["lemmas"] == "kit fox or Vulpes macrotis"
    assert kit_fox["a_photo_of_name"] == "a photo of kit fox"
    assert kit_fox["a_clear_photo_of_name_def"].startswith("a clear photo of kit fox which is small grey fox")
    assert kit_fox["a_photo_of_lemmas"] == "a photo of kit fox or Vulpes macrotis"
    # the original file's wrong husky wnid resolves to the Siberian husky synset, as the original did
    husky = rows["n02112837"]
    assert husky["name"] == "siberian husky"
    assert husky["name_def"].startswith("siberian husky which is breed of sled dog")
    # names are NLTK's lower-case head names
    assert rows["n02012849"]["name"] == "crane"
    assert all(name == name.lower() for name in vocab["name"].to_pylist())


def test_clean_preset_harmonises_husky_and_normalises(synsets_file):
    vocab = build_vocab(f"synsets:{synsets_file}", "clean")
    wnids = vocab["wnid"].to_pylist()
    assert "n02110185" in wnids and "n02112837" not in wnids
    table = flatten(vocab)
    # punctuation lemmas become matchable; case-insensitive duplicates across classes are dropped
    assert "three-toed sloth" in table and "jack-o'-lantern" in table
    assert "cardigan" not in table and "Cardigan" not in table


def test_imagenet_sources():
    one_k = build_vocab("imagenet-1k", "paper")
    assert one_k.num_rows == 1000 and one_k["wnid"].to_pylist()[0] == "n01440764"
    assert "n02110185" in one_k["wnid"].to_pylist()


def test_wnids_file_source(tmp_path):
    path = tmp_path / "wnids.txt"
    path.write_text("# my classes\nn02119789\nn01440764  tench\n\n")
    vocab = build_vocab(f"wnids:{path}", "clean")
    assert vocab["wnid"].to_pylist() == ["n02119789", "n01440764"]
    assert vocab["match_lemmas"].to_pylist()[1] == ["tench", "Tinca tinca"]


@pytest.mark.parametrize("content, message", [
    ("n99999999\n", "unknown wnid 'n99999999'"),
    ("dog\n", "is not a WordNet id"),
    ("n02119789\nn02119789\n", "listed twice"),
    ("", "no wnids found"),
])
def test_bad_wnids_files(tmp_path, content, message):
    path = tmp_path / "wnids.txt"
    path.write_text(content)
    with pytest.raises(LaionetError, match=message):
        build_vocab(f"wnids:{path}")


def test_bad_synsets_file_names_the_line(tmp_path):
    path = tmp_path / "synsets.txt"
    path.write_text("id: lemmas\nn02119789: kit fox\nn02100735 English setter\n")
    with pytest.raises(LaionetError, match=r"synsets.txt:3"):
        build_vocab(f"synsets:{path}")


def test_unknown_source():
    with pytest.raises(LaionetError, match="unknown vocabulary source"):
        build_vocab("imagenet-5k")


def test_reachable_classes_match_the_spec(synsets_file):
    """Spec §1.3: 995 matchable classes, 15 unreachable through punctuation, 27 only ever multi-label."""
    paper = vocab_info(build_vocab(f"synsets:{synsets_file}", "paper"))
    assert paper["matchable_classes"] == 995 and paper["reachable_classes"] == 995 - 15 - 27
    clean = vocab_info(build_vocab(f"synsets:{synsets_file}", "clean"))
    assert clean["reachable_classes"] == clean["matchable_classes"] == 994
