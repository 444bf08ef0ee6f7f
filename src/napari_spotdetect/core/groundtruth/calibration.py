"""Calibrate a model from a few annotated regions without training: choose the threshold that best matches them.

A lab counts what it counts; most of the difference between two labs' counts of the same image is where the
score is cut, which needs no training to move. One detection per image at a low threshold gives every
candidate with its score; counting, at each threshold of a grid, the matches inside the regions (pooled over
all regions) gives an F1 curve, and the chosen threshold maximises that curve *smoothed* over neighbouring
thresholds, so a handful of clicks cannot pick a lucky spike; it replaces the model's own threshold only when
it matches at least one more spot's worth (F1 + 1/N for N annotated spots) both where it was chosen and when
chosen fold by fold on spots it was not chosen on (:func:`cross_validated`: strips of the regions), with a gain
over the strips more than one standard error above 0 (:func:`moves`), on at least :data:`MIN_BAND`
candidates between the two thresholds, and when the move also pays on the whole images, whose own candidates
between the two thresholds may be far more than the regions suggest (:func:`carries_over`). The contrast floor
is left as it is: it
is relative to each image's own content and, chosen from a few clicks, over-fits (measured on real images).

Fine-tuning picks its thresholds with the same rule (:func:`pick_threshold`) on held-out regions, the starting
model's with :func:`calibrate` on every annotated pixel, and judges epochs by :func:`cross_validated` scores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpotDetectError
from .metrics import match_spots, scores_from_counts
from .regions import inside

#: thresholds tried (a probability scale); low ones matter: a lab that counts faint spots may want 0.01
GRID = np.round(np.concatenate([[0.005, 0.01, 0.02, 0.03, 0.04], np.arange(0.05, 0.951, 0.05), [0.97, 0.98, 0.99]]), 3)
#: match radius (px) between clicks and detections: a click by hand lands within a few pixels of the centre
CLICK_RADIUS = 3.0


def count_curve(preds, truths, boxes, thresholds, radius: float) -> np.ndarray:
    """(true positives, false positives, false negatives, per-example F1) at each threshold: a (4, T) array, the
    counts pooled over the examples, counting only what lies inside each box.

    ``preds``: per example (yx (K, 2), scores (K,)); ``truths``: (N, 2); ``boxes``: a box or None (whole plane).
    Far more candidates than truths cannot score well: their F1 is bounded without matching (fast).
    """
    out = np.zeros((4, len(thresholds)))
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
            out[:, i] += (m_tp, len(p) - m_tp, len(gt) - m_tp, scores_from_counts(m_tp, len(p), len(gt))[2])
    return out


def pooled_f1(counts) -> np.ndarray:
    """F1 from pooled (tp, fp, fn, ...) counts (rows), 1 where there is nothing to find and nothing found."""
    tp, fp, fn = (np.asarray(c, dtype=np.float64) for c in counts[:3])
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def f1_curve(preds, truths, boxes, thresholds, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(pooled F1, mean per-example F1) at each threshold, counting only what lies inside each box."""
    c = count_curve(preds, truths, boxes, thresholds, radius)
    return pooled_f1(c), c[3] / max(1, len(preds))


#: folds of the annotated spots for cross-validating a threshold choice (fewer when there are few spots)
FOLDS = 5


def fold_boxes(truths, boxes, shapes, k: int = FOLDS) -> list:
    """``k`` folds of the annotated area: each box (None: the whole plane of that ``shape``) cut across its
    longer side into ``k`` strips holding about equal numbers of annotated spots; ``folds[j][i]`` is example
    ``i``'s strip ``j``. Strips, not scattered spots: a detection and its click fall in the same fold."""
    folds = [[] for _ in range(k)]
    for gt, box, shape in zip(truths, boxes, shapes):
        y0, x0, y1, x1 = box if box is not None else (0, 0, int(shape[-2]), int(shape[-1]))
        ax = 0 if y1 - y0 >= x1 - x0 else 1
        lo, hi = (y0, y1) if ax == 0 else (x0, x1)
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
        c = np.sort(gt[inside(gt, (y0, x0, y1, x1)), ax])
        cuts = [lo]
        for j in range(1, k):
            if len(c) >= 2:  # between the spots that split the annotation into equal shares
                q = j * len(c) / k
                i = min(len(c) - 1, max(1, int(round(q))))
                cut = int(np.floor((c[i - 1] + c[i]) / 2)) + 1  # between the two (spots on one pixel row stay)
            else:
                cut = lo + (hi - lo) * j // k
            cuts.append(min(hi, max(cuts[-1], cut)))
        cuts.append(hi)
        for j in range(k):
            a, b = cuts[j], cuts[j + 1]
            folds[j].append((a, x0, b, x1) if ax == 0 else (y0, a, y1, b))
    return folds


