"""Snapping a hand-placed point to the centre of the spot under it.

A click lands within a pixel or two of a spot; ground truth should sit on the spot's centre. We smooth
lightly (so noise does not win), take the brightest pixel within ``radius`` of the click, then refine to
sub-pixel precision with a background-subtracted, intensity-weighted centroid in a small window around it
(robust, no fitting that can diverge). A clipped (saturated) spot has a flat top wider than that window, so
there the window is centred on the flat top and widened to take in the slopes around it. If the window holds
no signal above background the point stays put.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def snap_to_spot(plane: np.ndarray, point, radius: float = 2.0, window: int = 2, sigma: float = 0.7) -> np.ndarray:
    """Return the refined (y, x) of the spot nearest ``point`` in a 2-D ``plane``."""
    plane = np.asarray(plane, dtype=np.float64)
    h, w = plane.shape
    y0, x0 = float(point[0]), float(point[1])
    r = int(np.ceil(radius)) + window + 2
    r0, r1 = max(0, int(round(y0)) - r), min(h, int(round(y0)) + r + 1)
    c0, c1 = max(0, int(round(x0)) - r), min(w, int(round(x0)) + r + 1)
    if r0 >= r1 or c0 >= c1:
        return np.array([y0, x0])
    patch = plane[r0:r1, c0:c1]
    smooth = ndimage.gaussian_filter(patch, sigma) if sigma > 0 else patch
    yy, xx = np.mgrid[r0:r1, c0:c1]
    near = (yy - y0) ** 2 + (xx - x0) ** 2 <= radius ** 2
    if not near.any():
        return np.array([y0, x0])
    masked = np.where(near, smooth, -np.inf)
    py, px = np.unravel_index(np.argmax(masked), masked.shape)
    py, px = py + r0, px + c0
    top = _plateau(plane[r0:r1, c0:c1], py - r0, px - c0)
    if top is not None:  # centre the window on the flat top and widen it to take in the slopes around it
        (cy, cx), half = top
        py, px = int(round(cy)) + r0, int(round(cx)) + c0
        window = max(window, half + 2)
    wr0, wr1 = max(0, py - window), min(h, py + window + 1)
    wc0, wc1 = max(0, px - window), min(w, px + window + 1)
    win = plane[wr0:wr1, wc0:wc1]
    ring = np.concatenate([win[0], win[-1], win[1:-1, 0], win[1:-1, -1]]) if win.size > 1 else win.ravel()
    weights = np.clip(win - np.median(ring), 0, None)
    total = weights.sum()
    if total <= 0:
        return np.array([float(py), float(px)])
    wy, wx = np.mgrid[wr0:wr1, wc0:wc1]
    return np.array([(weights * wy).sum() / total, (weights * wx).sum() / total])


#: a flat top of at least this many pixels at the brightest value is a clipped spot, not a tie in the noise
_MIN_PLATEAU = 3


def _plateau(patch: np.ndarray, py: int, px: int):
    """((y, x) centre, half-width) of the flat top next to (py, px) when the spot is clipped there, else None."""
    near = patch[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
    flat = patch >= near.max()  # only pixels at the brightest value: a clipped top, not a bright slope
    if flat.sum() < _MIN_PLATEAU:
        return None
    labels, _ = ndimage.label(flat)
    ny, nx = np.unravel_index(np.argmax(near), near.shape)
    yy, xx = np.nonzero(labels == labels[ny + max(py - 1, 0), nx + max(px - 1, 0)])
    if len(yy) < _MIN_PLATEAU:
        return None
    half = int(np.ceil(max(np.ptp(yy), np.ptp(xx)) / 2))
    return (float(yy.mean()), float(xx.mean())), half


def snap_points(plane: np.ndarray, points: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`snap_to_spot` for (K, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.array([snap_to_spot(plane, p, **kwargs) for p in pts]).reshape(-1, 2)
