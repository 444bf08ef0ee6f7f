"""A second stage that finds the spots a network misses and scores every candidate by the evidence.

Why: the network's own peaks miss spots it never saw in training (saturated, flat-topped spots; wide PSFs)
and its scores saturate, so they rank true above false candidates less well than a plain Laplacian of
Gaussian (LoG) response does. This stage

1. adds *proposals*: peaks of the multi-scale LoG response of the plane (in noise units), and of each
   single scale's response (:func:`proposal_peaks`), that no network candidate sits near, so a spot the
   network scores at 0, or a dim one beside a bright one, is still a candidate;
2. describes every candidate by a few scale-free features (:data:`FEATURES`: the network's score, the LoG
   response and its best scale, contrast over the plane's noise and over its elbow, local signal-to-noise,
   saturation, and how it compares with its neighbours);
3. scores it with a small logistic model (the bundled one), or a few shallow gradient-boosted trees where a
   model file holds them (numpy only at inference), fitted on annotated ``train`` images and synthetic ones
   (``scripts/fit_rescorer.py``), so ``score`` is the probability that a candidate is an annotated spot.

Everything is per 2-D plane. Z-stacks keep the network's voxel scores, shifted in logit
(:meth:`Rescorer.calibrate_voxels`) so that the model's default threshold keeps the voxels the network's own
default kept, and each plane's proposals join them as voxels (:func:`stack_plane_proposals`,
:func:`merge_stack_proposals`), so a spot the network misses in every plane is still a 3-D component. It
reads a plane in bands of rows (a lazy one too, after its tiles), two passes: the plane's noise and
maximum first (the LoG maps are in noise units), then each band's maps and its candidates' features. A model
file carries it as its optional ``"rescore"`` entry (:mod:`..weights.native`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..common.parallel import run_together, thread_map
from ..models.rescorer import FEATURES, LOWEST_THRESHOLD, NET_CLIP, SIGMAS, BoostedTrees, Rescorer, logit, sigmoid
from .contrast import contrast_features, elbow

__all__ = ["FEATURES", "LOWEST_THRESHOLD", "NET_CLIP", "SIGMAS", "BoostedTrees", "Rescorer", "auc",
           "candidate_features", "fit_boosted_trees", "fit_logistic", "merge_stack_proposals", "rescore_candidates",
           "rescore_frame", "rescore_voxels", "stack_plane_proposals"]

#: proposals within this distance (px) of a stronger one are the same spot
DEDUPE_RADIUS = 1.5
#: single-scale LoG peaks on a clipped plateau (0), or within this distance (px) of one, are no proposals
FLAT_RIM = 0
#: neighbours within this distance (px) are compared for the ``dominance`` feature
NEIGHBOUR_RADIUS = 3.0
#: z-stack voxels at or below this network score are no candidates (stacks get no proposals)
STACK_NET_FLOOR = 0.01
#: the local noise is taken over a square window of this side (px)
LOCAL_WINDOW = 15


def _highpass(x: np.ndarray) -> np.ndarray:
    """The plane minus its sigma-2 blur: what the noise and the local noise are measured on."""
    return x - ndimage.gaussian_filter(x, 2.0)


def _noise(hp: np.ndarray) -> float:
    """The plane's noise: a robust (MAD) scale of its high-pass."""
    return max(1.4826 * float(np.median(np.abs(hp - np.median(hp)))), 1e-12)


def log_stack(z: np.ndarray) -> np.ndarray:
    """The scale-normalised LoG response of a noise-unit plane at each of :data:`SIGMAS` (S, H, W)."""
    return np.stack(thread_map(lambda s: -ndimage.gaussian_laplace(z, s) * s * s, SIGMAS))


