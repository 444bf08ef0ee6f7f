"""Where to click next: the square of the image where the model is least sure, outside what is annotated.

A candidate whose score sits near the threshold is one the model could call either way; a region full of
them is where a user's clicks teach the most (calibration and fine-tuning both learn from the spots on the
edge). Weight of a candidate: ``exp(-(ln s - ln t)^2 / 2w^2)`` (1 at the threshold, 0.14 at x e^(2w)); the
suggestion is the square with the largest sum, away from regions already annotated.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpotDetectError


def uncertainty(scores, threshold: float, width: float = 0.7) -> np.ndarray:
    """How undecided each candidate is: 1 at the threshold, falling with the log-ratio of score to threshold."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, None)
    t = max(float(threshold), 1e-6)
    return np.exp(-((np.log(s) - np.log(t)) ** 2) / (2 * width * width))


def suggest_region(yx, scores, threshold: float, shape, size: int = 64, exclude=()) -> tuple | None:
    """The ``size`` x ``size`` box ``(y0, x0, y1, x1)`` with the most undecided candidates, not overlapping
    ``exclude`` (boxes); None when no candidate is left to judge."""
    h, w = int(shape[-2]), int(shape[-1])
    if size < 4:
        raise SpotDetectError(f"A suggested region of {size} px is too small.", "use at least 16 px.")
    size = int(min(size, h, w))
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    weight = uncertainty(scores, threshold) if len(yx) else np.zeros(0)
    grid = np.zeros((h, w))
    iy = np.clip(np.rint(yx[:, 0]).astype(int), 0, h - 1)
    ix = np.clip(np.rint(yx[:, 1]).astype(int), 0, w - 1)
    np.add.at(grid, (iy, ix), weight)
    # window sums of every size x size box by a summed-area table; stride of a quarter box keeps it fast
    sat = np.pad(grid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 4)
    ys = np.unique(np.r_[np.arange(0, h - size + 1, step), h - size])
    xs = np.unique(np.r_[np.arange(0, w - size + 1, step), w - size])
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    sums = sat[y0 + size, x0 + size] - sat[y0, x0 + size] - sat[y0 + size, x0] + sat[y0, x0]
    for b in exclude:
        by0, bx0, by1, bx1 = (int(v) for v in b)
        overlap = (y0 < by1) & (y0 + size > by0) & (x0 < bx1) & (x0 + size > bx0)
        sums[overlap] = -1.0
    if sums.max() <= 0:
        return None
    k = np.unravel_index(np.argmax(sums), sums.shape)
    return int(y0[k]), int(x0[k]), int(y0[k]) + size, int(x0[k]) + size


__all__ = ["suggest_region", "uncertainty"]
