"""Bad input: one line naming the file, column or value, a non-zero exit, nothing half-written."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("laionet: error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def write(tmp_path):
    def _write(name, table, **kwargs):
        path = tmp_path / name
        pq.write_table(table, path, **kwargs)
        return path
    return _write


def match(path, vocab, tmp_path, *extra):
    return run("match", path, "--vocab", vocab, "-o", tmp_path / "m.parquet", "--no-progress", *extra)


def test_missing_input_file(tmp_path, paper_vocab_path):
    assert_one_line_error(match(tmp_path / "nope.parquet", paper_vocab_path, tmp_path), "nope.parquet", "no such file")


def test_glob_matching_nothing(tmp_path, paper_vocab_path):
    assert_one_line_error(match(tmp_path / "*.parquet", paper_vocab_path, tmp_path), "no such file")


def test_missing_text_column(tmp_path, write, paper_vocab_path):
    path = write("x.parquet", pa.table({"caption_text": ["a dog"]}))
    assert_one_line_error(match(path, paper_vocab_path, tmp_path), "x.parquet", "no text column")
    assert_one_line_error(match(path, paper_vocab_path, tmp_path, "--text-col", "TITLE"), "x.parquet", "'TITLE'")


def test_non_string_caption_column(tmp_path, write, paper_vocab_path):
    path = write("x.parquet", pa.table({"TEXT": [1, 2, 3]}))
    assert_one_line_error(match(path, paper_vocab_path, tmp_path), "x.parquet", "'TEXT'", "not text")


def test_null_captions(tmp_path, write, paper_vocab_path):
    path = write("x.parquet", pa.table({"TEXT": ["a lion", None, "a tench"]}))
    assert_one_line_error(match(path, paper_vocab_path, tmp_path), "x.parquet", "'TEXT'", "null", "--skip-null-text")
    assert not (tmp_path / "m.parquet").exists()
    ok = match(path, paper_vocab_path, tmp_path, "--skip-null-text")
    assert ok.exit_code == 0, ok.output
    assert pq.read_table(tmp_path / "m.parquet").column("uid").to_pylist() == [0, 2]


def test_null_captions_without_statistics(tmp_path, write, paper_vocab_path):
    path = write("x.parquet", pa.table({"TEXT": ["a lion", None]}), write_statistics=False)
    assert_one_line_error(match(path, paper_vocab_path, tmp_path), "x.parquet", "null", "row 1")


def test_empty_and_corrupt_parquet(tmp_path, write, paper_vocab_path):
    empty = write("empty.parquet", pa.table({"TEXT": pa.array([], pa.string())}))
    assert_one_line_error(match(empty, paper_vocab_path, tmp_path), "empty.parquet", "no rows")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not really parquet")
    assert_one_line_error(match(corrupt, paper_vocab_path, tmp_path), "corrupt.parquet", "not a readable parquet")
    zero = tmp_path / "zero.parquet"
    zero.write_bytes(b"")
    assert_one_line_error(match(zero, paper_vocab_path, tmp_path), "zero.parquet")


def test_vocab_problems(tmp_path, write, sample_parquet, clean_vocab_path):
    assert_one_line_error(match(sample_parquet, tmp_path / "none.parquet", tmp_path), "none.parquet", "not found")
    not_vocab = write("v.parquet", pa.table({"a": [1]}))
    assert_one_line_error(match(sample_parquet, not_vocab, tmp_path), "v.parquet", "match_lemmas")
    assert_one_line_error(match(sample_parquet, clean_vocab_path, tmp_path, "--preset", "paper"),
                          "--preset clean")


def test_bad_encoder_spec_fails_before_any_work(tmp_path, sample_parquet):
    result = run("build", sample_parquet, "-o", tmp_path / "out", "--encoder", "word2vec:foo", "--threshold", 0.5)
    assert_one_line_error(result, "word2vec:foo")
    assert not (tmp_path / "out" / "matches.parquet").exists()


def test_threshold_required_for_other_encoders(tmp_path, sample_parquet, minilm_path):
    result = run("build", sample_parquet, "-o", tmp_path / "out", "--encoder", f"sentence-transformers:{minilm_path}")
    assert_one_line_error(result, "--threshold is required")


def test_missing_model_folder(tmp_path, sample_parquet, synsets_file):
    result = run("build", sample_parquet, "-o", tmp_path / "out", "--source", f"synsets:{synsets_file}",
                 "--encoder", f"sentence-transformers:{tmp_path / 'no-model'}", "--threshold", 0.5, "--no-progress")
    assert_one_line_error(result, "no-model")


def test_unknown_wnid_in_candidates(tmp_path, write, paper_vocab_path, minilm_path):
    path = write("c.parquet", pa.table({"uid": [1], "TEXT": ["a dog"], "wnid": ["n99999999"]}))
    result = run("score", path, "--vocab", paper_vocab_path, "--encoder", f"sentence-transformers:{minilm_path}",
                 "-o", tmp_path / "s.parquet", "--no-progress")
    assert_one_line_error(result, "c.parquet", "n99999999")
