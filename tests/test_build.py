"""`laionet build` end to end on the real sample with the real MiniLM model, against an independent
computation of the paper's rules (spec §1.2-1.3, §3.3, §4.1)."""

from __future__ import annotations

import importlib.util
import json
import string
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.cli import main


def timm_table(name: str) -> dict[str, str]:
    folder = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"
    lines = (folder / name).read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines if line)


def independent_laionet(sample, synsets, model_path, threshold):
    """The paper's pipeline written out directly: lemma table, matching, single-label, MiniLM, threshold."""
    from sentence_transformers import SentenceTransformer

    rows = [line.split(": ", 1) for line in synsets.read_text().splitlines()[1:]]
    counts = Counter(lemma for _, lemmas in rows for lemma in lemmas.split(", "))
    lemma2wnid = {lemma: wnid for wnid, lemmas in rows for lemma in lemmas.split(", ") if counts[lemma] == 1}
    lemmas_of, definitions = timm_table("imagenet_synset_to_lemma.txt"), timm_table("imagenet_synset_to_definition.txt")

    def name_def(wnid):
        wnid = {"n02112837": "n02110185"}.get(wnid, wnid)
        return f"{lemmas_of[wnid].split(', ')[0].lower()} which is {definitions[wnid]}"

    texts = pq.read_table(sample).column("TEXT").to_pylist()
    kept = {}
    for uid, text in enumerate(texts):
        caption = text
        for char in string.punctuation:
            caption = caption.replace(char, " ")
        wnids = {w for lemma, w in lemma2wnid.items() if f" {lemma} " in f" {caption} "}
        if len(wnids) == 1:
            kept[uid] = (text, wnids.pop())
    model = SentenceTransformer(model_path, device="cpu")
    uids = sorted(kept)
    captions = model.encode([kept[u][0] for u in uids], normalize_embeddings=True)
    queries = model.encode([name_def(kept[u][1]) for u in uids], normalize_embeddings=True)
    sims = np.sum(captions * queries, axis=1)
    return {u: (kept[u][1], float(s)) for u, s in zip(uids, sims)}


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def paper_build(tmp_path_factory, sample_parquet, synsets_file, minilm_path):
    out = tmp_path_factory.mktemp("build") / "out"
    result = run_cli("build", sample_parquet, "--source", f"synsets:{synsets_file}", "--preset", "paper",
                     "--encoder", f"sentence-transformers:{minilm_path}", "--threshold", 0.5, "-o", out,
                     "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_build_keeps_exactly_the_paper_rows_above_threshold(paper_build, sample_parquet, synsets_file, minilm_path):
    expected = independent_laionet(sample_parquet, synsets_file, minilm_path, 0.5)
    dataset = pq.read_table(paper_build / "laionet.parquet").to_pylist()
    got = {row["uid"]: (row["wnid"], row["similarity"]) for row in dataset}
    borderline = {u for u, (_, s) in expected.items() if abs(s - 0.5) < 1e-5}
    want = {u for u, (_, s) in expected.items() if s > 0.5} - borderline
    assert set(got) - borderline == want
    for uid in got:
        assert got[uid][0] == expected[uid][0]
        assert got[uid][1] == pytest.approx(expected[uid][1], abs=1e-5)
    assert 20 < len(got) < len(expected)  # the threshold really filters
    texts = pq.read_table(sample_parquet).column("TEXT").to_pylist()
    assert all(row["TEXT"] == texts[row["uid"]] for row in dataset)  # input columns travel along
    assert all(row["query"].startswith(row["query"].split(" which is ")[0]) for row in dataset)


def test_build_manifest_counts(paper_build):
    manifest = json.loads((paper_build / "manifest.json").read_text())
    summary = manifest["summary"]
    assert summary["rows_in"] == 5000
    assert summary["rows_matched"] == summary["single_label"] + summary["multi_label"]
    assert summary["single_label"] == summary["below_threshold"] + summary["rows_out"] + summary["nsfw"]
    assert summary["rows_out"] == pq.ParquetFile(paper_build / "laionet.parquet").metadata.num_rows
    assert manifest["preset"]["name"] == "paper"
    assert manifest["stages"]["match"]["uid_scheme"] == "ordinal"
    assert sum(manifest["stages"]["filter"]["class_counts"].values()) == summary["rows_out"]
    assert "sentence-transformers" in manifest["versions"]
    matches = pq.read_table(paper_build / "matches.parquet")
    assert matches.column_names == ["uid", "wnid", "lemma"]
    assert matches.num_rows == manifest["stages"]["match"]["counts"]["matches"]


def test_rerun_is_a_no_op_and_other_params_are_refused(paper_build, sample_parquet, synsets_file, minilm_path):
    before = pq.read_table(paper_build / "laionet.parquet")
    args = ["build", sample_parquet, "--source", f"synsets:{synsets_file}", "--preset", "paper",
            "--encoder", f"sentence-transformers:{minilm_path}", "--no-progress", "-o", paper_build]
    assert run_cli(*args, "--threshold", 0.5).exit_code == 0
    assert pq.read_table(paper_build / "laionet.parquet").equals(before)
    refused = run_cli(*args, "--threshold", 0.6)
    assert refused.exit_code != 0 and "other parameters" in refused.output


def test_top_k_skim(paper_build, tmp_path):
    out = tmp_path / "top1.parquet"
    result = run_cli("filter", paper_build / "scored.parquet", "--threshold", 0.5, "--top-k", 1, "-o", out)
    assert result.exit_code == 0, result.output
    top = pq.read_table(out).to_pylist()
    full = pq.read_table(paper_build / "laionet.parquet").to_pylist()
    best = {}
    for row in full:
        kept = best.get(row["wnid"])
        if kept is None or (row["similarity"], -row["uid"]) > (kept["similarity"], -kept["uid"]):
            best[row["wnid"]] = row
    assert sorted(r["uid"] for r in top) == sorted(r["uid"] for r in best.values())
