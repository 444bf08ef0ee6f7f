"""Errors that a user can act on.

Every error raised for bad input says what is wrong *and* what to do about it, so that the widgets can show
the message as is and the CLI can print it without a traceback.
"""


class SpotDetectError(ValueError):
    """A problem with the user's input, model file or settings; ``str(err)`` is meant for the user."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} Fix: {fix}")


class ModelFileError(SpotDetectError):
    """A weights file or folder that cannot be read as any supported model."""


class Cancelled(Exception):
    """Raised inside a long run when the caller asked it to stop; nothing half-done is kept."""
