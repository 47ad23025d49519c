"""`laionet embed`: L2-normalised image or caption embeddings, to a folder of parts (see `laionet.embed.store`)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors, missing_weights_as_lines
from laionet.errors import LaionetError
from laionet.fetch.options import fetch_config, fetch_options


@click.command(name="embed")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--encoder", required=True,
              help="text: hf-clip:NAME, open-clip:ARCH/PRETRAINED, sentence-transformers:NAME; image: timm:NAME, "
                   "hf:NAME_OR_PATH, hf-clip:NAME, open-clip:ARCH/PRETRAINED (a local folder works for NAME).")
@click.option("--modality", type=click.Choice(["image", "text"]), required=True)
@click.option("--text-col", help="text: caption column (default: TEXT, caption or text).")
@click.option("--id-col", help="text: integer id column to use as uid (default: LAION part scheme, else row ordinal).")
@click.option("--null-text", help="text: embed a null caption as this string (the original used 'None'); "
                                  "default: drop the row and count it.")
@click.option("--image-col", help="image, parquet input: image column (default: URL, url, image or path).")
@click.option("--labels", type=click.Path(), help="image: imagenet-val / imagenet-v2 ground truth, as for predict.")
@click.option("--checkpoint", type=click.Path(), help="Local weights (a state dict) for the encoder.")
@click.option("--batch-size", type=int,
              help="Rows per model batch (default: images 64; text 64 on a CPU, 256 on a GPU).")
@click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
              show_default=True, help="auto: fp16 autocast on GPU, fp32 on CPU.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="How the vectors are stored (they are L2-normalised in float32 first).")
@click.option("--part-rows", type=int,
              help="Rows per part, the unit of resume (default: 65,536 text, 10,000 image).")
@click.option("--reject-non-rgb", is_flag=True, help="image: fail non-RGB images as the paper did (default: convert).")
@fetch_options
@click.option("--runner", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="This machine, or Ray (text: shards on an actor pool; image: downloads as CPU tasks, the model "
                   "in an actor pool).")
@click.option("--ray-address", help="Ray cluster to join (default: start a local one).")
@click.option("--overwrite", is_flag=True, help="Discard earlier (partial) results instead of resuming.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@friendly_errors
def command(inputs, encoder, modality, text_col, id_col, null_text, image_col, labels, checkpoint, batch_size, device,
            precision, dtype, part_rows, reject_non_rgb, concurrency, timeout, retries, allow_private_network,
            runner, ray_address, overwrite, no_progress, out):
    """Embed the captions (--modality text) or images (--modality image) of INPUTS into the folder OUT.

    Text: INPUTS are caption parquet files or globs, as for `laionet match`; identical captions are encoded
    once; null captions are dropped and counted (or embedded as --null-text). Image: INPUTS is one dataset as
    `laionet predict` takes it (a parquet with uid and URLs or paths, folder:DIR, imagenet-val:DIR,
    imagenet-v2:DIR); images that fail go to OUT/failures.parquet. OUT gets part-00000.parquet, ... (uid,
    embedding: unit-norm rows) and manifest.json. A rerun of an interrupted command resumes.
    """
    if batch_size is not None and batch_size < 1 or part_rows is not None and part_rows < 1:
        raise LaionetError("--batch-size and --part-rows must be at least 1")
    params = {"inputs": list(inputs), "encoder": encoder, "modality": modality, "checkpoint": checkpoint,
              "batch_size": batch_size, "precision": precision, "dtype": dtype, "part_rows": part_rows,
              "text_col": text_col, "id_col": id_col, "null_text": null_text, "image_col": image_col,
              "labels": labels, "reject_non_rgb": reject_non_rgb, "runner": runner}
    fetch = fetch_config(concurrency, timeout, retries, allow_private_network, not reject_non_rgb)
    info = embed_to_folder(params, out, device=device, fetch=fetch, ray_address=ray_address, overwrite=overwrite,
                           progress=not no_progress)
    echo(summary_line(info, out))


def embed_to_folder(params: dict, out: Path, device: str | None = None, fetch=None, ray_address: str | None = None,
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Run one embed (`params` as the command's options, recorded in the manifest) into the folder `out`;
    returns the manifest's stage info. Used by `laionet embed` and by `laionet index` on raw inputs."""
    from laionet.embed.folder import folder_info, write_embed_manifest

    p = {"checkpoint": None, "batch_size": None, "precision": "auto", "dtype": "float32", "part_rows": None,
         "text_col": None, "id_col": None, "null_text": None, "image_col": None, "labels": None,
         "reject_non_rgb": False, "runner": "local", **params}
    if fetch is None:
        from laionet.fetch.config import FetchConfig

        fetch = FetchConfig(convert_non_rgb=not p["reject_non_rgb"])
    with missing_weights_as_lines():
        info = _embed(p["inputs"], p["encoder"], p["modality"], p["text_col"], p["id_col"], p["null_text"],
                      p["image_col"], p["labels"], p["checkpoint"], p["batch_size"], device, p["precision"],
                      p["dtype"], p["part_rows"], p["reject_non_rgb"], fetch, p["runner"], ray_address, overwrite,
                      not progress, out)
    info.update(folder_info(out, p["dtype"]))
    write_embed_manifest(out, p, info)
    return info


