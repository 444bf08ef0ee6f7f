"""A spot's contrast over its image's noise, and where an image's spots stand out from its texture.

Labs differ in what they count as a spot, but a shared rule holds on every real source we have: a spot is a
peak that stands out from the *other* peaks of its image. On a plane, the number of local maxima above a
contrast ``c`` falls steeply while ``c`` is within the noise and texture, then slowly through the spots; the
*elbow* of that curve (log count against log contrast, the point farthest from the chord, as Big-FISH picks
its automatic threshold) marks where the spots begin. A peak far dimmer than the elbow is texture, a speck or
a hot pixel, however spot-like its shape; a detector's candidates can be cut at a fraction of it
(:func:`contrast_features`, the ``contrast_floor`` of :class:`~napari_spotdetect.core.detection.detect.Detections`).

Contrast is the lightly smoothed image minus its local background (a low percentile of a square window), in
units of the pixel noise (the MAD of the image minus a blur of it). Everything is computed in bands of rows,
so a lazy plane is never read whole, and gives the same numbers as on the whole plane.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: the local background is this percentile of a square window of this side (px) around each pixel
BACKGROUND_PERCENTILE, BACKGROUND_SIZE = 20, 15
#: the image is smoothed by this Gaussian sigma (px) before peaks and contrasts are taken
SMOOTH_SIGMA = 1.0
#: peaks are local maxima of the smoothed image in a square of this side (px)
PEAK_SIZE = 5
#: contrast cuts (noise units) over which the elbow is looked for
CUTS = np.geomspace(1.0, 1000.0, 241)
#: a plane with fewer peaks than this has no elbow (nothing to tell spots from texture by)
MIN_PEAKS = 20
#: rows per band, and the rows of context a band reads on each side (smoothing + background window)
BAND_ROWS = 512
_MARGIN = BACKGROUND_SIZE // 2 + 8 + 1  # background half-window + the sigma-2 blur's reach
#: at most this many high-pass pixels per band go into the noise estimate
_NOISE_SAMPLE = 250_000


def _background_at(x: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """The BACKGROUND_PERCENTILE of the window around each (row, col) of ``rc``: ndimage.percentile_filter's
    value there (same rank, same mirrored edges), without filtering every pixel."""
    from numpy.lib.stride_tricks import sliding_window_view

    half = BACKGROUND_SIZE // 2
    padded = np.pad(x.astype(np.float32, copy=False), half, mode="symmetric")
    view = sliding_window_view(padded, (BACKGROUND_SIZE, BACKGROUND_SIZE))
    rank = int(BACKGROUND_SIZE * BACKGROUND_SIZE * BACKGROUND_PERCENTILE / 100.0)
    out = np.empty(len(rc), dtype=np.float64)
    for s in range(0, len(rc), 20_000):
        win = view[rc[s:s + 20_000, 0], rc[s:s + 20_000, 1]].reshape(-1, BACKGROUND_SIZE * BACKGROUND_SIZE)
        out[s:s + 20_000] = np.partition(win, rank, axis=1)[:, rank]
    return out


def _band_ranges(h: int):
    """(r0, r1, a, b): bands r0..r1 covering 0..h, each read as rows a..b (with its context)."""
    for r0 in range(0, h, BAND_ROWS):
        r1 = min(h, r0 + BAND_ROWS)
        yield r0, r1, max(0, r0 - _MARGIN), min(h, r1 + _MARGIN)


def contrast_features(plane, points: np.ndarray, highpass: np.ndarray | None = None):
    """(contrast at each (y, x) point, (row, col) of every peak of the plane, their contrasts, noise) for a
    2-D plane.

    ``highpass``: the whole plane minus its sigma-2 blur, where the caller has it (the second stage does): a
    band's core rows of it are exactly what the band would compute.

    ``plane`` is anything sliceable by rows (numpy, dask, zarr, memory map). Contrast is in noise units. The
    bands run side by side on the threads :func:`~..common.parallel.thread_map` allows, each read by its own
    worker (so at most that many bands are in memory at once).
    """
    from ..common.parallel import thread_map
    from ..io.image_sources import read

    h, w = (int(v) for v in plane.shape[-2:])
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    rc = np.rint(pts).astype(np.int64)
    rc[:, 0] = np.clip(rc[:, 0], 0, max(h - 1, 0))
    rc[:, 1] = np.clip(rc[:, 1], 0, max(w - 1, 0))

    def band(r):
        r0, r1, a, b = r
        rows, m = np.asarray(read(plane[a:b]), dtype=np.float64), r0 - a
        sm = ndimage.gaussian_filter(rows, SMOOTH_SIGMA)
        hp = (highpass[r0:r1] if highpass is not None
              else (rows - ndimage.gaussian_filter(rows, 2.0))[m:m + r1 - r0]).ravel()
        core = sm[m:m + r1 - r0]
        is_peak = core == ndimage.maximum_filter(sm, PEAK_SIZE)[m:m + r1 - r0]
        pr, pc = np.nonzero(is_peak)
        inside = (rc[:, 0] >= r0) & (rc[:, 0] < r1)
        q = rc[inside] - (r0 - m, 0)
        # one background pass over the band for its peaks and the points in it
        at = np.concatenate([np.stack([pr + m, pc], 1), q])
        values = sm[at[:, 0], at[:, 1]] - _background_at(rows, at)
        return hp[:: max(1, len(hp) // _NOISE_SAMPLE)], np.stack([pr + r0, pc], 1), values[:len(pr)], \
            inside, values[len(pr):]

    at_points = np.zeros(len(pts))
    bands = thread_map(band, list(_band_ranges(h)))
    for _, _, _, inside, values in bands:
        at_points[inside] = values
    hp = np.concatenate([b[0] for b in bands]) if bands else np.zeros(1)
    noise = max(1.4826 * float(np.median(np.abs(hp - np.median(hp)))), 1e-12)
    peaks = np.concatenate([b[2] for b in bands]) if bands else np.zeros(0)
    where = np.concatenate([b[1] for b in bands]) if bands else np.zeros((0, 2), dtype=np.int64)
    return at_points / noise, where, peaks / noise, noise


def elbow(peak_contrasts: np.ndarray) -> float:
    """The contrast (noise units) at the elbow of log(peaks above c) against log(c); NaN with too few peaks."""
    v = np.sort(np.asarray(peak_contrasts, dtype=np.float64))
    n = len(v) - np.searchsorted(v, CUTS)
    keep = n > 0
    if len(v) < MIN_PEAKS or keep.sum() < 3:
        return float("nan")
    x, y = np.log(CUTS[keep]), np.log(n[keep].astype(np.float64))
    x = (x - x[0]) / (x[-1] - x[0])
    y = (y - y.min()) / max(y.max() - y.min(), 1e-12)
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    dist = np.abs(dx * (y - y[0]) - dy * (x - x[0]))
    return float(CUTS[keep][int(np.argmax(dist))])
