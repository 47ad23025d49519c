"""`laionet evaluate`: read the inputs, score every model, write the tables, the plot and the manifest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from laionet.errors import LaionetError
from laionet.evaluate import correctness, metrics, plot, predictions, truth
from laionet.io.atomic import atomic_path, write_text_atomic
from laionet.io.manifest import new_manifest, write_manifest

ACCURACY_SCHEMA = {"model": pl.String, "topk": pl.Int64, "weighting": pl.String, "accuracy": pl.Float64,
                   "se": pl.Float64, "classes": pl.Int64, "dataset": pl.String}
PER_CLASS_SCHEMA = {"model": pl.String, "topk": pl.Int64, "wnid": pl.String, "n": pl.Int64, "correct": pl.Int64,
                    "recall": pl.Float64, "se": pl.Float64, "weight": pl.Float64}


@dataclass
class Evaluation:
    accuracy: pl.DataFrame
    per_class: pl.DataFrame
    info: dict = field(default_factory=dict)


def _fingerprint(path: str | Path) -> dict:
    path = Path(path)
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime": int(stat.st_mtime)}


def _weights(weights_path: Path | None, data: truth.Truth) -> tuple[pl.DataFrame, int]:
    """wnid, weight = freq / sum(freq): from --weights, else from the evaluated dataset (before OCR exclusion)."""
    counts = truth.read_class_counts(weights_path) if weights_path else data.class_counts
    total = int(counts["freq"].sum())
    if total <= 0:
        raise LaionetError(f"{weights_path}: every class count is 0; no frequency weights")
    return counts.select("wnid", (pl.col("freq") / total).alias("weight")), total


def _classes(data: truth.Truth, classes_from: list[Path]) -> tuple[set[str], dict]:
    classes = set(data.pairs["wnid"].unique().to_list())
    sizes = {"dataset": len(classes)}
    for path in classes_from:
        named = truth.read_class_set(path)
        sizes[str(path)] = len(named)
        classes &= named
    if not classes:
        raise LaionetError("no classes left to evaluate: the dataset shares none with the --classes-from files")
    return classes, sizes


def _correctness(sources, model: str, data: truth.Truth) -> tuple[pl.DataFrame, dict]:
    """key, top_1, top_5 for one model over the labelled rows, and counts of what was read and dropped."""
    labelled = data.pairs.select("key").unique()
    frames, counts = [], {"prediction_rows": 0, "duplicates": 0, "without_label": 0}
    for source in sources:
        if model not in source.models:
            continue
        if source.kind == "correctness":
            frame = predictions.load_correctness(source, model, data.key_dtype)
        else:
            frame = predictions.load_lists(source, model, data.key_dtype)
        counts["prediction_rows"] += frame.height
        counts["without_label"] += frame.join(labelled, on="key", how="anti").height
        frame, dropped = correctness.keep_first([frame])
        counts["duplicates"] += dropped
        if source.kind != "correctness":
            frame = correctness.correctness_from_lists(frame, data.pairs)
        frames.append(frame.join(labelled, on="key", how="semi"))
    combined, dropped = correctness.keep_first(frames)  # the same row in two inputs: the first input wins
    counts["duplicates"] += dropped
    return combined, counts


def _per_class(model: str, counts: pl.DataFrame, weights: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for k in correctness.TOPK:
        table = counts.filter(pl.col(f"n_{k}") > 0)  # a class without any prediction has no recall
        recall, se = metrics.recall_and_se(table[f"correct_{k}"].to_numpy(), table[f"n_{k}"].to_numpy())
        rows.append(pl.DataFrame({"model": model, "topk": k, "wnid": table["wnid"], "n": table[f"n_{k}"],
                                  "correct": table[f"correct_{k}"], "recall": recall, "se": se},
                                 schema={c: t for c, t in PER_CLASS_SCHEMA.items() if c != "weight"}))
    per_class = pl.concat(rows).join(weights, on="wnid", how="left", maintain_order="left")
    return per_class.with_columns(pl.col("weight").fill_null(0.0)).select(list(PER_CLASS_SCHEMA))


def _accuracy(per_class: pl.DataFrame, models: list[str], dataset: str) -> pl.DataFrame:
    rows = []
    for model in models:
        for k in correctness.TOPK:
            table = per_class.filter((pl.col("model") == model) & (pl.col("topk") == k))
            if table.height == 0:
                continue
            recall, se, weight = (table[c].to_numpy() for c in ("recall", "se", "weight"))
            for weighting, (acc, acc_se, classes) in (
                    ("equal", metrics.equal_accuracy(recall, se)),
                    ("frequency", metrics.frequency_accuracy(recall, se, weight))):
                rows.append({"model": model, "topk": k, "weighting": weighting,
                             "accuracy": None if math.isnan(acc) else acc,
                             "se": None if math.isnan(acc_se) else acc_se, "classes": classes, "dataset": dataset})
    return pl.DataFrame(rows, schema=ACCURACY_SCHEMA)


def _read_compare(path: Path) -> pl.DataFrame:
    file = path / "accuracy.parquet" if path.is_dir() else path
    if not file.is_file():
        raise LaionetError(f"{path}: no accuracy.parquet here; --compare takes the output folder of another "
                           "`laionet evaluate`")
    try:
        other = pl.read_parquet(file)
    except Exception as exc:  # noqa: BLE001
        raise LaionetError(f"{file}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("model", "topk", "weighting", "accuracy", "se") if c not in other.columns]
    if missing:
        raise LaionetError(f"{file}: no column {missing[0]!r}; is it an evaluation table?")
    return other


def evaluate(prediction_paths: list[str | Path], dataset: str | Path, *, weights: str | Path | None = None,
             classes_from: list[str | Path] = (), model: str | None = None, keep_ocr_flagged: bool = False,
             key_col: str | None = None, name: str | None = None) -> Evaluation:
    """Score every model found in the prediction inputs against the dataset's labels (nothing is written)."""
    dataset = Path(dataset)
    name = name or dataset.stem
    sources = predictions.discover(prediction_paths, model)
    models = predictions.models_of(sources)
    if not models:
        raise LaionetError("no models found in the prediction inputs")
    data = truth.read_truth(dataset, key_col, keep_ocr_flagged)
    classes, class_sizes = _classes(data, [Path(p) for p in classes_from])
    evaluated = data.pairs.filter(pl.col("wnid").is_in(sorted(classes)))
    weight_table, weight_total = _weights(Path(weights) if weights else None, data)

    per_class, model_counts = [], {}
    for m in models:
        correct, counts = _correctness(sources, m, data)
        class_counts = correctness.class_counts(correct, evaluated)
        rows = evaluated.select("key").unique().join(correct, on="key", how="left")
        counts["rows_evaluated"] = int(rows["top_1"].is_not_null().sum())
        counts["rows_without_prediction"] = int(rows["top_1"].is_null().sum())
        model_counts[m] = counts
        per_class.append(_per_class(m, class_counts, weight_table))
    per_class = pl.concat(per_class)
    if per_class.height == 0:
        raise LaionetError(f"{dataset}: no prediction matches a labelled row (do the predictions and the dataset "
                           "use the same ids: uid, or image file names?)")
    accuracy = _accuracy(per_class, models, name)

    info = {
        "dataset": name,
        "inputs": {"predictions": [_fingerprint(s.path) for s in sources], "dataset": _fingerprint(dataset),
                   "weights": _fingerprint(weights) if weights else None,
                   "classes_from": [_fingerprint(p) for p in classes_from]},
        "counts": {"rows_labelled": data.rows, "rows_ocr_flagged_dropped": data.ocr_flagged,
                   "rows_evaluated": evaluated.select("key").n_unique()},
        "classes": {**class_sizes, "evaluated": len(classes)},
        "weights": {"from": str(weights) if weights else f"{dataset} (its own class counts)",
                    "total": weight_total},
        "models": model_counts,
    }
    return Evaluation(accuracy, per_class, info)


