"""Thread plumbing for the widgets.

The long work is a plain generator (``detection_steps``) that yields :class:`Progress` and returns the
result, so tests and scripts can drain it without Qt. The widgets wrap it in a napari ``thread_worker``;
``worker.quit()`` stops it at the next yield, i.e. within one tile batch, and an aborted worker never
emits ``returned``, so no layer is built from a half-finished run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.detect import Detections, Progress, detect_iter
from ..core.models.base import SpotModel
from ..core.models.zoo import load_model
from ..core.steps import run_steps


@dataclass
class DetectionResult:
    """What the main thread needs to build layers: the detections and the model that made them."""

    detections: Detections
    model: SpotModel


def detection_steps(image, model_source, *, axes: str, device=None, tile_size=None, threshold=None,
                    keep_maps=True, model_cache: dict | None = None, augment: bool = False,
                    min_distance: int = 1):
    """Load the model (cached by source and device), then detect; yields Progress, returns a result.

    ``model_cache`` is a dict owned by the caller; a loaded model is put there so the next run on the same
    model does not read the weights again.
    """
    key = (model_source if isinstance(model_source, str) else id(model_source), str(device))
    model = model_cache.get(key) if model_cache is not None else None
    if model is None:
        yield Progress(0, 1, "loading the model…")
        model = load_model(model_source, device=device)
        if model_cache is not None:
            model_cache.clear()  # keep one model in memory, not every model ever used
            model_cache[key] = model
    dets = yield from detect_iter(image, model, threshold, axes=axes, tile_size=tile_size,
                                  keep_maps=keep_maps, device=device, augment=augment,
                                  min_distance=min_distance)
    return DetectionResult(dets, model)


def run_sync(gen):
    """Drain a step generator in this thread; returns (list of progress messages, result)."""
    seen = []
    result = run_steps(gen, seen.append)
    return seen, result


def start_worker(gen, *, on_yield, on_return, on_error, on_finish):
    """Run ``gen`` in a napari thread worker, connecting the handlers (called in the main thread)."""
    from napari.qt.threading import create_worker

    def steps():
        return (yield from gen)

    # errors go to on_error, which shows the user-facing message instead of a traceback
    worker = create_worker(steps, _start_thread=False, _ignore_errors=True)
    worker._spotdetect_handlers = [(worker.yielded, on_yield), (worker.returned, on_return),
                                   (worker.errored, on_error), (worker.finished, on_finish)]
    for signal, handler in worker._spotdetect_handlers:
        signal.connect(handler)
    worker.start()
    return worker


def abandon_worker(worker) -> None:
    """Ask ``worker`` to stop at its next step and cut it off from the handlers that :func:`start_worker` connected.

    For a panel that closes mid-run: its handlers would touch widgets that no longer exist.
    """
    for signal, handler in getattr(worker, "_spotdetect_handlers", ()):
        try:
            signal.disconnect(handler)
        except (TypeError, RuntimeError):  # already disconnected, or the signal's owner is gone
            pass
    worker._spotdetect_handlers = []
    try:
        worker.quit()
    except RuntimeError:
        pass


# -- fine-tuning ------------------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    """The outcome of a fine-tuning run: the best model (None if no epoch finished) and its file."""

    model: SpotModel | None
    path: object  # pathlib.Path of the saved model, or None
    stopped: bool
    history: list
    before: dict | None = None  # validation metrics of the starting model


def finetune_steps(model_source, train_pairs, val_pairs, config, *, out_dir, name: str, stop=None,
                   data_info: dict | None = None):
    """Load the starting model, fine-tune it, save the best model; yields TrainEvents, returns a FinetuneResult.

    The starting model is copied by the Trainer, so the model the detection widget uses stays as it was.
    The final file ``<out_dir>/<name>.pt`` holds the best epoch's weights, its tuned threshold and a model
    card; a stop before the first epoch ends saves nothing (there is no validated model to keep).
    """
    from pathlib import Path

    from ..core.train import Trainer
    from ..core.weights.native import save_model

    yield Progress(0, 1, "loading the model…")
    # a model object is used as it is: SpotModel.to() moves it in place, and it may be the one in use
    base = model_source if isinstance(model_source, SpotModel) else load_model(model_source, device="cpu")
    # Piscis and DeepSpot models fine-tune; the Trainer explains why any other cannot
    out_dir = Path(out_dir)
    trainer = Trainer(base, train_pairs, val_pairs or None, config, out_dir=out_dir / f"{name}_checkpoints",
                      name=name, stop=stop, data_info=data_info)
    yield Progress(0, 1, "measuring the starting model on the validation images…")
    before = trainer.validate()  # the "before" point of the plot, and of the user's decision
    events = trainer.iter_fit()
    while True:
        try:
            ev = next(events)
        except StopIteration as end:
            res = end.value
            break
        if ev.kind == "start":
            ev.val = before
        yield ev
    if res.best_path is None:  # stopped before any validation: nothing trustworthy to offer
        return FinetuneResult(None, None, res.stopped, res.history, before)
    res.model.info.card["validation_before"] = before
    path = save_model(res.model, out_dir / f"{name}.pt")
    res.model.info.source = str(path)
    return FinetuneResult(res.model, path, res.stopped, res.history, before)
