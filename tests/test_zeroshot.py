"""`laionet zeroshot`: CLIP zero-shot top-5 and image-to-query similarity, checked against CLIPModel used directly.

Offline: a tiny random CLIP (built by test_encoders.build_tiny_clip) plus a CLIPImageProcessor, five real
ImageNet sample images (one made grayscale) and one corrupt file.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_encoders import build_tiny_clip, clip_text_features, normalise

IMAGES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"
N_IMAGES = 5


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from laionet.vocab import build_vocab, write_vocab

    root = tmp_path_factory.mktemp("zeroshot")
    model, tokenizer = build_tiny_clip(root / "tiny-clip")
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(root / "tiny-clip")

    files = sorted(IMAGES.glob("n*.JPEG"))[:N_IMAGES]
    assert len(files) == N_IMAGES, f"sample images not found in {IMAGES}"
    images = root / "images"
    images.mkdir()
    for i, path in enumerate(files):
        if i == 1:  # grayscale: converted to RGB on the way in, not failed
            Image.open(path).convert("L").save(images / path.name)
        else:
            shutil.copy(path, images / path.name)
    (images / "n01440764_corrupt.JPEG").write_bytes(b"\xff\xd8\xff not really a jpeg")

    wnids = [path.name[:9] for path in files]
    vocab = build_vocab("imagenet-1k")
    extra = vocab.column("wnid").to_pylist()[-1]  # a class no image belongs to
    keep = [w in wnids or w == extra for w in vocab.column("wnid").to_pylist()]
    vocab = vocab.filter(pa.array(keep))
    assert vocab.num_rows == N_IMAGES + 1
    vocab_path = root / "vocab.parquet"
    write_vocab(vocab, vocab_path)
    return dict(root=root, model=model, tokenizer=tokenizer, processor=processor, images=images,
                vocab=vocab, vocab_path=vocab_path, clip=root / "tiny-clip")


def run_zeroshot(setup, *extra, out_name="pred.parquet"):
    from laionet.zeroshot.cli import command

    out = setup["root"] / out_name
    dataset = setup["root"] / "dataset.parquet"
    args = [f"folder:{setup['images']}", "--vocab", str(setup["vocab_path"]), "--encoder",
            f"hf-clip:{setup['clip']}", "--device", "cpu", "--batch-size", "2", "--no-progress",
            "--save-dataset", str(dataset), "-o", str(out), *extra]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, dataset, result


def reference(setup, image_paths):
    """Cosines computed directly: CLIPModel.get_image_features / get_text_features + the processor + numpy."""
    import torch
    from PIL import Image

    texts = setup["vocab"].column("name_def").to_pylist()
    text = clip_text_features(setup["model"], setup["tokenizer"], texts)
    pixels = setup["processor"](images=[Image.open(p).convert("RGB") for p in image_paths],
                                return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = setup["model"].get_image_features(pixel_values=pixels)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return normalise(out.numpy()) @ text.T


def test_zeroshot_matches_clip_directly(setup):
    out, dataset, result = run_zeroshot(setup, "--similarity-col")
    predictions = pq.read_table(out)
    items = pq.read_table(dataset).to_pylist()
    assert predictions.num_rows == len(items) == N_IMAGES + 1
    assert predictions.column_names == ["uid", "model", "top5", "status", "error", "image_to_query_similarity"]
    assert predictions.schema.field("image_to_query_similarity").type == pa.float32()
    rows = {row["uid"]: row for row in predictions.to_pylist()}
    assert {row["model"] for row in rows.values()} == {"tiny-clip"}

    corrupt = [item for item in items if "corrupt" in item["image"]]
    assert len(corrupt) == 1
    bad = rows[corrupt[0]["uid"]]
    assert bad["status"] != "ok" and bad["top5"] is None and bad["image_to_query_similarity"] is None

    good = [item for item in items if "corrupt" not in item["image"]]
    sims = reference(setup, [item["image"] for item in good])
    vocab_wnids = setup["vocab"].column("wnid").to_pylist()
    for item, row_sims in zip(good, sims):
        row = rows[item["uid"]]
        assert row["status"] == "ok" and row["error"] is None
        expected = [vocab_wnids[j] for j in np.argsort(-row_sims, kind="stable")[:5]]
        assert row["top5"] == expected
        own = row_sims[vocab_wnids.index(item["wnid"])]
        np.testing.assert_allclose(row["image_to_query_similarity"], own, atol=1e-5)
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["stages"]["zeroshot"]["classes"] == len(vocab_wnids)
    assert "zeroshot:" in result.output


def test_evaluate_reads_zeroshot_output(setup):
    evaluate = pytest.importorskip("laionet.evaluate.cli")
    out, dataset, _ = run_zeroshot(setup, out_name="plain.parquet")
    assert "image_to_query_similarity" not in pq.read_schema(out).names
    result = CliRunner().invoke(evaluate.command, ["--predictions", str(out), "--dataset", str(dataset),
                                                   "-o", str(setup["root"] / "eval")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "tiny-clip" in result.output


def test_chunks_give_the_same_output(setup):
    out, _, _ = run_zeroshot(setup, "--chunk-rows", "4", out_name="chunked.parquet")
    first = pq.read_table(out)
    plain, _, _ = run_zeroshot(setup, out_name="plain2.parquet")
    assert first.equals(pq.read_table(plain))


@pytest.mark.parametrize("spec, needle", [
    ("nonsense:foo", "unknown encoder kind"),
    ("sentence-transformers:all-mpnet-base-v2", "no image tower"),
    ("hf-clip:/no/such/folder", "no such folder"),
])
def test_bad_spec_is_one_line_error(setup, spec, needle):
    from laionet.zeroshot.cli import command

    result = CliRunner().invoke(command, [f"folder:{setup['images']}", "--vocab", str(setup["vocab_path"]),
                                          "--encoder", spec, "-o", str(setup["root"] / "x.parquet")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("laionet: error:") and needle in lines[0], result.output


def test_bad_query_column(setup):
    from laionet.zeroshot.cli import command

    result = CliRunner().invoke(command, [f"folder:{setup['images']}", "--vocab", str(setup["vocab_path"]),
                                          "--encoder", f"hf-clip:{setup['clip']}", "--query", "nope",
                                          "-o", str(setup["root"] / "x.parquet")])
    assert result.exit_code == 2 and "no query column 'nope'" in result.output


def test_open_clip_image_encoder_matches_encode_image(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    torch = pytest.importorskip("torch")
    from PIL import Image

    from laionet.zeroshot.image_encoders import load_image_encoder

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "laionet-tiny-zs.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "laionet-tiny-zs.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("laionet-tiny-zs")
    model.eval()
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)

    encoder = load_image_encoder("open-clip:laionet-tiny-zs", device="cpu", checkpoint=str(checkpoint))
    images = [Image.open(p).convert("RGB") for p in sorted(IMAGES.glob("n*.JPEG"))[:3]]
    got = encoder.encode_images(images, batch_size=2)
    with torch.inference_mode():
        expected = model.encode_image(torch.stack([preprocess(im) for im in images]))
    assert got.dtype == np.float32 and got.shape == (3, 16)
    np.testing.assert_allclose(got, normalise(expected.numpy()), atol=1e-5)
