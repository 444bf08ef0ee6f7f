"""The "Fine-tune on my spots" dock widget: adapt a model to corrected spots, watch it learn, then adopt it.

The user pairs images with Points layers of correct spots (or picks a folder of images and CSVs), chooses
the model to start from, and presses Train. Training is :func:`core.training.finetuning.iter_finetune` (the call
the CLI and the API make, with the same defaults) in a thread; this widget only draws progress and the live
plot. The model used for detection is never touched: the tuned model is offered in the detection widget,
and becomes the one in use only when the user accepts it.

The panel is four sections, one module each: the examples (:mod:`.finetune_examples`), the model and settings
(:mod:`.finetune_settings`), the run with its plot (here and :mod:`.training_plot`), and the new model
(:mod:`.finetune_outcome`). Scripts and tests drive it through those controls, as a user does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import napari
from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea

from ..core.training import finetuning
from ._ui import disconnect_all, keep_wide_enough, show_status, when_closed, wrap_labels
from .finetune_examples import TrainingExamples
from .finetune_outcome import NewModel, finish_unattended
from .finetune_settings import TrainingSettings
from .model_registry import registry_for
from .panel_worker import PanelWorker
from .progress_text import format_seconds
from .training_plot import TrainingPlot


def _training_steps(model, load_examples, cfg, out: Path, stop, val_share: float, info: dict, threads):
    """The worker's job: torch's threads for this thread, the examples, then the core's fine-tuning run."""
    from ..core.common.device import use_threads

    use_threads(threads)  # in the worker thread: torch's count is per thread
    examples = load_examples()
    info["n_examples"] = len(examples)
    return (yield from finetuning.iter_finetune(model, examples, None, cfg, out=out, stop=stop,
                                                val_share=val_share, data_info=info))


