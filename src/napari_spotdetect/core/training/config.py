"""What decides a training run and what it reports, without torch: :class:`TrainConfig` (saved in the model
card), :func:`finetune_config` (the fine-tuning defaults of every face), :class:`TrainEvent`, :class:`TrainResult`
and the learning-rate schedule. The :class:`~.train.Trainer` runs them; :mod:`.finetuning` drives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SpotDetectError
from .finetune_defaults import DEFAULTS, FAST

if TYPE_CHECKING:
    from ..models.base import SpotModel


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in the model card)."""

    epochs: int = 40
    steps_per_epoch: int | None = None  # default: one pass over the training images
    batch_size: int = 4
    crop: int = 128  # training crops are crop x crop (a multiple of 8)
    loss: str = "smoothf1"
    l2_weight: float = 0.25  # the paper's; piscis 1.1.0 uses 0.1
    optimizer: str = "sgd"  # "sgd" (from scratch) or "adam" (fine-tuning)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    warmup_fraction: float = 0.04
    decay_fraction: float = 0.4
    decay_steps: int = 10
    decay_factor: float = 0.5
    grad_clip: float | None = 5.0  # tiny CPU batches make SGD at lr 0.1 spiky; None turns it off
    augment: bool = True
    seed: int = 0
    val_radius: float = 1.0  # match radius (px) for the validation F1 and threshold tuning
    # batches of inference-sized tiles for re-estimating BatchNorm statistics after each epoch (0: off)
    bn_batches: int = 4
    tile_size: int | None = None  # inference tile of the trained model; default: the base model's, or 256
    ema: float | None = None  # decay of a moving average of the weights, validated and saved instead of the raw ones
    select: str = "f1"  # validation metric that picks the best epoch: "f1" or "f1_integral"
    # input normalisation to train with ("standardize"/"percentile"); None: the model's
    normalization: str | None = None
    device: str | None = "cpu"  # None or "auto": the best device here (CUDA, MPS, else the CPU)
    # fine-tune only the decoder and heads: the encoder's weights and every BatchNorm statistic stay as loaded
    # (no backward pass through the encoder, no recalibration): the fast one-region preset
    freeze_encoder: bool = False
    # a Piscis-architecture model file (or zoo name) whose maps the network is also taught to reproduce
    # (:mod:`.distill`), with this weight against the annotations' loss
    teacher: str | None = None
    distill_weight: float = 1.0

    def check(self) -> None:
        """Refuse settings no run can use, with the fix (the :class:`~.train.Trainer` calls it first)."""
        c = self
        if c.crop % 8 or c.crop < 16:
            raise SpotDetectError(f"Training crop {c.crop} is not a multiple of 8 (>= 16).", "use e.g. 128 or 256.")
        check_run_settings(c)
        if c.optimizer not in ("sgd", "adam"):
            raise SpotDetectError(f"Unknown optimizer {c.optimizer!r}.", "use 'sgd' or 'adam'.")
        if c.select not in ("f1", "f1_integral"):
            raise SpotDetectError(f"Unknown selection metric {c.select!r}.", "use 'f1' or 'f1_integral'.")
        if c.ema is not None and not 0.0 < c.ema < 1.0:
            raise SpotDetectError(f"ema={c.ema} is not a decay in (0, 1).", "use e.g. 0.998, or None for no averaging.")
        for key, lo in (("lr", 0.0), ("l2_weight", None), ("momentum", None), ("weight_decay", None)):
            v = getattr(c, key)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (lo is not None and v <= lo):
                raise SpotDetectError(f"{key}={v!r} is not a usable value.",
                                      f"use a finite number{' above 0' if lo is not None else ' of at least 0'}, "
                                      f"e.g. lr={'0.1 (SGD) or 1e-3 (Adam)' if key == 'lr' else 0.25}.")

    @classmethod
    def finetune(cls, **kw) -> TrainConfig:
        """Defaults for adapting a trained model to a few annotated images (:func:`finetune_config`)."""
        return finetune_config(**kw)


@dataclass
class TrainEvent:
    """Progress report. ``kind``: "start", "step", "epoch", "stopped" or "done"."""

    kind: str
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    lr: float = 0.0
    losses: dict = field(default_factory=dict)
    val: dict | None = None
    best_f1: float | None = None
    message: str = ""
    advice: str = ""  # on "start": a caution about the chosen settings (also appended to the message)

    @property
    def fraction(self) -> float:
        if self.kind == "done":
            return 1.0
        return ((self.epoch - 1) + (self.step / self.steps if self.steps else 1.0)) / max(self.epochs, 1)


@dataclass
class TrainResult:
    model: SpotModel  # best weights (or last, with no validation data) with the tuned threshold
    best_path: Path | None
    last_path: Path | None
    history: list
    stopped: bool = False


def finetune_config(fast: bool = False, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` for fine-tuning: Adam at a constant rate, :data:`DEFAULTS` (``fast``:
    :data:`FAST`, decoder and heads only) unless overridden."""
    d = FAST if fast else DEFAULTS
    base = dict(optimizer="adam", lr=d.lr, epochs=d.epochs, steps_per_epoch=d.steps_per_epoch,
                batch_size=d.batch_size, crop=d.crop, loss=d.loss, l2_weight=d.l2_weight, seed=d.seed,
                val_radius=d.radius, warmup_fraction=0.0, decay_fraction=0.0, weight_decay=0.0,
                freeze_encoder=d.freeze_encoder)
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise SpotDetectError(f"Unknown fine-tuning setting(s): {', '.join(sorted(unknown))}.",
                              f"use fields of TrainConfig, e.g. {', '.join(sorted(base)[:5])}.")
    base.update(overrides)
    return TrainConfig(**base)


def lr_factor(t: float, warmup: float, decay: float, n_decay: int, factor: float) -> float:
    """Learning-rate multiplier at fraction ``t`` of training: warm-up, plateau, ``n_decay`` step decays."""
    if warmup > 0 and t < warmup:
        return max(t / warmup, 1e-3)
    start = 1.0 - decay
    if decay <= 0 or t < start:
        return 1.0
    k = min(n_decay, int((t - start) / decay * n_decay) + 1)
    return factor ** k


def check_run_settings(c) -> None:
    """The settings that need no data, checked before any data is read or made (a CLI run fails at once)."""
    from ..common.device import select_device

    for key in ("batch_size", "epochs"):
        v = getattr(c, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpotDetectError(f"{key}={v!r} is not a positive whole number.", f"use {key}=1 or more.")
    spe = c.steps_per_epoch
    if spe is not None and (isinstance(spe, bool) or not isinstance(spe, int) or spe < 1):
        raise SpotDetectError(f"steps_per_epoch={spe!r} is not a positive whole number.",
                              "use steps_per_epoch=1 or more, or leave it out for one pass over the images.")
    select_device(c.device)  # e.g. cuda on a machine without a GPU: said now, not after the data is made
