"""PSF echoes: a dim second call that every bright spot of an image carries at the same offset.

Why: an aberrated point-spread function (coma, astigmatism, a misaligned pinhole) puts a side lobe beside each
bright spot, always in the same direction and at the same distance. The lobe is a local maximum of its own, so
both the network and the LoG proposals call it; on a bead image of issue 24, 72 of the 82 false spots were
such second calls about 3 px from a bead on one diagonal, and on a synthetic one with a lobe of a fifth of
the peak 3.1 px away every bead got one, scored 0.9-0.99. One image cannot tell a lobe from a dim neighbour
by its shape, but it can by repetition: neighbours of real spots sit at random offsets, so their offset
vectors (from the brighter to the dimmer) spread over the disc (or, for doublets at one distance, around a
ring), while a lobe's pile up at one point. A dimmer candidate whose offset from a brighter one falls in such
a pile, far beyond chance, is dropped (:func:`psf_echoes`).
"""

from __future__ import annotations

import numpy as np

#: pairs up to this far apart (px) are compared; closer than MIN_OFFSET they are one spot's calls anyway
RADIUS, MIN_OFFSET = 5.0, 1.5
#: offsets within this distance (px) of each other are the same offset
TOLERANCE = 0.5
#: an echo is at most this fraction of the brighter spot's contrast
MAX_RATIO = 0.75
#: a pile needs at least this many pairs, and this many times as many as random offsets would put there
MIN_PAIRS, MIN_EXCESS = 6, 5.0


def psf_echoes(coords: np.ndarray, contrast: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """Which of the points ``coords`` (N, 2) are echoes of a brighter one (``contrast``: their brightness over
    the background). Only ``eligible`` points (default: all) make pairs: pass those that could be spots at
    all, so the noise's many weak candidates do not drown a pile."""
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    contrast = np.asarray(contrast, dtype=np.float64).reshape(-1)
    out = np.zeros(len(coords), dtype=bool)
    idx = np.flatnonzero(eligible) if eligible is not None else np.arange(len(coords))
    if len(idx) < MIN_PAIRS + 1:
        return out
    pairs = cKDTree(coords[idx]).query_pairs(RADIUS, output_type="ndarray").reshape(-1, 2)
    if not len(pairs):
        return out
    a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
    swap = contrast[b] > contrast[a]
    bright, dim = np.where(swap, b, a), np.where(swap, a, b)
    offset = coords[dim] - coords[bright]
    length = np.hypot(*offset.T)
    keep = (length >= MIN_OFFSET) & (contrast[dim] <= MAX_RATIO * np.maximum(contrast[bright], 0))
    if keep.sum() < MIN_PAIRS:
        return out
    bright, dim, offset = bright[keep], dim[keep], offset[keep]
    # how many pairs share each pair's offset, against what chance would put within TOLERANCE of it: offsets
    # spread over the disc of allowed lengths, or over every direction at this length (pairs at one distance,
    # e.g. doublets, pile up on a ring, not at a point)
    shared = np.asarray(cKDTree(offset).query_ball_point(offset, TOLERANCE, return_length=True))
    length = length[keep]
    lengths = np.sort(length)
    same_length = (np.searchsorted(lengths, length + TOLERANCE, side="right")
                   - np.searchsorted(lengths, length - TOLERANCE, side="left"))
    chance = np.maximum(len(offset) * TOLERANCE ** 2 / (RADIUS ** 2 - MIN_OFFSET ** 2),
                        same_length * TOLERANCE / (4 * length))
    pile = shared >= np.maximum(MIN_PAIRS, MIN_EXCESS * chance)
    out[dim[pile]] = True
    return out


__all__ = ["MAX_RATIO", "MIN_EXCESS", "MIN_OFFSET", "MIN_PAIRS", "RADIUS", "TOLERANCE", "psf_echoes"]
