"""One call per round clipped spot: a saturated spot's flat top gets one point, at its centre.

Why: where the camera clips a bright spot its top is a flat plateau with no gradient, so the network's
displacements do not converge there and the LoG finds a ring of peaks on its edge; the 2-D sample's 76 clipped
spots got 129 calls between them, a cluster of 2-4 points on the very spots a user looks at first. A clipped
plateau that is round (its overlap with the disc of its own area, centred on it, is at least
:data:`ROUNDNESS`) is one spot, so the calls on it (within that disc) become one: the best-scored, moved to the
plateau's centroid, which for a symmetric spot is its centre. A plateau that is not round is several spots
merged, or not a spot at all, and keeps its calls; so do small ones (fewer than :data:`MIN_AREA` pixels: too few
to judge their shape), those wider than a diffraction-limited spot (:data:`MAX_RADIUS`) and those cut by the
plane's edge. Chosen on the 2-D sample, the two piscis_panels ``train`` images and realistic synthetic images
with clipped spots (README, *A clipped spot is one spot*). In a z-stack each plane's round plateau becomes one
voxel set pointing at its centroid (:func:`..rescore.fill_round_plateaus`), so the spot is one 3-D component.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: plateaus of fewer pixels keep their calls (their shape cannot be told from a disc's)
MIN_AREA = 12
#: plateaus whose disc of equal area is wider than this radius (px) are no diffraction-limited spot
MAX_RADIUS = 8.0
#: a plateau is round when its intersection over union with the disc of its own area at its centroid is this
ROUNDNESS = 0.85


def roundness(mask: np.ndarray) -> float:
    """Intersection over union of a region (a boolean mask) with the disc of its own area at its centroid."""
    pts = np.argwhere(mask).astype(np.float64)
    centre, r2 = pts.mean(0), len(pts) / np.pi
    m = int(np.ceil(np.sqrt(r2))) + 1
    yy, xx = np.mgrid[-m:mask.shape[0] + m, -m:mask.shape[1] + m]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r2
    region = np.zeros(disc.shape, dtype=bool)
    region[m:m + mask.shape[0], m:m + mask.shape[1]] = mask
    return float((disc & region).sum() / (disc | region).sum())


def _plateau_at(plane, rc: np.ndarray, top: float):
    """The clipped plateau touching pixel ``rc``'s 3 x 3 neighbourhood: (its centroid, its pixels (n, 2)) in plane
    coordinates, or None where there is none, or it is small, not round, cut by the plane's edge or too large to
    be a spot."""
    from ..io.image_sources import read

    h, w = (int(v) for v in plane.shape[-2:])
    reach = int(2 * MAX_RADIUS) + 2
    r0, r1 = max(rc[0] - reach, 0), min(rc[0] + reach + 1, h)
    c0, c1 = max(rc[1] - reach, 0), min(rc[1] + reach + 1, w)
    lab, n = ndimage.label(np.asarray(read(plane[r0:r1, c0:c1])) >= top)
    if n == 0:
        return None
    near = lab[max(rc[0] - 1 - r0, 0):rc[0] + 2 - r0, max(rc[1] - 1 - c0, 0):rc[1] + 2 - c0]
    ids, counts = np.unique(near[near > 0], return_counts=True)
    if not len(ids):
        return None
    mask = lab == ids[np.argmax(counts)]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    area = int(mask.sum())
    # touching the window's edge: cut by the plane's edge, or too large for the window (no spot)
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == mask.shape[0] - 1 or cols[-1] == mask.shape[1] - 1:
        return None
    if area < MIN_AREA or np.sqrt(area / np.pi) > MAX_RADIUS:
        return None
    if roundness(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]) < ROUNDNESS:
        return None
    pixels = np.argwhere(mask) + (r0, c0)
    return pixels.mean(0), pixels


def round_plateaus(plane, coords: np.ndarray, scores: np.ndarray, saturated: np.ndarray, top: float | None,
                   eligible: np.ndarray | None = None):
    """The round clipped plateaus the calls sit on: a list of (centroid (2,), pixels (n, 2), the indices of the
    eligible calls within the disc of the plateau's area around its centroid, best-scored first).

    ``saturated``: each call's share of clipped pixels in its 3 x 3 neighbourhood (only these start a look at
    the plane); ``top``: the plane's clipping level (None: it has no clipped pixels, there are none);
    ``eligible``: the calls that take part (default: all), so a dropped one is never a plateau's best."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    scores, saturated = np.asarray(scores), np.asarray(saturated)
    if top is None or not len(coords):
        return []
    h, w = (int(v) for v in plane.shape[-2:])
    rc = np.rint(coords).astype(np.int64)
    rc[:, 0] = np.clip(rc[:, 0], 0, h - 1)
    rc[:, 1] = np.clip(rc[:, 1], 0, w - 1)
    done = np.zeros(len(coords), dtype=bool) if eligible is None else ~np.asarray(eligible, dtype=bool)
    out = []
    for i in np.flatnonzero(saturated > 0)[np.argsort(-scores[saturated > 0], kind="stable")]:
        if done[i]:
            continue
        done[i] = True
        found = _plateau_at(plane, rc[i], top)
        if found is None:
            continue
        centre, pixels = found
        group = np.flatnonzero(np.hypot(*(coords - centre).T) <= np.sqrt(len(pixels) / np.pi))
        group = group[~done[group] | (group == i)]
        if not len(group):
            continue
        done[group] = True
        out.append((centre, pixels, group[np.argsort(-scores[group], kind="stable")]))
    return out


def round_plateau_repeats(plane, coords: np.ndarray, scores: np.ndarray, saturated: np.ndarray,
                          top: float | None, eligible: np.ndarray | None = None):
    """(coords with each round plateau's best call moved to its centroid, a mask of the other eligible calls on
    it: the repeats to drop), for the calls of a plane (:func:`round_plateaus`)."""
    coords = np.array(coords, dtype=np.float64, copy=True).reshape(-1, 2)
    repeat = np.zeros(len(coords), dtype=bool)
    for centre, _, group in round_plateaus(plane, coords, scores, saturated, top, eligible):
        repeat[group[1:]] = True
        coords[group[0]] = centre
    return coords, repeat


__all__ = ["MAX_RADIUS", "MIN_AREA", "ROUNDNESS", "round_plateau_repeats", "round_plateaus", "roundness"]
