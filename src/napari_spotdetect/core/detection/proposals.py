"""The second stage's candidates and their features: a plane's LoG proposals beside the network's peaks.

Proposals are peaks of the multi-scale LoG response of the plane (in noise units) and of each single scale's
response; every candidate gets the scale-free features the rescorer reads (:data:`..models.rescorer.FEATURES`).
A plane is read in bands of rows, in two passes: its noise and maximum first (the LoG maps are in noise
units), then each band's maps and the features of the candidates it owns, with the whole plane's numbers.
A plane of up to :data:`KEEP_PIXELS` keeps its bands (pixels, high-pass, transform) from the first pass to the
second. Each band is filtered through one FFT (:mod:`.fft_filters`), or with a CUDA model on its GPU
(:mod:`.device_filters`). Scoring is :mod:`.rescore`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..common.parallel import cpu_workers, thread_map
from ..models.ops import neighbours_nearest_first, peaks_above
from ..models.rescorer import SIGMAS, logit
from . import edges, fft_filters
from .contrast import contrast_features, elbow
from .hot_pixels import hot_pixel_at

#: proposals within this distance (px) of a stronger one are the same spot
DEDUPE_RADIUS = 1.5
#: single-scale LoG peaks on a clipped plateau (0), or within this distance (px) of one, are no proposals
FLAT_RIM = 0
#: neighbours within this distance (px) are compared for the ``dominance`` feature
NEIGHBOUR_RADIUS = 3.0
#: the local noise is taken over a square window of this side (px)
LOCAL_WINDOW = 15
#: per-point numbers a band pass reads (``_band_pass``'s ``feats``)
N_BAND_FEATURES = 7


def _noise(hp: np.ndarray) -> float:
    """The plane's noise: a robust (MAD) scale of its high-pass."""
    return max(1.4826 * float(np.median(np.abs(hp - np.median(hp)))), 1e-12)


def log_stack(z: np.ndarray) -> np.ndarray:
    """The scale-normalised LoG response of a noise-unit plane at each of :data:`SIGMAS` (S, H, W), by scipy's
    filters: the definition the band maps reproduce (:mod:`.fft_filters`, :mod:`.device_filters`)."""
    return np.stack(thread_map(lambda s: -ndimage.gaussian_laplace(z, s) * s * s, SIGMAS))


def log_response(z: np.ndarray, stack: np.ndarray | None = None) -> np.ndarray:
    """The scale-normalised LoG response (max over :data:`SIGMAS`) of a noise-unit plane (its best scale is read
    at the candidates only, :func:`_best_scale_at`)."""
    return (log_stack(z) if stack is None else stack).max(0)


def window_max_at(m: np.ndarray, rc: np.ndarray, size: int = 3) -> np.ndarray:
    """``ndimage.maximum_filter(m, size, mode="nearest")`` read at the (row, col) points ``rc`` only."""
    h, w = m.shape
    out = m[rc[:, 0], rc[:, 1]].copy()
    for dr, dc in neighbours_nearest_first(size):
        np.maximum(out, m[np.clip(rc[:, 0] + dr, 0, h - 1), np.clip(rc[:, 1] + dc, 0, w - 1)], out=out)
    return out


def _subpixel(resp: np.ndarray, rc: np.ndarray, origin: tuple = (0, 0)) -> np.ndarray:
    """Parabola vertex through each peak and its two neighbours per axis (offset within +-0.5 px); ``rc`` index
    ``resp``, whose first pixel is ``origin`` of the plane (the result is in the plane's coordinates)."""
    h, w = resp.shape
    out = (rc + origin).astype(np.float64)
    for ax, (dr, dc) in enumerate(((1, 0), (0, 1))):
        lo = resp[np.clip(rc[:, 0] - dr, 0, h - 1), np.clip(rc[:, 1] - dc, 0, w - 1)]
        hi = resp[np.clip(rc[:, 0] + dr, 0, h - 1), np.clip(rc[:, 1] + dc, 0, w - 1)]
        mid = resp[rc[:, 0], rc[:, 1]]
        den = lo - 2 * mid + hi
        off = np.where(den < 0, 0.5 * (lo - hi) / np.where(den < 0, den, -1.0), 0.0)
        out[:, ax] += np.clip(off, -0.5, 0.5)
    return out


