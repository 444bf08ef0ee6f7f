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
                    min_distance: int = 1, percentiles=None, speed: str = "exact", threads: int | None = None):
    """Load the model (cached by source and device), then detect; yields Progress, returns a result.

    ``threads``: torch CPU threads (None: the idle cores, :func:`core.device.default_threads`).
    ``percentiles`` (low, high): other normalisation percentiles for a percentile-normalised model (others
    ignore them); the result names the model as loaded. ``model_cache`` is a dict owned by the caller; a
    loaded model is put there so the next run on the same
    model does not read the weights again.
    """
    from ..core.device import use_threads

    use_threads(threads)  # in this (worker) thread: torch's CPU thread count is set per thread
    key = (model_source if isinstance(model_source, str) else id(model_source), str(device))
    model = model_cache.get(key) if model_cache is not None else None
    if model is None:
        yield Progress(0, 1, "loading the model…")
        model = load_model(model_source, device=device)
        if model_cache is not None:
            model_cache.clear()  # keep one model in memory, not every model ever used
            model_cache[key] = model
    used = model
    if percentiles is not None and "percentiles" in model.normalization():  # a percentile-normalised model
        used = model.with_percentiles(*percentiles)
    dets = yield from detect_iter(image, used, threshold, axes=axes, tile_size=tile_size,
                                  keep_maps=keep_maps, device=device, augment=augment,
                                  min_distance=min_distance, speed=speed, contrast=True)  # the live floor slider
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
