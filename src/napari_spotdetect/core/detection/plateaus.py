"""One call per clipped spot: a saturated spot's flat top gets one point, at its centre.

Why: where the camera clips a bright spot its top is a flat plateau with no gradient, so the network's
displacements do not converge there and the LoG finds a ring of peaks on its edge; the 2-D sample's 76 clipped
spots got 129 calls between them, a cluster of 2-4 points on the very spots a user looks at first. A clipped
plateau that is round (its overlap with the disc of its own area, centred on it, is at least
:data:`ROUNDNESS`) is one spot, so the calls on it (within that disc) become one: the best-scored, moved to the
plateau's centroid, which for a symmetric spot is its centre. A plateau that is not round is several spots
merged where the fewest discs of spot size that cover it as well (:func:`_merged_parts`) exist: then each disc
is a spot, with one call at its centre (a call moved there, or one added where none sat on it: the sample's
last missed saturated spot shared a plateau with three others). A plateau cut by the plane's edge is judged so
with its mirror image across that edge (:func:`_mirrored`). Plateaus that no such discs explain keep their
calls, and so do small ones (fewer than :data:`MIN_AREA` pixels: too few to judge their shape). Chosen on the
2-D sample, the two piscis_panels ``train`` images and synthetic images with clipped spots, merged and alone;
checked on others (``benchmarks/bench_clipped.py``; README, *A clipped spot is one spot*). In a z-stack each
clipped spot of a plane becomes one voxel set pointing at its centre (:func:`..rescore.fill_clipped_spots`), so
the spot is one 3-D component; a merged plateau's spots give up the pixels near each other's (:data:`GAP`), so
that their voxel sets do not touch and join into one again.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

#: plateaus of fewer pixels keep their calls (their shape cannot be told from a disc's)
MIN_AREA = 12
#: plateaus whose disc of equal area is wider than this radius (px) are no diffraction-limited spot
MAX_RADIUS = 8.0
#: a plateau is round when its intersection over union with the disc of its own area at its centroid is this
ROUNDNESS = 0.85
#: a plateau that is not round is parted into at most this many spots (:func:`_merged_parts`)
MAX_PARTS = 6
#: k-means starts per number of parts (seeded: the same plane always gives the same parts)
KMEANS_STARTS = 12
#: in a stack, a merged plateau's spots give up their pixels within this distance (px) of another's
GAP = 2


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


def _kmeans(pts: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 30) -> np.ndarray:
    """Each point's cluster (k-means from a k-means++ start): a few hundred points at most, so plain numpy
    (scipy's ``kmeans2`` spent most of its time checking its inputs, thousands of times on a saturated image)."""
    centres = np.empty((k, 2))
    centres[0] = pts[rng.integers(len(pts))]
    d2 = ((pts - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        centres[j] = pts[rng.choice(len(pts), p=d2 / total) if total > 0 else rng.integers(len(pts))]
        d2 = np.minimum(d2, ((pts - centres[j]) ** 2).sum(1))
    labels = np.full(len(pts), -1)
    for _ in range(iterations):
        new = ((pts[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        filled = counts > 0
        for axis in (0, 1):
            centres[filled, axis] = np.bincount(labels, pts[:, axis], minlength=k)[filled] / counts[filled]
    return labels


def _merged_parts(pts: np.ndarray):
    """The discs a clipped plateau that is not round is the union of: a list of (centre, the indices of its
    pixels) for the fewest parts (2 to :data:`MAX_PARTS`, each of at least :data:`MIN_AREA` pixels and no wider
    than a spot) whose discs of their own areas cover the plateau with an intersection over union of
    :data:`ROUNDNESS`, or None where no such parts exist (then the plateau is no set of spots that can be told
    apart, and keeps its calls)."""
    lo = pts.min(0) - MAX_RADIUS - 1
    shape = tuple((pts.max(0) - lo + MAX_RADIUS + 2).astype(np.int64))
    region = np.zeros(shape, dtype=bool)
    region[tuple((pts - lo).astype(np.int64).T)] = True
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for k in range(2, MAX_PARTS + 1):
        if len(pts) < k * MIN_AREA:
            return None
        best, parts = -1.0, None
        rng = np.random.default_rng(k)
        for _ in range(KMEANS_STARTS):
            labels = _kmeans(pts, k, rng)
            sizes = np.bincount(labels, minlength=k)
            if sizes.min() < MIN_AREA or np.sqrt(sizes.max() / np.pi) > MAX_RADIUS:
                continue
            centres = np.array([pts[labels == j].mean(0) for j in range(k)])
            cover = np.zeros(shape, dtype=bool)
            for c, size in zip(centres - lo, sizes):
                cover |= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= size / np.pi
            iou = (cover & region).sum() / (cover | region).sum()
            if iou > best:
                best, parts = iou, [(centres[j], np.flatnonzero(labels == j)) for j in range(k)]
        if best >= ROUNDNESS:
            return parts
    return None


def _clipped_region(plane, rc: np.ndarray, top: float, reach: int):
    """The clipped region touching pixel ``rc``'s 3 x 3 neighbourhood within ``reach`` px of it: (its mask in the
    window, the window's corner, whether it touches the window's edge), or None where there is none."""
    from ..io.image_sources import read

    h, w = (int(v) for v in plane.shape[-2:])
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
    edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    return mask, (r0, c0), edge


class ClippedSpot(NamedTuple):
    """One spot of a clipped plateau, and the calls on it."""

    centre: np.ndarray  # (2,): a round plateau's centroid, or the centre of a merged plateau's disc
    radius: float  # of the disc of its pixels' area (px): the calls within it are a round plateau's
    pixels: np.ndarray  # (n, 2): its voxels in a stack (a merged plateau's spot less those touching another's)
    calls: np.ndarray  # the eligible calls that belong to it, best-scored first (empty: none sat on it)
    best: int  # the best-scored call on its plateau: what a spot without a call takes its scores from


def _plateau_at(plane, rc: np.ndarray, top: float, parted: bool = True):
    """The clipped plateau touching pixel ``rc``'s 3 x 3 neighbourhood: (its first pixel, its pixels (n, 2), the
    spots it holds as a list of (centre, radius, pixels) as :class:`ClippedSpot` has them, whether it is one
    whole round spot) in plane coordinates, or None where there is none. One spot where the plateau is round;
    where it is not and ``parted``, the spots of :func:`_merged_parts`; with ``parted``, a plateau cut by the
    plane's edge is judged with its mirror image across that edge (:func:`_mirrored`). No spots (None) where
    it is small, too large for its spots, or not round and not parted."""
    h, w = (int(v) for v in plane.shape[-2:])
    found = _clipped_region(plane, rc, top, int(2 * MAX_RADIUS) + 2)
    if found is not None and found[2] and parted:  # a round spot fits that window: look wider for merged ones
        found = _clipped_region(plane, rc, top, int(MAX_PARTS * MAX_RADIUS) + 2)
    if found is None:
        return None
    mask, corner, edge = found
    pixels = np.argwhere(mask) + corner
    key, area = tuple(pixels[0]), len(pixels)
    cut = _cut_sides(mask, corner, h, w) if edge else {}
    # touching the window's edge elsewhere than the plane's: too large for the window (no spot)
    if cut is None or (cut and not parted) or area < MIN_AREA or area > MAX_PARTS * np.pi * MAX_RADIUS ** 2:
        return key, pixels, None, False
    pts = _mirrored(pixels, cut, h, w) if cut else pixels
    if np.sqrt(len(pts) / np.pi) <= MAX_RADIUS and roundness(_as_mask(pts)) >= ROUNDNESS:
        centre = np.clip(pts.mean(0), 0, (h - 1, w - 1))  # a cut spot centred on the edge: the edge's pixel
        return key, pixels, [(centre, np.sqrt(len(pts) / np.pi), pixels)], not cut
    parts = _merged_parts(pts.astype(np.float64)) if parted else None
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)
    # the parts centred in the plane (one centred on the edge itself is called on the edge's pixel)
    parts = [(np.clip(c, 0, (h - 1, w - 1)), idx) for c, idx in parts or []
             if -0.5 <= c[0] < h - 0.5 and -0.5 <= c[1] < w - 0.5]
    if not parts:
        return key, pixels, None, False
    # each spot's pixels (in the plane) less those within GAP px of another spot's, so that their voxels in a
    # stack, where the parting may shift by a pixel from plane to plane, stay apart (26-connected components)
    owns = [pts[idx[inside[idx]]] - corner for _, idx in parts]  # each part's pixels in the plane, in the window
    label = np.zeros(mask.shape, dtype=np.int64)
    for j, own in enumerate(owns):
        label[own[:, 0], own[:, 1]] = j + 1
    size, none = 2 * GAP + 1, len(parts) + 1
    apart = ((ndimage.maximum_filter(label, size, mode="constant") == label)
             & (ndimage.minimum_filter(np.where(label > 0, label, none), size, mode="constant", cval=none) == label))
    return key, pixels, [(c, np.sqrt(len(idx) / np.pi), own[apart[tuple(own.T)]] + corner)
                         for (c, idx), own in zip(parts, owns)], False


def _cut_sides(mask: np.ndarray, corner, h: int, w: int) -> dict | None:
    """The plane's sides a clipped region touching its window's edge is cut by (``{"top": True, ...}``), or None
    where it touches a side of the window that is no side of the plane (it is larger than the window)."""
    r0, c0 = corner
    sides = {"top": (mask[0].any(), r0 == 0), "bottom": (mask[-1].any(), r0 + mask.shape[0] == h),
             "left": (mask[:, 0].any(), c0 == 0), "right": (mask[:, -1].any(), c0 + mask.shape[1] == w)}
    if any(touches and not plane_side for touches, plane_side in sides.values()):
        return None
    return {side: True for side, (touches, _) in sides.items() if touches}


def _mirrored(pixels: np.ndarray, cut: dict, h: int, w: int) -> np.ndarray:
    """A plateau cut by the plane's edge with its mirror images across the sides it is cut by (and across both
    at a corner): what the whole spot would look like if it were centred on the edge, and two discs where it
    is not, the one inside the plane its own."""
    rows = [lambda r: r] + [f for side, f in (("top", lambda r: -1 - r), ("bottom", lambda r: 2 * h - 1 - r))
                            if cut.get(side)]
    cols = [lambda c: c] + [f for side, f in (("left", lambda c: -1 - c), ("right", lambda c: 2 * w - 1 - c))
                            if cut.get(side)]
    return np.concatenate([np.column_stack([fr(pixels[:, 0]), fc(pixels[:, 1])]) for fr in rows for fc in cols])


def _as_mask(pts: np.ndarray) -> np.ndarray:
    """Integer points (n, 2) as a boolean mask of their bounding box."""
    lo = pts.min(0)
    mask = np.zeros(tuple(pts.max(0) - lo + 1), dtype=bool)
    mask[tuple((pts - lo).T)] = True
    return mask


def clipped_spots(plane, coords: np.ndarray, scores: np.ndarray, saturated: np.ndarray, top: float | None,
                   eligible: np.ndarray | None = None, parted: bool = True) -> list[ClippedSpot]:
    """The clipped spots the calls sit on (:class:`ClippedSpot`): one per round clipped plateau, and, with
    ``parted`` (the default; without it, the rule as it was first), one per spot of a plateau several spots
    merged into (:func:`_merged_parts`) or that the plane's edge cuts (:func:`_mirrored`), whether a call sits
    on it or not.

    A whole round plateau's calls are those within the disc of its area around its centroid. A merged or cut
    plateau's are those touching it, each spot taking the nearest one no other spot takes (so as many spots as
    can get a call get one) and the rest going to their nearest spot. ``saturated``: each call's share of
    clipped pixels in its 3 x 3 neighbourhood (only these start a look at the plane); ``top``: the plane's
    clipping level (None: it has no clipped pixels, there are none); ``eligible``: the calls that take part
    (default: all), so a dropped one is never a spot's best."""
    from scipy.optimize import linear_sum_assignment

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    scores, saturated = np.asarray(scores), np.asarray(saturated)
    if top is None or not len(coords):
        return []
    h, w = (int(v) for v in plane.shape[-2:])
    rc = np.rint(coords).astype(np.int64)
    rc[:, 0] = np.clip(rc[:, 0], 0, h - 1)
    rc[:, 1] = np.clip(rc[:, 1], 0, w - 1)
    done = np.zeros(len(coords), dtype=bool) if eligible is None else ~np.asarray(eligible, dtype=bool)
    out, seen, tree = [], set(), None
    for i in np.flatnonzero(saturated > 0)[np.argsort(-scores[saturated > 0], kind="stable")]:
        if done[i]:
            continue
        done[i] = True
        found = _plateau_at(plane, rc[i], top, parted)
        if found is None or found[0] in seen:  # a plateau is looked at once: its calls' first
            continue
        key, pixels, spots, whole = found
        seen.add(key)
        if spots is None:
            continue
        if tree is None:
            from scipy.spatial import cKDTree

            tree = cKDTree(coords)
        if whole:
            centre, radius, _ = spots[0]
            group = np.sort(np.asarray(tree.query_ball_point(centre, radius), dtype=np.int64))
            group = group[~done[group] | (group == i)]
            if len(group):
                done[group] = True
                group = group[np.argsort(-scores[group], kind="stable")]
                out.append(ClippedSpot(centre, radius, pixels, group, int(group[0])))
            continue
        # a merged or cut plateau's calls: those whose 3 x 3 neighbourhood touches it
        lo, hi = pixels.min(0) - 1, pixels.max(0) + 1
        group = np.sort(np.asarray(tree.query_ball_point((lo + hi) / 2, np.hypot(*(hi - lo)) / 2 + 1), dtype=np.int64))
        group = group[(rc[group] >= lo).all(1) & (rc[group] <= hi).all(1) & (~done[group] | (group == i))]
        group = group[np.abs(rc[group, None, :] - pixels[None]).max(-1).min(1) <= 1]
        done[group] = True
        centres = np.array([centre for centre, _, _ in spots])
        dist = np.hypot(*(coords[group, None, :] - centres[None]).transpose(2, 0, 1))
        owner = dist.argmin(1)
        taken, part = linear_sum_assignment(dist)
        owner[taken] = part
        best = int(group[np.argmax(scores[group])])  # i is among them: never empty
        for j, (centre, radius, own) in enumerate(spots):
            mine = group[owner == j]
            out.append(ClippedSpot(centre, radius, own, mine[np.argsort(-scores[mine], kind="stable")], best))
    return out


def clipped_spot_calls(plane, coords: np.ndarray, scores: np.ndarray, saturated: np.ndarray,
                       top: float | None, eligible: np.ndarray | None = None, parted: bool = True):
    """One call per clipped spot of a plane (:func:`clipped_spots`): (coords with each spot's best call moved
    to its centre, a mask of the other eligible calls on it: the repeats to drop, the centres (m, 2) of the
    merged plateaus' spots that no call sat on: calls to add, and for each the call whose score and features
    it takes: its plateau's best)."""
    coords = np.array(coords, dtype=np.float64, copy=True).reshape(-1, 2)
    repeat = np.zeros(len(coords), dtype=bool)
    added, donors = [], []
    for spot in clipped_spots(plane, coords, scores, saturated, top, eligible, parted):
        if not len(spot.calls):
            added.append(spot.centre)
            donors.append(spot.best)
            continue
        repeat[spot.calls[1:]] = True
        coords[spot.calls[0]] = spot.centre
    return coords, repeat, np.reshape(np.array(added, dtype=np.float64), (-1, 2)), np.array(donors, dtype=np.int64)


__all__ = ["GAP", "MAX_PARTS", "MAX_RADIUS", "MIN_AREA", "ROUNDNESS", "ClippedSpot", "clipped_spot_calls",
           "clipped_spots", "roundness"]
