"""The options of the commands that run models over a dataset's images (predict, zeroshot)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import option_group
from laionet.fetch.options import fetch_options

image_run_options = option_group(
    click.option("--labels", type=click.Path(), help="imagenet-val: ground truth (devkit txt with meta.mat beside "
                                                     "it, or CSV file,wnid); imagenet-v2: class_info.json."),
    click.option("--image-col", help="Parquet input: image column (default: URL, url, image or path)."),
    click.option("--batch-size", type=int, default=32, show_default=True),
    click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
                 show_default=True, help="auto: fp16 autocast on GPU, fp32 on CPU."),
    click.option("--chunk-rows", type=int, default=10_000, show_default=True, help="Rows per chunk (unit of resume)."),
    click.option("--reject-non-rgb", is_flag=True, help="Fail non-RGB images as the paper did (default: convert)."),
    fetch_options,
    click.option("--save-dataset", type=click.Path(path_type=Path),
                 help="Also write the dataset table (uid, image, wnid, key) here, for `laionet evaluate`."),
    click.option("--overwrite", is_flag=True, help="Discard earlier (partial) results instead of resuming."),
)
