"""Fine-tuning a loaded model on a few annotated images: the one entry point of the CLI, the API and napari.

``iter_finetune`` is a generator: it loads the starting model, measures it, trains (a copy: the model in
use is never changed), saves the best epoch with its tuned threshold and a model card, and yields a
:class:`FinetuneEvent` (step, epoch, a positive loss, validation F1, time left) along the way, so a napari
worker can draw progress and a script can print it; ``finetune`` runs it to the end. The defaults live in
one frozen :class:`FinetuneDefaults`; every face reads them from :data:`DEFAULTS`.

The "before" score is the starting model's at its own threshold on the validation data: what detecting
with it and comparing against the truth (the QC panel, ``spotdetect evaluate``) reports. Epoch 0 is the
starting model at the threshold :func:`..groundtruth.calibration.calibrate` picks from every annotated pixel
(its own unless another is clearly better on clicks it was not chosen on); it competes for best, and a
trained epoch replaces it only when clearly better on the held-out data strip by strip
(:meth:`.train.Trainer.beats_start`): otherwise the starting weights are kept (``FinetuneResult.kept_start``).
Each epoch's F1 is at the threshold tuned on held-out data (a strip of a single image or region, see
:func:`.examples.split_examples`), which the saved model then carries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.steps import run_steps
from ..errors import Cancelled, SpotDetectError
from ..models.base import SpotModel
from .config import TrainConfig, TrainEvent, finetune_config
from .examples import examples_from_arrays, split_examples
from .finetune_defaults import DEFAULTS, FAST, FinetuneDefaults
from .train import Trainer

#: losses whose classification part is -F1 (or -Dice) in [-1, 0]: shown as 1 + loss, which falls to 0
_NEGATIVE_LOSSES = ("smoothf1", "dice")


def display_loss(losses: dict, kind: str) -> float | None:
    """The step's loss as a positive number that falls towards 0 (SmoothF1 and Dice are -F1 + L2 terms)."""
    v = losses.get("loss")
    if v is None:
        return None
    return float(v) + (1.0 if kind in _NEGATIVE_LOSSES else 0.0)


@dataclass
class FinetuneEvent:
    """Progress of a fine-tuning run.

    ``kind``: "loading", "measuring", "start", "step", "epoch", "stopped" or "done". ``loss`` is positive
    (:func:`display_loss`); ``val_f1`` is the validation F1 at :attr:`FinetuneDefaults.radius` (on
    "start": the starting model's); ``eta_s`` the estimated seconds left (None until a few steps ran).
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    val_f1: float | None = None
    val: dict | None = None
    best_f1: float | None = None
    eta_s: float | None = None
    message: str = ""
    advice: str = ""

    @property
    def done_steps(self) -> int:
        return max(0, (self.epoch - 1) * self.steps + self.step)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps


@dataclass
class FinetuneResult:
    """The outcome: the best model (None if no epoch finished), its file, and the starting model's scores."""

    model: SpotModel | None
    path: Path | None
    stopped: bool
    history: list
    before: dict | None = None  # the starting model's scores at its own threshold on the validation data
    n_train: int = 0
    n_val: int = 0
    #: no epoch beat the starting model on the validation data: its own weights were kept (with the
    #: threshold chosen there)
    kept_start: bool = False
    #: whether the saved model scores with the starting model's second stage (None: the start had none)
    second_stage: bool | None = None

    def verdict(self) -> str:
        """One sentence for the CLI and the panel: what was kept, and how it compares with the start."""
        if self.model is None:
            return "Stopped before the first epoch ended: nothing was saved."
        val = self.model.info.card.get("validation") or {}
        start = f" (the starting model at its own threshold: {self.before['f1']:.2f})" if self.before else ""
        if self.kept_start:
            return (f"{'Stopped early. ' if self.stopped else ''}No epoch beat the starting model on the "
                    f"validation data, so its weights were kept: "
                    f"validation F1 {val.get('f1', float('nan')):.2f} at threshold "
                    f"{self.model.default_threshold:.3g}{start}.{self._refused()}")
        stage = {None: "", True: " It scores with the starting model's second stage (its proposals find saturated "
                 "and dim spots the network misses), which did better on the validation data.",
                 False: " Its network's own scores did better on the validation data than the starting model's "
                 "second stage, so it detects without that stage (spots only the stage found, such as "
                 "saturated ones, may be missed: check them)."}[self.second_stage]
        return (f"{'Stopped early; kept' if self.stopped else 'Saved'} the best epoch "
                f"({self.model.info.card.get('epoch', '?')}): validation F1 {val.get('f1', float('nan')):.2f}"
                f"{start}; its tuned threshold is {self.model.default_threshold:.3g}.{stage}{self._refused()}"
                f"{self._why_not_the_top_of_the_plot()}")

    def _why_not_the_top_of_the_plot(self) -> str:
        """Why a later epoch whose plotted F1 is higher was not kept: the plot shows F1 at a threshold tuned on
        the validation spots themselves, the choice uses it cross-validated (empty when they agree)."""
        best = self.model.info.card.get("epoch")
        scored = [h for h in self.history if "val_f1" in h and "val_selection" in h]
        if not scored or best is None:
            return ""
        top = max(scored, key=lambda h: h["val_f1"])
        mine = next((h for h in scored if h["epoch"] == best), None)
        if top["epoch"] == best or mine is None or top["val_f1"] <= mine["val_f1"] or \
                top["val_selection"] > mine["val_selection"] or top.get("refused_on_whole_image"):
            return ""
        return (f" Epoch {top['epoch']} reached F1 {top['val_f1']:.2f} in the plot, at a threshold tuned on the "
                f"same validation spots; with the threshold chosen on other spots (cross-validated, what picks "
                f"the best epoch) it scored {top['val_selection']:.2f} against {mine['val_selection']:.2f}.")

    def _refused(self) -> str:
        """The epochs that won the held-out strip but not the whole image, in words (empty if none)."""
        refused = [h for h in self.history if h.get("refused_on_whole_image")]
        if not refused:
            return ""
        r = refused[-1]["refused_on_whole_image"]
        which = ", ".join(str(h["epoch"]) for h in refused)
        return (f" Epoch{'s' if len(refused) > 1 else ''} {which} scored better on the held-out strip but "
                f"{'were' if len(refused) > 1 else 'was'} not taken: on the whole image "
                f"{'they' if len(refused) > 1 else 'it'} would place {r['candidates']} spots where the starting "
                f"model places {r['start_candidates']} and the annotation suggests about "
                f"{r['spots_estimated']:.0f}; annotate a larger or second region if the image holds more.")


