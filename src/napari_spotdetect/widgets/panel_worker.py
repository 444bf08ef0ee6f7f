"""One background job at a time for a panel: start, progress bar, buttons, status line, cancel, errors, closing.

Every panel that runs long work repeated the same life cycle (disable the button, show the bar, report
progress, stop on Cancel, turn an error into a message the user can act on, tidy up, stop when the panel
closes). This holds it once; the panel says what to run and what to do with the result.
"""

from __future__ import annotations

import logging

from napari.utils.notifications import show_error

from ..core.errors import SpotDetectError
from ._ui import disconnect_all, show_status
from .workers import abandon_worker, start_worker

log = logging.getLogger(__name__)


class PanelWorker:
    """Runs step generators (yielding objects with ``done``/``total``) for one panel, one at a time.

    ``buttons`` are disabled while a job runs, ``cancel_button`` is enabled only then. ``notify_every_error``
    also pops up the errors that name their fix (:class:`SpotDetectError`), not only unexpected ones.
    """

    def __init__(self, status, progress=None, buttons=(), what: str = "The work", *, cancel_button=None,
                 notify_every_error: bool = False):
        self._status, self._progress, self._buttons, self._what = status, progress, tuple(buttons), what
        self._cancel_button, self._notify_every_error = cancel_button, notify_every_error
        self.worker = None
        self.error: str | None = None
        self.cancelled = False
        self._on_step = self._on_end = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, gen, on_return, message: str, *, on_step=None, on_end=None):
        """Run ``gen`` in a thread; ``on_return(result)`` runs in the main thread unless it failed or stopped.

        ``on_step(step)`` follows each step, after the bar moved for steps with ``done``/``total`` (others, e.g.
        training events, leave the bar to ``on_step``); ``on_end()`` follows every job's end (done, failed or
        cancelled) once the buttons are back.
        """
        if self.running:
            return None
        self.error, self.cancelled = None, False
        self._on_step, self._on_end = on_step, on_end
        for b in self._buttons:
            b.enabled = False
        if self._cancel_button is not None:
            self._cancel_button.enabled = True
        if self._progress is not None:
            self._progress.visible = True
            self._progress.max, self._progress.value = 1, 0
        show_status(self._status, message)
        self.worker = start_worker(gen, on_yield=self._on_yield,
                                   on_return=lambda res: self._returned(on_return, res),
                                   on_error=self._on_error, on_finish=self._on_finish)
        return self.worker

    def cancel(self, message: str) -> None:
        """Stop the job at its next step; its result, should it still arrive, is dropped."""
        if self.worker is not None:
            self.cancelled = True
            show_status(self._status, message)
            self.worker.quit()

    def close(self, *_) -> None:
        """The panel closed: stop the job at its next step and never call back into the panel."""
        if self.worker is not None:
            self.cancelled = True
            abandon_worker(self.worker)
            self.worker = None

    def detach(self):
        """Cut the job off from the panel without stopping it; returns it (None when idle). For a job that must
        end on its own terms once its panel is gone (fine-tuning saves its best epoch)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            disconnect_all(*getattr(worker, "_spotdetect_handlers", ()))
            worker._spotdetect_handlers = []
        return worker

    def _returned(self, on_return, result) -> None:
        if not self.cancelled:  # cancel clicked after the last step but before the result arrived: honour it
            on_return(result)

    def _on_yield(self, p) -> None:
        if self._progress is not None and hasattr(p, "total"):
            self._progress.max = max(1, int(p.total))
            self._progress.value = min(int(p.done), self._progress.max)
        if self._on_step is not None:
            self._on_step(p)

    def _on_error(self, err) -> None:
        if isinstance(err, SpotDetectError):
            self.error = str(err)
            if self._notify_every_error:
                show_error(self.error)
        else:
            log.error("%s failed", self._what, exc_info=err)
            self.error = f"{self._what} failed: {type(err).__name__}: {err}"
            show_error(self.error)
        show_status(self._status, self.error, error=True)

    def _on_finish(self) -> None:
        self.worker = None
        if self._progress is not None:
            self._progress.visible = False
        for b in self._buttons:
            b.enabled = True
        if self._cancel_button is not None:
            self._cancel_button.enabled = False
        if self._on_end is not None:
            self._on_end()