#: a plane is read and filtered in bands of at most this many pixels (about 110 bytes per pixel of a band) and
#: :data:`BAND_ROWS` rows, side by side on the threads there are. Smaller bands are faster, not only lighter: a
#: band's dozen float64 maps then stay in the CPU's caches (the second stage on a 2048^2 plane: 1.53-1.59 s in one
#: band, 0.80-0.88 s in bands of 512 rows; on a 1024^2 plane 0.27-0.38 s in one, 0.22 s in two)
BAND_PIXELS = 1 << 20
BAND_ROWS = 512
#: rows of context a band reads on each side: the widest LoG (sigma 4 reaches 16 px), the 5 x 5 peak filter over
#: it, and a point that sub-pixel refinement moved one row out of the band (the high-pass and the local noise
#: window reach 15 px)
BAND_MARGIN = 20
#: the plane's noise and median come from at most about this many pixels (every pixel of a smaller plane): on a
#: 2048^2 plane a MAD of a million of them is within 0.13 % of all 4.2 M pixels', and the three medians over every
#: pixel took about 0.15 s, a sixth of the second stage
PLANE_SAMPLE = 1 << 20
#: a plane of at most this many pixels keeps each band's pixels, high-pass and transform (about 25 bytes per
#: pixel) from the first pass for the second, which then reads and transforms nothing again
KEEP_PIXELS = 1 << 22