class FinetuneWidget(Container):
    """Dock widget for fine-tuning (npe2 command ``napari-spotdetect.finetune_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._models = registry_for(viewer)  # this viewer's session: fine-tuned models, the last detection's
        self._stop = threading.Event()
        self._result = None  # the last FinetuneResult
        self.examples = TrainingExamples(viewer, self._validate)
        self.settings = TrainingSettings(self._models, self._validate)
        self.train_button = PushButton(text="Train", tooltip="Start fine-tuning; the viewer stays usable meanwhile.")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="Stop after the current step; the best epoch so far is kept.")
        self.progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self.status = Label(value="")
        self.plot = TrainingPlot()
        self.new_model = NewModel(viewer, self._models)
        plot_hint = Label(value="Loss should fall and validation F1 rise. Epoch 0 is the model you start "
                                "from; the best epoch is kept.")
        wrap_labels(self.status, plot_hint)
        buttons = Container(widgets=[self.train_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.body = Container(labels=False, widgets=[
            Label(value="<b>1. Examples with correct spots</b>"), self.examples,
            Label(value="<b>2. Model and training</b>"), self.settings,
            Label(value="<b>3. Train and watch the curves</b>"), buttons, self.progress, self.status, plot_hint,
            Label(value="<b>4. Use the new model</b>"), self.new_model])
        layout = self.body.native.layout()  # the plot is a plain QWidget: place it under its explanation
        layout.insertWidget(layout.indexOf(plot_hint.native) + 1, self.plot)
        self._scroll = self._scroll_area()
        from .layers import elide_layer_names

        elide_layer_names(self.native)
        self.margins = (0, 0, 0, 0)
        self._job = PanelWorker(self.status, self.progress, [self.train_button], what="Training",
                                notify_every_error=True)
        self.train_button.changed.connect(self.train)
        self.stop_button.changed.connect(self.stop)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._on_layers_changed)
        self._models.added.connect(self._on_session_model)
        self._validate()
        self._closed = False
        self._close_watcher = when_closed(self.native, self.close_panel)

    def _scroll_area(self) -> QScrollArea:
        """The panel is taller than a shared dock: scroll rather than squeeze (squeezed widgets overlap).

        Our own QScrollArea, because napari docks `.native`, which for magicgui's scrollable=True is the
        inner widget, torn out of its scroll area.
        """
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.body.native)
        scroll.setMinimumWidth(self.body.native.minimumSizeHint().width() + 16)
        keep_wide_enough(scroll, self.body.native)
        scroll.setMinimumHeight(140)  # a slit otherwise; any taller and four docks overflow a 768 px screen
        self.native.layout().addWidget(scroll)
        return scroll

    def close_panel(self, *_) -> None:
        """The panel was closed (its dock's x, or deleted): stop training as Stop does, and let go of the viewer.

        The run still ends properly in its thread, so the best epoch so far becomes the model file; a
        notification says where it is (the panel that would have said it is gone).
        """
        if self._closed:
            return
        self._closed = True
        disconnect_all((self._viewer.layers.events.inserted, self._on_layers_changed),
                       (self._viewer.layers.events.removed, self._on_layers_changed),
                       (self._models.added, self._on_session_model))
        worker = self._job.detach()
        if worker is not None:
            self._stop.set()
            finish_unattended(worker, self._models)

    def _on_layers_changed(self, *_) -> None:
        self.examples.reset_choices()
        self.settings.start.reset_choices()  # a detection may have just made "last detection" available
        self._validate()

    def _on_session_model(self, _entry) -> None:
        self.settings.start.reset_choices()

    def _validate(self, *_) -> None:
        """Train is enabled only when it can start; the status line says why not."""
        if self._job.running:
            return
        msg = self.examples.problem() or self.settings.problem()
        self.train_button.enabled = msg is None
        show_status(self.status, msg or "Ready to train.", msg is not None)

    @property
    def running(self) -> bool:
        return self._job.running

    # -- a run ------------------------------------------------------------------------------------------
    def train(self, *_):
        """Start fine-tuning in a worker thread (the Train button); returns the worker (None when it cannot)."""
        msg = self.examples.problem() or self.settings.problem()
        if msg is not None:
            show_status(self.status, msg, error=True)
            return None
        if self._job.running:
            return None
        self.settings.remember()
        load, info = self.examples.gather()
        s = self.settings
        cfg = s.config()
        self._stop = stop = threading.Event()
        self.native.destroyed.connect(stop.set)  # closing the panel (or napari) ends training too
        steps = _training_steps(s.model_source(), load, cfg, s.model_path(), stop, int(s.val_percent.value) / 100.0,
                                info, int(s.threads.value) or None)
        self._result = None
        self.new_model.clear()
        self.plot.clear(cfg.epochs)
        self.stop_button.enabled = True
        worker = self._job.start(steps, self._on_result, "Starting…", on_step=self._on_event,
                                 on_end=self._on_finished)
        self.progress.max, self.progress.value = cfg.epochs * cfg.steps_per_epoch, 0
        return worker

    def stop(self, *_) -> None:
        """Ask the trainer to stop after the current step (or validation image); the best epoch is kept."""
        if self._job.running:
            self._stop.set()
            self.stop_button.enabled = False
            show_status(self.status, "Stopping after the current step…")

    def _on_event(self, ev) -> None:
        steps = max(ev.steps, 1)
        if ev.epochs:
            self.progress.max = ev.epochs * steps
            self.progress.value = min(self.progress.max, ev.done_steps)
        self.plot.add_event(ev)
        if ev.kind == "start" and ev.advice:
            show_warning(ev.advice)
        if ev.kind == "step":
            loss = float("nan") if ev.loss is None else ev.loss
            best = f" · best validation F1 so far {ev.best_f1:.2f}" if ev.best_f1 is not None else ""
            left = f" · about {format_seconds(ev.eta_s)} left" if ev.eta_s is not None else ""
            show_status(self.status, f"Epoch {ev.epoch} of {ev.epochs} · step {ev.step} of {steps} · "
                                     f"loss {loss:.4f}{best}{left}")
        elif ev.message:
            show_status(self.status, ev.message)

    def _on_result(self, res) -> None:
        self._result = res
        if self.new_model.offer(res):
            self.settings.next_name()
        else:
            self._scroll.ensureWidgetVisible(self.new_model.outcome.native)

    def _on_finished(self) -> None:
        self.stop_button.enabled = False
        self._validate()
        if self._job.error:
            show_status(self.status, self._job.error, error=True)
        elif self._result is not None:
            show_status(self.status, "Stopped." if self._result.stopped else "Training finished.")
        # the verdict and the Use buttons sit below the fold on a laptop screen: bring them into view
        self._scroll.ensureWidgetVisible(self.new_model.use_run_button.native, 0, 20)
        self._scroll.ensureWidgetVisible(self.new_model.outcome.native, 0, 20)
