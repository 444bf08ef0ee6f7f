"""Running the engine's step generators (``detect_iter``, ``Trainer.iter_fit``) to the end.

Long jobs are generators that yield progress and *return* their result, so a napari worker can drive them
and stop between steps; scripts, the CLI and tests drive them with :func:`run_steps`.
"""

from __future__ import annotations

from ..errors import Cancelled


def run_steps(gen, progress=None, should_stop=None, stop_message: str = "Stopped before it finished."):
    """Exhaust ``gen``, calling ``progress(event)`` on each yield; return what it returns.

    ``should_stop()`` is asked after each event; when true the generator is closed and :class:`Cancelled`
    raised.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)
        if should_stop is not None and should_stop():
            gen.close()
            raise Cancelled(stop_message)
