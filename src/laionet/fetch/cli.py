"""`laionet fetch`: download (or read) every image of a dataset, check and decode it, record a status."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from laionet.cli_common import echo, format_counts, friendly_errors
from laionet.fetch.options import fetch_config, fetch_options
from laionet.presets import DEFAULT_PRESET, PRESETS


@click.command(name="fetch")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Status parquet: uid, url, status, error, width, height, mode, bytes.")
@click.option("--url-col", help="URL or local path column (default: URL, url, image or path).")
@click.option("--id-col", help="Integer id column (default: uid if present, else the row ordinal).")
@click.option("--save-images", type=click.Path(path_type=Path),
              help="Also save the ok images as webdataset tar shards in this folder; a rerun skips what they hold.")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="Images per tar shard.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="paper: reject non-RGB images, as the original did; clean: convert them to RGB.")
@fetch_options
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@friendly_errors
def command(dataset, out, url_col, id_col, save_images, shard_size, preset, concurrency, timeout, retries,
            allow_private_network, no_progress):
    """Fetch the images of DATASET (a parquet of URLs or paths) and write one status row per image."""
    from laionet.cli_common import manifest_beside
    from laionet.fetch.table import fetch_table
    from laionet.presets import get_preset

    config = fetch_config(concurrency, timeout, retries, allow_private_network, get_preset(preset).convert_non_rgb)
    info = fetch_table(dataset, out, config, url_col, id_col, save_images, shard_size, progress=not no_progress)
    params = {"dataset": str(dataset), "url_col": url_col, "id_col": id_col, "preset": preset,
              "save_images": None if save_images is None else str(save_images), "shard_size": shard_size}
    manifest_beside(out, "fetch", params, {**info, "config": asdict(config)})
    rate = info["fetched"] / info["seconds"] if info["seconds"] else 0
    echo(format_counts("fetch", {"rows": info["rows"], **info["counts"]}) + f" [{rate:,.0f} images/s] -> {out}")