def log_maps(z: np.ndarray, stack: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scale-normalised LoG response (max over :data:`SIGMAS`) of a noise-unit plane, and its best scale."""
    stack = log_stack(z) if stack is None else stack
    return stack.max(0), stack.argmax(0).astype(np.int8)


def _max3(r: np.ndarray) -> np.ndarray:
    return ndimage.maximum_filter(r, 3, mode="nearest")


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


#: a plane of more pixels than this is read and filtered in bands of rows (about 110 bytes per pixel of a band)
BAND_PIXELS = 1 << 22
#: rows of context a band reads on each side: the widest LoG (sigma 4 reaches 16 px), the 5 x 5 peak filter over
#: it, and a point that sub-pixel refinement moved one row out of the band (the high-pass and the local noise
#: window reach 15 px)
BAND_MARGIN = 20
#: the plane's noise and median come from at most about this many pixels (every pixel of a smaller plane)
PLANE_SAMPLE = 1 << 23


def _row_bands(h: int, w: int) -> list:
    """(r0, r1, a, b): bands of core rows r0..r1 covering the plane, each read as rows a..b."""
    rows = max(64, BAND_PIXELS // max(1, w))
    return [(r0, min(h, r0 + rows), max(0, r0 - BAND_MARGIN), min(h, r0 + rows + BAND_MARGIN))
            for r0 in range(0, h, rows)]


def _rows(plane, a: int, b: int) -> np.ndarray:
    from ..io.image_sources import read

    return np.asarray(read(plane[a:b]), dtype=np.float64)


def plane_noise_top_median(plane, bands: list) -> tuple[float, float, float]:
    """(noise, maximum, median) of a plane, band by band: exact up to :data:`PLANE_SAMPLE` pixels, from an even
    sample of that many above (the noise is a MAD, the median only tells whether the maximum is a clip)."""
    h, w = (int(v) for v in plane.shape[-2:])
    step = max(1, -(-h * w // PLANE_SAMPLE))

    def one(band):
        r0, r1, a, b = band
        x = _rows(plane, a, b)
        core = slice(r0 - a, r1 - a)
        hp = _highpass(x)[core].ravel()
        return hp[::step], x[core].ravel()[::step], float(x[core].max())

    parts = thread_map(one, bands)
    return (_noise(np.concatenate([p[0] for p in parts])), max(p[2] for p in parts),
            float(np.median(np.concatenate([p[1] for p in parts]))))


def _band_pass(plane, band, noise: float, top: float | None, cut: float, scale_cut: float | None,
               net_rc: np.ndarray, device=None) -> dict:
    """One band's LoG maps, its raw proposal peaks (per map, core rows, row-major, with their response and
    sub-pixel position) and the LoG features of the points whose rows it owns: the network's candidates
    (``net_rc``, integer) and its own peaks (at their refined positions, which may sit one row outside).
    ``device``: a torch device to filter on (:mod:`.device_filters`) instead of scipy on the CPU."""
    r0, r1, a, b = band
    x = _rows(plane, a, b)
    on_device = None
    if device is not None:
        from .device_filters import band_maps

        on_device = band_maps(x, noise, SIGMAS, LOCAL_WINDOW, device)
        hp, stack, resp, arg = (on_device[k] for k in ("hp", "stack", "resp", "arg"))
    else:
        hp = _highpass(x)
        stack = log_stack(x / noise)
        resp, arg = log_maps(None, stack)
    clipped = x >= top if top is not None else None  # the plane's saturated pixels (None: it has none)
    flat = ndimage.binary_dilation(clipped, iterations=FLAT_RIM) if clipped is not None and FLAT_RIM else clipped
    core = np.zeros(resp.shape, dtype=bool)
    core[r0 - a:r1 - a] = True
    off_flat = core if flat is None else core & ~flat
    maps = [(resp, cut, core)] + ([(r, scale_cut, off_flat) for r in stack] if scale_cut is not None else [])
    if on_device is not None:
        rmax, rmax5, local = (on_device[k] for k in ("rmax", "rmax5", "local"))
        maxima = [rmax] + list(on_device["stack_max3"])
    else:
        rmax, rmax5, local = run_together(
            lambda: _max3(resp), lambda: ndimage.maximum_filter(resp, 5, mode="nearest"),
            lambda: np.sqrt(np.maximum(ndimage.uniform_filter(hp * hp, LOCAL_WINDOW, mode="reflect"), 0)))
        maxima = [rmax] + [None] * len(stack)
    def peaks_of(k):
        m, c, where = maps[k]
        return np.argwhere((m == (maxima[k] if maxima[k] is not None else _max3(m))) & (m > c) & where)

    peaks = thread_map(peaks_of, range(len(maps)))
    sat = ndimage.uniform_filter(clipped.astype(np.float64), 3, mode="nearest") if clipped is not None else None
    h = int(plane.shape[-2])

    def feats(rc_local):
        """LoG response and best scale within 3 x 3, local noise, saturation and raw value at band rows."""
        r, c = rc_local[:, 0], rc_local[:, 1]
        return np.column_stack([rmax[r, c], np.array(SIGMAS)[_argmax3(resp, arg, rc_local)], local[r, c],
                                sat[r, c] if sat is not None else np.zeros(len(r)), x[r, c]])

    out_peaks = []
    for p in peaks:
        sub = _subpixel(resp, p, (a, 0))
        rc = np.rint(sub).astype(np.int64)
        rc[:, 0] = np.clip(rc[:, 0], 0, h - 1)
        rc[:, 1] = np.clip(rc[:, 1], 0, x.shape[1] - 1)
        out_peaks.append((p + (a, 0), resp[p[:, 0], p[:, 1]], sub, feats(rc - (a, 0))))
    mine = np.flatnonzero((net_rc[:, 0] >= r0) & (net_rc[:, 0] < r1))
    lone = resp[r0 - a:r1 - a]
    return {"peaks": out_peaks, "net": (mine, feats(net_rc[mine] - (a, 0))),
            "log_peaks": lone[(lone == rmax5[r0 - a:r1 - a]) & (lone > 1.0)]}


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
    the contrast floor uses them, ``is_proposal``, ``intensity`` (the raw value at each one's pixel)).

    The plane is read in bands of rows (:data:`BAND_PIXELS`; a lazy plane is never read whole), side by side
    where there are threads for it; the numbers are those of the whole plane at once (its noise from a sample
    above :data:`PLANE_SAMPLE` pixels). ``device``: filter each band there (a CUDA GPU, :mod:`.device_filters`;
    the same maps to rounding) instead of with scipy on the CPU.
    """
    from scipy.spatial import cKDTree

    h, w = (int(v) for v in plane.shape[-2:])
    bands = _row_bands(h, w)
    noise, top, med = plane_noise_top_median(plane, bands)
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    net_scores = np.asarray(net_scores, dtype=np.float64).reshape(-1)
    net_rc = np.rint(yx).astype(np.int64)
    net_rc[:, 0] = np.clip(net_rc[:, 0], 0, h - 1)
    net_rc[:, 1] = np.clip(net_rc[:, 1], 0, w - 1)
    def one(band):
        return _band_pass(plane, band, noise, top if top > med else None, proposal_cut, scale_cut, net_rc, device)

    parts = [one(band) for band in bands] if device is not None else thread_map(one, bands)
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
    nfeat = np.zeros((len(yx), 5))
    for pt in parts:
        idx, f = pt["net"]
        nfeat[idx] = f
    coords = np.concatenate([yx, psub.reshape(-1, 2)])
    n_net = len(yx)
    f = np.concatenate([nfeat, pfeat.reshape(-1, 5)])
    at_resp, at_sigma, local, sat, pixel = f.T
    net = np.concatenate([net_scores, np.zeros(len(coords) - n_net)])
    contrast, _, peak_c, _ = contrast_features(plane, coords)
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
             "intensity": pixel}
    return coords, feats, extra


