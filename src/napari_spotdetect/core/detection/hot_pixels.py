"""Hot pixels: single bright pixels of a camera, which a spot detector must not call spots.

Why: a diffraction-limited spot is wider than a pixel at any sampling a microscope is used at (a Gaussian PSF of
sigma 0.5 px, coarser than Nyquist, still puts about 14 % of its centre pixel's excess in the mean of the 8
neighbours, 23 % in each side neighbour), while a hot pixel (a dark-current outlier of an sCMOS or CCD camera,
or a cosmic-ray hit one pixel wide) stands alone on the background. The bundled network never saw one in
training and scores them like bright spots (14 of 15 called at 0.6-0.95 on a synthetic image; two bright calls
in empty background on a real yeast image), and no threshold removes them without removing dim spots first.
The second stage therefore drops candidates whose brightest pixel is such a spike (:func:`hot_pixel_at`).
"""

from __future__ import annotations

import numpy as np

from ..models.ops import values_around

#: a spike's 8 neighbours hold at most this fraction of its excess over the background (mean of the 8)
MAX_SPREAD = 0.06
#: and it stands at least this many noise units above the background (dimmer ones are left to the score)
MIN_EXCESS = 12.0


def hot_pixel_at(x: np.ndarray, rc: np.ndarray, noise: float) -> np.ndarray:
    """Whether the brightest pixel in each point's 3 x 3 neighbourhood of ``x`` (rows, cols ``rc``) is a hot
    pixel: at least :data:`MIN_EXCESS` ``noise`` units above its background (the median of the ring of 16
    pixels at distance 2), its 8 neighbours' mean at most :data:`MAX_SPREAD` of that excess above it, and
    itself above every neighbour by more than half the excess (a clipped plateau, where a pixel equals its
    neighbour, is never one)."""
    x = np.asarray(x)
    rc = np.asarray(rc, dtype=np.int64).reshape(-1, 2)
    if not len(rc):
        return np.zeros(0, dtype=bool)
    first = values_around(x, rc, _GRID[_NEAR_OR_CENTRE]).argmax(1)  # the brightest of the 3 x 3, first on a tie
    centre = rc + _GRID[_NEAR_OR_CENTRE][first]
    v = values_around(x, centre, _GRID).astype(np.float64)
    best = v[:, 12]
    near = v[:, _NEAR]
    ring = np.median(v[:, _RING], axis=1)
    excess = best - ring
    return ((excess >= MIN_EXCESS * noise) & (near.mean(1) - ring <= MAX_SPREAD * excess)
            & (best - near.max(1) > 0.5 * excess))


_GRID = np.array([(r, c) for r in range(-2, 3) for c in range(-2, 3)])
#: positions in the 5 x 5 window (row-major) of the 3 x 3, of the 8 neighbours and of the ring of 16 at distance 2
_NEAR_OR_CENTRE = np.flatnonzero(np.abs(_GRID).max(1) <= 1)
_NEAR = np.flatnonzero(np.abs(_GRID).max(1) == 1)
_RING = np.flatnonzero(np.abs(_GRID).max(1) == 2)


__all__ = ["MAX_SPREAD", "MIN_EXCESS", "hot_pixel_at"]