def write_outputs(result: Evaluation, out: str | Path, params: dict, compare: pl.DataFrame | None = None,
                  compare_name: str | None = None) -> list[Path]:
    """accuracy.parquet / .json, per_class.parquet, accuracy.png and manifest.json, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file, table in (("accuracy.parquet", result.accuracy), ("per_class.parquet", result.per_class)):
        with atomic_path(out / file) as tmp:
            table.write_parquet(tmp)
        written.append(out / file)
    records = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
               for row in result.accuracy.to_dicts()]
    write_text_atomic(out / "accuracy.json", json.dumps(records, indent=2) + "\n")
    written.append(out / "accuracy.json")
    name = result.info["dataset"]
    if compare is not None:
        plot.plot_compare(plot.compare_points(result.accuracy, compare), name, compare_name, out / "accuracy.png")
    else:
        plot.plot_bars(result.accuracy, name, out / "accuracy.png")
    written.append(out / "accuracy.png")
    manifest = new_manifest("evaluate", params)
    manifest["stages"]["evaluate"] = result.info
    write_manifest(out / "manifest.json", manifest)
    written.append(out / "manifest.json")
    return written


def run_evaluate(prediction_paths, dataset, out, *, compare: str | Path | None = None, **options) -> Evaluation:
    """Evaluate and write everything to the folder `out`; --compare is checked before any work."""
    other, other_name = None, None
    if compare is not None:
        other = _read_compare(Path(compare))
        other_name = (other["dataset"][0] if "dataset" in other.columns and other.height else Path(compare).name)
    result = evaluate(prediction_paths, dataset, **options)
    if other is not None and not plot.compare_points(result.accuracy, other):
        raise LaionetError(f"{compare}: no model in common with these predictions; nothing to compare")
    params = {"predictions": [str(p) for p in prediction_paths], "dataset": str(dataset), "compare": compare,
              **{k: (list(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in options.items()}}
    params = json.loads(json.dumps(params, default=str))
    write_outputs(result, out, params, other, other_name)
    return result
