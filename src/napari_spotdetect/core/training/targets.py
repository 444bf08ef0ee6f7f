"""Training targets: what a network should output for a list of spots.

Piscis learns a classification map (a small square of "spot" pixels around each spot, so a one-pixel
miss is not punished) and, at every pixel, the displacement to the nearest spot (a Voronoi partition, so
the pooling step can gather votes from anywhere near a spot). Ties between equally near spots are broken
the way piscis 1.1.0 breaks them, so our targets equal piscis's bit for bit. DeepSpot instead learns an
"enhanced" image: the input with a fixed bright 3x3 stamp at every spot.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import SpotDetectError

#: DeepSpot's stamp (uint8 scale), written centred on each spot's pixel
DEEPSPOT_STAMP = np.array([[200, 230, 200], [230, 255, 230], [200, 230, 200]], dtype=np.float64)


def _check(coords, shape) -> tuple[np.ndarray, tuple[int, int]]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise SpotDetectError(f"Target shape {shape} is not a 2-D image shape.", "pass (height, width).")
    c = np.asarray(coords, dtype=np.float64)
    if c.size == 0:
        return np.zeros((0, 2)), shape
    if c.ndim != 2 or c.shape[1] != 2:
        raise SpotDetectError(f"Spot coordinates have shape {c.shape}; expected (N, 2) rows of (y, x).",
                              "pass one (y, x) row per spot.")
    if not np.isfinite(c).all():
        raise SpotDetectError("Some spot coordinates are NaN or infinite.", "drop or fix those rows.")
    return c, shape


def inside(coords, shape) -> np.ndarray:
    """Mask of spots whose nearest pixel lies in the image (the ones a target can represent)."""
    c = np.rint(np.asarray(coords, dtype=np.float64).reshape(-1, 2))
    return (c[:, 0] >= 0) & (c[:, 0] < shape[0]) & (c[:, 1] >= 0) & (c[:, 1] < shape[1])


def spot_labels(coords, shape, dilation: int = 1) -> np.ndarray:
    """Boolean map: the nearest pixel of each spot, dilated ``dilation`` times (3x3, 8-connected)."""
    c, shape = _check(coords, shape)
    c = c[inside(c, shape)]
    lab = np.zeros(shape, dtype=bool)
    r = np.rint(c).astype(np.int64)
    lab[r[:, 0], r[:, 1]] = True
    if dilation > 0 and len(r):
        lab = ndimage.binary_dilation(lab, structure=np.ones((3, 3), dtype=bool), iterations=int(dilation))
    return lab


def voronoi_targets(coords, shape, dilation: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(labels (H, W) bool, deltas (2, H, W) float32): classification and displacement-to-nearest-spot.

    Nearest is measured to the spots' rounded pixels; among equally near spots the first wins after
    ordering them by sub-pixel offset from their pixel, then rounded row, then rounded column (primary),
    as piscis does. The displacement points at the sub-pixel position. Spots outside the image are ignored.
    """
    c, shape = _check(coords, shape)
    c = c[inside(c, shape)]
    h, w = shape
    labels = spot_labels(c, shape, dilation)
    deltas = np.zeros((2, h, w), dtype=np.float32)
    if len(c) == 0:
        return labels, deltas
    r = np.rint(c)
    order = np.lexsort((np.hypot(*(c - r).T), r[:, 0], r[:, 1]))
    c, r = c[order], r[order]
    pix = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2).astype(np.float64)
    nearest = _first_nearest(r, pix)
    # float32 subtraction, as piscis does it (float64 differs by up to 1 float32 ulp far from spots)
    deltas[:] = (c.astype(np.float32)[nearest] - pix.astype(np.float32)).T.reshape(2, h, w)
    return labels, deltas


def _first_nearest(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest point to each query; exact ties go to the lowest index."""
    n = len(points)
    tree = cKDTree(points)
    out = np.empty(len(queries), dtype=np.int64)
    todo = np.arange(len(queries))
    k = min(n, 8)
    while len(todo):
        d, i = tree.query(queries[todo], k=k)
        d, i = d.reshape(len(todo), -1), i.reshape(len(todo), -1)
        # squared distances between integer positions are integers: compare them exactly
        d2 = ((points[i] - queries[todo][:, None]) ** 2).sum(-1)
        best = d2.min(axis=1, keepdims=True)
        tied = d2 == best
        out[todo] = np.where(tied, i, n).min(axis=1)
        unsure = tied[:, -1] & (k < n)  # the k-th neighbour ties: there may be more
        todo = todo[unsure]
        k = min(n, 2 * k)
    return out


def deepspot_target(image, coords) -> np.ndarray:
    """DeepSpot's enhancement target: ``image`` (rescaled to 0..255) with the 3x3 stamp at each spot, / max.

    DeepSpot trains on 8-bit images; we bring any image to that scale first so the stamp is always the
    brightest thing in the target, as in the authors' data.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise SpotDetectError(f"DeepSpot targets need a 2-D image, got shape {img.shape}.", "pass one plane.")
    c, shape = _check(coords, img.shape)
    lo, hi = float(img.min()), float(img.max())
    out = (img - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(img)
    h, w = shape
    for y, x in np.rint(c[inside(c, shape)]).astype(np.int64):
        r0, r1, c0, c1 = max(0, y - 1), min(h, y + 2), max(0, x - 1), min(w, x + 2)
        out[r0:r1, c0:c1] = DEEPSPOT_STAMP[r0 - y + 1:r1 - y + 1, c0 - x + 1:c1 - x + 1]
    m = out.max()
    return (out / m if m > 0 else out).astype(np.float32)
