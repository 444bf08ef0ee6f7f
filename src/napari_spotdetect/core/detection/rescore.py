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
reads each plane whole (a lazy plane too, once, after its tiles): the LoG and contrast maps need the plane's
noise and elbow. A model file carries it as its optional ``"rescore"`` entry (:mod:`..weights.native`).
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


def proposal_peaks(resp: np.ndarray, stack: np.ndarray, cut: float, scale_cut: float | None,
                   flat: np.ndarray | None = None) -> np.ndarray:
    """Integer (row, col) of the LoG peaks that may be spots, strongest first.

    Peaks (3 x 3) of the best-scale response above ``cut``, plus, with ``scale_cut``, the peaks of each single
    scale's response above it: the max over scales lets a bright spot's wide response swallow a dim neighbour
    2-4 px away (it has no peak of its own there), while the small scale still shows one. Per-scale peaks of
    the same spot (within 1.5 px of a stronger one) are dropped, and so are those where ``flat`` is true (near
    a clipped plateau, whose edges are a ring of small-scale peaks around the one spot).
    """
    anywhere = np.ones(resp.shape, dtype=bool)
    off_flat = anywhere if flat is None else ~flat
    maps = [(resp, cut, anywhere)] + ([(r, scale_cut, off_flat) for r in stack] if scale_cut is not None else [])
    pts = thread_map(lambda m: np.argwhere((m[0] == _max3(m[0])) & (m[0] > m[1]) & m[2]), maps)
    p = np.concatenate(pts)
    if len(maps) == 1 or len(p) < 2:
        return p
    p = p[np.argsort(-resp[p[:, 0], p[:, 1]], kind="stable")]
    from scipy.spatial import cKDTree

    keep = np.ones(len(p), dtype=bool)
    for i, j in sorted(cKDTree(p).query_pairs(DEDUPE_RADIUS)):
        if keep[i]:  # i < j: i is the stronger (or the same response, found first)
            keep[j] = False
    return p[keep]


def _max3(r: np.ndarray) -> np.ndarray:
    return ndimage.maximum_filter(r, 3, mode="nearest")