def _embed(inputs, encoder, modality, text_col, id_col, null_text, image_col, labels, checkpoint, batch_size, device,
           precision, dtype, part_rows, reject_non_rgb, fetch, runner, ray_address, overwrite, no_progress,
           out) -> dict:
    if modality == "text":
        if image_col or labels or reject_non_rgb:
            raise LaionetError("--image-col, --labels and --reject-non-rgb are for --modality image")
        return _embed_text(inputs, encoder, text_col, id_col, null_text, checkpoint, batch_size, device, precision,
                           dtype, part_rows, runner, ray_address, overwrite, no_progress, out)
    if len(inputs) != 1:
        raise LaionetError(f"--modality image takes one dataset, got {len(inputs)}: {' '.join(inputs)}")
    if text_col or id_col or null_text:
        raise LaionetError("--text-col, --id-col and --null-text are for --modality text")
    from laionet.embed.images import ImageEmbedOptions, embed_images

    options = ImageEmbedOptions(encoder=encoder, checkpoint=checkpoint, batch_size=batch_size or 64, device=device,
                                precision=precision, dtype=dtype, chunk_rows=part_rows or 10_000, labels=labels,
                                image_col=image_col, fetch=fetch, progress=not no_progress, overwrite=overwrite,
                                runner=runner, ray_address=ray_address)
    return embed_images(inputs[0], out, options)


def _embed_text(inputs, encoder, text_col, id_col, null_text, checkpoint, batch_size, device, precision, dtype,
                part_rows, runner, ray_address, overwrite, no_progress, out) -> dict:
    from laionet.embed.text import TEXT_SHARD_ROWS, TextEmbedOptions, embed_texts
    from laionet.io.inputs import Columns

    options = TextEmbedOptions(encoder=encoder, batch_size=batch_size, device=device, checkpoint=checkpoint,
                               precision=precision, dtype=dtype, null_text=null_text,
                               shard_rows=part_rows or TEXT_SHARD_ROWS)
    return embed_texts(list(inputs), out, options, Columns(text=text_col, id=id_col), runner=runner,
                       ray_address=ray_address, progress=not no_progress, overwrite=overwrite)


def summary_line(info: dict, out: Path) -> str:
    dim = f"dim {info['dim']} {info['dtype']}" if info.get("dim") else info["dtype"]
    text = f"embed: {info['rows']:,} of {info['rows_in']:,} {info['modality']} rows embedded ({dim}, " \
           f"{info['parts']} parts) with {info['encoder']} on {info['device']}"
    if info["modality"] == "text" and info.get("null_text_dropped"):
        text += f"; {info['null_text_dropped']:,} null captions dropped"
    if info["modality"] == "image" and info.get("failed"):
        text += f"; {info['failed']:,} failed ({', '.join(f'{k} {v}' for k, v in info['status'].items() if k != 'ok')})"
    return text + f" -> {out}"
