"""The `laionet evaluate` command (registered by `laionet.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors


def _cell(accuracy, model: str, k: int, weighting: str) -> str:
    rows = accuracy.filter((accuracy["model"] == model) & (accuracy["topk"] == k)
                           & (accuracy["weighting"] == weighting))
    if rows.height == 0 or rows["accuracy"][0] is None:
        return "-"
    return f"{rows['accuracy'][0]:.4f} ({rows['se'][0]:.4f})"


def summary_table(accuracy) -> str:
    """One line per model: top-1 equal / frequency, top-5 equal / frequency, as 'accuracy (se)'."""
    header = ("model", "top-1 equal", "top-1 frequency", "top-5 equal", "top-5 frequency")
    lines = [header]
    for model in accuracy["model"].unique(maintain_order=True).to_list():
        lines.append((model, *(_cell(accuracy, model, k, w) for k in (1, 5) for w in ("equal", "frequency"))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


@click.command(name="evaluate")
@click.argument("more_predictions", nargs=-1, type=click.Path(path_type=Path), metavar="[P ...]")
@click.option("-p", "--predictions", multiple=True, type=click.Path(path_type=Path),
              help="predictions.parquet, the original's prediction CSVs (or a folder of them), or a parquet of "
                   "top_{1,5}_is_correct_MODEL columns. Repeatable; extra arguments are read as more of them. "
                   "A row predicted twice counts once: the first input wins.")
@click.option("-d", "--dataset", type=click.Path(path_type=Path), required=True,
              help="Ground truth: a dataset parquet (uid, wnid), a key,wnid mapping (parquet/CSV), or the "
                   "original's imagename2wnid or label pickle.")
@click.option("--key-col", help="The dataset's row id column (default: uid, the stored index, key, ...).")
@click.option("--name", help="Dataset name in the tables and the plot (default: the dataset file's stem).")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Dataset whose per-class row counts weight the frequency-weighted accuracy (the paper: the "
                   "full LAIONet, before the OCR exclusion). Default: the evaluated dataset's own counts.")
@click.option("--classes-from", multiple=True, type=click.Path(path_type=Path),
              help="Evaluate only classes present in this dataset / vocabulary parquet (column wnid), label "
                   "pickle (its keys) or text file of wnids. Repeatable: the classes shared by all.")
@click.option("--model", help="Model name for prediction CSVs whose file name does not give one.")
@click.option("--keep-ocr-flagged", is_flag=True,
              help="Keep rows whose image shows the class name (wnid_is_in_recognized_text); dropped by default.")
@click.option("--compare", type=click.Path(path_type=Path),
              help="Output folder of another evaluation (e.g. ImageNet): plot this dataset (x) against it (y).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@friendly_errors
def command(more_predictions, predictions, dataset, key_col, name, weights, classes_from, model, keep_ocr_flagged,
            compare, out):
    """Accuracy of classifiers on a dataset: per-class recall, equally and frequency-weighted accuracy with
    standard errors (as the original computed them), and a plot. Writes OUT/accuracy.parquet, accuracy.json,
    per_class.parquet, accuracy.png and manifest.json."""
    from laionet.evaluate.run import run_evaluate

    paths = list(predictions) + list(more_predictions)
    if not paths:
        raise click.UsageError("give at least one --predictions input")
    result = run_evaluate(paths, dataset, out, compare=compare, weights=weights, classes_from=list(classes_from),
                          model=model, keep_ocr_flagged=keep_ocr_flagged, key_col=key_col, name=name)
    click.echo(summary_table(result.accuracy))
    info = result.info
    for name, counts in info["models"].items():
        if counts["rows_evaluated"] == 0:
            echo(f"laionet: warning: {name}: no prediction for any evaluated row; it has no accuracy")
    echo(f"evaluate: {len(info['models'])} models on {info['dataset']}: {info['counts']['rows_evaluated']:,} rows "
         f"over {info['classes']['evaluated']} classes ({info['counts']['rows_ocr_flagged_dropped']:,} OCR-flagged "
         f"rows dropped) -> {out}")
