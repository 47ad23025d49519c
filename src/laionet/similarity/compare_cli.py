"""`laionet compare`: per-class intra-class similarity of one dataset against others (see
`laionet.similarity.compare`)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors


@click.command(name="compare")
@click.argument("folders", nargs=-1, required=True)
@click.option("--names", help="Comma-separated dataset names, one per folder (default: the folder names).")
@click.option("--min-pairs", type=int, default=7, show_default=True,
              help="Test only classes where every dataset has at least this many pairs (the paper's 7).")
@click.option("--bootstrap", type=int, default=1000, show_default=True,
              help="Resamples of each class's images for the bootstrap interval (0: paper interval only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and the pooled draws.")
@click.option("--bins", type=int, default=70, show_default=True,
              help="Histogram bins of pooled.png (paper: 70; V2: 40).")
@click.option("--draws-per-class", type=int, default=100, show_default=True,
              help="Pooled distribution: min(pairs, this) similarities per class, drawn with replacement.")
@click.option("--equal-draws", is_flag=True,
              help="Draw the same number per class from every dataset, the minimum (the paper's V2 section).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@friendly_errors
def command(folders, names, min_pairs, bootstrap, seed, bins, draws_per_class, equal_draws, no_progress, out):
    """Compare the intra-class similarity of the FIRST `laionet similarity` folder with each other one.

    Per common class (at least --min-pairs pairs in both): the paper's test, mean ± 1.96·std/√(pairs−1)
    and the difference of means with half-width √(e₁² + e₂²), and a bootstrap over images (the paper's
    interval treats pairs as independent and is too narrow). Writes per_class.parquet, summary.json,
    summary.parquet, pooled.png, differences.png and manifest.json to OUT.
    """
    from laionet.io.manifest import new_manifest, write_manifest
    from laionet.similarity.compare import CompareOptions, compare_datasets, comparison_line

    options = CompareOptions(names=tuple(names.split(",")) if names else None, min_pairs=min_pairs,
                             bootstrap=bootstrap, seed=seed, bins=bins, draws_per_class=draws_per_class,
                             equal_draws=equal_draws, progress=not no_progress)
    summary = compare_datasets(list(folders), out, options)
    params = {"folders": list(folders), "names": names, "min_pairs": min_pairs, "bootstrap": bootstrap,
              "seed": seed, "bins": bins, "draws_per_class": draws_per_class, "equal_draws": equal_draws}
    manifest = new_manifest("compare", params)
    manifest["stages"]["compare"] = summary
    write_manifest(Path(out) / "manifest.json", manifest)
    for entry in summary["comparisons"]:
        echo(comparison_line(entry))
    echo(f"compare: {len(folders)} datasets, {summary['pooled']['classes']:,} classes common to all -> {out}")
