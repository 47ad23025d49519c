"""Plots of `laionet compare`: pooled similarity histograms and the per-class differences (spec §8.4).

The paper's difference plot sorted the upper and lower bounds as two independent series (§8.4), which
draws bands that belong to no class; here classes are sorted by the difference and each keeps its own
interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from laionet.io.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def plot_pooled(pooled: dict[str, np.ndarray], bins: int, path: Path, classes: int) -> None:
    """Density histograms of the pooled draws, one per dataset, on shared bins; pooled means in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    values = [v for v in pooled.values() if len(v)]
    if values:
        edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
        for name, v in pooled.items():
            if len(v):
                ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.4,
                        label=f"{name} (mean {v.mean():.3f})")
        ax.legend()
    ax.set_xlabel("intra-class pairwise cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(f"Pooled over {classes:,} common classes")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_differences(rows: list[dict], comparisons: list[str], path: Path) -> None:
    """Per comparison: each tested class's difference of means, sorted, with its paper and bootstrap CI."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(comparisons), 1, figsize=(8, 3.5 * len(comparisons)), squeeze=False)
    for ax, comparison in zip(axes[:, 0], comparisons):
        part = sorted((r for r in rows if r["comparison"] == comparison), key=lambda r: r["diff"])
        x = np.arange(len(part))
        if part:
            diff = np.array([r["diff"] for r in part])
            if any(r["boot_low"] is not None for r in part):
                boot_low = np.array([np.nan if r["boot_low"] is None else r["boot_low"] for r in part])
                boot_high = np.array([np.nan if r["boot_high"] is None else r["boot_high"] for r in part])
                ax.fill_between(x, boot_low, boot_high, alpha=0.3, label="95% CI (image bootstrap)", step="mid")
            ax.fill_between(x, [r["paper_low"] for r in part], [r["paper_high"] for r in part], alpha=0.6,
                            label="95% CI (paper: pairs independent)", step="mid")
            ax.plot(x, diff, color="black", linewidth=1, label="difference of class means")
            ax.legend(fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"{comparison}: {len(part):,} classes")
        ax.set_xlabel("class (sorted by difference)")
        ax.set_ylabel("mean similarity difference")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
