"""Image thresholds that keep a multimodal dataset at a target size (spec §9.5).

n(t, i) = #{rows with text similarity ⋄ t and image similarity ⋄ i}, ⋄ being `>` (gt) or `>=` (ge); rows
with a NaN/null image similarity (failed downloads) never pass. For a text threshold t, find i with
n(t, i) as close as possible to the target.

- `exact`: n(t, ·) is a step function that only changes at the image similarities of the rows passing t,
  so every attainable size is #{v ⋄ u} for one of those values u (or 0, or all of them). Sort them once,
  take the size closest to the target (ties: the smaller size, i.e. the stricter threshold), and return a
  threshold that gives exactly that size: with `ge` the order statistic itself, with `gt` the next
  smaller distinct value. Deterministic, and it always reaches the best attainable size.
- `golden`: the paper's `scipy.optimize.golden(|n_ref − n(t, i)|, brack=(0.2, 1.0))`. Golden-section
  search assumes a unimodal, continuous function; on a step function it can stop on a flat step far from
  the best size, and its bracket search may step outside (0.2, 1.0). Kept for parity.
"""

from __future__ import annotations

import numpy as np

COMPARISONS = ("gt", "ge")


def passes(values: np.ndarray, threshold: float, compare: str) -> np.ndarray:
    """values ⋄ threshold; NaN never passes (both comparisons are False for NaN)."""
    with np.errstate(invalid="ignore"):
        return values > threshold if compare == "gt" else values >= threshold


def count(text: np.ndarray, image: np.ndarray, t: float, i: float, compare: str) -> int:
    return int(np.count_nonzero(passes(text, t, compare) & passes(image, i, compare)))


def exact_image_threshold(image_passing_text: np.ndarray, target: int, compare: str) -> tuple[float, int]:
    """(threshold, size) with the size #{v ⋄ threshold} closest to `target` among all attainable sizes."""
    v = np.sort(image_passing_text[~np.isnan(image_passing_text)])
    m = len(v)
    if m == 0:
        return float("nan"), 0
    distinct = np.unique(v)
    at_least = m - np.searchsorted(v, distinct, side="left")  # #{v >= u} per distinct u, decreasing
    sizes = np.concatenate([at_least, [0]])
    # closest to the target; np.argmin takes the first of equals, so order the candidates by size, ascending
    order = np.argsort(sizes, kind="stable")
    best = order[np.argmin(np.abs(sizes[order] - target))]
    size = int(sizes[best])
    if compare == "ge":
        threshold = distinct[best] if best < len(distinct) else np.nextafter(distinct[-1], np.inf)
    else:  # #{v > u_{k-1}} = #{v >= u_k}
        threshold = distinct[best - 1] if best > 0 else np.nextafter(distinct[0], -np.inf)
    return float(threshold), size


def golden_image_threshold(text: np.ndarray, image: np.ndarray, t: float, target: int, compare: str,
                           bracket: tuple[float, float] = (0.2, 1.0)) -> float:
    """The paper's search: golden-section minimisation of |target − n(t, i)| over i."""
    from scipy.optimize import golden

    keep = passes(text, t, compare)
    image_kept = image[keep]
    return float(golden(lambda i: abs(target - int(np.count_nonzero(passes(image_kept, i, compare)))),
                        brack=bracket))


def parse_text_thresholds(spec: str) -> list[float]:
    """'0.72:0.82:11' (start:stop:count, like linspace) or '0.72,0.76,0.79,0.81'."""
    from laionet.errors import LaionetError

    try:
        if ":" in spec:
            start, stop, num = spec.split(":")
            if int(num) < 1:
                raise ValueError
            values = np.linspace(float(start), float(stop), int(num))
        else:
            values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise LaionetError(f"bad --text-thresholds '{spec}': use START:STOP:COUNT or a comma-separated list") from None
    if not len(values):
        raise LaionetError(f"bad --text-thresholds '{spec}': no threshold")
    return [float(v) for v in values]  # unrounded: the paper used numpy.linspace values as they are