def _argmax3(resp: np.ndarray, arg: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """The best-scale index at the strongest pixel of each point's 3 x 3 neighbourhood."""
    h, w = resp.shape
    best = np.full(len(rc), -np.inf)
    out = np.zeros(len(rc), dtype=np.int64)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r = np.clip(rc[:, 0] + dr, 0, h - 1)
            c = np.clip(rc[:, 1] + dc, 0, w - 1)
            v = resp[r, c]
            up = v > best
            best[up] = v[up]
            out[up] = arg[r[up], c[up]]
    return out


def rescore_candidates(rescorer: Rescorer, plane, yx: np.ndarray, net_scores: np.ndarray, device=None):
    """(coords, calibrated scores, extras of :func:`candidate_features`) of the network's candidates plus the
    plane's proposals (filtered on ``device``, see :func:`candidate_features`)."""
    yx, feats, extra = candidate_features(plane, yx, net_scores, rescorer.proposal_cut, rescorer.scale_cut,
                                          rescorer.merge_radius, device)
    return yx, rescorer.probability(feats), extra


# -- fitting (scripts/fit_rescorer.py) ---------------------------------------------------------------------
def fit_logistic(feats: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None,
                 l2: float = 1e-3) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Weighted, L2-regularised logistic regression on standardised features (scipy's L-BFGS).

    Returns (weights, bias, mean, scale)."""
    from scipy.optimize import minimize

    feats = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sw = sw / sw.mean()
    mean = feats.mean(0)
    scale = feats.std(0)
    scale[scale < 1e-9] = 1.0
    xs = (feats - mean) / scale

    def loss(p):
        zz = xs @ p[:-1] + p[-1]
        # log(1 + e^z) - y z, stably
        ll = np.logaddexp(0, zz) - y * zz
        g = sigmoid(zz) - y
        return (float((sw * ll).mean() + l2 * (p[:-1] ** 2).sum()),
                np.concatenate([(xs * (sw * g)[:, None]).mean(0) + 2 * l2 * p[:-1], [(sw * g).mean()]]))

    res = minimize(loss, np.zeros(xs.shape[1] + 1), jac=True, method="L-BFGS-B")
    return res.x[:-1], float(res.x[-1]), mean, scale


def _best_split(bins: np.ndarray, n_bins: list[int], g: np.ndarray, h: np.ndarray, w: np.ndarray,
                min_leaf: float, l2: float) -> tuple[int, int]:
    """(feature, bin) of the split with the largest second-order gain, or (-1, 0) when none gains."""
    big_g, big_h, big_w = g.sum(), h.sum(), w.sum()
    best, out = 0.0, (-1, 0)
    for f, nb in enumerate(n_bins):
        gl = np.cumsum(np.bincount(bins[:, f], g, nb))[:-1]
        hl = np.cumsum(np.bincount(bins[:, f], h, nb))[:-1]
        wl = np.cumsum(np.bincount(bins[:, f], w, nb))[:-1]
        gain = gl ** 2 / (hl + l2) + (big_g - gl) ** 2 / (big_h - hl + l2) - big_g ** 2 / (big_h + l2)
        gain[(wl < min_leaf) | (big_w - wl < min_leaf)] = -np.inf
        if len(gain) and gain.max() > best:
            best, out = float(gain.max()), (f, int(np.argmax(gain)))
    return out


def fit_boosted_trees(feats: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None,
                      n_trees: int = 60, depth: int = 3, rate: float = 0.1, min_leaf: float = 100.0,
                      l2: float = 1.0, n_bins: int = 32) -> BoostedTrees:
    """Gradient boosting of depth-``depth`` trees on the weighted log loss, splits at feature quantiles.

    Why not the logistic model: which evidence counts depends on the rest (the network's score says much on
    images like its training ones, the LoG response and contrast more elsewhere), which a sum of weights
    cannot say; leaving one training source out at a time, trees ranked its candidates better (mean
    separation 0.961 against 0.941). ``min_leaf`` is in units of the mean sample weight."""
    x = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w / w.mean()
    edges = [np.unique(np.quantile(x[:, f], np.linspace(0, 1, n_bins + 1)[1:-1])) for f in range(x.shape[1])]
    bins = np.stack([np.searchsorted(e, x[:, f], side="right") for f, e in enumerate(edges)], 1)
    n_bins_f = [len(e) + 1 for e in edges]
    p0 = float(np.clip(np.average(y, weights=w), 1e-4, 1 - 1e-4))
    base = float(np.log(p0 / (1 - p0)))
    z = np.full(len(y), base)
    n_inner = 2 ** depth - 1
    feat = np.full((n_trees, n_inner), -1, dtype=np.int64)
    thr = np.zeros((n_trees, n_inner))
    val = np.zeros((n_trees, 2 ** depth))
    for t in range(n_trees):
        p = sigmoid(z)
        g, h = w * (p - y), w * p * (1 - p)
        node = np.zeros(len(y), dtype=np.int64)
        for k in range(n_inner):
            m = node == k
            f, b = _best_split(bins[m], n_bins_f, g[m], h[m], w[m], min_leaf, l2) if m.any() else (-1, 0)
            right = np.zeros(len(y), dtype=bool)
            if f >= 0:
                feat[t, k], thr[t, k] = f, edges[f][b]
                right = m & (bins[:, f] > b)  # bin > b  <=>  x >= edges[f][b]
            node[m] = 2 * k + 1
            node[right] = 2 * k + 2
        leaf = node - n_inner
        val[t] = -rate * np.bincount(leaf, g, 2 ** depth) / (np.bincount(leaf, h, 2 ** depth) + l2)
        z += val[t][leaf]
    return BoostedTrees(base, feat, thr, val)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting half."""
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    r = np.empty(len(allv))
    r[order] = np.arange(1, len(allv) + 1)
    # average ranks of ties
    _, inv, cnt = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    r = sums[inv] / cnt[inv]
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# -- what detect() calls -----------------------------------------------------------------------------------
def filter_device(device):
    """Where the second stage filters: a CUDA model's GPU (float64 there is exact enough and fast), else None
    (scipy on the CPU; MPS has no float64)."""
    return device if device is not None and getattr(device, "type", None) == "cuda" else None


def rescore_frame(rescorer: Rescorer, frame, plane, outer: dict, floor: float, device=None):
    """A plane's network candidates (a DataFrame with ``y, x, score``, or None) -> the rescored candidates
    (proposals added, ``score`` calibrated, ``contrast`` and ``relative_contrast`` added) above ``floor``."""
    import pandas as pd

    yx = frame[["y", "x"]].to_numpy() if frame is not None else np.zeros((0, 2))
    net = frame["score"].to_numpy() if frame is not None else np.zeros(0)
    coords, prob, extra = rescore_candidates(rescorer, plane, yx, net, filter_device(device))
    keep = prob > floor
    coords = coords[keep]
    n = len(coords)
    return pd.DataFrame({**{a: np.full(n, i) for a, i in outer.items()}, "y": coords[:, 0], "x": coords[:, 1],
                         "score": prob[keep], "intensity": extra["intensity"][keep],
                         "contrast": extra["contrast"][keep], "relative_contrast": extra["relative_contrast"][keep]})


def stack_plane_proposals(rescorer: Rescorer, plane, z: int, yx: np.ndarray, net_scores: np.ndarray,
                          floor: float, outer: dict, device=None):
    """A z-stack plane's LoG proposals (:func:`candidate_features`) that no network peak of that plane sits
    near, as voxels (``z, row, col, score, dy, dx, intensity``) scored by the rescorer above ``floor``.

    Why: in a stack the network's voxels make the spots (3-D components), so a spot it scores near 0 in every
    plane (saturated, flat-topped, wide) had no voxel at all; a proposal's voxels in consecutive planes join
    into one component like the network's. ``yx``, ``net_scores``: the plane's 2-D network peaks (the
    proposals' neighbours, scored as on a plane). Proposals touching a network voxel are dropped later, with
    the neighbouring planes known (:func:`merge_stack_proposals`)."""
    import pandas as pd

    coords, prob, extra = rescore_candidates(rescorer, plane, yx, net_scores, filter_device(device))
    keep = extra["is_proposal"] & (prob > floor)
    coords, prob = coords[keep], prob[keep]
    h, w = (int(v) for v in plane.shape[-2:])
    r = np.clip(np.rint(coords[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(coords[:, 1]).astype(np.int64), 0, w - 1)
    n = len(r)
    return pd.DataFrame({**{a: np.full(n, i) for a, i in outer.items()}, "z": np.full(n, z, dtype=np.int32),
                         "row": r.astype(np.int32), "col": c.astype(np.int32), "score": prob.astype(np.float32),
                         "dy": (coords[:, 0] - r).astype(np.float32), "dx": (coords[:, 1] - c).astype(np.float32),
                         "intensity": extra["intensity"][keep]})


def merge_stack_proposals(voxels, proposals, floor: float, axes: list, shape: tuple):
    """The stack's network voxels plus the proposals that touch no network voxel above ``floor`` (3 x 3 x 3):
    one that does is part of a spot the network already has (often its dim top or bottom plane).

    ``axes``: the index columns, outer ones first, ending ``z, row, col``; ``shape``: their sizes."""
    import pandas as pd

    if proposals is None or not len(proposals):
        return voxels
    if voxels is None or not len(voxels):
        return proposals
    shape = tuple(int(v) for v in shape)

    def keys(df, dz=0, dr=0, dc=0):
        idx = [df[a].to_numpy(np.int64) for a in axes]
        idx[-3:] = [idx[-3] + dz, idx[-2] + dr, idx[-1] + dc]
        ok = np.all([(i >= 0) & (i < n) for i, n in zip(idx, shape)], axis=0)
        k = np.ravel_multi_index(tuple(np.clip(i, 0, n - 1) for i, n in zip(idx, shape)), shape)
        return np.where(ok, k, -1)

    net = np.unique(keys(voxels[voxels["score"].to_numpy() > floor]))
    touching = np.zeros(len(proposals), dtype=bool)
    for dz in (-1, 0, 1):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                k = keys(proposals, dz, dr, dc)
                touching |= (k >= 0) & np.isin(k, net)
    # a voxel the network already holds (kept for its offsets) stays the network's
    taken = np.isin(keys(proposals), keys(voxels))
    return pd.concat([voxels, proposals[~touching & ~taken]], ignore_index=True)


def rescore_voxels(rescorer: Rescorer, tmaps: np.ndarray, i_score: int) -> np.ndarray:
    """A z-stack tile's maps with the score map calibrated (monotone, so components keep their shapes; pixels
    whose network score is at most :data:`STACK_NET_FLOOR` become 0, so they are never candidates)."""
    out = tmaps.copy()
    s = tmaps[i_score]
    out[i_score] = np.where(s > STACK_NET_FLOOR, rescorer.calibrate_voxels(s), 0.0)
    return out
