"""Edges: a point just inside the sharp rim of a bright object is no spot, however bright over its background.

Why: the second stage's contrast takes a candidate's background from a low percentile of the window around it,
so beside a sharp edge (a bright cell, nucleus, bead cluster or debris in focus) the dark outside sets the
background and every noise bump along the inner rim looks like a bright spot. The network scores those points
low (median 0.07 on a synthetic bright disc with a rim of 1 px blur), but the features raised 88 of them above
the default threshold, a ring of false spots along the rim. A spot is brighter than its surroundings in every
direction; a point on a rim is not brighter than the object's side. :func:`ring_margin` measures by how much a
candidate's peak stands above the third-brightest of eight directions around it (a neighbouring spot or two
may fill one or two directions; an edge fills about half of them); where that is within the noise, the
contrast evidence is one-sided and the network's score stands (:func:`capped_scores`).
"""

from __future__ import annotations

import numpy as np

from ..models.ops import values_around

#: the ring of pixels around a candidate (px, from-to) and its sectors, read in the band's ``smooth`` map (the image
#: blurred by :data:`.fft_filters.SMOOTH_SIGMA`, :func:`.fft_filters.band_maps`)
RING_RADII, SECTORS = (3.0, 4.0), 8
#: a candidate whose peak stands less than this many noise units above its third-brightest sector (and with no
#: clipped pixel) is one-sided: its score is held to the network's (:func:`capped_scores`)
MIN_MARGIN = 1.0


def _ring_offsets():
    """(row, col) offsets of the pixels within RING_RADII of a point, and the sector (0..SECTORS-1) of each."""
    d = np.arange(-int(RING_RADII[1]), int(RING_RADII[1]) + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    r = np.hypot(dy, dx)
    on = (r >= RING_RADII[0]) & (r <= RING_RADII[1])
    width = 2 * np.pi / SECTORS  # sectors centred on the axes and diagonals, so each holds the same pixels
    sector = np.floor((np.arctan2(dy[on], dx[on]) + width / 2) % (2 * np.pi) / width).astype(np.int64)
    return np.stack([dy[on], dx[on]], 1), sector % SECTORS


_RING, _SECTOR = _ring_offsets()
_PEAK = np.stack([a.ravel() for a in np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")], 1)


def ring_margin(smoothed: np.ndarray, rc: np.ndarray, noise: float) -> np.ndarray:
    """Per point (rows, cols ``rc`` of the ``smoothed`` image): its peak in the 3 x 3 minus the mean of its
    third-brightest sector of the ring (the pixels 3-4 px away), in ``noise`` units (edges of the image
    clamped)."""
    rc = np.asarray(rc, dtype=np.int64).reshape(-1, 2)
    if not len(rc):
        return np.zeros(0)
    peak = values_around(smoothed, rc, _PEAK).max(1)
    ring = values_around(smoothed, rc, _RING)
    sectors = np.stack([ring[:, _SECTOR == k].mean(1) for k in range(SECTORS)], 1)
    return (peak - np.sort(sectors, axis=1)[:, -3]) / noise


def on_edge(margin: np.ndarray, saturated: np.ndarray) -> np.ndarray:
    """Which candidates are one-sided: little above their third-brightest direction, and with no clipped pixel
    (a clipped spot is flat on top)."""
    return (margin < MIN_MARGIN) & (saturated <= 0)


def capped_scores(prob: np.ndarray, edge: np.ndarray, net_scores: np.ndarray, least: float) -> np.ndarray:
    """The second stage's scores with a one-sided candidate's held to the network's own (which knows rims),
    but at least ``least`` (the network's candidate floor), so it stays a candidate: a dim spot beside
    brighter ones that looks one-sided still comes back at the slider's minimum."""
    return np.where(edge, np.minimum(prob, np.maximum(net_scores, least)), prob)


__all__ = ["MIN_MARGIN", "RING_RADII", "SECTORS", "capped_scores", "on_edge", "ring_margin"]
