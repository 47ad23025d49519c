"""`laionet thresholds`: for each text threshold, the image threshold that keeps the dataset at a target
size (spec §9.5; see `laionet.thresholds.run`)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors
from laionet.errors import LaionetError
from laionet.presets import DEFAULT_PRESET


def _reference(spec: str) -> tuple[float, float]:
    try:
        t, i = (float(x) for x in spec.split(","))
    except ValueError:
        raise LaionetError(f"bad --reference '{spec}': use TEXT,IMAGE, e.g. 0.82,0.20") from None
    return t, i


@click.command(name="thresholds")
@click.argument("dataset")
@click.option("--text-col", default="similarity", show_default=True,
              help="Text-to-query similarity (the `similarity` column of `laionet score`).")
@click.option("--image-col", default="image_to_query_similarity", show_default=True,
              help="Image-to-query similarity (`laionet zeroshot --similarity-col`); NaN/null never passes.")
@click.option("--image-from", help="Take --image-col from this parquet (e.g. the zeroshot output), joined by uid.")
@click.option("--label-col", default="wnid", show_default=True, help="Class column (for the class counts).")
@click.option("--reference", default="0.82,0.20", show_default=True,
              help="TEXT,IMAGE thresholds whose size is the target (unless --target).")
@click.option("--target", type=int, help="Target dataset size (default: the size at --reference).")
@click.option("--text-thresholds", default="0.72:0.82:11", show_default=True,
              help="START:STOP:COUNT (as numpy.linspace) or a comma-separated list, e.g. 0.72,0.76,0.79,0.81.")
@click.option("--solver", type=click.Choice(["exact", "golden"]), default="exact", show_default=True,
              help="exact: the order statistic closest to the target; golden: the paper's scipy golden search.")
@click.option("--preset", type=click.Choice(["paper", "clean"]), default=DEFAULT_PRESET, show_default=True,
              help="paper: solve with >=, write with > (the original's mix); clean: > for both.")
@click.option("--compare", type=click.Choice(["gt", "ge"]), help="> or >= for both solving and writing.")
@click.option("--write-datasets", is_flag=True, help="Also write the rows of each pair to OUT/mm_{t}_{i}.parquet.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@friendly_errors
def command(dataset, text_col, image_col, image_from, label_col, reference, target, text_thresholds, solver,
            preset, compare, write_datasets, out):
    """Threshold pairs (text t, image i) that keep DATASET's size at the target: the A–D datasets.

    n(t, i) = rows with text ⋄ t and image ⋄ i; the target is --target or n(--reference). For each text
    threshold the image threshold is solved exactly (default) or with the paper's golden search.
    """
    from laionet.io.manifest import new_manifest, write_manifest
    from laionet.thresholds.run import ThresholdOptions, solve_thresholds
    from laionet.thresholds.solve import parse_text_thresholds

    options = ThresholdOptions(text_col=text_col, image_col=image_col,
                               text_thresholds=tuple(parse_text_thresholds(text_thresholds)),
                               reference=_reference(reference), target=target, solver=solver, preset=preset,
                               compare=compare, label_col=label_col, image_from=image_from,
                               write_datasets=write_datasets)
    info = solve_thresholds(dataset, out, options)
    params = {"dataset": dataset, "text_col": text_col, "image_col": image_col, "image_from": image_from,
              "label_col": label_col, "reference": reference, "target": target,
              "text_thresholds": text_thresholds, "solver": solver, "preset": preset, "compare": compare,
              "write_datasets": write_datasets}
    manifest = new_manifest("thresholds", params)
    manifest["stages"]["thresholds"] = info
    write_manifest(Path(out) / "manifest.json", manifest)
    for row in info["pairs"]:
        echo(f"  text {row['text_threshold']:.4f}  image {row['image_threshold']:.6f}  {row['rows']:,} rows  "
             f"{row['classes']:,} classes")
    echo(f"thresholds: {len(info['pairs'])} pairs for target {info['target']:,} of {info['rows_in']:,} rows "
         f"({info['image_missing']:,} without image similarity) [{info['solver']}] -> {out}")