def _threads_per_band(bands: list) -> int:
    """Threads each band's transforms may use, the bands themselves running side by side (:func:`thread_map`)."""
    return max(1, cpu_workers() // len(bands))


def _row_bands(h: int, w: int) -> list:
    """(r0, r1, a, b): bands of core rows r0..r1 covering the plane, each read as rows a..b."""
    rows = max(64, min(BAND_ROWS, BAND_PIXELS // max(1, w)))
    return [(r0, min(h, r0 + rows), max(0, r0 - BAND_MARGIN), min(h, r0 + rows + BAND_MARGIN))
            for r0 in range(0, h, rows)]


def _rows(plane, a: int, b: int) -> np.ndarray:
    from ..io.image_sources import read

    return np.asarray(read(plane[a:b]), dtype=np.float64)


def _sample_step(h: int, w: int) -> int:
    """The stride of an even sample of at most about :data:`PLANE_SAMPLE` of a plane's h x w pixels, prime to
    ``w`` so that it does not read the same few columns of every row (a camera's column pattern)."""
    step = max(1, -(-h * w // PLANE_SAMPLE))
    while step > 1 and np.gcd(step, w) > 1:
        step += 1
    return step


def median_below(values: np.ndarray, top: float) -> bool:
    """Whether ``np.median(values) < top`` for values of at most ``top``, by a count instead of a selection (the
    plane's median only tells whether its maximum is a clip): true when more than half the values are below
    ``top``; with an even count and exactly half, when the mean of the two middle values (the largest below
    ``top``, and ``top``) rounds below it, as numpy's median computes it."""
    n = len(values)
    below = values < top
    k = int(np.count_nonzero(below))
    if n % 2 or k != n // 2:
        return k >= (n + 1) // 2
    return bool((values[below].max() + top) / 2 < top) if k else False


def plane_noise_top_median(plane, bands: list, spectra: bool = True) -> tuple[float, float, bool, list | None]:
    """(noise, maximum, whether the median is below the maximum, kept) of a plane, band by band: exact up to
    :data:`PLANE_SAMPLE` pixels, from an even sample of that many above (the noise is a MAD; a maximum above
    the median is a clip, see :func:`median_below`).
    ``kept``: per band, its pixels, their high-pass and (with ``spectra``) its :func:`.fft_filters.band_spectrum`,
    for the second pass to reuse, where the plane has at most :data:`KEEP_PIXELS` pixels (else None)."""
    h, w = (int(v) for v in plane.shape[-2:])
    step = _sample_step(h, w)
    workers = _threads_per_band(bands)
    keep = h * w <= KEEP_PIXELS

    def one(band):
        r0, r1, a, b = band
        x = _rows(plane, a, b)
        core = slice(r0 - a, r1 - a)
        spec = fft_filters.band_spectrum(x, SIGMAS, workers) if spectra and keep else None
        hp = fft_filters.highpass(x, workers, spec)
        return (hp[core].ravel()[::step], x[core].ravel()[::step], float(x[core].max()),
                (x, hp, spec) if keep else None)

    parts = thread_map(one, bands)
    top = max(p[2] for p in parts)
    return (_noise(np.concatenate([p[0] for p in parts])), top,
            median_below(np.concatenate([p[1] for p in parts]), top), [p[3] for p in parts] if keep else None)


def _band_pass(plane, band, noise: float, top: float | None, cut: float, scale_cut: float | None,
               net_rc: np.ndarray, device=None, rows=None, workers: int = 1) -> dict:
    """One band's LoG maps, its raw proposal peaks (per map, core rows, row-major, with their response and
    sub-pixel position) and the LoG features of the points whose rows it owns: the network's candidates
    (``net_rc``, integer) and its own peaks (at their refined positions, which may sit one row outside).
    ``device``: a torch device to filter on (:mod:`.device_filters`) instead of the CPU (``workers`` threads
    there). ``rows``: the band's pixels (float64), their high-pass and transform, where the caller has them
    already (:func:`plane_noise_top_median`)."""
    r0, r1, a, b = band
    if device is not None:
        from .device_filters import band_maps

        x = rows[0] if rows is not None else _rows(plane, a, b)
        maps = band_maps(x, noise, SIGMAS, LOCAL_WINDOW, device)
    else:  # one transform of the band for all its maps (:mod:`.fft_filters`), the same maps as scipy's
        x, hp, spec = rows if rows is not None else (_rows(plane, a, b), None, None)
        maps = fft_filters.band_maps(x, noise, SIGMAS, LOCAL_WINDOW, workers, hp, spec)
    hp, stack, resp, local, smoothed = (maps[k] for k in ("hp", "stack", "resp", "local", "smooth"))
    clipped = x >= top if top is not None else None  # the plane's saturated pixels (None: it has none)
    flat = ndimage.binary_dilation(clipped, iterations=FLAT_RIM) if clipped is not None and FLAT_RIM else clipped
    core = np.zeros(resp.shape, dtype=bool)
    core[r0 - a:r1 - a] = True
    off_flat = core if flat is None else core & ~flat
    maps = [(resp, cut, core)] + ([(r, scale_cut, off_flat) for r in stack] if scale_cut is not None else [])
    peaks = thread_map(lambda k: peaks_above(*maps[k]), range(len(maps)))
    sat = ndimage.uniform_filter(clipped.astype(np.float64), 3, mode="nearest") if clipped is not None else None
    h = int(plane.shape[-2])

    def feats(rc_local):
        """LoG response and best scale within 3 x 3, local noise, saturation, raw value, whether it is a hot
        pixel, and its margin over its ring (:mod:`.edges`), at band rows."""
        r, c = rc_local[:, 0], rc_local[:, 1]
        return np.column_stack([window_max_at(resp, rc_local), np.array(SIGMAS)[_best_scale_at(resp, stack, rc_local)],
                                local[r, c], sat[r, c] if sat is not None else np.zeros(len(r)), x[r, c],
                                hot_pixel_at(x, rc_local, noise), edges.ring_margin(smoothed, rc_local, noise)])

    out_peaks = []
    for p in peaks:
        sub = _subpixel(resp, p, (a, 0))
        rc = np.rint(sub).astype(np.int64)
        rc[:, 0] = np.clip(rc[:, 0], 0, h - 1)
        rc[:, 1] = np.clip(rc[:, 1], 0, x.shape[1] - 1)
        out_peaks.append((p + (a, 0), resp[p[:, 0], p[:, 1]], sub, feats(rc - (a, 0))))
    mine = np.flatnonzero((net_rc[:, 0] >= r0) & (net_rc[:, 0] < r1))
    lone = peaks_above(resp, 1.0, core, 5)
    return {"peaks": out_peaks, "net": (mine, feats(net_rc[mine] - (a, 0))),
            "log_peaks": resp[lone[:, 0], lone[:, 1]]}


def candidate_features(plane, yx: np.ndarray, net_scores: np.ndarray, proposal_cut: float = 3.0,
                       scale_cut: float | None = None, merge_radius: float = 2.0, device=None):
    """The network's candidates (``yx``, ``net_scores``) plus the plane's LoG proposals, and their features.

    Proposals are the peaks (3 x 3) of the best-scale LoG response above ``proposal_cut`` (noise units), plus,
    with ``scale_cut``, the peaks of each single scale's response above it: the max over scales lets a bright
    spot's wide response swallow a dim neighbour 2-4 px away (no peak of its own there), while the small scale
    still shows one. Per-scale peaks of the same spot (within :data:`DEDUPE_RADIUS` of a stronger one) are
    dropped, and so are those on a clipped plateau (whose edges are a ring of small-scale peaks around the one
    spot), and any within ``merge_radius`` of a network candidate.

    Returns (coords (N, 2), features (N, len(FEATURES)), extras: ``contrast`` and ``relative_contrast`` as
    the contrast floor uses them, ``is_proposal``, ``intensity`` (the raw value at each one's pixel),
    ``hot_pixel`` (its brightest pixel is a camera's hot pixel, :mod:`.hot_pixels`: no spot), ``edge`` (a
    one-sided point, as on the rim of a bright object, :mod:`.edges`), ``network_score`` (0 for proposals),
    ``saturated`` (the share of clipped pixels in its 3 x 3 neighbourhood) and ``clip_level`` (the plane's
    clipping level, a number, or None where it has none)).

    The plane is read in bands of rows (:data:`BAND_PIXELS`; a lazy plane is never read whole), side by side
    where there are threads for it; the numbers are those of the whole plane at once (its noise from a sample
    above :data:`PLANE_SAMPLE` pixels). ``device``: filter each band there (a CUDA GPU, :mod:`.device_filters`;
    the same maps to rounding) instead of with scipy on the CPU.
    """
    from scipy.spatial import cKDTree

    h, w = (int(v) for v in plane.shape[-2:])
    bands = _row_bands(h, w)
    # a plane of up to KEEP_PIXELS: each band read and transformed once, for both passes
    noise, top, clips, kept = plane_noise_top_median(plane, bands, spectra=device is None)
    workers = _threads_per_band(bands)
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    net_scores = np.asarray(net_scores, dtype=np.float64).reshape(-1)
    net_rc = np.rint(yx).astype(np.int64)
    net_rc[:, 0] = np.clip(net_rc[:, 0], 0, h - 1)
    net_rc[:, 1] = np.clip(net_rc[:, 1], 0, w - 1)
    def one(i):
        return _band_pass(plane, bands[i], noise, top if clips else None, proposal_cut, scale_cut, net_rc,
                          device, kept[i] if kept is not None else None, workers)

    parts = [one(i) for i in range(len(bands))] if device is not None else thread_map(one, range(len(bands)))
    # proposals: LoG peaks in 3 x 3 (close pairs stay two) above the cut, in the order of the whole plane's maps
    n_maps = len(parts[0]["peaks"])
    cols = [np.concatenate([np.concatenate([pt["peaks"][k][i] for pt in parts]) for k in range(n_maps)])
            for i in range(4)]
    prc, presp, psub, pfeat = cols
    if n_maps > 1 and len(prc) >= 2:  # the same spot's peaks at several scales: the strongest stays
        order = np.argsort(-presp, kind="stable")
        prc, psub, pfeat = prc[order], psub[order], pfeat[order]
        keep = np.ones(len(prc), dtype=bool)
        for i, j in sorted(cKDTree(prc).query_pairs(DEDUPE_RADIUS)):
            if keep[i]:  # i < j: i is the stronger (or the same response, found first)
                keep[j] = False
        prc, psub, pfeat = prc[keep], psub[keep], pfeat[keep]
    if len(prc) and len(yx):
        d, _ = cKDTree(yx).query(prc, k=1)
        away = d > merge_radius
        psub, pfeat = psub[away], pfeat[away]
    nfeat = np.zeros((len(yx), N_BAND_FEATURES))
    for pt in parts:
        idx, f = pt["net"]
        nfeat[idx] = f
    coords = np.concatenate([yx, psub.reshape(-1, 2)])
    n_net = len(yx)
    f = np.concatenate([nfeat, pfeat.reshape(-1, N_BAND_FEATURES)])
    at_resp, at_sigma, local, sat, pixel, hot, margin = f.T
    net = np.concatenate([net_scores, np.zeros(len(coords) - n_net)])
    hp = None if kept is None else np.concatenate([k[1][r0 - a:r1 - a] for k, (r0, r1, a, _) in zip(kept, bands)])
    contrast, _, peak_c, _ = contrast_features(plane, coords, hp)
    e = elbow(peak_c)
    rel = contrast / e if np.isfinite(e) and e > 0 else np.full(len(coords), np.inf)
    rel_for_feat = contrast / (e if np.isfinite(e) and e > 0 else 10.0)
    # local SNR: the smoothed peak over the local background, in units of the local high-pass noise
    local_snr = contrast * noise / np.maximum(local, 1e-3 * noise)
    # dominance: own LoG response over the strongest within NEIGHBOUR_RADIUS (1: the strongest there)
    dom = np.ones(len(coords))
    if len(coords) > 1:
        tree = cKDTree(coords)
        for i, nb in enumerate(tree.query_ball_point(coords, NEIGHBOUR_RADIUS)):
            if len(nb) > 1:
                dom[i] = max(at_resp[i], 1e-3) / max(at_resp[nb].max(), 1e-3)
    le = elbow(np.concatenate([pt["log_peaks"] for pt in parts]))
    le = le if np.isfinite(le) and le > 0 else 10.0
    feats = np.column_stack([
        logit(net), (np.arange(len(coords)) < n_net).astype(np.float64),
        np.log1p(np.maximum(at_resp, 0)), np.log(at_sigma), np.log1p(np.maximum(contrast, 0)),
        np.log(np.clip(rel_for_feat, 1e-3, 1e3)), np.log1p(np.maximum(local_snr, 0)), sat,
        np.log(np.clip(dom, 1e-3, 1.0)), np.log(np.clip(np.maximum(at_resp, 1e-3) / le, 1e-3, 1e3))])
    extra = {"contrast": contrast, "relative_contrast": rel, "is_proposal": np.arange(len(coords)) >= n_net,
             "intensity": pixel, "hot_pixel": hot > 0, "edge": edges.on_edge(margin, sat),
             "network_score": net, "saturated": sat, "clip_level": top if clips else None}
    return coords, feats, extra


def _best_scale_at(resp: np.ndarray, stack: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """The best-scale index (argmax over ``stack``) at the strongest pixel of each point's 3 x 3 neighbourhood
    (the first in row-major order on a tie), read at those pixels only."""
    h, w = resp.shape
    best = np.full(len(rc), -np.inf)
    at = np.zeros_like(rc)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r = np.clip(rc[:, 0] + dr, 0, h - 1)
            c = np.clip(rc[:, 1] + dc, 0, w - 1)
            v = resp[r, c]
            up = v > best
            best[up] = v[up]
            at[up] = np.stack([r[up], c[up]], 1)
    return stack[:, at[:, 0], at[:, 1]].argmax(0)


__all__ = ["BAND_MARGIN", "BAND_PIXELS", "BAND_ROWS", "DEDUPE_RADIUS", "LOCAL_WINDOW", "NEIGHBOUR_RADIUS",
           "PLANE_SAMPLE", "candidate_features", "log_response", "log_stack", "median_below", "peaks_above",
           "plane_noise_top_median", "window_max_at"]
