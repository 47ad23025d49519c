"""Bootstrap over images of a class's mean pairwise similarity (spec §11.9).

The paper's interval treats the n(n−1)/2 pairwise similarities of a class as independent, but they come
from only n images, so it is far too narrow. Here the class's IMAGES are resampled with replacement (n
draws) and the mean similarity is recomputed over the pairs of distinct draws.

Duplicates: two draws of the same image are not a pair of two images (their cosine is 1 by construction)
and are left out; every other pair of draws counts once, so an image drawn c times enters its pairs with
weight c. With counts c (the multiplicity of each image in one resample) and S the class's similarity
matrix with a zero diagonal, the resampled mean is

    Σ_{k≠l} c_k c_l S_kl / Σ_{k≠l} c_k c_l  =  cᵀ S c / ((Σc)² − Σc²),

so all resamples of a class are one matrix product (resamples × n) · (n × n). A resample in which every
draw is the same image has no pair and gives NaN (only likely for n = 2); percentiles ignore NaN.

Seeds: the draws of a class depend only on (seed, dataset name, label), so a dataset's resamples are the
same whichever dataset it is compared with, and a rerun gives the same intervals.
"""

from __future__ import annotations

import hashlib

import numpy as np

from laionet.errors import LaionetError


def keyed_rng(*key) -> np.random.Generator:
    """A generator seeded from the key's parts (strings, ints), independent of anything else."""
    text = "\x00".join(str(part) for part in key)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def class_matrix(i_uid: np.ndarray, j_uid: np.ndarray, values: np.ndarray, label: str = "") -> np.ndarray:
    """The symmetric n×n similarity matrix (zero diagonal) of one class from its pairs (strict triangle)."""
    uids, index = np.unique(np.concatenate([i_uid, j_uid]), return_inverse=True)
    n = len(uids)
    if len(values) != n * (n - 1) // 2:
        raise LaionetError(f"class '{label}': {len(values)} pairs over {n} images, not the {n * (n - 1) // 2} "
                           f"of a complete similarity matrix")
    i, j = index[: len(values)], index[len(values):]
    matrix = np.zeros((n, n), dtype=np.float64)
    matrix[i, j] = values
    matrix[j, i] = values
    np.fill_diagonal(matrix, 0.0)
    return matrix


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) multiplicities of each image: n draws with replacement per resample."""
    draws = rng.integers(0, n, size=(resamples, n))
    flat = draws + n * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def bootstrap_means(matrix: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Mean similarity over pairs of distinct images, for each of `resamples` resamples of the images."""
    n = len(matrix)
    counts = resample_counts(n, resamples, rng)
    numerator = np.einsum("bi,bi->b", counts @ matrix, counts)
    pairs = n * n - np.einsum("bi,bi->b", counts, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, numerator / np.where(pairs > 0, pairs, 1), np.nan)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval, ignoring NaN (NaN, NaN when nothing is left)."""
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)
