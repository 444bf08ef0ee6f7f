"""Calibrate a model from a few annotated regions without training: choose the threshold that best matches them.

A lab counts what it counts; most of the difference between two labs' counts of the same image is where the
score is cut, which needs no training to move. One detection per image at a low threshold gives every
candidate with its score; counting, at each threshold of a grid, the matches inside the regions (pooled over
all regions) gives an F1 curve, and the chosen threshold maximises that curve *smoothed* over neighbouring
thresholds, so a handful of clicks cannot pick a lucky spike; it replaces the model's own threshold only when
it matches at least one more spot's worth (F1 + 1/N for N annotated spots). The contrast floor is left as it is: it is
relative to each image's own content and, chosen from a few clicks, over-fits (measured on real images).

Fine-tuning picks its thresholds with the same rule (:func:`pick_threshold`) on held-out regions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpotDetectError
from .metrics import match_spots
from .regions import inside

#: thresholds tried (a probability scale); low ones matter: a lab that counts faint spots may want 0.01
GRID = np.round(np.concatenate([[0.005, 0.01, 0.02, 0.03, 0.04], np.arange(0.05, 0.951, 0.05), [0.97, 0.98, 0.99]]), 3)
#: match radius (px) between clicks and detections: a click by hand lands within a few pixels of the centre
CLICK_RADIUS = 3.0


def f1_curve(preds, truths, boxes, thresholds, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(pooled F1, mean per-example F1) at each threshold, counting only what lies inside each box.

    ``preds``: per example (yx (K, 2), scores (K,)); ``truths``: (N, 2); ``boxes``: a box or None (whole plane).
    Far more candidates than truths cannot score well: their F1 is bounded without matching (fast).
    """
    tp = np.zeros(len(thresholds))
    fp = np.zeros(len(thresholds))
    fn = np.zeros(len(thresholds))
    per = np.zeros(len(thresholds))
    for (yx, s), gt, box in zip(preds, truths, boxes):
        keep = inside(yx, box)
        yx, s = np.asarray(yx, dtype=np.float64).reshape(-1, 2)[keep], np.asarray(s)[keep]
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
        gt = gt[inside(gt, box)]
        for i, t in enumerate(thresholds):
            p = yx[s > t]
            if len(p) > 10 * len(gt) + 50:  # bound: at most len(gt) of them can match
                m_tp = len(gt)
            else:
                m_tp = match_spots(p, gt, radius).tp
            tp[i] += m_tp
            fp[i] += len(p) - m_tp
            fn[i] += len(gt) - m_tp
            denom = 2 * m_tp + (len(p) - m_tp) + (len(gt) - m_tp)
            per[i] += 1.0 if denom == 0 else 2 * m_tp / denom
    denom = 2 * tp + fp + fn
    pooled = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    return pooled, per / max(1, len(preds))


def smooth(values: np.ndarray, width: int = 1) -> np.ndarray:
    """Mean over each grid point and ``width`` neighbours on each side (the end values repeated beyond the ends,
    so an end point is not favoured for having fewer neighbours)."""
    v = np.pad(np.asarray(values, dtype=np.float64), width, mode="edge")
    return np.convolve(v, np.ones(2 * width + 1) / (2 * width + 1), mode="valid")


