"""`laionet predict`: ImageNet classifiers over a dataset, to predictions.parquet (uid, model, top5, status, error).

Per-model options (--checkpoint, --head-synsets) pair with the --model options in order: give each
either not at all, or once per model ('-' for a model without one); one model may take one of each.
"""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors, manifest_beside
from laionet.errors import LaionetError
from laionet.fetch.options import fetch_config
from laionet.predict.options import image_run_options


@click.command(name="predict")
@click.argument("dataset")
@click.option("--model", "models", multiple=True, required=True,
              help="Classifier spec, repeatable: timm:NAME or hf:NAME_OR_PATH (a local folder works for hf).")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help="Local weights (a state dict) per --model, in the same order; '-' for none.")
@click.option("--head-synsets", multiple=True,
              help="Per --model, for heads that are not ImageNet-1k/-21k/-22k: a file of wnids in class-index order.")
@click.option("--restrict-to", help="Rank only these classes: imagenet-1k, or a file of wnids.")
@image_run_options
@click.option("--runner", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="This machine, or Ray (downloads as CPU tasks, the models in a pool of GPU actors).")
@click.option("--ray-address", help="Ray cluster to join (default: start a local one).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def command(dataset, models, checkpoints, head_synsets, restrict_to, labels, image_col, batch_size, device,
            precision, chunk_rows, reject_non_rgb, concurrency, timeout, retries, allow_private_network, save_dataset,
            overwrite, runner, ray_address, no_progress, out):
    """Top-5 ImageNet predictions of one or more classifiers for every image of DATASET.

    DATASET is a parquet with `uid` and an image column (URLs or paths), or a local folder:
    folder:DIR (DIR/<wnid>/*.JPEG or DIR/<wnid>_*.JPEG), imagenet-val:DIR (with --labels) or imagenet-v2:DIR.
    """
    from laionet.predict.run import ModelRequest, PredictOptions, predict_dataset

    checkpoints = per_model(checkpoints, len(models), "--checkpoint")
    head_synsets = per_model(head_synsets, len(models), "--head-synsets")
    requests = tuple(ModelRequest(spec, ckpt, heads) for spec, ckpt, heads in zip(models, checkpoints, head_synsets))
    options = PredictOptions(models=requests, batch_size=batch_size, device=device, precision=precision,
                             restrict_to=restrict_to, chunk_rows=chunk_rows, labels=labels, image_col=image_col,
                             fetch=fetch_config(concurrency, timeout, retries, allow_private_network,
                                                not reject_non_rgb),
                             progress=not no_progress, overwrite=overwrite, runner=runner, ray_address=ray_address)
    info = predict_dataset(dataset, out, options, save_dataset)
    params = {"dataset": dataset, "models": [vars(r) for r in requests], "batch_size": batch_size,
              "restrict_to": restrict_to, "labels": labels, "chunk_rows": chunk_rows,
              "reject_non_rgb": reject_non_rgb}
    manifest_beside(out, "predict", params, info)
    echo(summary_line(info, out))


def per_model(values: tuple[str, ...], models: int, option: str) -> list[str | None]:
    """Pair a repeatable per-model option with the models, in order ('-' means none)."""
    if not values:
        return [None] * models
    if len(values) != models:
        raise LaionetError(f"{option} was given {len(values)} times for {models} models: give it once per "
                           f"--model, in the same order ('-' for a model without one)")
    return [None if value == "-" else value for value in values]


def summary_line(info: dict, out: Path) -> str:
    parts = []
    for name, counts in info["status"].items():
        ok = counts.get("ok", 0)
        text = f"{name} {ok:,} ok"
        if ok != info["rows_in"]:
            text += f", {info['rows_in'] - ok:,} failed"
        accuracy = info["accuracy"].get(name)
        if accuracy:
            text += f", top-1 {accuracy['top1']:.1%}, top-5 {accuracy['top5']:.1%}"
        parts.append(text)
    rate = f", {info['images_per_second']:.1f} images/s" if info.get("images_per_second") else ""
    return f"predict: {info['rows_in']:,} images on {info['device'] or 'resumed'}{rate}; " + "; ".join(parts) + \
        f" -> {out}"
