"""The one set of fine-tuning defaults (CLI flags, the napari panel, the API); no torch, so the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass

from .examples import VAL_SHARE


@dataclass(frozen=True)
class FinetuneDefaults:
    """The fine-tuning settings every face starts from (CLI flags, the napari panel, the API)."""

    epochs: int = 10
    steps_per_epoch: int = 10
    lr: float = 1e-3  # Adam; DeepSpot models want 1e-4 or less (the trainer warns)
    val_share: float = VAL_SHARE
    batch_size: int = 4
    crop: int = 128
    loss: str = "smoothf1"
    l2_weight: float = 0.25
    radius: float = 1.0  # match radius (px) of the validation F1: the QC panel's and `evaluate`'s default
    seed: int = 0
    freeze_encoder: bool = False  # train only the decoder and heads (the fast preset)


DEFAULTS = FinetuneDefaults()
#: one region in about a minute of CPU: the decoder and heads only (no backward pass through the encoder, no
#: BatchNorm recalibration: 0.36 against 0.93 CPU s a step, 0 against 4 s an epoch, measured on the bundled
#: model), smaller crops, 40 steps (benchmarks/bench_hitl.py --real --clicks measures the gain)
FAST = FinetuneDefaults(epochs=5, steps_per_epoch=8, crop=96, freeze_encoder=True)
