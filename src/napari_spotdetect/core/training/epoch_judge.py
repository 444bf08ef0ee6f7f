"""Judging a training run's epochs: validation on held-out data, the threshold, and which weights are kept.

Apart from :mod:`.train` (the loop) because it is the part that decides what a user gets: each epoch is scored
by detecting on the validation examples (counting only inside their regions), its threshold is tuned there
(or, for the starting model, fixed at its calibrated one), fine-tuning's epochs are cross-validated strip by
strip, the starting model competes as epoch 0, and the starting model's second stage competes in every epoch.
:class:`EpochJudge` is a part of :class:`.train.Trainer`: it reads the trainer's ``net``, ``model``, ``val``,
``val_boxes``, ``cfg``, ``mode``, ``best``, ``start_val``, ``second_stage*``, ``checkpoints`` and ``card``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..groundtruth.calibration import (
    count_curve,
    cross_validated,
    image_area_ratio,
    model_carries_over,
    pick_threshold,
    spots_in_images,
)
from ..groundtruth.metrics import evaluate
from ..groundtruth.regions import inside

THRESHOLDS = np.round(np.concatenate([np.arange(0.05, 0.951, 0.05), [0.97, 0.98, 0.99]]), 2)
#: fine-tuning also tries low thresholds: a lab that counts faint spots may want 0.01 (scratch training keeps
#: the grid its defaults were chosen with)
_FINETUNE_THRESHOLDS = np.round(np.concatenate([[0.005, 0.01, 0.02, 0.03, 0.04], THRESHOLDS]), 3)


class EpochJudge:
    """Validation and the choice of the best epoch, for :class:`.train.Trainer`."""

    # -- validation ----------------------------------------------------------------------------------
    def validate(self, should_stop=None, at: float | None = None, prefer: float = 0.5,
                 fixed: float | None = None) -> dict:
        """Detect on the validation images; tune the threshold for the best (smoothed) mean F1 at ``val_radius``.

        Only detections inside an example's region count. ``at``: also score at this threshold (key ``"at"``;
        fine-tuning's "before", from the same detections); ``prefer``: where ties between thresholds go
        (the starting model's own threshold for epoch 0: a confident model scores most spots ~1); ``fixed``:
        score at this threshold instead of tuning one (the starting model at its calibrated threshold).
        ``"selection"`` is what picks the best epoch: with ``select="f1"`` the pooled F1 of a threshold chosen
        fold by fold on the other strips of the held-out data (:func:`cross_validated`; for ``fixed``, the pooled
        F1 at it), ``"folds"`` its counts per strip (to pair with the start's).
        ``should_stop`` is checked between tiles; when it says stop, :class:`Cancelled` is raised.
        """
        from ..detection.detect import detect

        self.net.eval()
        grid = THRESHOLDS if self.mode == "scratch" else _FINETUNE_THRESHOLDS
        floor = float(min([grid[0], *(t for t in (at, fixed) if t is not None)]))
        preds = []
        for img, _ in self.val:
            det = detect(img, self.model, threshold=floor, keep_maps=False, should_stop=should_stop)
            cand = det.candidates[det.passes_contrast_floor()]  # the model's own floor, as detection applies it
            preds.append((cand[["y", "x"]].to_numpy(), cand["score"].to_numpy()))
        truth = [p for _, p in self.val]
        counts = count_curve(preds, truth, self.val_boxes, grid, self.cfg.val_radius)
        f1s = counts[3] / max(1, len(preds))  # the mean per-example F1, as f1_curve gives it
        thr = pick_threshold(grid, f1s, prefer=prefer) if fixed is None else float(fixed)
        out = self._scores(preds, truth, thr)
        out.update(threshold=thr, f1_at_0_5=float(f1s[np.argmin(np.abs(grid - 0.5))]))
        if self.mode == "finetune":  # (training from scratch keeps its per-epoch cost and rule)
            # what the whole images say at this threshold, for :meth:`holds_on_whole_images`
            on_grid = np.flatnonzero(np.asarray(grid) == thr)
            at_thr = (counts[:3, on_grid[0]] if len(on_grid) else
                      count_curve(preds, truth, self.val_boxes, [thr], self.cfg.val_radius)[:3, 0])
            out["counts"] = at_thr.tolist()
            out["image_candidates"] = int(sum((s > thr).sum() for (_, s), _ in self._distinct_images(preds)))
            cv = cross_validated(preds, truth, self.val_boxes, [np.shape(im) for im, _ in self.val], grid,
                                 self.cfg.val_radius, prefer, fixed=fixed)
            if cv["folds"] and fixed is None:
                out.update(selection=cv["f1"], folds=cv["counts_chosen"])
            elif cv["folds"]:
                out.update(selection=cv["f1_fixed"], folds=cv["counts_fixed"])
        if at is not None:
            out["at"] = {**self._scores(preds, truth, float(at)), "threshold": float(at)}
        self._train_mode()
        return out

    def validate_epoch(self, should_stop=None) -> dict:
        """:meth:`validate` the trained weights as they are and, where the starting model had a second stage,
        with that stage too (its proposals and calibrated scores); the better (by the epoch-picking score,
        ties to the second stage) is the epoch's result, ``"second_stage"`` saying which.

        Why both: the stage was fitted on the starting network's scores, and a fine-tuned network may score
        differently (then its own scores do better); but it also adds what the network alone never finds
        (saturated spots, dim neighbours), and dropping it made a trained epoch lose to the rescored start."""
        plain = self.validate(should_stop=should_stop)
        if self.second_stage is None:
            return plain
        with self.with_second_stage():
            staged = self.validate(should_stop=should_stop, prefer=self.second_stage_prefer)
        staged["second_stage"] = True
        return staged if self._score(staged) >= self._score(plain) else plain

    @contextmanager
    def with_second_stage(self, on: bool = True):
        """The trainer's model with the starting model's second stage on (or off) for the duration."""
        old = getattr(self.model, "rescorer", None), self.model.threshold_range
        if on and self.second_stage is not None:
            self.model.rescorer, self.model.threshold_range = self.second_stage, self.second_stage_range
        try:
            yield self.model
        finally:
            self.model.rescorer, self.model.threshold_range = old

    def _scores(self, preds, truth, thr: float) -> dict:
        per = []
        for (yx, s), gt, box in zip(preds, truth, self.val_boxes):
            keep = (s > thr) & inside(yx, box)
            per.append(evaluate(yx[keep], gt, self.cfg.val_radius))
        return {k: float(np.mean([m[k] for m in per])) for k in ("precision", "recall", "f1", "f1_integral")}

    def _distinct_images(self, preds):
        """(pred, example) once per image: several regions of one image share its candidates."""
        seen = set()
        for pred, ex in zip(preds, self.val):
            if id(ex[0]) not in seen:
                seen.add(id(ex[0]))
                yield pred, ex

    def whole_image_counts(self, val: dict) -> dict:
        """What :meth:`holds_on_whole_images` weighed, for the verdict: the candidates of these weights and of
        the start on the whole validation images, and the spots the start's counts say the images hold."""
        start = self.start_val
        return {"candidates": int(val["image_candidates"]), "start_candidates": int(start["image_candidates"]),
                "spots_estimated": round(spots_in_images(start["counts"], start["image_candidates"],
                                                         self._val_area_ratio()), 1)}

    def holds_on_whole_images(self, val: dict) -> bool:
        """Whether a trained epoch should also beat the starting model on the whole validation images, not
        only in their held-out regions (:func:`..groundtruth.calibration.model_carries_over`): a strip of a few
        dozen spots can favour weights that place far more candidates on the rest of the image than it holds."""
        start = self.start_val
        if start is None or "counts" not in start or "counts" not in val:
            return True
        return model_carries_over((start["counts"], start["image_candidates"]),
                                  (val["counts"], val["image_candidates"]), self._val_area_ratio())

    def _val_area_ratio(self) -> float:
        return image_area_ratio([(im, p, b) for (im, p), b in zip(self.val, self.val_boxes)])

    def start_margin(self) -> float:
        """What a change must gain over the starting model (F1) to replace it: one validation spot's worth. On a
        strip of a few clicks smaller differences are noise, and keeping the start never makes things worse."""
        return 1.0 / max(1, sum(len(p) for _, p in self.val))

    def _score(self, val: dict) -> float:
        """The number that picks the best epoch (cross-validated when it can be, see :meth:`validate`)."""
        return val["selection"] if self.cfg.select == "f1" and "selection" in val else val[self.cfg.select]

    def beats_start(self, val: dict) -> bool:
        """Whether an epoch replaces the starting model: it must score one held-out spot's worth better, not
        place its spots worse (F1 integral: the accuracy of the positions, what QC reports), and, where the
        held-out data falls in strips, score better on the strips taken one by one (the mean gain over them
        more than one standard error above 0), so a gain carried by one lucky patch does not count."""
        start = self.best["val"]
        if self._score(val) <= self.best["score"] + self.start_margin():
            return False
        if val.get("f1_integral", 1.0) < start.get("f1_integral", 0.0):  # found more, but placed them worse
            return False
        if "folds" not in val or "folds" not in start:
            return True
        from ..groundtruth.calibration import pooled_f1

        d = pooled_f1(np.asarray(val["folds"]).T) - pooled_f1(np.asarray(start["folds"]).T)
        return len(d) > 1 and float(d.mean() - d.std(ddof=1) / np.sqrt(len(d))) > 0

    def consider_start(self, val: dict) -> None:
        """Let the starting model (epoch 0, its weights as loaded) compete for best: a fine-tune never ends
        with weights that score below the ones it started from on the validation data."""
        if self.best is not None or val is None:
            return
        self.model.default_threshold = val["threshold"]
        self.start_val = val
        self.best = {"f1": val["f1"], "score": self._score(val), "epoch": 0, "threshold": val["threshold"],
                     "val": val, "second_stage": self.second_stage is not None,
                     "state": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}
        self._save_best(val, 0)

    def _save_best(self, val: dict, epoch: int) -> None:
        if self.best_path is not None:
            with self.with_second_stage(bool(self.best.get("second_stage"))):
                self.checkpoints.save(self.model, self.best_path, card=self.card(val, epoch))


__all__ = ["THRESHOLDS", "EpochJudge"]