def _subpixel(resp: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """Parabola vertex through each peak and its two neighbours per axis (offset within +-0.5 px)."""
    h, w = resp.shape
    out = rc.astype(np.float64)
    for ax, (dr, dc) in enumerate(((1, 0), (0, 1))):
        lo = resp[np.clip(rc[:, 0] - dr, 0, h - 1), np.clip(rc[:, 1] - dc, 0, w - 1)]
        hi = resp[np.clip(rc[:, 0] + dr, 0, h - 1), np.clip(rc[:, 1] + dc, 0, w - 1)]
        mid = resp[rc[:, 0], rc[:, 1]]
        den = lo - 2 * mid + hi
        off = np.where(den < 0, 0.5 * (lo - hi) / np.where(den < 0, den, -1.0), 0.0)
        out[:, ax] += np.clip(off, -0.5, 0.5)
    return out


def candidate_features(plane, yx: np.ndarray, net_scores: np.ndarray, proposal_cut: float = 3.0,
                       scale_cut: float | None = None, merge_radius: float = 2.0):
    """The network's candidates (``yx``, ``net_scores``) plus the plane's LoG proposals (:func:`proposal_peaks`;
    none within ``merge_radius`` of a network candidate), and their features.

    Returns (coords (N, 2), features (N, len(FEATURES)), extras: ``contrast`` and ``relative_contrast`` as
    the contrast floor uses them, ``is_proposal``).
    """
    from ..io.image_sources import read

    x = np.asarray(read(plane), dtype=np.float64)
    h, w = x.shape
    hp = _highpass(x)
    noise = _noise(hp)
    z = x / noise
    stack = log_stack(z)
    resp, arg = log_maps(z, stack)
    # proposals: LoG peaks in 3 x 3 (close pairs stay two) above the cut, away from the network's candidates
    top = x.max()
    clipped = x >= top if top > np.median(x) else None  # the plane's saturated pixels (None: it has none)
    flat = clipped
    if clipped is not None and FLAT_RIM:
        flat = ndimage.binary_dilation(clipped, iterations=FLAT_RIM)
    prc = proposal_peaks(resp, stack, proposal_cut, scale_cut, flat)
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    net_scores = np.asarray(net_scores, dtype=np.float64).reshape(-1)
    if len(prc) and len(yx):
        from scipy.spatial import cKDTree

        d, _ = cKDTree(yx).query(prc, k=1)
        prc = prc[d > merge_radius]
    prop = _subpixel(resp, prc) if len(prc) else np.zeros((0, 2))
    coords = np.concatenate([yx, prop])
    n_net = len(yx)
    net = np.concatenate([net_scores, np.zeros(len(prop))])
    rc = np.rint(coords).astype(np.int64)
    rc[:, 0] = np.clip(rc[:, 0], 0, h - 1)
    rc[:, 1] = np.clip(rc[:, 1], 0, w - 1)
    # whole-plane filters, side by side: the best LoG response within 3 x 3 (at each candidate), the LoG
    # peaks within 5 x 5 (for the plane's LoG elbow) and the local noise
    rmax, rmax5, local = run_together(
        lambda: _max3(resp), lambda: ndimage.maximum_filter(resp, 5, mode="nearest"),
        lambda: np.sqrt(np.maximum(ndimage.uniform_filter(hp * hp, LOCAL_WINDOW, mode="reflect"), 0)))
    at_resp = rmax[rc[:, 0], rc[:, 1]]
    at_sigma = np.array(SIGMAS)[_argmax3(resp, arg, rc)]
    contrast, _, peak_c, _ = contrast_features(x, coords)
    e = elbow(peak_c)
    rel = contrast / e if np.isfinite(e) and e > 0 else np.full(len(coords), np.inf)
    rel_for_feat = contrast / (e if np.isfinite(e) and e > 0 else 10.0)
    # local SNR: the smoothed peak over the local background, in units of the local high-pass noise
    local = local[rc[:, 0], rc[:, 1]]
    local_snr = contrast * noise / np.maximum(local, 1e-3 * noise)
    sat = ndimage.uniform_filter(clipped.astype(np.float64), 3, mode="nearest")[rc[:, 0], rc[:, 1]] \
        if clipped is not None else np.zeros(len(coords))
    # dominance: own LoG response over the strongest within NEIGHBOUR_RADIUS (1: the strongest there)
    dom = np.ones(len(coords))
    if len(coords) > 1:
        from scipy.spatial import cKDTree

        tree = cKDTree(coords)
        for i, nb in enumerate(tree.query_ball_point(coords, NEIGHBOUR_RADIUS)):
            if len(nb) > 1:
                dom[i] = max(at_resp[i], 1e-3) / max(at_resp[nb].max(), 1e-3)
    peaks_all = resp[(resp == rmax5) & (resp > 1.0)]
    le = elbow(peaks_all)
    le = le if np.isfinite(le) and le > 0 else 10.0
    feats = np.column_stack([
        logit(net), (np.arange(len(coords)) < n_net).astype(np.float64),
        np.log1p(np.maximum(at_resp, 0)), np.log(at_sigma), np.log1p(np.maximum(contrast, 0)),
        np.log(np.clip(rel_for_feat, 1e-3, 1e3)), np.log1p(np.maximum(local_snr, 0)), sat,
        np.log(np.clip(dom, 1e-3, 1.0)), np.log(np.clip(np.maximum(at_resp, 1e-3) / le, 1e-3, 1e3))])
    extra = {"contrast": contrast, "relative_contrast": rel, "is_proposal": np.arange(len(coords)) >= n_net}
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


def rescore_candidates(rescorer: Rescorer, plane: np.ndarray, yx: np.ndarray, net_scores: np.ndarray):
    """(coords, calibrated scores, contrast, relative contrast) of the network's candidates plus the plane's
    proposals."""
    yx, feats, extra = candidate_features(plane, yx, net_scores, rescorer.proposal_cut, rescorer.scale_cut,
                                          rescorer.merge_radius)
    return yx, rescorer.probability(feats), extra["contrast"], extra["relative_contrast"]


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
def rescore_frame(rescorer: Rescorer, frame, plane, outer: dict, floor: float):
    """A plane's network candidates (a DataFrame with ``y, x, score``, or None) -> the rescored candidates
    (proposals added, ``score`` calibrated, ``contrast`` and ``relative_contrast`` added) above ``floor``."""
    import pandas as pd

    from ..io.image_sources import read

    x = np.asarray(read(plane))
    yx = frame[["y", "x"]].to_numpy() if frame is not None else np.zeros((0, 2))
    net = frame["score"].to_numpy() if frame is not None else np.zeros(0)
    coords, prob, con, rel = rescore_candidates(rescorer, x, yx, net)
    keep = prob > floor
    coords = coords[keep]
    h, w = x.shape
    r = np.clip(np.rint(coords[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(coords[:, 1]).astype(np.int64), 0, w - 1)
    n = len(coords)
    return pd.DataFrame({**{a: np.full(n, i) for a, i in outer.items()}, "y": coords[:, 0], "x": coords[:, 1],
                         "score": prob[keep], "intensity": x[r, c].astype(np.float64),
                         "contrast": con[keep], "relative_contrast": rel[keep]})


def stack_plane_proposals(rescorer: Rescorer, plane, z: int, yx: np.ndarray, net_scores: np.ndarray,
                          floor: float, outer: dict):
    """A z-stack plane's LoG proposals (:func:`candidate_features`) that no network peak of that plane sits
    near, as voxels (``z, row, col, score, dy, dx, intensity``) scored by the rescorer above ``floor``.

    Why: in a stack the network's voxels make the spots (3-D components), so a spot it scores near 0 in every
    plane (saturated, flat-topped, wide) had no voxel at all; a proposal's voxels in consecutive planes join
    into one component like the network's. ``yx``, ``net_scores``: the plane's 2-D network peaks (the
    proposals' neighbours, scored as on a plane). Proposals touching a network voxel are dropped later, with
    the neighbouring planes known (:func:`merge_stack_proposals`)."""
    import pandas as pd

    from ..io.image_sources import read

    x = np.asarray(read(plane))
    coords, feats, extra = candidate_features(x, yx, net_scores, rescorer.proposal_cut, rescorer.scale_cut,
                                              rescorer.merge_radius)
    prob = rescorer.probability(feats)
    keep = extra["is_proposal"] & (prob > floor)
    coords, prob = coords[keep], prob[keep]
    h, w = x.shape
    r = np.clip(np.rint(coords[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(coords[:, 1]).astype(np.int64), 0, w - 1)
    n = len(r)
    return pd.DataFrame({**{a: np.full(n, i) for a, i in outer.items()}, "z": np.full(n, z, dtype=np.int32),
                         "row": r.astype(np.int32), "col": c.astype(np.int32), "score": prob.astype(np.float32),
                         "dy": (coords[:, 0] - r).astype(np.float32), "dx": (coords[:, 1] - c).astype(np.float32),
                         "intensity": x[r, c].astype(np.float64)})


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
