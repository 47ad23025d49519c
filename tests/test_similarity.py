"""`laionet similarity`: intra-class pairwise cosines (spec §8) with the real EfficientNet-Lite0 features,
checked against an independent timm + numpy computation on the shared sample images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.predict.models import efficientnet_lite0_weights
from laionet.similarity.cli import command
from laionet.similarity.run import sample_class, summarise

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
Image = pytest.importorskip("PIL.Image")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared sample images not available")
GROUPS, GROUP_SIZE = 5, 8


def _run(args: list[str]):
    return CliRunner().invoke(command, args + ["--no-progress"], catch_exceptions=False)


def _files() -> list[Path]:
    return sorted(SAMPLES.iterdir())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """5 groups of 8 real images; a group 'solo' with one image; a group 'broken' with 2 images + a corrupt one."""
    folder = tmp_path_factory.mktemp("similarity")
    files = _files()
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    rows = [(str(f), str(g)) for g in range(GROUPS) for f in files[g * GROUP_SIZE:(g + 1) * GROUP_SIZE]]
    rows += [(str(files[40]), "solo"), (str(files[41]), "broken"), (str(files[42]), "broken"),
             (str(corrupt), "broken")]
    path = folder / "items.parquet"
    pq.write_table(pa.table({"uid": pa.array(range(100, 100 + len(rows)), pa.int64()),
                             "image": [r[0] for r in rows],
                             "wnid": [Path(r[0]).name.split("_")[0] for r in rows],
                             "group": [r[1] for r in rows]}), path)
    return path


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "out"
    result = _run([str(dataset), "--encoder", "timm:efficientnet_lite0", "--checkpoint", efficientnet_lite0_weights(),
                   "--label-col", "group", "--per-class", "100", "--batch-size", "16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _reference_means(files: list[Path]) -> dict[str, float]:
    """timm + numpy, written independently: the package's tensors in order onto timm's model, pooled pre-logits."""
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        features = model.forward_head(model.forward_features(x), pre_logits=True).numpy().astype(np.float64)
    assert features.shape == (len(files), 1280)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    means = {}
    for g in range(GROUPS):
        e = features[g * GROUP_SIZE:(g + 1) * GROUP_SIZE]
        s = e @ e.T
        means[str(g)] = float(s[np.tril_indices(GROUP_SIZE, k=-1)].mean())
    return means


def test_class_means_match_timm_and_numpy(full_run):
    classes = pq.read_table(full_run / "classes.parquet").to_pylist()
    by_label = {row["label"]: row for row in classes}
    reference = _reference_means(_files()[:GROUPS * GROUP_SIZE])
    for label, mean in reference.items():
        row = by_label[label]
        assert row["n"] == GROUP_SIZE and row["pairs"] == GROUP_SIZE * (GROUP_SIZE - 1) // 2
        assert row["mean_similarity"] == pytest.approx(mean, abs=2e-3)
        half = 1.96 * row["std"] / np.sqrt(row["pairs"] - 1)
        assert row["ci_low"] == pytest.approx(row["mean_similarity"] - half)
        assert row["ci_high"] == pytest.approx(row["mean_similarity"] + half)
    # the classes differ: the check is not vacuous
    assert max(reference.values()) - min(reference.values()) > 1e-3


def test_pairs_are_the_strict_lower_triangle(full_run):
    pairs = pq.read_table(full_run / "pairs.parquet")
    assert pairs.schema.names == ["label", "i_uid", "j_uid", "similarity"]
    part = pairs.filter(pa.compute.equal(pairs.column("label"), "0")).to_pylist()
    assert len(part) == 28 and all(p["i_uid"] > p["j_uid"] for p in part)
    assert len({(p["i_uid"], p["j_uid"]) for p in part}) == 28
    classes = {row["label"]: row for row in pq.read_table(full_run / "classes.parquet").to_pylist()}
    values = np.array([p["similarity"] for p in part])
    assert classes["0"]["mean_similarity"] == pytest.approx(values.mean(), abs=1e-6)
    assert np.all(values < 1.0 + 1e-5)


def test_single_image_and_corrupt_image(full_run):
    classes = {row["label"]: row for row in pq.read_table(full_run / "classes.parquet").to_pylist()}
    solo = classes["solo"]
    assert (solo["n"], solo["pairs"], solo["mean_similarity"], solo["ci_low"]) == (1, 0, None, None)
    broken = classes["broken"]
    assert (broken["sampled"], broken["failed"], broken["n"], broken["pairs"]) == (3, 1, 2, 1)
    assert broken["mean_similarity"] is not None and broken["ci_low"] is None  # one pair: no interval
    pairs = pq.read_table(full_run / "pairs.parquet").to_pylist()
    assert not [p for p in pairs if p["label"] == "solo"]
    info = json.loads((full_run / "manifest.json").read_text())["stages"]["similarity"]
    assert info["images_failed"] == 1 and info["classes"] == GROUPS + 2
    assert sum(info["failures"].values()) == 1


def test_per_class_sample_is_seeded(dataset, tmp_path):
    args = [str(dataset), "--encoder", "timm:efficientnet_lite0", "--checkpoint", efficientnet_lite0_weights(),
            "--label-col", "group", "--per-class", "3"]
    outs = []
    for name in ("a", "b"):
        result = _run(args + ["-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outs.append(tmp_path / name)
    classes = {row["label"]: row for row in pq.read_table(outs[0] / "classes.parquet").to_pylist()}
    for g in range(GROUPS):
        assert classes[str(g)]["sampled"] == 3 and classes[str(g)]["n"] == 3 and classes[str(g)]["pairs"] == 3
    first, second = (pq.read_table(out / "pairs.parquet") for out in outs)
    assert first.select(["label", "i_uid", "j_uid"]).equals(second.select(["label", "i_uid", "j_uid"]))
    # the sample is the one sample_class draws, and it is not just the first three
    uids = np.arange(100, 100 + GROUP_SIZE)
    chosen = sample_class(uids, "0", 3, 0)
    got = first.filter(pa.compute.equal(first.column("label"), "0"))
    assert set(got.column("i_uid").to_pylist()) | set(got.column("j_uid").to_pylist()) == set(chosen.tolist())


def test_sampling_depends_on_seed_and_label_only():
    uids = np.arange(1000)
    a = sample_class(uids, "n01440764", 100, 0)
    assert np.array_equal(a, sample_class(uids[::-1], "n01440764", 100, 0))  # not on row order
    assert len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_class(uids, "n01440764", 100, 1))
    assert not np.array_equal(a, sample_class(uids, "n01443537", 100, 0))
    assert np.array_equal(sample_class(uids[:5], "x", 100, 0), uids[:5])


def test_summary_interval():
    values = np.array([0.1, 0.2, 0.3, 0.6], dtype=np.float32)
    s = summarise(values)
    half = 1.96 * values.astype(np.float64).std() / np.sqrt(3)
    assert s["pairs"] == 4 and s["ci_low"] == pytest.approx(values.mean() - half)
    assert summarise(np.zeros(0))["mean_similarity"] is None


@pytest.mark.parametrize("spec", ["resnet50", "foo:bar", "timm:", "hf:", "vit:google/vit-base-patch16-224"])
def test_bad_encoder_is_one_line(dataset, tmp_path, spec):
    result = _run([str(dataset), "--encoder", spec, "--label-col", "group", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("laionet: error:"), result.output
    assert not (tmp_path / "out").exists()


def test_missing_label_column(dataset, tmp_path):
    result = _run([str(dataset), "--encoder", "timm:efficientnet_lite0", "--checkpoint",
                   efficientnet_lite0_weights(), "--label-col", "nope", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no label column 'nope'" in result.output


@pytest.mark.slow  # embeds the sample images twice (about 20 s on a busy 2-core machine)
def test_interrupted_run_resumes_to_the_same_outputs(dataset, full_run, tmp_path, monkeypatch):
    """Ctrl-C inside the encoder after 3 classes; the rerun skips the finished group and matches a full run."""
    import laionet.similarity.run as run_module

    real_load = run_module.load_image_embedder
    calls = {"n": 0, "stop_at": 3}

    def counting_load(*args, **kwargs):
        encoder = real_load(*args, **kwargs)
        real_encode = encoder.encode

        def encode(pixels):
            calls["n"] += 1
            if calls["n"] == calls["stop_at"]:
                raise KeyboardInterrupt
            return real_encode(pixels)

        encoder.encode = encode
        return encoder

    monkeypatch.setattr(run_module, "load_image_embedder", counting_load)
    out = tmp_path / "out"
    args = [str(dataset), "--encoder", "timm:efficientnet_lite0", "--checkpoint", efficientnet_lite0_weights(),
            "--label-col", "group", "--per-class", "100", "--batch-size", "16", "--classes-per-shard", "2",
            "-o", str(out)]
    result = CliRunner().invoke(command, args + ["--no-progress"])
    assert result.exit_code == 130 and "resume" in result.output
    assert not (out / "pairs.parquet").exists()
    work = tmp_path / ".out.work"
    assert len(list((work / "stats").glob("*.json"))) == 1  # classes "0" and "1" are done

    refused = CliRunner().invoke(command, args + ["--seed", "1", "--no-progress"])
    assert refused.exit_code == 2 and "partial results" in refused.output

    calls.update(n=0, stop_at=-1)
    result = _run(args)
    assert result.exit_code == 0, result.output
    assert calls["n"] == 5  # only the 5 classes with images left to embed: "2", "3", "4", "broken", "solo"
    assert not work.exists()
    for name in ("pairs.parquet", "classes.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(full_run / name)), name
    info = json.loads((out / "manifest.json").read_text())["stages"]["similarity"]
    assert info["shards"] == 4 and info["shards_resumed"] == 1 and info["images_failed"] == 1


def test_precomputed_embeddings(dataset, tmp_path):
    """--embeddings: vectors by uid from a `laionet embed` folder; missing uids fail; means as numpy's."""
    from laionet.embed.store import write_part

    items = pq.read_table(dataset).to_pylist()
    rng = np.random.default_rng(0)
    uids = np.array([row["uid"] for row in items])
    vectors = rng.normal(size=(len(uids), 12)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    missing = {uids[0], uids[9]}  # one image of group "0", one of group "1"
    keep = np.array([u not in missing for u in uids])
    folder = tmp_path / "emb"
    write_part(folder, 0, uids[keep][:20], vectors[keep][:20])
    write_part(folder, 1, uids[keep][20:], vectors[keep][20:])
    out = tmp_path / "out"
    result = _run([str(dataset), "--embeddings", str(folder), "--label-col", "group", "--per-class", "100",
                   "--classes-per-shard", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    classes = {row["label"]: row for row in pq.read_table(out / "classes.parquet").to_pylist()}
    vector_of = dict(zip(uids.tolist(), vectors))
    for group in map(str, range(GROUPS)):
        members = [row["uid"] for row in items if row["group"] == group and row["uid"] not in missing]
        e = np.stack([vector_of[u] for u in members]).astype(np.float64)
        s = e @ e.T
        assert classes[group]["mean_similarity"] == pytest.approx(s[np.tril_indices(len(e), k=-1)].mean(), abs=1e-6)
        assert classes[group]["failed"] == (1 if group in ("0", "1") else 0)
    assert classes["broken"]["n"] == 3  # the corrupt image has an embedding: nothing is downloaded
    info = json.loads((out / "manifest.json").read_text())["stages"]["similarity"]
    assert info["failures"] == {"missing_embedding": 2}


def test_encoder_or_embeddings(dataset, tmp_path):
    result = _run([str(dataset), "--label-col", "group", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "either --encoder" in result.output


def test_hf_backbone_without_pooler_weights(dataset, tiny_vit, tmp_path):
    """hf: goes through embed's loader: the tiny ViT has no pooler weights, so a one-line warning and the
    CLS token, and the class means equal numpy's on the CLS embeddings."""
    from laionet.embed.image_encoders import load_image_embedder

    out = tmp_path / "out"
    result = CliRunner().invoke(command, [str(dataset), "--encoder", f"hf:{tiny_vit}", "--label-col", "group",
                                          "--classes-per-shard", "2", "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("laionet: warning:")]
    assert len(warnings) == 1 and "pooler" in warnings[0]
    embedder = load_image_embedder(f"hf:{tiny_vit}", device="cpu")
    items = [row for row in pq.read_table(dataset).to_pylist() if row["group"] == "2"]
    with torch.no_grad():
        e = embedder.encode(torch.stack([embedder.transform(Image.open(r["image"]).convert("RGB")) for r in items]))
    assert embedder.pooling == "cls"
    s = e.astype(np.float64) @ e.T.astype(np.float64)
    classes = {row["label"]: row for row in pq.read_table(out / "classes.parquet").to_pylist()}
    assert classes["2"]["mean_similarity"] == pytest.approx(s[np.tril_indices(len(e), k=-1)].mean(), abs=1e-5)


def test_a_row_may_sit_in_several_classes(tmp_path):
    """search-dataset --multi-label keep: one uid in several classes is fine, twice in one class is not."""
    from laionet.errors import LaionetError
    from laionet.similarity.run import read_labelled_items

    def items(uids, images, labels):
        path = tmp_path / "items.parquet"
        pq.write_table(pa.table({"uid": pa.array(uids, pa.int64()), "image": images, "wnid": labels}), path)
        return str(path)

    table = read_labelled_items(items([1, 1, 2], ["a", "a", "b"], ["x", "y", "x"]), "wnid", None, None)
    assert sorted(zip(table["uid"].to_pylist(), table["label"].to_pylist())) == [(1, "x"), (1, "y"), (2, "x")]
    with pytest.raises(LaionetError, match="twice with the same 'wnid'"):
        read_labelled_items(items([1, 1], ["a", "a"], ["x", "x"]), "wnid", None, None)
    with pytest.raises(LaionetError, match="two different images"):
        read_labelled_items(items([1, 1], ["a", "b"], ["x", "y"]), "wnid", None, None)