class _Eta:
    """Seconds left from the fraction done so far; None until 5 % and 2 s are done (early guesses mislead)."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, fraction: float) -> float | None:
        elapsed = time.perf_counter() - self.t0
        if fraction < 0.05 or fraction >= 1.0 or elapsed < 2.0:
            return None
        return elapsed * (1.0 - fraction) / fraction


def _event(ev: TrainEvent, kind_of_loss: str, eta: _Eta, before: dict | None) -> FinetuneEvent:
    val = before if ev.kind == "start" else ev.val
    return FinetuneEvent(ev.kind, ev.epoch, ev.epochs, ev.step, ev.steps,
                         display_loss(ev.losses, kind_of_loss), (val or {}).get("f1"), val, ev.best_f1,
                         eta(ev.fraction) if ev.kind in ("step", "epoch") else None, ev.message, ev.advice)


def iter_finetune(model, examples, val=None, config: TrainConfig | None = None, *, out, stop=None,
                  val_share: float | None = None, data_info: dict | None = None, resume: bool = False,
                  half: bool = False):
    """Fine-tune ``model``; yields :class:`FinetuneEvent` s, returns a :class:`FinetuneResult`.

    Args:
        model: a loaded Piscis or DeepSpot model (used as it is, never changed), or anything
            :func:`~.models.zoo.load_model` takes ("default", a file, a DeepSpot folder).
        examples: (2-D image, (N, 2) y/x) pairs (see :mod:`.examples` for stacks and folders).
        val: validation pairs; None holds out ``val_share`` (default :data:`DEFAULTS`) of ``examples`` (of
            its area for a single example); a share of 0 validates on the training examples themselves.
            This is the one place the split is made. Items may carry a region (see :mod:`.regions`).
        config: a :class:`TrainConfig` (default :func:`finetune_config`). Its ``device`` is the one device
            setting: a model given by name or file is loaded there, and the trainer trains there.
        out: the model file to write; checkpoints go to ``<out stem>_checkpoints`` beside it (for ``resume``).
        stop: a ``threading.Event`` or callable; checked between steps and validation images.
        half: store the weights in half precision.
    """
    from ..common.device import select_device
    from ..models.zoo import load_model
    from ..weights.native import save_model

    cfg = config or finetune_config()
    out = Path(out).expanduser()
    if out.is_dir():
        raise SpotDetectError(f"{out} is a folder.", "give the model file to write, e.g. my_model.pt.")
    yield FinetuneEvent("loading", message="loading the model…")
    # a model object is used as it is: SpotModel.to() moves it in place, and it may be the one in use
    base = model if isinstance(model, SpotModel) else load_model(model, device=select_device(cfg.device))
    examples = list(examples)
    if val is None:  # None after the split: the trainer validates on the training examples and says so
        examples, val = split_examples(examples, DEFAULTS.val_share if val_share is None else val_share, cfg.seed)
    trainer = Trainer(base, examples, val, cfg, out_dir=out.parent / f"{out.stem}_checkpoints", name=out.stem,
                      stop=stop, resume=resume, data_info=data_info)
    yield FinetuneEvent("measuring", message="measuring the starting model on the validation images…")
    try:
        # epoch 0 competes for best: the starting model at the threshold calibration picks from every annotated
        # pixel (none was trained on yet), scored on the held-out data with its "before" (its own threshold:
        # what QC reports) from the same detections
        start = None if resume and trainer.best is not None else _validate_start(trainer, base, examples + (val or []))
        before = None
        if start is not None:
            before = {**start.pop("at"), "radius": float(cfg.val_radius)}
        trainer.consider_start(start)
    except Cancelled:
        yield FinetuneEvent("stopped", message="stopped before training began; nothing was saved")
        return FinetuneResult(None, None, True, [], None, len(trainer.train), len(trainer.val))
    eta = _Eta()
    events = trainer.iter_fit()
    while True:
        try:
            ev = next(events)
        except StopIteration as end:
            res = end.value
            break
        yield _event(ev, cfg.loss, eta, before)
    n = dict(n_train=len(trainer.train), n_val=len(trainer.val))
    if res.best_path is None or not res.history:  # stopped before an epoch ended: nothing to offer
        return FinetuneResult(None, None, res.stopped, res.history, before, **n)
    kept_start = trainer.best is not None and trainer.best["epoch"] == 0
    res.model.info.card["validation_before"] = before
    res.model.info.card["kept_starting_weights"] = kept_start
    path = save_model(res.model, out, half=half)
    res.model.info.source = str(path)
    staged = None if getattr(base, "rescorer", None) is None else getattr(res.model, "rescorer", None) is not None
    return FinetuneResult(res.model, path, res.stopped, res.history, before, kept_start=kept_start,
                          second_stage=staged, **n)


def _validate_start(trainer: Trainer, base: SpotModel, annotated: list) -> dict:
    """Epoch 0 is the starting model as the user has it: with its second stage (:mod:`..models.rescorer`),
    whose scores its own threshold is in (later epochs are validated with and without it, see
    :meth:`.train.Trainer.validate_epoch`).

    Its threshold is what :func:`..groundtruth.calibration.calibrate` chooses from all the annotated examples
    (training and held-out: the starting weights learnt from none of them), which keeps the model's own
    threshold unless another is clearly better on spots it was not chosen on; a threshold tuned on a held-out
    strip alone moved on noise and ended below the start on the rest of the image."""
    own = float(base.default_threshold)
    threshold = _calibrated_threshold(trainer, base, annotated)
    with trainer.with_second_stage():
        return trainer.validate(should_stop=trainer._should_stop, at=own, prefer=own, fixed=threshold)


def _calibrated_threshold(trainer: Trainer, base: SpotModel, annotated: list) -> float:
    from ..groundtruth.calibration import calibrate

    own = float(base.default_threshold)
    exs = [ex if len(ex) == 3 else (ex[0], ex[1], None) for ex in annotated
           if isinstance(ex, (tuple, list)) and len(ex) in (2, 3) and np.ndim(ex[0]) == 2]
    if not exs:
        return own
    try:
        return calibrate(base, exs, radius=trainer.cfg.val_radius, should_stop=trainer._should_stop).threshold
    except SpotDetectError:  # e.g. no annotated spot inside a region: the model's own threshold
        return own


def finetune(model, examples, val=None, config: TrainConfig | None = None, *, out, progress=None,
             **kw) -> FinetuneResult:
    """Run :func:`iter_finetune` to the end; ``progress`` is called with every :class:`FinetuneEvent`."""
    return run_steps(iter_finetune(model, examples, val, config, out=out, **kw), progress)


def examples_from_images(images, points) -> list:
    """Training pairs from parallel lists of image arrays and point arrays (one coordinate per image axis)."""
    images, points = list(images), list(points)
    if len(images) != len(points):
        raise SpotDetectError(f"{len(images)} images but {len(points)} point arrays.",
                              "give one array of points per image.")
    return examples_from_arrays(zip(images, points))


__all__ = ["DEFAULTS", "FAST", "FinetuneDefaults", "FinetuneEvent", "FinetuneResult", "display_loss",
           "examples_from_images", "finetune", "finetune_config", "iter_finetune"]
