"""`laionet similarity`: intra-class image-image cosine similarities per class (spec §8), to a folder with
pairs.parquet, classes.parquet and manifest.json (see `laionet.similarity.run`)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors, missing_weights_as_lines
from laionet.fetch.options import fetch_config, fetch_options


@click.command(name="similarity")
@click.argument("dataset")
@click.option("--encoder",
              help="timm:NAME (pooled pre-logits features, no head), hf:NAME_OR_PATH (a transformers backbone; "
                   "never a random pooler), hf-clip:NAME_OR_PATH or open-clip:ARCH/PRETRAINED (CLIP image "
                   "embeddings), as for `laionet embed`.")
@click.option("--embeddings", type=click.Path(),
              help="Use precomputed image embeddings (a `laionet embed` folder, by uid) instead of --encoder; "
                   "sampled uids without one count as failed.")
@click.option("--checkpoint", help="Local weights (a state dict) for the encoder.")
@click.option("--label-col", default="wnid", show_default=True, help="Column naming each row's class.")
@click.option("--per-class", type=int, default=100, show_default=True,
              help="At most this many rows per class, a seeded random sample (the paper took the first 100).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (per class: seed and label).")
@click.option("--labels", type=click.Path(), help="imagenet-val / imagenet-v2 ground truth, as for `laionet predict`.")
@click.option("--image-col", help="Parquet input: image column (default: URL, url, image or path).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
              show_default=True, help="auto: fp16 autocast on GPU, fp32 on CPU.")
@click.option("--reject-non-rgb", is_flag=True, help="Fail non-RGB images as the paper did (default: convert).")
@fetch_options
@click.option("--classes-per-shard", type=int, default=16, show_default=True,
              help="Classes saved together as one finished group (the unit of resume).")
@click.option("--overwrite", is_flag=True,
              help="Discard the partial results of an interrupted run instead of resuming.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@friendly_errors
def command(dataset, encoder, embeddings, checkpoint, label_col, per_class, seed, labels, image_col, batch_size,
            device, precision, reject_non_rgb, concurrency, timeout, retries, allow_private_network, classes_per_shard,
            overwrite, no_progress, out):
    """Intra-class image similarity of DATASET (spec §8).

    Per class, a seeded random sample of at most --per-class images is embedded and L2-normalised; the
    pairwise cosines (the strict lower triangle of E·Eᵀ) go to OUT/pairs.parquet (label, i_uid, j_uid,
    similarity) and a per-class summary with the paper's interval mean ± 1.96·std/√(pairs−1) to
    OUT/classes.parquet. Images that fail are skipped and counted. DATASET is as for `laionet predict`.
    Classes are saved in groups as they finish: an interrupted run, run again, resumes.
    """
    from laionet.io.manifest import new_manifest, write_manifest
    from laionet.similarity.run import MANIFEST, SimilarityOptions, similarity_dataset

    options = SimilarityOptions(encoder=encoder, checkpoint=checkpoint, label_col=label_col, per_class=per_class,
                                seed=seed, batch_size=batch_size, device=device, precision=precision,
                                labels=labels, image_col=image_col,
                                fetch=fetch_config(concurrency, timeout, retries, allow_private_network,
                                                   not reject_non_rgb),
                                progress=not no_progress, embeddings=embeddings, overwrite=overwrite,
                                classes_per_shard=classes_per_shard)
    with missing_weights_as_lines():
        info = similarity_dataset(dataset, out, options)
    params = {"dataset": dataset, "encoder": encoder, "embeddings": embeddings, "checkpoint": checkpoint,
              "label_col": label_col, "classes_per_shard": classes_per_shard,
              "per_class": per_class, "seed": seed, "batch_size": batch_size, "labels": labels,
              "image_col": image_col, "precision": precision, "reject_non_rgb": reject_non_rgb}
    manifest = new_manifest("similarity", params)
    manifest["stages"]["similarity"] = info
    write_manifest(Path(out) / MANIFEST, manifest)
    echo(summary_line(info, out))


def summary_line(info: dict, out: Path) -> str:
    text = (f"similarity: {info['classes']:,} classes, {info['images_embedded']:,} of {info['images_sampled']:,} "
            f"sampled images embedded, {info['pairs']:,} pairs")
    if info["mean_of_class_means"] is not None:
        text += f", mean class similarity {info['mean_of_class_means']:.4f}"
    return text + f" -> {out}"
