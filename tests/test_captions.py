"""`laionet captions`: ImageNet-Captions import (against the original's pandas code path), caption-to-synset
similarities and the proportion p (real MiniLM vs sentence-transformers + a plain loop), resume, plots, and
the hand-off to `laionet similarity`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import laionet.captions.synsets as synsets_module
from laionet.captions.cli import group
from laionet.captions.ingest import caption_text
from laionet.cli import main
from laionet.vocab import tables

HUSKY, CRANE = "n02110185", "n03126707"  # the real husky wnid and the machine crane: not in the class file
IMAGES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"


def _run(args: list[str], command=group):
    return CliRunner().invoke(command, args, catch_exceptions=False)


def _vocab_wnids(vocab_path: Path) -> list[str]:
    return pq.read_table(vocab_path, columns=["wnid"]).column("wnid").to_pylist()


def _entries(wnids: list[str]) -> list[dict]:
    """Synthetic ImageNet-Captions entries with the real schema and the real file's quirks."""
    entries = []
    for k, wnid in enumerate(wnids):
        name = tables.head_name(wnid)
        entries.append({"filename": f"{wnid}_{k}.JPEG", "title": f"my {name} at home",
                        "tags": [name, "photo", "flickr"], "description": f"A picture of a {name}.", "wnid": wnid})
        entries.append({"filename": f"{wnid}_{k + 1000}.JPEG", "title": "IMG_2041", "tags": [],
                        "description": "", "wnid": wnid})  # says nothing about its class
    entries += [
        {"filename": f"{HUSKY}_1.JPEG", "title": "Husky in snow", "tags": ["dog", "sled"], "description": "",
         "wnid": HUSKY},
        {"filename": f"{CRANE}_1.JPEG", "title": "Liebherr crane", "tags": [], "description": "port",
         "wnid": CRANE},
        {"filename": f"{wnids[0]}_7.JPEG", "title": "", "tags": ["", "Café", "東京", "🐟"],
         "description": "naïve\u00a0text", "wnid": wnids[0]},  # empty title, an empty tag, unicode
        {"filename": f"{wnids[1]}_8.JPEG", "title": "no description key", "tags": ["x"], "wnid": wnids[1]},
        {"filename": f"{wnids[2]}_9.JPEG", "title": "null tags", "tags": None, "description": "d",
         "wnid": wnids[2]},
        # duplicates: the first entry of a filename wins, the second has another text and one another wnid
        {"filename": f"{wnids[0]}_0.JPEG", "title": "duplicate", "tags": [], "description": "", "wnid": wnids[0]},
        {"filename": f"{wnids[1]}_1.JPEG", "title": "duplicate", "tags": ["t"], "description": "",
         "wnid": wnids[3]},
    ]
    return entries


