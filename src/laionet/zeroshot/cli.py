"""`laionet zeroshot`: CLIP zero-shot top-5 over a vocabulary's class queries, to predictions.parquet
(uid, model, top5, status, error[, image_to_query_similarity])."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors, manifest_beside
from laionet.fetch.options import fetch_config
from laionet.predict.options import image_run_options


@click.command(name="zeroshot")
@click.argument("dataset")
@click.option("--vocab", type=click.Path(path_type=Path), required=True,
              help="Vocabulary parquet (`laionet vocab`): wnid and one column per query template.")
@click.option("--encoder", default="hf-clip:openai/clip-vit-base-patch32", show_default=True,
              help="CLIP spec: hf-clip:NAME_OR_PATH or open-clip:ARCH/PRETRAINED (or open-clip:ARCH + --checkpoint).")
@click.option("--checkpoint", help="Local weights (a state dict) for the encoder.")
@click.option("--query", default="name_def", show_default=True,
              help="Vocabulary column with each class's text (name_def is the paper's NAME_DEF).")
@click.option("--similarity-col", is_flag=True,
              help="Also write image_to_query_similarity: the cosine of each image with its own class's query "
                   "(the dataset's wnid column).")
@image_run_options
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def command(dataset, vocab, encoder, checkpoint, query, similarity_col, labels, image_col, batch_size, device,
            precision, chunk_rows, reject_non_rgb, concurrency, timeout, retries, allow_private_network, save_dataset,
            overwrite,
            no_progress, out):
    """CLIP zero-shot top-5 classes of every image of DATASET (spec §7.4).

    Each class query of VOCAB is embedded once with the CLIP text tower, each image with the image tower;
    the classes are ranked by cosine. Images that fail keep their status and get no prediction (they are
    not counted as errors). DATASET is as for `laionet predict`: a parquet with `uid` and an image column,
    or folder:DIR, imagenet-val:DIR (with --labels), imagenet-v2:DIR.
    """
    from laionet.zeroshot.run import ZeroshotOptions, zeroshot_dataset

    options = ZeroshotOptions(encoder=encoder, checkpoint=checkpoint, query=query, similarity_col=similarity_col,
                              batch_size=batch_size, device=device, precision=precision, chunk_rows=chunk_rows,
                              labels=labels, image_col=image_col,
                              fetch=fetch_config(concurrency, timeout, retries, allow_private_network,
                                                not reject_non_rgb),
                              progress=not no_progress, overwrite=overwrite)
    info = zeroshot_dataset(dataset, vocab, out, options, save_dataset)
    params = {"dataset": dataset, "vocab": str(vocab), "encoder": encoder, "checkpoint": checkpoint, "query": query,
              "similarity_col": similarity_col, "batch_size": batch_size, "labels": labels,
              "chunk_rows": chunk_rows, "reject_non_rgb": reject_non_rgb}
    manifest_beside(out, "zeroshot", params, info)
    echo(summary_line(info, out))


def summary_line(info: dict, out: Path) -> str:
    name = info["model"]
    counts = info["status"].get(name, {})
    ok = counts.get("ok", 0)
    text = f"zeroshot: {info['rows_in']:,} images, {info['classes']:,} classes ({info['query']}) with {name} on " \
           f"{info['device'] or 'resumed'}"
    if info.get("images_per_second"):
        text += f", {info['images_per_second']:.1f} images/s"
    text += f"; {ok:,} ok"
    if ok != info["rows_in"]:
        text += f", {info['rows_in'] - ok:,} failed"
    accuracy = info["accuracy"].get(name)
    if accuracy:
        text += f", top-1 {accuracy['top1']:.1%}, top-5 {accuracy['top5']:.1%}"
    similarity = info.get("similarity")
    if similarity and similarity["mean"] is not None:
        text += f", mean own-class similarity {similarity['mean']:.4f}"
    return text + f" -> {out}"
