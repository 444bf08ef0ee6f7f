"""Section 4 of the Fine-tune panel: what a run leaves, and adopting it.

The saved model (the best epoch, or the starting weights when no epoch beat them) is offered in 'Detect
spots' at once, but the model used for detection changes only when the user presses one of the Use buttons.
A run whose panel was closed still ends in its thread and saves its best epoch; a notification says where.
"""

from __future__ import annotations

from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_info

from ._ui import wrap_labels


class NewModel(Container):
    """The verdict of the last run (``outcome``) and the buttons that make its model the one detection uses."""

    def __init__(self, viewer, models):
        self._viewer, self._models = viewer, models
        self.entry = None  # the last run's model as offered to 'Detect spots' (a SessionModel)
        hint = Label(value="Nothing changes in 'Detect spots' until you press one of these.")
        self.outcome = Label(value="")
        self.use_button = PushButton(text="Use this model", enabled=False,
                                     tooltip="Select the new model in 'Detect spots' (the old one stays available).")
        self.use_run_button = PushButton(text="Use it and detect again", enabled=False,
                                         tooltip="Select the new model in 'Detect spots' and run it on the chosen "
                                                 "image.")
        wrap_labels(hint, self.outcome)
        buttons = Container(widgets=[self.use_button, self.use_run_button], layout="horizontal", labels=False)
        super().__init__(widgets=[hint, self.outcome, buttons], labels=False)
        for c in (self, buttons):
            c.margins = (0, 0, 0, 0)
        self.use_button.changed.connect(lambda *_: self.use(detect_again=False))
        self.use_run_button.changed.connect(lambda *_: self.use(detect_again=True))

    def clear(self) -> None:
        """A new run starts: nothing to offer yet."""
        self.entry = None
        self.use_button.enabled = self.use_run_button.enabled = False
        self.outcome.value = ""

    def offer(self, res) -> bool:
        """Show what the run ``res`` (a FinetuneResult) left and offer its model; False when it left none."""
        if res.model is None:
            self.outcome.value = ("Stopped before the first epoch ended: nothing was saved, and the model you "
                                  "detect with is unchanged.")
            return False
        self.entry = self._models.add(res.model, res.path)
        card = res.model.info.card
        on_itself = (" (measured on the training examples themselves)"
                     if "no held-out" in str(card.get("validation_data")) else "")
        self.outcome.value = f"{res.verdict()}{on_itself}<br>File: {res.path}"
        self.use_button.enabled = self.use_run_button.enabled = True
        return True

    def use(self, detect_again: bool = False) -> bool:
        """Make the new model the one 'Detect spots' uses (docking that widget if needed); maybe detect again."""
        if self.entry is None:
            return False
        if self._models.use(self.entry, detect_again) == 0:
            self._viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
            self._models.use(self.entry, detect_again)
        note = f"<br>→ 'Detect spots' now uses {self.entry.model.info.name}"
        self.outcome.value = self.outcome.value.split("<br>→")[0] + note + (
            " and is detecting again." if detect_again else ".")
        return True


_UNATTENDED: set = set()  # workers of closed panels, kept alive until they end


def finish_unattended(worker, models) -> None:
    """Let a closed panel's run end in its thread and tell the user what it left (a notification)."""
    _UNATTENDED.add(worker)

    def returned(res):
        if res is None or res.model is None:
            show_info("Fine-tuning stopped when its panel was closed, before the first epoch ended: nothing was "
                      "saved, and the model you detect with is unchanged.")
            return
        models.add(res.model, res.path)
        show_info(f"Fine-tuning stopped when its panel was closed. The best epoch so far is saved as {res.path} "
                  "(offered in 'Detect spots').")

    def errored(err):
        show_error(f"Fine-tuning (panel closed) failed: {type(err).__name__}: {err}")

    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(lambda: _UNATTENDED.discard(worker))
