"""Thread plumbing for the widgets.

The long work is a plain generator (``detection_steps``) that yields :class:`Progress` and returns the
result, so tests and scripts can drain it without Qt. The widgets wrap it in a napari ``thread_worker``;
``worker.quit()`` stops it at the next yield, i.e. within one tile batch, and an aborted worker never
emits ``returned``, so no layer is built from a half-finished run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.common.steps import run_steps
from ..core.detection.detect import Detections, Progress, detect_iter
from ..core.detection.options import DetectOptions
from ..core.models.base import SpotModel
from ..core.models.zoo import load_model


@dataclass
class DetectionResult:
    """What the main thread needs to build layers: the detections and the model that made them."""

    detections: Detections
    model: SpotModel


def detection_steps(image, model_source, options: DetectOptions, *, model_cache: dict | None = None,
                    threads: int | None = None):
    """Load the model (cached by source and device), then detect with ``options``; yields Progress, returns a result.

    The spots get their contrast features (the panel's live floor slider needs them); the result names the
    model as loaded (``options.percentiles`` only change how the run normalises). ``model_cache`` is a dict
    owned by the caller; a loaded model is put there so the next run on the same model does not read the
    weights again. ``threads``: torch CPU threads (None: the idle cores, :func:`core.common.device.default_threads`).
    """
    from ..core.common.device import use_threads

    use_threads(threads)  # in this (worker) thread: torch's CPU thread count is set per thread
    key = (model_source if isinstance(model_source, str) else id(model_source), str(options.device))
    model = model_cache.get(key) if model_cache is not None else None
    if model is None:
        yield Progress(0, 1, "loading the model…")
        model = load_model(model_source, device=options.device)
        if model_cache is not None:
            model_cache.clear()  # keep one model in memory, not every model ever used
            model_cache[key] = model
    dets = yield from detect_iter(image, model, options.replace(contrast=True))
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
