"""Training and fine-tuning of spot models (Piscis; DeepSpot fine-tuning), for the CLI and the widgets alike.

``Trainer.iter_fit()`` is a generator that yields a :class:`TrainEvent` after every step and epoch, so a
napari ``thread_worker`` can show progress and stop between steps; ``fit()`` runs it to the end. The
network being trained is always a deep copy: the model a user has loaded is never modified, and a stop
or a crash leaves only complete files behind (checkpoints are written to a temporary file and renamed).

Schedule (Piscis paper 4.3.2 / piscis 1.1.0): SGD with Nesterov momentum, linear warm-up, constant, then
step decay (x ``decay_factor``, ``decay_steps`` times over the last ``decay_fraction`` of training). The
learning rate is set per step from the fraction of training done, so short runs get the same shape.
Fine-tuning uses Adam at a small constant rate. After each epoch the model runs :func:`detect` on the
validation images, the score threshold that maximises the mean F1 there is chosen, and the best epoch
(by that F1, or by the F1 integral with ``select="f1_integral"``) is kept, with its threshold, as the
``best`` checkpoint. With ``ema`` set, an exponential moving average of the weights is what gets
validated, checkpointed and returned (training goes on from the raw weights, which ``last`` also keeps
for resuming). The checkpoint files and resuming are :mod:`.checkpoints`; the average, :mod:`.weight_average`;
BatchNorm recalibration after each epoch, :mod:`.batchnorm`; validating an epoch and keeping the best,
:mod:`.epoch_judge`.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..common.device import select_device
from ..common.steps import run_steps
from ..errors import Cancelled, SpotDetectError
from ..models.base import ModelInfo
from . import checkpoints
from .augment import random_augment
from .batchnorm import recalibrate_batchnorm, train_mode
from .config import TrainConfig, TrainEvent, TrainResult, lr_factor
from .epoch_judge import EpochJudge
from .examples import checked_pairs, pairs_from_folder, planes_with_spots, split_examples
from .trainable import recipe_for
from .weight_average import WeightAverage


class Trainer(EpochJudge):
    """Train (from a :class:`PiscisConfig`) or fine-tune (a loaded Piscis or DeepSpot model) on spots.

    Args:
        model: a ``PiscisConfig`` (train from scratch), or a ``PiscisModel`` or ``DeepSpotModel`` (copied,
            never modified). How each is fed, scored and rebuilt is its :mod:`.trainable` recipe.
        train: (image, spots) pairs; spots are (N, 2) y/x arrays or DataFrames with y, x columns.
        val: validation pairs; without them validation is on the training examples (reported in the card):
            the caller holds data out (:func:`.examples.split_examples`; fine-tuning: ``iter_finetune``).
            Items of either may carry a region ``(y0, x0, y1, x1)``: the whole image is normalised, only
            the region is trained on and scored (see :mod:`.regions`).
        config: :class:`TrainConfig`.
        out_dir, name: where ``{name}_best.pt`` and ``{name}_last.pt`` go (nothing is written if None).
        stop: a ``threading.Event`` or a callable returning True to stop between steps.
        resume: continue from ``{name}_last.pt`` in ``out_dir`` if it exists.
        data_info: a description of the training data for the model card.
    """

    def __init__(self, model, train, val=None, config: TrainConfig | None = None, *, out_dir=None,
                 name: str = "model", stop=None, resume: bool = False, data_info: dict | None = None):
        self.cfg = config or TrainConfig()
        c = self.cfg
        c.check()
        train, train_boxes, val, val_boxes = checked_pairs(train, val)
        self.val_note = "given"
        if not val:
            val, val_boxes = list(train), list(train_boxes)
            self.val_note = "the training examples themselves (no held-out data)"
        self.train_raw, self.val, self.val_boxes = train, val, val_boxes
        torch.manual_seed(c.seed)  # a new network's initial weights
        self.recipe, self.mode = recipe_for(model, c.loss, c.l2_weight, c.normalization)
        self.device = select_device(c.device)  # None/"auto": the best device here, as the settings check said
        if c.teacher is not None:
            self.recipe.teacher = _teacher(c, self.recipe, self.device)
        # a region is normalised with its whole image (as detection sees it), then cut out: outside is unknown
        self.train = [_cut(self.recipe.prepare(im), pts, box) for (im, pts), box in zip(train, train_boxes)]
        self.base_card: dict = {}
        if self.mode == "finetune":
            self.base_card = {"base_model": model.info.name, "base_model_sha256": model.info.sha256,
                              "base_model_source": model.info.source}
        net = self.recipe.net
        info = ModelInfo(name=name, arch=self.recipe.arch)
        self.net = net.to(self.device)
        self.frozen_bn = self.recipe.freeze_batchnorm or c.freeze_encoder
        if c.freeze_encoder:
            encoder = getattr(getattr(net, "fpn", None), "encoder", None)
            if encoder is None or self.mode != "finetune":
                raise SpotDetectError("freeze_encoder fine-tunes a trained Piscis-architecture model.",
                                      "leave freeze_encoder off for other models and for training from scratch.")
            for p in encoder.parameters():
                p.requires_grad_(False)
        base_tile = model.tile_size if self.mode == "finetune" else (256, 256)
        tile = (c.tile_size, c.tile_size) if c.tile_size else base_tile
        self.model = self.recipe.wrap(self.net, info, tile, None, self.device)
        #: the starting model's second stage (:mod:`..detection.rescore`): each epoch is validated with it and
        #: without it, and the better competes (:meth:`validate_epoch`)
        self.second_stage = getattr(model, "rescorer", None) if self.mode == "finetune" else None
        self.second_stage_range = tuple(model.threshold_range) if self.second_stage is not None else None
        self.second_stage_prefer = float(model.default_threshold) if self.second_stage is not None else 0.5
        self.opt = self._optimizer()
        self.average = WeightAverage(self.net, c.ema) if c.ema else None
        self.checkpoints = checkpoints.Checkpoints(out_dir, name)
        self.out_dir, self.name = self.checkpoints.out_dir, name
        self.stop = stop
        self.data_info = data_info or {}
        self.history: list[dict] = []
        self.best: dict | None = None  # {"f1", "epoch", "threshold", "state"}
        #: the starting model's validation (epoch 0, :meth:`consider_start`): what a trained epoch must also beat
        #: on the whole images; None when the run has no epoch 0 (training from scratch, a resumed run)
        self.start_val: dict | None = None
        self.start_epoch = 1
        self.steps_per_epoch = c.steps_per_epoch or max(1, len(self.train) // c.batch_size)
        if self.out_dir is not None:
            self.checkpoints.prepare(self.net)
        if resume and self.last_path is not None and self.last_path.exists():
            checkpoints.resume(self)

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def best_path(self) -> Path | None:
        return self.checkpoints.best_path

    @property
    def last_path(self) -> Path | None:
        return self.checkpoints.last_path

    def _optimizer(self):
        c = self.cfg
        params = [p for p in self.net.parameters() if p.requires_grad]
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay)
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)

    def _should_stop(self) -> bool:
        s = self.stop
        if s is None:
            return False
        if isinstance(s, threading.Event):
            return s.is_set()
        return bool(s())

    # -- data ----------------------------------------------------------------------------------------
    def _batch(self, rng: np.random.Generator):
        c = self.cfg
        imgs, targets = [], []
        intensity_p = 0.5 if self.recipe.intensity_augment else 0.0
        while len(imgs) < c.batch_size:
            for _ in range(10):  # crops without spots teach SmoothF1 nothing: draw again (as piscis)
                img, pts = self.train[rng.integers(len(self.train))]
                if c.augment:
                    x, p = random_augment(img, pts, (c.crop, c.crop), rng, intensity_p=intensity_p,
                                          intensity=self.recipe.intensity_range)
                else:
                    x, p = _center(img, pts, c.crop)
                if len(p):
                    break
            imgs.append(x)
            targets.append(self.recipe.targets(x, p))
        dev = self.device
        x = torch.from_numpy(np.stack(imgs)[:, None]).to(dev)
        target = {k: torch.from_numpy(np.stack([t[k] for t in targets])).to(dev) for k in targets[0]}
        return x, target

    def recalibrate_bn(self, rng: np.random.Generator, n_batches: int | None = None) -> None:
        """Re-estimate BatchNorm statistics on inference-like tiles after an epoch (see :mod:`.batchnorm`)."""
        n_batches = self.cfg.bn_batches if n_batches is None else n_batches
        if n_batches <= 0 or self.frozen_bn:
            return
        recalibrate_batchnorm(self.net, self.model, self.train_raw, rng, n_batches, self.cfg.batch_size,
                              self.device, self._should_stop)

    def _train_mode(self) -> None:
        train_mode(self.net, self.frozen_bn)

    # -- model card ----------------------------------------------------------------------------------
    def card(self, val: dict | None, epoch: int) -> dict:
        from ... import __version__

        return {"trained_with": f"napari-spotdetect {__version__}", "mode": self.mode,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "epoch": epoch, "epochs": self.cfg.epochs, "steps_per_epoch": self.steps_per_epoch,
                "train_config": asdict(self.cfg), "n_train_images": len(self.train), "n_val_images": len(self.val),
                "validation_data": self.val_note, "validation": val or {}, "training_data": self.data_info,
                **self.base_card}

    def _averaged(self):
        """The weight average swapped in (yielding the raw state to restore); nothing without EMA."""
        return self.average.swapped_in(self.net) if self.average is not None else nullcontext()

    # -- the loop ------------------------------------------------------------------------------------
    def iter_fit(self):
        """Yield :class:`TrainEvent` s; return a :class:`TrainResult` (``StopIteration.value``)."""
        c = self.cfg
        spe, total = self.steps_per_epoch, c.epochs * self.steps_per_epoch
        self._train_mode()
        hint = self.recipe.lr_hint
        advice = (f"{self.recipe.arch} fine-tunes best at a learning rate of {hint:g} or less (this run: {c.lr:g})"
                  if hint is not None and c.lr > hint else "")
        yield TrainEvent("start", self.start_epoch, c.epochs, 0, spe, message=f"{self.mode}: {len(self.train)} "
                         f"training / {len(self.val)} validation images, {c.epochs} epochs x {spe} steps"
                         + (f"; {advice}" if advice else ""), advice=advice)
        for epoch in range(self.start_epoch, c.epochs + 1):
            rng = np.random.default_rng([c.seed, epoch])  # per-epoch stream: resuming repeats the same data
            torch.manual_seed(c.seed * 100003 + epoch)
            sums: dict[str, float] = {}
            t0 = time.perf_counter()
            for step in range(1, spe + 1):
                if self._should_stop():
                    yield from self._stopped(epoch, step)
                    return self._result(stopped=True)
                lr, parts = self._step(rng, epoch, step, ((epoch - 1) * spe + step - 1) / total)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                yield TrainEvent("step", epoch, c.epochs, step, spe, lr, parts,
                                 best_f1=self.best["f1"] if self.best else None)
            if self._should_stop():
                yield from self._stopped(epoch, spe)
                return self._result(stopped=True)
            with self._averaged() as raw_state:
                try:
                    self.recalibrate_bn(np.random.default_rng([c.seed, epoch, 1]))
                    val = self.validate_epoch(should_stop=self._should_stop) if self.val else None
                    stopped = False
                except Cancelled:
                    self._train_mode()
                    stopped = True
                if not stopped:
                    self._end_epoch(epoch, lr, sums, val, raw_state, t0)
            if stopped:  # after the averaged weights are swapped out again: the network is back to its raw state
                yield from self._stopped(epoch, spe)
                return self._result(stopped=True)
            losses = {k: v / spe for k, v in sums.items()}
            yield TrainEvent("epoch", epoch, c.epochs, spe, spe, lr, losses, val,
                             best_f1=self.best["f1"] if self.best else None,
                             message=f"epoch {epoch}/{c.epochs}: loss {losses.get('loss', float('nan')):.4f}"
                             + (f", val F1 {val['f1']:.3f} (threshold {val['threshold']:.2f})" if val else ""))
        result = self._result(stopped=False)
        yield TrainEvent("done", c.epochs, c.epochs, spe, spe, best_f1=self.best["f1"] if self.best else None,
                         message=f"done; best validation F1 {self.best['f1']:.3f} at epoch {self.best['epoch']}"
                         if self.best else "done")
        return result

    def _step(self, rng: np.random.Generator, epoch: int, step: int, done: float) -> tuple[float, dict]:
        """One optimiser step at fraction ``done`` of training: (its learning rate, its loss parts)."""
        c = self.cfg
        lr = c.lr * lr_factor(done, c.warmup_fraction, c.decay_fraction, c.decay_steps, c.decay_factor)
        for group in self.opt.param_groups:
            group["lr"] = lr
        x, target = self._batch(rng)
        loss, parts = self.recipe.loss(x, target)
        if not bool(torch.isfinite(loss)):
            raise SpotDetectError(
                f"Training diverged: the loss became {float(loss)} at epoch {epoch}, step {step} "
                f"(learning rate {lr:g}); the last checkpoint written is kept.",
                "train again with a smaller learning rate (e.g. a tenth of this one).")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), c.grad_clip)
        self.opt.step()
        if self.average is not None:
            self.average.update(self.net)
        return lr, parts

    def _end_epoch(self, epoch, lr, sums, val, raw_state, t0) -> None:
        """Record the epoch, keep the best weights, write the checkpoints (with the averaged weights in)."""
        spe = self.steps_per_epoch
        losses = {k: v / spe for k, v in sums.items()}
        rec = {"epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in losses.items()},
               **({f"val_{k}": v for k, v in val.items()} if val else {}),
               "seconds": time.perf_counter() - t0}
        self.history.append(rec)
        wins = val is not None and (self.best is None or (
            self.beats_start(val) if self.best["epoch"] == 0 else self._score(val) > self.best["score"]))
        if wins and not self.holds_on_whole_images(val):
            wins, rec["refused_on_whole_image"] = False, self.whole_image_counts(val)
        if wins:
            self.model.default_threshold = val["threshold"]
            self.best = {"f1": val["f1"], "score": self._score(val), "epoch": epoch,
                         "threshold": val["threshold"], "val": val, "second_stage": bool(val.get("second_stage")),
                         "state": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}
            self._save_best(val, epoch)
        checkpoints.save_last(self, epoch, val, raw_state)

    def _stopped(self, epoch, step):
        yield TrainEvent("stopped", epoch, self.cfg.epochs, step, self.steps_per_epoch,
                         best_f1=self.best["f1"] if self.best else None,
                         message="stopped; the last complete checkpoint is kept")

    def _result(self, stopped: bool) -> TrainResult:
        """A fresh model with the best weights (the trainer's own network keeps training state)."""
        net = self.recipe.fresh_net()
        if self.best is not None:
            net.load_state_dict(self.best["state"])
            thr = self.best["threshold"]
            card = self.card(self.best.get("val"), self.best["epoch"])
        else:
            with self._averaged():
                net.load_state_dict(self.net.state_dict())
            thr = self.model.default_threshold
            card = self.card(None, len(self.history))
        info = ModelInfo(name=self.name, arch=self.recipe.arch, source=str(self.best_path or ""), card=card)
        model = self.recipe.wrap(net, info, self.model.tile_size, thr, self.device)
        if self.best is not None and self.best.get("second_stage") and self.second_stage is not None:
            model.rescorer, model.threshold_range = self.second_stage, self.second_stage_range
        return TrainResult(model, self.best_path if self.best else None, self.last_path, self.history, stopped)

    def fit(self, progress=None) -> TrainResult:
        """Run :meth:`iter_fit` to the end; ``progress`` is called with every event."""
        return run_steps(self.iter_fit(), progress)


def _teacher(c: TrainConfig, recipe, device):
    from ..models.zoo import load_model
    from .distill import Teacher

    if not hasattr(recipe, "teacher"):
        raise SpotDetectError("Only a Piscis-architecture network can be taught by a teacher's maps.",
                              "leave the teacher out for DeepSpot models.")
    return Teacher(load_model(c.teacher, device=device), recipe.adjustment, c.distill_weight)


def _cut(prepared: np.ndarray, pts: np.ndarray, box) -> tuple:
    """The region of an already normalised image, with its spots moved into the region's pixels."""
    if box is None:
        return prepared, pts
    y0, x0, y1, x1 = box
    return np.ascontiguousarray(prepared[y0:y1, x0:x1]), pts - np.array([y0, x0], dtype=np.float64)


def _center(img, pts, crop):
    """Centre crop (or zero-pad) to crop x crop, for training without augmentation."""
    from .augment import warp

    return warp(img, pts, (crop, crop), np.eye(2), snap=True)


__all__ = ["Cancelled", "TrainConfig", "TrainEvent", "TrainResult", "Trainer", "lr_factor", "pairs_from_folder",
           "planes_with_spots", "split_examples"]