def _original_import(entries: list[dict]) -> pd.DataFrame:
    """The original's preprocess_imagenet_captions.py path (with missing parts as empty, where it crashed)."""
    texts, names = [], []
    for ic in entries:
        ic = {"tags": [], "description": "", "title": "", **{k: v for k, v in ic.items() if v is not None}}
        texts.append(" ".join([ic["title"]] + ic["tags"] + [ic["description"]]))
        names.append(ic["filename"])
    df = pd.DataFrame({"TEXT": texts}, index=names)
    df.index.name = "ic_index"
    return df.groupby("ic_index").first()


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory, paper_vocab_path) -> Path:
    """60 classes of the paper vocabulary (built from the original class file): every class query is encoded
    on each run, and 999 of them take most of a minute on a busy 2-core CPU."""
    from laionet.vocab import read_vocab, write_vocab

    vocab = read_vocab(paper_vocab_path)
    path = tmp_path_factory.mktemp("vocab") / "vocab-60.parquet"
    write_vocab(vocab.take(list(range(0, vocab.num_rows, vocab.num_rows // 60))[:60]), path)
    return path


@pytest.fixture(scope="module", autouse=True)
def load_encoder_once():
    """The CLI runs of this module share one loaded model (the real loading code runs once)."""
    import laionet.score.encoders as encoders

    loaded = {}
    real = encoders.load_text_encoder

    def cached(spec, device=None, checkpoint=None, precision="auto"):
        key = (str(spec), device, checkpoint, precision)
        if key not in loaded:
            loaded[key] = real(spec, device, checkpoint, precision)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoders, "load_text_encoder", cached)
        yield


@pytest.fixture(scope="module")
def ic_json(tmp_path_factory, vocab_path) -> tuple[Path, list[dict], list[str]]:
    wnids = _vocab_wnids(vocab_path)[::3]  # 20 classes spread over the vocabulary
    entries = _entries(wnids)
    path = tmp_path_factory.mktemp("ic") / "imagenet_captions.json"
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return path, entries, wnids


@pytest.fixture(scope="module")
def ic_parquet(ic_json) -> Path:
    path = ic_json[0].with_name("ic.parquet")
    result = _run(["import", str(ic_json[0]), "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


# ---------------------------------------------------------------- import


def test_caption_text_is_the_original_join():
    assert caption_text("t", [], "") == "t "
    assert caption_text("t", ["a", "b"], "d") == "t a b d"
    assert caption_text("", ["", "x"], "d") == "  x d"


def test_import_matches_the_original_pandas_path(ic_json, ic_parquet):
    _, entries, _ = ic_json
    table = pq.read_table(ic_parquet).to_pandas()
    reference = _original_import(entries)
    assert list(table.columns) == ["uid", "filename", "wnid", "TEXT"]
    assert table["filename"].tolist() == reference.index.tolist()  # groupby order, duplicates dropped
    assert table["TEXT"].tolist() == reference["TEXT"].tolist()
    assert table["uid"].tolist() == list(range(len(reference)))
    first_wnid = {}
    for e in entries:
        first_wnid.setdefault(e["filename"], e["wnid"])
    assert table["wnid"].tolist() == [first_wnid[f] for f in table["filename"]]
    manifest = json.loads(ic_parquet.with_name("ic.parquet.manifest.json").read_text())
    stats = manifest["stages"]["captions import"]
    assert stats["duplicates_dropped"] == len(entries) - len(reference) == 2
    assert stats["duplicates_with_other_wnid"] == 1
    assert (stats["missing_description"], stats["missing_tags"], stats["missing_title"]) == (1, 1, 0)


def test_import_resolves_image_paths(tmp_path):
    train = tmp_path / "train"
    (train / "n01440764").mkdir(parents=True)
    (train / "n01440764" / "n01440764_1.JPEG").write_bytes(b"x")
    (train / "n01530575_2.JPEG").write_bytes(b"x")  # flat layout
    entries = [{"filename": f, "title": "t", "tags": [], "description": "", "wnid": f.split("_")[0]}
               for f in ("n01440764_1.JPEG", "n01530575_2.JPEG", "n01601694_3.JPEG")]
    source = tmp_path / "ic.json"
    source.write_text(json.dumps(entries))
    out = tmp_path / "ic.parquet"
    result = _run(["import", str(source), "--images", str(train), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 images found, 1 missing" in result.output
    images = pq.read_table(out).column("image").to_pylist()
    assert images == [str((train / "n01440764" / "n01440764_1.JPEG").resolve()),
                      str((train / "n01530575_2.JPEG").resolve()), None]


@pytest.mark.parametrize("content, message", [
    ("[{\"filename\": \"a.JPEG\",", "not valid JSON at line 1"),
    ("{\"filename\": \"a.JPEG\"}", "expected a JSON list"),
    (json.dumps([{"filename": "a", "wnid": "n1", "title": "t", "tags": [], "description": ""}, {"title": "x"}]),
     "entry 1: key 'filename' is missing"),
    (json.dumps([{"filename": "a", "wnid": "n1", "title": "t", "tags": "x y", "description": ""}]),
     "entry 0: key 'tags' is not a list of strings"),
    (json.dumps([{"filename": "a", "title": "t", "tags": [], "description": ""}]), "entry 0: key 'wnid' is missing"),
])
def test_import_bad_input_is_one_line(tmp_path, content, message):
    source = tmp_path / "bad.json"
    source.write_text(content)
    out = tmp_path / "ic.parquet"
    result = _run(["import", str(source), "-o", str(out)])
    assert result.exit_code == 2
    assert message in result.output and str(source) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------- synsets


@pytest.fixture(scope="module")
def reference(ic_parquet, vocab_path, minilm_path):
    """Caption and query embeddings computed with sentence-transformers directly, and S = C·Qᵀ."""
    from sentence_transformers import SentenceTransformer

    vocab = pq.read_table(vocab_path, columns=["wnid", "name_def"])
    table = pq.read_table(ic_parquet)
    model = SentenceTransformer(minilm_path, device="cpu")
    captions = model.encode(table.column("TEXT").to_pylist(), normalize_embeddings=True)
    queries = model.encode(vocab.column("name_def").to_pylist(), normalize_embeddings=True)
    outside = {w: tables.head_name(w) + " which is " + tables.definition(w) for w in (HUSKY, CRANE)}
    return {"wnids": vocab.column("wnid").to_pylist(), "sims": captions @ queries.T, "captions": captions,
            "outside": dict(zip(outside, model.encode(list(outside.values()), normalize_embeddings=True))),
            "table": table}


def test_more_similar_and_proportion_with_ties():
    rng = np.random.default_rng(0)
    sims = rng.integers(0, 4, size=(50, 7)).astype(np.float32) / 4  # many exact ties
    true_rows = rng.integers(-1, 7, size=50)
    own, counts = synsets_module.more_similar(sims, true_rows)
    for i, y in enumerate(true_rows):
        if y < 0:
            assert np.isnan(own[i]) and counts[i] == -1
        else:
            assert own[i] == sims[i, y] and counts[i] == sum(sims[i, j] > sims[i, y] for j in range(7))
    paper, clean = (synsets_module.proportion(counts, 7, rule) for rule in ("paper", "clean"))
    np.testing.assert_allclose(paper, np.where(true_rows >= 0, counts / 7, 0.0))
    np.testing.assert_allclose(clean, np.where(true_rows >= 0, counts / 6, np.nan))


def _synsets(ic_parquet, vocab, minilm_path, out, *extra):
    return _run(["synsets", str(ic_parquet), "--vocab", str(vocab), "--encoder", f"sentence-transformers:{minilm_path}",
                 "--batch-size", "32", "--chunk-rows", "16", "--no-progress", "-o", str(out), *extra])


@pytest.fixture(scope="module")
def paper_run(ic_parquet, vocab_path, minilm_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synsets") / "paper"
    result = _synsets(ic_parquet, vocab_path, minilm_path, out, "--all-similarities", str(out / "all.npy"))
    assert result.exit_code == 0, result.output
    return out


def _check_against_loop(out: Path, reference: dict, rule: str) -> None:
    rows = pq.read_table(out / "synsets.parquet").to_pylist()
    wnids, sims = reference["wnids"], reference["sims"]
    classes = len(wnids)
    assert [r["uid"] for r in rows] == reference["table"].column("uid").to_pylist()
    for i, row in enumerate(rows):
        if row["wnid"] not in wnids:
            assert not row["in_vocab"] and row["rank"] is None and row["more_similar_classes"] is None
            assert row["p"] == (0.0 if rule == "paper" else None)
            expected = float(reference["captions"][i] @ reference["outside"][row["wnid"]])
            assert row["text_to_query_similarity"] == pytest.approx(expected, abs=1e-4)
            continue
        y = wnids.index(row["wnid"])
        own = sims[i, y]
        assert row["in_vocab"] and row["text_to_query_similarity"] == pytest.approx(own, abs=1e-4)
        # a plain loop over the classes; near-ties (float noise between two encodings) may go either way
        sure = sum(1 for j in range(classes) if j != y and sims[i, j] > own + 1e-5)
        maybe = sum(1 for j in range(classes) if j != y and sims[i, j] > own - 1e-5)
        assert sure <= row["more_similar_classes"] <= maybe
        assert row["rank"] == row["more_similar_classes"] + 1
        denominator = classes if rule == "paper" else classes - 1
        assert row["p"] == pytest.approx(row["more_similar_classes"] / denominator)


@pytest.mark.slow  # its fixtures load MiniLM twice (reference + CLI): ~15-40 s on the busy 2-core machine
def test_paper_rule_against_numpy_loop(paper_run, reference):
    _check_against_loop(paper_run, reference, "paper")
    info = json.loads((paper_run / "manifest.json").read_text())["stages"]["synsets"]
    assert info["not_in_vocab"] == 2 and info["p_null"] == 0 and info["classes"] == len(reference["wnids"])
    # captions that name their class rank it first or nearly: the measure works on real text
    rows = pq.read_table(paper_run / "synsets.parquet").to_pylist()
    named = [r["rank"] for r in rows if r["in_vocab"] and int(r["filename"].split("_")[1].split(".")[0]) < 100]
    assert np.median(named) <= 3


def test_all_similarities_matrix(paper_run, reference):
    matrix = np.load(paper_run / "all.npy")
    assert matrix.dtype == np.float16 and matrix.shape == reference["sims"].shape
    np.testing.assert_allclose(matrix.astype(np.float32), reference["sims"], atol=2e-3)
    info = json.loads((paper_run / "manifest.json").read_text())["stages"]["synsets"]
    assert info["all_similarities"]["columns"] == reference["wnids"]


def test_clean_rule_against_numpy_loop(ic_parquet, vocab_path, minilm_path, reference, tmp_path):
    out = tmp_path / "clean"
    result = _synsets(ic_parquet, vocab_path, minilm_path, out, "--preset", "clean")
    assert result.exit_code == 0, result.output
    assert "2 null p" in result.output
    _check_against_loop(out, reference, "clean")


def test_interrupted_run_resumes(ic_parquet, vocab_path, minilm_path, paper_run, tmp_path, monkeypatch):
    from laionet.io import shards

    out = tmp_path / "resumed"
    calls = {"n": 0}
    original = shards.ShardStore.write

    def failing_write(self, name, tables_, stats):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as Ctrl-C after two finished chunks
        original(self, name, tables_, stats)

    monkeypatch.setattr(shards.ShardStore, "write", failing_write)
    args = ("--all-similarities", str(out / "all.npy"))
    result = _synsets(ic_parquet, vocab_path, minilm_path, out, *args)
    assert result.exit_code == 130 and not (out / "synsets.parquet").exists()
    monkeypatch.setattr(shards.ShardStore, "write", original)
    computed = []
    original_chunk = synsets_module.synsets_chunk

    def counting_chunk(chunk, *a, **k):
        computed.append(chunk.num_rows)
        return original_chunk(chunk, *a, **k)

    monkeypatch.setattr(synsets_module, "synsets_chunk", counting_chunk)
    result = _synsets(ic_parquet, vocab_path, minilm_path, out, *args)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(ic_parquet).num_rows
    assert sum(computed) == rows - 32  # the two finished chunks of 16 were not recomputed
    resumed = pq.read_table(out / "synsets.parquet")
    full = pq.read_table(paper_run / "synsets.parquet")
    assert resumed.column("uid").to_pylist() == full.column("uid").to_pylist()
    assert resumed.column("more_similar_classes").to_pylist() == full.column("more_similar_classes").to_pylist()
    np.testing.assert_allclose(np.load(out / "all.npy").astype(np.float32),
                               np.load(paper_run / "all.npy").astype(np.float32), atol=2e-3)
    assert not list(out.glob(".*.work"))


def test_synsets_bad_input(ic_parquet, vocab_path, minilm_path, tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"uid": [1], "TEXT": ["x"]}), bad)
    result = _synsets(bad, vocab_path, minilm_path, tmp_path / "o1")
    assert result.exit_code == 2 and "no column wnid" in result.output
    result = _synsets(ic_parquet, tmp_path / "missing.parquet", minilm_path, tmp_path / "o2")
    assert result.exit_code == 2 and "vocabulary file not found" in result.output
    result = _synsets(ic_parquet, vocab_path, minilm_path, tmp_path / "o3", "--all-similarities", "x.bin")
    assert result.exit_code == 2 and ".npy" in result.output


# ---------------------------------------------------------------- plot


def test_plot_files_and_summary(paper_run):
    result = _run(["plot", str(paper_run), "--bins", "10", "--low-quantile", "0.2"])
    assert result.exit_code == 0, result.output
    for name in ("p_cdf.png", "p_by_similarity.png", "similarity_hist.png"):
        assert (paper_run / name).stat().st_size > 1000
    summary = json.loads((paper_run / "summary.json").read_text())
    df = pd.read_parquet(paper_run / "synsets.parquet")
    p = df["p"].dropna()
    assert summary["share_below_marker"] == pytest.approx((p < 0.05).mean())
    assert summary["mean_p"] == pytest.approx(p.mean())
    assert summary["captions_above_marker"] == int((p > 0.05).sum())
    ranked = df[df["in_vocab"]]
    threshold = ranked["text_to_query_similarity"].quantile(0.2)
    low = ranked[ranked["text_to_query_similarity"] <= threshold]
    assert summary["low_similarity"]["mean_more_similar_classes"] == pytest.approx(low["more_similar_classes"].mean())
    counts, edges = np.histogram(df["text_to_query_similarity"].dropna(), bins=10)
    assert [b["n"] for b in summary["bins"]] == counts.tolist()
    for b, lo, hi in zip(summary["bins"], edges[:-1], edges[1:]):
        sim = df["text_to_query_similarity"]
        inside = df[(sim >= lo) & ((sim < hi) | (hi == edges[-1]))]
        if len(inside):
            assert b["mean_p"] == pytest.approx(inside["p"].mean())
            assert b["half_width"] == pytest.approx(1.96 * np.sqrt(b["mean_p"] * (1 - b["mean_p"]) / len(inside)))


def test_plot_without_results(tmp_path):
    result = _run(["plot", str(tmp_path)])
    assert result.exit_code == 2 and "no synsets.parquet" in result.output


# ---------------------------------------------------------------- hand-off to `laionet similarity`


@pytest.mark.skipif(not IMAGES.is_dir(), reason="shared sample images not available")
def test_intra_class_similarity_reads_the_import(tmp_path):
    from laionet.predict.models import efficientnet_lite0_weights
    from laionet.predict.run import read_items

    files = sorted(IMAGES.iterdir())[:6]
    train = tmp_path / "train"
    entries = []
    for k, source in enumerate(files):  # two fake classes of three images, in the ILSVRC train layout
        wnid = ("n01440764", "n01530575")[k % 2]
        (train / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, train / wnid / f"{wnid}_{k}.JPEG")
        entries.append({"filename": f"{wnid}_{k}.JPEG", "title": "t", "tags": [], "description": "", "wnid": wnid})
    source = tmp_path / "ic.json"
    source.write_text(json.dumps(entries))
    ic = tmp_path / "ic.parquet"
    assert _run(["import", str(source), "--images", str(train), "-o", str(ic)]).exit_code == 0
    items = read_items(str(ic))
    assert items.column_names == ["uid", "image", "wnid"] and all(Path(p).is_file() for p in items["image"].to_pylist())
    out = tmp_path / "sims"
    result = _run(["similarity", str(ic), "--label-col", "wnid", "--encoder", "timm:efficientnet_lite0",
                   "--checkpoint", efficientnet_lite0_weights(), "--no-progress", "-o", str(out)], command=main)
    assert result.exit_code == 0, result.output
    classes = pq.read_table(out / "classes.parquet").to_pylist()
    assert [(c["label"], c["n"], c["pairs"], c["failed"]) for c in classes] == [
        ("n01440764", 3, 3, 0), ("n01530575", 3, 3, 0)]