def cross_validated(preds, truths, boxes, shapes, thresholds, radius: float, prefer: float,
                    fixed: float | None = None, k: int = FOLDS) -> dict:
    """What choosing the threshold by :func:`pick_threshold` is worth on spots it was not chosen on.

    Each fold's threshold is picked on the other folds and scored on that fold; the counts pooled over the
    folds give ``"f1"``: an estimate free of the optimism of picking and scoring on the same clicks (with a
    handful of them, the best threshold in the region is mostly luck). ``fixed``: also the pooled F1 at that
    threshold over the same strips (``"f1_fixed"``), the fair comparison. Fewer than 2 spots per fold: fewer
    folds; under 4 spots: nothing to cross-validate (``"f1"`` is None).
    """
    n = int(sum(inside(t, b).sum() for t, b in zip(truths, boxes)))
    k = min(k, n // 2)
    grid = np.asarray(thresholds, dtype=np.float64)
    if k < 2:
        return {"f1": None, "f1_fixed": None, "folds": 0, "thresholds": [], "gains": []}
    folds = fold_boxes(truths, boxes, shapes, k)
    extra = [] if fixed is None else [float(fixed)]
    per = [count_curve(preds, truths, fold, np.r_[grid, extra], radius) for fold in folds]  # (4, T[+1]) each
    total = np.sum(per, axis=0)
    chosen = np.zeros(3)
    picks, gains = [], []
    for c in per:
        t = pick_threshold(grid, pooled_f1(total - c)[:len(grid)], prefer=prefer)
        picks.append(t)
        here = c[:3, int(np.argmin(np.abs(grid - t)))]
        chosen += here
        if extra:
            gains.append(float(pooled_f1(here) - pooled_f1(c[:3, -1])))
    return {"f1": float(pooled_f1(chosen)), "f1_fixed": float(pooled_f1(total[:3, -1])) if extra else None,
            "folds": k, "thresholds": picks, "gains": gains,
            "counts_chosen": [[float(v) for v in c[:3, int(np.argmin(np.abs(grid - t)))]] for c, t in zip(per, picks)],
            "counts_fixed": [[float(v) for v in c[:3, -1]] for c in per] if extra else None}


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
    #: F1 of choosing the threshold fold by fold on the other folds, and of the model's threshold on them
    f1_cross_validated: float | None = None
    f1_cross_validated_before: float | None = None

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
    cv = cross_validated(preds, truths, boxes, [np.shape(e[0]) for e in exs], grid, radius, before, fixed=before)
    if (not moves(at_thr[0], at_before[0], cv, n_spots) or band_size(preds, boxes, before, thr) < MIN_BAND
            or not carries_over(preds, truths, boxes, before, thr, radius, list(cache.values()),
                                image_area_ratio(exs))):
        thr, at_thr = before, at_before
    return Calibration(thr, float(at_thr[0]), before, float(at_before[0]), len(exs), n_spots, float(radius),
                       [(float(t), float(f)) for t, f in zip(grid, pooled)], cv.get("f1"), cv.get("f1_fixed"))


def image_area_ratio(exs) -> float:
    """The annotated images' area over their regions' (an image annotated in several regions counts once)."""
    seen, whole, part = set(), 0.0, 0.0
    for img, _, box in exs:
        h, w = np.shape(img)[-2:]
        if id(img) not in seen:
            seen.add(id(img))
            whole += h * w
        part += h * w if box is None else max(1, (box[2] - box[0]) * (box[3] - box[1]))
    return whole / max(part, 1.0)


def moves(f1_new: float, f1_old: float, cv: dict, n_spots: int) -> bool:
    """Whether a new threshold replaces the old one: it must match at least one more annotated spot's worth
    (F1 + 1/N) where it was chosen, *and* when chosen fold by fold on the other folds (:func:`cross_validated`),
    with a mean gain over the folds more than one standard error above 0 (not one lucky strip) and no fold
    worse (a region of a dense patch and a sparse one gains in one and loses in the other); without enough
    spots to cross-validate, nothing moves. Keeping the model's threshold never makes it worse."""
    if cv.get("f1") is None:
        return False
    margin = 1.0 / max(1, n_spots)
    d = np.asarray(cv["gains"], dtype=np.float64)
    return (f1_new > f1_old + margin and cv["f1"] > cv["f1_fixed"] + margin
            and len(d) > 1 and float(d.mean() - SE_MULTIPLE * d.std(ddof=1) / np.sqrt(len(d))) > 0
            and float(d.min()) >= 0)


#: how many standard errors above 0 the mean gain over the strips must be (:func:`moves`)
SE_MULTIPLE = 1.0


#: a threshold move must rest on at least this many candidates between the two thresholds inside the regions.
#: 8, not 5: simulating regions of 5-50 clicks on the real ``train`` images (``benchmarks/calibration_rule.py``,
#: 2,312 runs), 5 let 27 moves through, 14 of them below the start on the rest of the image, 8 let 7 through,
#: 4 below, at the same mean gain (0.000). Where a lab's convention really differs from the model's, the band is
#: wide (many candidates the lab does or does not count), so the moves that matter still pass.
MIN_BAND = 8


def band_size(preds, boxes, old: float, new: float) -> int:
    """How many candidates inside the regions score between ``old`` and ``new``: what a move adds or drops.

    The regions' own F1 cannot tell a handful of them from the image's: a region of 10 clicks whose 3 extra
    candidates at a low threshold were all true spots moved the threshold and lost 0.2 of F1 on the rest of
    the image, where the same band held mostly false ones (pia_spots, measured with bench_hitl)."""
    lo, hi = min(old, new), max(old, new)
    n = 0
    for (yx, s), box in zip(preds, boxes):
        s = np.asarray(s)[inside(yx, box)]
        n += int(((s > lo) & (s <= hi)).sum())
    return n


#: one-sided z of the bounds on a band's precision in :func:`carries_over` (90 %)
BOUND_Z = 1.2816


def _wilson(k: float, n: float, z: float = BOUND_Z) -> tuple[float, float]:
    """(lower, upper) Wilson bounds on a proportion of ``k`` in ``n``."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    mid, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def carries_over(preds, truths, boxes, old: float, new: float, radius: float, images,
                 area_ratio: float = 1.0) -> bool:
    """Whether moving the threshold from ``old`` to ``new`` should raise F1 on the *whole* images, not only in
    the regions.

    The regions say what share of the candidates between the two thresholds are spots (a bound that a handful
    of clicks cannot inflate: 90 % Wilson, lower when the move adds candidates, upper when it drops them) and
    how many spots the images hold (those found at ``old`` over the regions' recall there); the images' own,
    unannotated candidates (``images``: one (yx, score) per image) say how many the move adds or drops
    (``area_ratio``: the images' area over the regions'). Why: a region of 5 clicks whose 5 faint candidates
    were all spots moved a pia_spots threshold from 0.34 to 0.01 and lost 0.66 of F1 on the rest of the image,
    where the same band held hundreds of candidates and few spots (``benchmarks/calibration_rule.py``, on
    ``train``)."""
    lo, hi = min(old, new), max(old, new)
    c_old = count_curve(preds, truths, boxes, [old], radius)[:3, 0]
    c_new = count_curve(preds, truths, boxes, [new], radius)[:3, 0]
    band = band_size(preds, boxes, old, new)
    if band == 0:
        return False
    band_true = min(abs(c_new[0] - c_old[0]), band)  # spots the move finds (or loses) in the regions
    k_old = float(sum((np.asarray(s) > old).sum() for _, s in images))
    k_band = float(sum(((np.asarray(s) > lo) & (np.asarray(s) <= hi)).sum() for _, s in images))
    found = _precision(c_old) * k_old
    n_true = spots_in_images(c_old, k_old, area_ratio)
    low, high = _wilson(band_true, band)
    if new < old:  # adds the band: at best the spots still missing
        gained = min(low * k_band, max(0.0, n_true - found))
        tp, k = found + gained, k_old + k_band
    else:  # drops the band, with at least this many true spots
        tp, k = found - min(high * k_band, found), k_old - k_band

    def f1(t: float, kk: float) -> float:
        return 2 * t / (kk + n_true) if kk + n_true > 0 else 0.0

    return f1(tp, k) > f1(found, k_old)


def _precision(counts) -> float:
    tp, fp = counts[0], counts[1]
    return tp / (tp + fp) if tp + fp else 0.0


def spots_in_images(counts, k_images: float, area_ratio: float = 1.0) -> float:
    """How many spots the whole images hold, by a model's (tp, fp, fn) in the regions and its ``k_images``
    candidates on the images: those it finds (its precision there times ``k_images``) over its recall there.
    None found in the regions: the regions' density of spots over the images' area (``area_ratio``)."""
    tp, _, fn = counts[:3]
    return _precision(counts) * k_images * (tp + fn) / tp if tp else (tp + fn) * area_ratio


def model_carries_over(start, new, area_ratio: float = 1.0, z: float = BOUND_Z) -> bool:
    """Whether a trained model (``new``) should beat the starting one (``start``) on the *whole* images, each
    given as ((tp, fp, fn) in the held-out regions at its threshold, its candidates on the whole images there).

    The images' spots are counted by the start (:func:`spots_in_images`); the trained model is credited with
    the fewer of the true spots its precision in the regions implies among its candidates and those its recall
    there implies among the images' spots, each at its lower bound (Wilson, ``z``; 0: the point estimates), so
    a strip of a few spots must show a change, not merely allow it. Why: on a pia_spots image (``train``, held
    out from the network's training; ``bench_hitl.py --real --clicks --split train``) a 5-click fine-tune won
    its held-out strip (6 of 6 spots found, 1 false) at threshold 0.04, placed 522 candidates on an image of
    about 100 spots and fell from 0.72 to 0.25 on the other half; the start placed 90."""
    (c_s, k_s), (c_n, k_n) = start, new
    n_true = spots_in_images(c_s, k_s, area_ratio)
    tp_n, fp_n, fn_n = c_n[:3]
    if z > 0:
        precision, recall = _wilson(tp_n, tp_n + fp_n, z)[0], _wilson(tp_n, tp_n + fn_n, z)[0]
    else:
        precision, recall = _precision(c_n), tp_n / (tp_n + fn_n) if tp_n + fn_n else 0.0
    found_n = min(precision * k_n, recall * n_true)

    def f1(t: float, k: float) -> float:
        return 2 * t / (k + n_true) if k + n_true > 0 else 0.0

    return f1(found_n, k_n) > f1(_precision(c_s) * k_s, k_s)


def calibrated_model(model, cal: Calibration):
    """A copy of ``model`` that detects at the calibrated threshold, its card saying how it was chosen."""
    out = copy.copy(model)
    out.info = copy.deepcopy(model.info)
    out.default_threshold = cal.threshold
    out.info.card = {**(out.info.card or {}), "calibration": {
        "threshold": cal.threshold, "threshold_before": cal.threshold_before, "f1_in_regions": cal.f1,
        "f1_in_regions_before": cal.f1_before, "f1_cross_validated": cal.f1_cross_validated,
        "f1_cross_validated_before": cal.f1_cross_validated_before, "n_regions": cal.n_regions, "n_spots": cal.n_spots,
        "radius_px": cal.radius, "base_model": model.info.name}}
    return out


__all__ = ["CLICK_RADIUS", "FOLDS", "GRID", "MIN_BAND", "Calibration", "band_size", "calibrate", "calibrated_model",
           "carries_over", "count_curve", "cross_validated", "f1_curve", "fold_boxes", "image_area_ratio",
           "model_carries_over", "moves", "pick_threshold", "pooled_f1", "spots_in_images"]
