"""One background job at a time for a panel: start, progress bar, buttons, status line, errors, closing.

Every panel that runs long work repeated the same life cycle (disable the button, show the bar, report
progress, turn an error into a message the user can act on, tidy up, stop when the panel closes). This holds
it once; the panel says what to run and what to do with the result.
"""

from __future__ import annotations

import logging

from napari.utils.notifications import show_error

from ..core.errors import SpotDetectError
from ._ui import disconnect_all, show_status
from .workers import abandon_worker, start_worker

log = logging.getLogger(__name__)


class PanelWorker:
    """Runs step generators (yielding objects with ``done``/``total``) for one panel, one at a time."""

    def __init__(self, status, progress=None, buttons=(), what: str = "The work", notify: bool = False):
        self._status, self._progress, self._buttons, self._what = status, progress, tuple(buttons), what
        self._notify = notify  # expected errors pop up too: for a panel whose status line may be scrolled away
        self._then = None
        self.worker = None
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, gen, on_return, message: str, *, on_yield=None, on_finish=None):
        """Run ``gen`` in a thread; ``on_return(result)`` runs in the main thread unless it failed or stopped.

        ``on_yield(step)`` replaces the progress bar's update, for steps that are not ``done``/``total``;
        ``on_finish()`` runs after the tidy-up, whatever the end.
        """
        if self.running:
            return None
        self.error = None
        self._then = on_finish
        for b in self._buttons:
            b.enabled = False
        if self._progress is not None:
            self._progress.max, self._progress.value, self._progress.visible = 1, 0, True
        show_status(self._status, message)
        self.worker = start_worker(gen, on_yield=on_yield or self._on_yield, on_return=on_return,
                                   on_error=self._on_error, on_finish=self._on_finish)
        return self.worker

    def close(self, *_) -> None:
        """The panel closed: stop the job at its next step and never call back into the panel."""
        if self.worker is not None:
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

    def _on_yield(self, p) -> None:
        if self._progress is not None:
            self._progress.max, self._progress.value = max(1, int(p.total)), int(p.done)

    def _on_error(self, err) -> None:
        if isinstance(err, SpotDetectError):
            self.error = str(err)
            if self._notify:
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
        if self._then is not None:
            self._then()
