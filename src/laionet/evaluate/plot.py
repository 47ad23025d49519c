"""The accuracy plot: this dataset against another per model (the paper's Figure 1), or bars per model.

Error bars are 1.96 standard errors on both axes (the original scaled only x: spec §11.11).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from laionet.io.atomic import atomic_path

CI = 1.96


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _equal(accuracy: pl.DataFrame, k: int) -> pl.DataFrame:
    return (accuracy.filter((pl.col("topk") == k) & (pl.col("weighting") == "equal"))
            .drop_nulls("accuracy").select("model", "accuracy", "se"))


def compare_points(accuracy: pl.DataFrame, other: pl.DataFrame) -> dict[int, pl.DataFrame]:
    """Per top-k: model, x (this dataset), x_se, y (the other), y_se, equally weighted, models in both."""
    points = {}
    for k in (1, 5):
        both = _equal(accuracy, k).join(_equal(other, k), on="model", how="inner", suffix="_other")
        if both.height:
            points[k] = both.select("model", x="accuracy", x_se="se", y="accuracy_other", y_se="se_other")
    return points


def plot_compare(points: dict[int, pl.DataFrame], x_name: str, y_name: str, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(6 * len(points), 5.5), squeeze=False)
    for ax, (k, frame) in zip(axes[0], points.items()):
        ax.errorbar(frame["x"], frame["y"], xerr=CI * frame["x_se"], yerr=CI * frame["y_se"], fmt="o",
                    markersize=4, capsize=2, linewidth=0.8)
        for model, x, y in frame.select("model", "x", "y").iter_rows():
            ax.annotate(model, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        values = frame["x"].to_list() + frame["y"].to_list()
        low, high = max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05)
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="y = x")
        ax.set(xlim=(low, high), ylim=(low, high), xlabel=f"{x_name} top-{k} accuracy (equally weighted)",
               ylabel=f"{y_name} top-{k} accuracy (equally weighted)")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{x_name} vs {y_name} (error bars: 95% CI)")
    _save(fig, path)


def plot_bars(accuracy: pl.DataFrame, name: str, path: Path) -> None:
    plt = _pyplot()
    ks = [k for k in (1, 5) if accuracy.filter(pl.col("topk") == k).height]
    models = accuracy.get_column("model").unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(len(ks), 1, figsize=(max(6, 0.6 * len(models) + 2), 4 * len(ks)), squeeze=False)
    width = 0.4
    for ax, k in zip(axes[:, 0], ks):
        for i, weighting in enumerate(("equal", "frequency")):
            rows = accuracy.filter((pl.col("topk") == k) & (pl.col("weighting") == weighting))
            lookup = {m: (a, s) for m, a, s in rows.select("model", "accuracy", "se").iter_rows()}
            values = [lookup.get(m, (None, None)) for m in models]
            heights = [a if a is not None else 0.0 for a, _ in values]
            errors = [CI * s if s is not None else 0.0 for _, s in values]
            ax.bar([j + (i - 0.5) * width for j in range(len(models))], heights, width, yerr=errors, capsize=2,
                   label=f"{weighting} weighted")
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=7)
        ax.set(ylim=(0, 1), ylabel=f"top-{k} accuracy")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name} (error bars: 95% CI)")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
