"""`laionet embed`: caption and image embeddings in a folder of parts, checked against direct computations
with the real models (MiniLM, EfficientNet-Lite0 features, a tiny ViT backbone), resume, and Ray = local."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.embed.cli import command
from laionet.embed.store import open_embeddings

torch = pytest.importorskip("torch")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"
CAPTIONS = 120
GROUP = 30  # rows per row group, and per shard with --part-rows 30


def _run(args: list[str]):
    return CliRunner().invoke(command, [str(a) for a in args] + ["--no-progress"], catch_exceptions=False)


def _ok(args: list[str]):
    result = _run(args)
    assert result.exit_code == 0, result.output
    return result


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["stages"]["embed"]


# ---- text ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def captions(sample_parquet, tmp_path_factory) -> Path:
    """120 real captions with an id column: rows 10-19 repeat rows 0-9 (duplicates), row 5 is null;
    row groups of 30 rows, so --part-rows 30 gives 4 shards."""
    texts = pq.read_table(sample_parquet, columns=["TEXT"]).column("TEXT").to_pylist()[:CAPTIONS]
    texts[10:20] = texts[0:10]
    texts[5] = None
    path = tmp_path_factory.mktemp("captions") / "captions.parquet"
    table = pa.table({"key": pa.array(np.arange(CAPTIONS) * 7 + 1000, pa.int64()),
                      "TEXT": pa.array(texts, pa.string())})
    pq.write_table(table, path, row_group_size=GROUP)
    return path


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def _reference_text(minilm, texts: list[str]) -> np.ndarray:
    """sentence-transformers directly, in file order, no dedup, normalised with numpy."""
    vectors = minilm.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def text_run(captions, minilm_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text") / "emb"
    _ok([captions, "--modality", "text", "--encoder", f"sentence-transformers:{minilm_path}", "--id-col", "key",
         "--part-rows", GROUP, "--batch-size", "32", "--device", "cpu", "-o", out])
    return out


def test_text_embeddings_match_sentence_transformers(text_run, captions, minilm):
    table = pq.read_table(captions)
    keep = [i for i, t in enumerate(table.column("TEXT").to_pylist()) if t is not None]
    embeddings = open_embeddings(text_run)
    assert [p.name for p in embeddings.parts] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert embeddings.part_rows == [GROUP - 1, GROUP, GROUP, GROUP]  # the null caption of the first shard is dropped
    uids, vectors = embeddings.read_all()
    assert uids.tolist() == [table.column("key")[i].as_py() for i in keep]
    reference = _reference_text(minilm, [table.column("TEXT")[i].as_py() for i in keep])
    np.testing.assert_allclose(vectors, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not (text_run.parent / ".emb.work").exists()


def test_text_manifest(text_run, captions):
    texts = pq.read_table(captions).column("TEXT").to_pylist()
    info = _manifest(text_run)
    assert info["modality"] == "text" and info["dim"] == 384 and info["dtype"] == "float32"
    assert info["normalized"] is True and info["device"] == "cpu"
    assert info["rows_in"] == CAPTIONS and info["rows"] == CAPTIONS - 1 and info["parts"] == 4
    assert info["null_text_dropped"] == 1
    # distinct captions per shard (dedup works within a shard): computed with a plain loop
    assert info["unique_texts"] == sum(len({t for t in texts[s:s + GROUP] if t is not None})
                                       for s in range(0, CAPTIONS, GROUP))
    assert info["unique_texts"] < CAPTIONS - 1


def test_null_text_option_and_float16(captions, minilm_path, minilm, tmp_path):
    out = tmp_path / "emb16"
    _ok([captions, "--modality", "text", "--encoder", f"sentence-transformers:{minilm_path}", "--id-col", "key",
         "--null-text", "None", "--dtype", "float16", "--part-rows", "1000", "--device", "cpu", "-o", out])
    embeddings = open_embeddings(out)
    assert embeddings.dtype == "float16" and embeddings.rows == CAPTIONS and len(embeddings.parts) == 1
    uids, vectors = embeddings.read_all()
    texts = ["None" if t is None else t for t in pq.read_table(captions).column("TEXT").to_pylist()]
    np.testing.assert_allclose(vectors, _reference_text(minilm, texts), atol=2e-3)
    assert _manifest(out)["null_text_dropped"] == 0


class _FailingAfter:
    """Wraps the real encoder: raises once `limit` texts have been encoded; counts what it encoded."""

    def __init__(self, encoder, limit: int | None):
        self.encoder, self.limit, self.encoded = encoder, limit, 0
        self.dim, self.device, self.spec = encoder.dim, encoder.device, encoder.spec

    def encode(self, texts, batch_size=256):
        if self.limit is not None and self.encoded + len(texts) > self.limit:
            raise RuntimeError("simulated crash")
        self.encoded += len(texts)
        return self.encoder.encode(texts, batch_size=batch_size)


def test_interrupted_text_run_resumes(captions, minilm_path, text_run, tmp_path):
    from laionet.embed.text import TextEmbedOptions, embed_texts
    from laionet.io.inputs import Columns
    from laionet.score.encoders import load_text_encoder

    real = load_text_encoder(f"sentence-transformers:{minilm_path}", device="cpu")
    options = TextEmbedOptions(encoder=f"sentence-transformers:{minilm_path}", device="cpu", shard_rows=GROUP)
    columns = Columns(id="key")
    out = tmp_path / "emb"
    first = _FailingAfter(real, limit=45)  # shard 0 (< 30 distinct captions) passes, shard 1 crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_texts([str(captions)], out, options, columns, progress=False, encoder_factory=lambda *a, **k: first)
    assert not list(out.glob("part-*")) and (tmp_path / ".emb.work").is_dir()
    second = _FailingAfter(real, limit=None)
    info = embed_texts([str(captions)], out, options, columns, progress=False, encoder_factory=lambda *a, **k: second)
    assert info["shards_resumed"] == 1
    texts = pq.read_table(captions).column("TEXT").to_pylist()
    assert second.encoded == sum(len({t for t in texts[s:s + GROUP] if t is not None})
                                 for s in range(GROUP, CAPTIONS, GROUP))
    resumed, full = open_embeddings(out).read_all(), open_embeddings(text_run).read_all()
    assert resumed[0].tolist() == full[0].tolist()
    np.testing.assert_allclose(resumed[1], full[1], atol=1e-6)


def test_publish_parts_resumes_after_a_crash_midway(tmp_path):
    from laionet.io.shards import ShardStore

    store = ShardStore(tmp_path / "work", ["out"], {"x": 1})
    store.open()
    for i in range(3):
        store.write(f"shard-{i:06d}", {"out": pa.table({"uid": list(range(i + 1))})}, {})
    names = [f"shard-{i:06d}" for i in range(3)]
    (tmp_path / "folder").mkdir()
    (store.workdir / "out" / "shard-000000.parquet").rename(tmp_path / "folder" / "part-00000.parquet")
    assert store.publish_parts("out", names, tmp_path / "folder") == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]
    assert pq.read_table(tmp_path / "folder" / "part-00002.parquet").column("uid").to_pylist() == [0, 1, 2]


def test_existing_output_is_refused_then_overwritten(text_run, captions, minilm_path, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(text_run, out)
    args = [captions, "--modality", "text", "--encoder", f"sentence-transformers:{minilm_path}", "--id-col", "key",
            "--part-rows", "1000", "--device", "cpu", "-o", out]
    result = _run(args)
    assert result.exit_code == 2 and "already holds 4 embedding part(s)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    _ok(args + ["--overwrite"])
    assert [p.name for p in open_embeddings(out).parts] == ["part-00000.parquet"]


@pytest.mark.parametrize("args, message", [
    (["--modality", "text", "--encoder", "timm:resnet50"], "unknown encoder kind"),
    (["--modality", "image", "--encoder", "sentence-transformers:x"], "bad image encoder"),
    (["--modality", "text", "--encoder", "hf-clip:x", "--text-col", "nope"], "no column 'nope'"),
])
def test_user_errors_are_one_line(captions, tmp_path, args, message):
    result = _run([captions] + args + ["-o", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


# ---- images -------------------------------------------------------------------------------------------

images_only = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared sample images not available")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for path in sorted(SAMPLES.glob("*.JPEG"))[:9]:
        shutil.copy(path, folder / path.name)
    (folder / "n01440764_corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _folder_items(folder: Path) -> list[tuple[int, Path]]:
    from laionet.predict.run import read_items

    items = read_items(f"folder:{folder}").sort_by("uid")
    return list(zip(items.column("uid").to_pylist(), map(Path, items.column("image").to_pylist())))


@images_only
def test_timm_image_embeddings_match_timm(image_folder, tmp_path):
    timm = pytest.importorskip("timm")
    from PIL import Image

    from laionet.predict.models import efficientnet_lite0_weights

    out = tmp_path / "img"
    _ok([f"folder:{image_folder}", "--modality", "image", "--encoder", "timm:efficientnet_lite0", "--checkpoint",
         efficientnet_lite0_weights(), "--part-rows", "4", "--batch-size", "3", "--device", "cpu", "-o", out])
    # independent reference: timm with the package's tensors in order, pooled pre-logits, numpy norm
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    items = _folder_items(image_folder)
    good = [(uid, path) for uid, path in items if "corrupt" not in path.name]
    with torch.no_grad():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for _, p in good])
        reference = model.forward_head(model.forward_features(x), pre_logits=True).numpy().astype(np.float64)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)

    embeddings = open_embeddings(out)
    assert embeddings.dim == 1280 and len(embeddings.parts) == 3  # 10 rows in chunks of 4
    uids, vectors = embeddings.read_all()
    assert uids.tolist() == [uid for uid, _ in good]
    np.testing.assert_allclose(vectors, reference, atol=1e-4)
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    corrupt = [uid for uid, path in items if "corrupt" in path.name]
    assert [row["uid"] for row in failures] == corrupt and failures[0]["status"] != "ok" and failures[0]["error"]
    info = _manifest(out)
    assert info["rows"] == 9 and info["failed"] == 1 and info["status"]["ok"] == 9 and info["normalized"]
    assert info["dim"] == 1280 and info["modality"] == "image" and info["device"] == "cpu"



@images_only
@pytest.mark.filterwarnings("ignore::laionet.embed.image_encoders.MissingWeightsWarning")
def test_interrupted_image_run_resumes(image_folder, tiny_vit, tmp_path, monkeypatch):
    import laionet.embed.images as images

    args = [f"folder:{image_folder}", "--modality", "image", "--encoder", f"hf:{tiny_vit}", "--part-rows", "3",
            "--device", "cpu"]
    _ok(args + ["-o", tmp_path / "full"])
    real_chunk, calls = images.embed_chunk, []

    def crash_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C looks like to the command
        return real_chunk(*a, **k)

    monkeypatch.setattr(images, "embed_chunk", crash_on_third)
    result = _run(args + ["-o", tmp_path / "out"])
    assert result.exit_code == 130 and "resume" in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("part-*"))
    calls.clear()
    monkeypatch.setattr(images, "embed_chunk", lambda *a, **k: (calls.append(1), real_chunk(*a, **k))[1])
    _ok(args + ["-o", tmp_path / "out"])
    assert len(calls) == 2  # chunks 3 and 4 of 4; the first two were kept
    assert _manifest(tmp_path / "out")["chunks_resumed"] == 2
    full, resumed = open_embeddings(tmp_path / "full"), open_embeddings(tmp_path / "out")
    assert resumed.part_rows == full.part_rows
    np.testing.assert_array_equal(resumed.read_all()[0], full.read_all()[0])
    np.testing.assert_allclose(resumed.read_all()[1], full.read_all()[1], atol=1e-6)
    failures = [pq.read_table(tmp_path / name / "failures.parquet") for name in ("full", "out")]
    assert failures[0].equals(failures[1]) and failures[0].num_rows == 1

@pytest.mark.filterwarnings("ignore::laionet.embed.image_encoders.MissingWeightsWarning")
def test_hf_backbone_takes_cls_when_the_pooler_is_missing(tiny_vit):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from laionet.embed.image_encoders import MissingWeightsWarning, load_image_embedder

    with pytest.warns(MissingWeightsWarning, match=r"2 weights missing from the checkpoint, e\.g\. pooler\.dense"):
        embedder = load_image_embedder(f"hf:{tiny_vit}", device="cpu")
    assert embedder.pooling == "cls" and embedder.dim == 32
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    got = embedder.encode(torch.stack([embedder.transform(im) for im in images]))
    # direct transformers computation: the CLS token of the last hidden state
    model = transformers.ViTModel.from_pretrained(tiny_vit, add_pooling_layer=False).eval()
    processor = transformers.ViTImageProcessor.from_pretrained(tiny_vit)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        cls = model(pixel_values=pixels).last_hidden_state[:, 0].numpy().astype(np.float64)
    np.testing.assert_allclose(got, cls / np.linalg.norm(cls, axis=1, keepdims=True), atol=1e-5)


def test_hf_backbone_uses_a_loaded_pooler(tmp_path):
    """A checkpoint that holds its pooler (ViTModel saved whole) is embedded by pooler_output."""
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from laionet.embed.image_encoders import load_image_embedder

    torch.manual_seed(1)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=37)
    model = transformers.ViTModel(config).eval()
    model.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is missing: no warning
        embedder = load_image_embedder(f"hf:{tmp_path}", device="cpu")
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    pixels = embedder.transform(image)[None]
    with torch.no_grad():
        pooled = model(pixel_values=pixels).pooler_output.numpy().astype(np.float64)
    assert embedder.pooling == "pooler"
    np.testing.assert_allclose(embedder.encode(pixels), pooled / np.linalg.norm(pooled), atol=1e-5)



def test_hf_conv_backbone_uses_its_loaded_pooler(tmp_path):
    """A ConvNeXt classification checkpoint: its pooled output (layernorm of the spatial mean) is loaded."""
    transformers = pytest.importorskip("transformers")
    import warnings

    from PIL import Image

    from laionet.embed.image_encoders import load_image_embedder

    torch.manual_seed(2)
    config = transformers.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                                         num_labels=1000)
    transformers.ConvNextForImageClassification(config).save_pretrained(tmp_path)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        embedder = load_image_embedder(f"hf:{tmp_path}", device="cpu")
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (36, 40, 3), dtype=np.uint8))
    pixels = embedder.transform(image)[None]
    model = transformers.ConvNextModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        pooled = model(pixel_values=pixels).pooler_output.numpy().astype(np.float64)
    assert embedder.pooling == "pooler" and embedder.dim == 16
    np.testing.assert_allclose(embedder.encode(pixels), pooled / np.linalg.norm(pooled), atol=1e-5)

# ---- Ray -----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_ray_text_equals_local(text_run, captions, minilm_path, tmp_path):
    out = tmp_path / "ray"
    _ok([captions, "--modality", "text", "--encoder", f"sentence-transformers:{minilm_path}", "--id-col", "key",
         "--part-rows", GROUP, "--batch-size", "32", "--device", "cpu", "--runner", "ray", "-o", out])
    local, remote = open_embeddings(text_run), open_embeddings(out)
    assert remote.part_rows == local.part_rows
    for (u1, v1), (u2, v2) in zip(local.iter_parts(), remote.iter_parts()):
        assert u1.tolist() == u2.tolist()
        np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert _manifest(out)["runner"] == "ray"


@images_only
@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::laionet.embed.image_encoders.MissingWeightsWarning")
def test_ray_images_equal_local(image_folder, tiny_vit, tmp_path):
    outs = {}
    for runner in ("local", "ray"):
        outs[runner] = tmp_path / runner
        _ok([f"folder:{image_folder}", "--modality", "image", "--encoder", f"hf:{tiny_vit}", "--part-rows", "6",
             "--batch-size", "4", "--device", "cpu", "--runner", runner, "-o", outs[runner]])
    local, remote = open_embeddings(outs["local"]), open_embeddings(outs["ray"])
    assert local.part_rows == remote.part_rows == [5, 4]  # the corrupt image of the first chunk failed
    for (u1, v1), (u2, v2) in zip(local.iter_parts(), remote.iter_parts()):
        assert u1.tolist() == u2.tolist()
        np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert pq.read_table(outs["ray"] / "failures.parquet").equals(pq.read_table(outs["local"] / "failures.parquet"))