def pick_threshold(thresholds, f1s, prefer: float = 0.5) -> float:
    """The threshold where the smoothed F1 peaks; ties go to the one nearest ``prefer``."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    s = smooth(f1s)
    best = np.flatnonzero(s >= s.max() - 1e-9)
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - prefer))]])


@dataclass
class Calibration:
    """What calibration chose and why: F1 inside the regions (pooled over them) before and after."""

    threshold: float
    f1: float
    threshold_before: float
    f1_before: float
    n_regions: int
    n_spots: int
    radius: float
    curve: list = field(default_factory=list)  # [(threshold, F1)] over the grid

    def summary(self) -> str:
        return (f"threshold {self.threshold_before:.3g} -> {self.threshold:.3g}: F1 in the {self.n_regions} "
                f"region(s) ({self.n_spots} spots) {self.f1_before:.2f} -> {self.f1:.2f}")


def _as_examples(examples) -> list:
    out = []
    for k, ex in enumerate(examples):
        if not isinstance(ex, (tuple, list)) or len(ex) not in (2, 3):
            raise SpotDetectError(f"Example {k} is not (image, spots) or (image, spots, region).",
                                  "pass (2-D image, (N, 2) y/x spots[, (y0, x0, y1, x1)]) items.")
        img, pts = ex[0], np.asarray(ex[1], dtype=np.float64).reshape(-1, 2)
        out.append((img, pts, ex[2] if len(ex) == 3 else None))
    if not out:
        raise SpotDetectError("Nothing to calibrate from.", "annotate every spot inside at least one region.")
    return out


def candidates(model, image, floor: float, detection=None, should_stop=None) -> tuple[np.ndarray, np.ndarray]:
    """(yx, score) of every candidate above ``floor``: from a detection the user already has, or one run."""
    if detection is not None and detection.stack:
        raise SpotDetectError("Calibration works on 2-D planes; this detection is of a z-stack.",
                              "annotate regions on single planes (or a projection) and detect there.")
    if detection is not None and getattr(detection, "candidates", None) is not None and detection.floor <= floor:
        c = detection.candidates
        keep = detection.passes_contrast_floor()
        return c[["y", "x"]].to_numpy()[keep], c["score"].to_numpy()[keep]
    from ..detection.detect import detect

    det = detect(np.asarray(image, dtype=np.float32), model, threshold=floor, keep_maps=False,
                 should_stop=should_stop)
    c = det.candidates
    keep = det.passes_contrast_floor()
    return c[["y", "x"]].to_numpy()[keep], c["score"].to_numpy()[keep]


def calibrate(model, examples, *, radius: float = CLICK_RADIUS, detections=None, should_stop=None) -> Calibration:
    """Choose ``model``'s threshold from annotated regions: ``(image, spots[, box])`` items (no box: the
    whole image is annotated). ``detections``: one per example (e.g. the layer's), to skip the network;
    with them ``model`` may be None."""
    exs = _as_examples(examples)
    dets = list(detections) if detections is not None else [None] * len(exs)
    if len(dets) != len(exs):
        raise SpotDetectError(f"{len(dets)} detections for {len(exs)} regions.", "pass one detection per region.")
    if model is None and any(d is None for d in dets):
        raise SpotDetectError("Calibration without a model needs a detection for every region.",
                              "pass the model, or the detections of the images the regions are on.")
    # without a model (napari: the layer's own detection) the detection's threshold is the "before"
    lo, hi = (float(v) for v in (model.threshold_range if model is not None else dets[0].score_range))
    grid = GRID[(GRID >= lo) & (GRID <= min(hi, 1.0))] if hi <= 1.0 else GRID
    before = float(model.default_threshold if model is not None else dets[0].threshold)
    known = [d.floor for d in dets if d is not None]
    if known:  # a detection's candidates reach down to its floor only
        grid = grid[grid >= max(known) - 1e-12]
        if not len(grid):
            raise SpotDetectError("These detections kept no candidate low enough to calibrate.",
                                  "detect again at a lower threshold, or calibrate with the model.")
    floor = float(min(grid.min(), before))
    cache: dict = {}
    preds = []
    for (img, _, _), det in zip(exs, dets):
        key = id(img) if det is None else id(det)  # several regions of one image: one detection
        if key not in cache:
            cache[key] = candidates(model, img, floor, det, should_stop)
        preds.append(cache[key])
    truths, boxes = [e[1] for e in exs], [e[2] for e in exs]
    n_spots = int(sum(inside(t, b).sum() for t, b in zip(truths, boxes)))
    if n_spots == 0:
        raise SpotDetectError("No annotated spot lies inside the regions.",
                              "mark every spot inside each region (a region with none says nothing about scores).")
    pooled, _ = f1_curve(preds, truths, boxes, grid, radius)
    thr = pick_threshold(grid, pooled, prefer=before)
    at_before, _ = f1_curve(preds, truths, boxes, [before], radius)
    at_thr, _ = f1_curve(preds, truths, boxes, [thr], radius)
    if at_thr[0] <= at_before[0] + 1.0 / n_spots:  # less than one spot's worth better: noise; keep the model's
        thr, at_thr = before, at_before
    return Calibration(thr, float(at_thr[0]), before, float(at_before[0]), len(exs), n_spots, float(radius),
                       [(float(t), float(f)) for t, f in zip(grid, pooled)])


def calibrated_model(model, cal: Calibration):
    """A copy of ``model`` that detects at the calibrated threshold, its card saying how it was chosen."""
    out = copy.copy(model)
    out.info = copy.deepcopy(model.info)
    out.default_threshold = cal.threshold
    out.info.card = {**(out.info.card or {}), "calibration": {
        "threshold": cal.threshold, "threshold_before": cal.threshold_before, "f1_in_regions": cal.f1,
        "f1_in_regions_before": cal.f1_before, "n_regions": cal.n_regions, "n_spots": cal.n_spots,
        "radius_px": cal.radius, "base_model": model.info.name}}
    return out


__all__ = ["CLICK_RADIUS", "GRID", "Calibration", "calibrate", "calibrated_model", "f1_curve", "pick_threshold"]
