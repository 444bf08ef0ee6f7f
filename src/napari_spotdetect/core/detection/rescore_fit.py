"""Fitting the second stage's scorer (``scripts/fit_rescorer.py``): a logistic model or shallow boosted trees
over candidate features, and the separation (AUC) they are judged by. numpy and scipy only."""

from __future__ import annotations

import numpy as np

from ..models.rescorer import BoostedTrees, sigmoid


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


__all__ = ["auc", "fit_boosted_trees", "fit_logistic"]
