"""Matching predicted spots to ground truth: precision, recall, F1 at a radius, and the F1 integral.

Matching is one-to-one (Hungarian, scipy's ``linear_sum_assignment``) on Euclidean distance; a pair counts
if its distance is at most the radius. The F1 integral is the deepBlink/Piscis summary: F1 at 50 radii
evenly spaced from 0 to 3 px, integrated with the trapezoid rule and divided by 3. Empty inputs are
defined rather than errors: no predictions and no truth is a perfect score, one of them empty scores 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

F1_INTEGRAL_RADII = np.linspace(0.0, 3.0, 50)


@dataclass
class Match:
    """Result of matching at one radius; indices refer to the input arrays."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    pred_matched: np.ndarray  # (K,) indices into pred
    true_matched: np.ndarray  # (K,) indices into truth
    distances: np.ndarray  # (K,)

    def pred_is_tp(self, n_pred: int) -> np.ndarray:
        m = np.zeros(n_pred, dtype=bool)
        m[self.pred_matched] = True
        return m

    def true_is_found(self, n_true: int) -> np.ndarray:
        m = np.zeros(n_true, dtype=bool)
        m[self.true_matched] = True
        return m

    def summary(self) -> dict:
        d = asdict(self)
        for k in ("pred_matched", "true_matched", "distances"):
            d.pop(k)
        return d


def _as_points(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return a.reshape(0, a.shape[-1] if a.ndim == 2 else 2)
    return a.reshape(len(a), -1)


def scores_from_counts(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """(precision, recall, F1) from matched counts; an empty truth found empty scores 1."""
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else (1.0 if n_pred == 0 else 0.0)
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return precision, recall, f1


def match_spots(pred, truth, radius: float = 1.0) -> Match:
    """One-to-one matching of ``pred`` (K, d) to ``truth`` (N, d) within ``radius`` pixels."""
    p, t = _as_points(pred), _as_points(truth)
    empty = np.zeros(0, dtype=np.int64)
    if len(p) == 0 or len(t) == 0:
        pr, rc, f1 = scores_from_counts(0, len(p), len(t))
        return Match(0, len(p), len(t), pr, rc, f1, empty, empty, np.zeros(0))
    d = cdist(t, p)
    big = d.max() + radius + 1.0
    cost = np.where(d <= radius, d, big)  # pairs beyond the radius are only taken when nothing else fits
    ti, pi = linear_sum_assignment(cost)
    ok = d[ti, pi] <= radius
    ti, pi = ti[ok], pi[ok]
    tp = len(ti)
    pr, rc, f1 = scores_from_counts(tp, len(p), len(t))
    return Match(tp, len(p) - tp, len(t) - tp, pr, rc, f1, pi, ti, d[ti, pi])


def f1_integral(pred, truth, radii=F1_INTEGRAL_RADII) -> float:
    """Area under F1(radius) over ``radii`` divided by their span (deepBlink / Piscis definition)."""
    p, t = _as_points(pred), _as_points(truth)
    radii = np.asarray(radii, dtype=np.float64)
    if len(p) == 0 or len(t) == 0:
        return 1.0 if len(p) == len(t) else 0.0
    d = cdist(t, p)
    f1 = []
    for r in radii:
        cost = np.where(d <= r, d, d.max() + r + 1.0)
        ti, pi = linear_sum_assignment(cost)
        tp = int((d[ti, pi] <= r).sum())
        f1.append(scores_from_counts(tp, len(p), len(t))[2])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return float(trapezoid(f1, radii) / (radii[-1] - radii[0]))


def evaluate_matched(pred, truth, radius: float = 1.0) -> tuple[dict, Match]:
    """:func:`evaluate` and the :class:`Match` it was computed from (for TP/FP/FN colouring)."""
    m = match_spots(pred, truth, radius)
    scores = {"precision": m.precision, "recall": m.recall, "f1": m.f1, "f1_integral": f1_integral(pred, truth),
              "tp": m.tp, "fp": m.fp, "fn": m.fn, "n_pred": m.tp + m.fp, "n_true": m.tp + m.fn}
    return scores, m


def evaluate(pred, truth, radius: float = 1.0) -> dict:
    """Precision, recall, F1 at ``radius`` plus the F1 integral and the counts, as plain floats."""
    return evaluate_matched(pred, truth, radius)[0]


def score_model(model, pairs, radius: float = 1.0, threshold: float | None = None, should_stop=None) -> dict:
    """Detect with ``model`` on each (image, truth) pair and :func:`evaluate`; the mean over the pairs.

    At the model's own threshold unless one is given: what a detection followed by the QC panel (or
    ``spotdetect evaluate``) reports for the same images and radius. Fine-tuning's "before" score.
    """
    from ..detection.detect import detect

    pairs = list(pairs)
    if not pairs:
        raise ValueError("score_model needs at least one (image, truth) pair")
    per = []
    for image, truth in pairs:
        det = detect(image, model, threshold, keep_maps=False, should_stop=should_stop)
        per.append(evaluate(det.spots[["y", "x"]].to_numpy(), truth, radius))
    keys = ("precision", "recall", "f1", "f1_integral")
    return {**{k: float(np.mean([m[k] for m in per])) for k in keys}, "radius": float(radius)}
