"""Accuracy as the original defined it (spec §7.2): per-class recall with Wilson standard errors, then an
equally weighted or a frequency-weighted mean over classes. Plain numpy; no statsmodels at run time.
"""

from __future__ import annotations

import numpy as np

# statsmodels' proportion_confint(alpha=0.05) uses norm.isf(0.025); the original then divided by 1.96.
Z_95 = 1.959963984540054
SE_DIVISOR = 1.96


def wilson_interval(count, nobs, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval, as statsmodels `proportion_confint(method='wilson')` computes it."""
    count = np.asarray(count, dtype=float)
    nobs = np.asarray(nobs, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = count / nobs
        z2 = z * z
        denom = 1 + z2 / nobs
        center = (q + z2 / (2 * nobs)) / denom
        dist = z * np.sqrt(q * (1.0 - q) / nobs + z2 / (4.0 * nobs**2)) / denom
    return np.clip(center - dist, 0, 1), np.clip(center + dist, 0, 1)


def recall_and_se(correct, n) -> tuple[np.ndarray, np.ndarray]:
    """recall = c / n and its standard error = (Wilson upper - Wilson lower) / 2 / 1.96 (NaN where n = 0)."""
    correct = np.asarray(correct, dtype=float)
    n = np.asarray(n, dtype=float)
    low, high = wilson_interval(correct, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = correct / n
    return recall, (high - low) / 2 / SE_DIVISOR


def equal_accuracy(recall, se) -> tuple[float, float, int]:
    """The plain mean of the per-class recalls and sqrt(sum se^2) / K, over the K classes with a recall."""
    recall, se = np.asarray(recall, dtype=float), np.asarray(se, dtype=float)
    present = ~np.isnan(recall)
    k = int(present.sum())
    if k == 0:
        return float("nan"), float("nan"), 0
    return float(np.mean(recall[present])), float(np.sqrt(np.sum(se[present] ** 2)) / k), k


def frequency_accuracy(recall, se, weight) -> tuple[float, float, int]:
    """sum(w r) / sum(w) and sqrt(sum (se w)^2) / sum(w) over the classes with a recall; a class without a
    weight has weight 0. Returns the number of classes with a recall and a positive weight."""
    recall, se = np.asarray(recall, dtype=float), np.asarray(se, dtype=float)
    weight = np.nan_to_num(np.asarray(weight, dtype=float), nan=0.0)
    present = ~np.isnan(recall)
    recall, se, weight = recall[present], se[present], weight[present]
    total = weight.sum()
    if total <= 0:
        return float("nan"), float("nan"), 0
    return (float(np.sum(weight * recall) / total), float(np.sqrt(np.sum((se * weight) ** 2)) / total),
            int((weight > 0).sum()))
