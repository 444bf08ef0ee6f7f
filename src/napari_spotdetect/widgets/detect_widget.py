"""The "Detect spots" dock widget: pick an image and a model, run in a worker, then move the threshold live.

The widget only collects choices (:mod:`.detect_choices`), starts :func:`workers.detection_steps` in a thread
(:class:`.panel_worker.PanelWorker`) and turns its result into layers in the main thread (:mod:`.result_layers`).
The threshold slider filters the cached :class:`Detections` (no network; :mod:`.rethreshold`).

A small public API serves scripts and the other panels (``set_image``, ``choose_model``, ``set_model``, ``run``,
``cancel``, ``running``, ``problem``, ``detect_options``, ``apply_threshold``); everything else is the panel's controls.
"""

from __future__ import annotations

import gc

import napari
import numpy as np
from magicgui.widgets import Container, FloatSlider, Label, ProgressBar, PushButton
from qtpy.QtWidgets import QSizePolicy

from ..core.detection.options import DetectOptions
from ..core.models.base import SpotModel
from . import layers as L
from ._ui import disconnect_all, keep_wrapped_text_whole, make_scrollable, show_status, stop_choice_updates, when_closed
from .detect_choices import DEFAULTS, MODEL_KINDS, SECTION, TIPS, DetectChoices
from .light_drawing import draw_lightly
from .model_registry import registry_for
from .panel_worker import PanelWorker
from .planes import show_neighbour_planes
from .progress_text import TimeLeft, plane_messages
from .result_layers import build_layers, show_layers, temporary_map_store
from .rethreshold import Rethreshold
from .settings import load_settings, save_settings
from .workers import detection_steps


class DetectWidget(Container):
    """Dock widget for spot detection (npe2 command ``napari-spotdetect.detect_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._models = registry_for(viewer)  # this viewer's session: fine-tuned models, the last detection's
        self._model_cache: dict = {}
        self._memory_model: SpotModel | None = None
        self._clock: TimeLeft | None = None

        self._choices = DetectChoices(self._model_kinds)
        self._run = PushButton(text="Detect spots", tooltip="Find spots in the image with the chosen model.")
        self._cancel = PushButton(text="Cancel", enabled=False,
                                  tooltip="Stop after the current tile; nothing is added.")
        self._progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self._status = Label(value="")
        self._threshold = FloatSlider(label="Threshold", min=0.0, max=1.0, step=0.01, enabled=False,
                                      tooltip=TIPS["threshold"])
        self._floor = FloatSlider(label="Contrast floor", min=0.0, max=1.0, step=0.05, value=0.0, enabled=False,
                                  tooltip=TIPS["contrast_floor"])
        self._count = Label(label="Spots", value="run a detection first")
        self._tuned = PushButton(text="Model's own values", enabled=False,
                                 tooltip="Set the threshold (and contrast floor) the model's authors tuned on "
                                         "validation data.")
        self._reset = PushButton(text="Restore defaults",
                                 tooltip="Bundled model, automatic device and tile size, axes from the layer.")
        self._lay_out()
        self._job = PanelWorker(self._status, self._progress, [self._run], what="Detection",
                                cancel_button=self._cancel, notify_every_error=True)
        self._rethreshold = Rethreshold(self._threshold, self._floor, self._count, self._tuned, self._status,
                                        running=lambda: self.running)

        self._choices.apply({**DEFAULTS, **load_settings(SECTION)})
        self._models.added.connect(self._on_session_model)
        self._models.use_requested.connect(self.use_session_model)
        for control in (self._choices.image, self._choices.axes, self._choices.model_kind, self._choices.model_path,
                        self._choices.p_low, self._choices.p_high):
            control.changed.connect(self._validate)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        self._reset.changed.connect(self._restore_defaults)
        viewer.layers.events.removed.connect(self._rethreshold.on_layer_removed)
        viewer.layers.selection.events.active.connect(self._rethreshold.on_active_layer)
        self._closed = False
        self._close_watcher = when_closed(self.native, self.close_panel)
        self._choices.guess_axes()
        self._validate()

    def _lay_out(self) -> None:
        buttons = Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False)
        thr_buttons = Container(widgets=[self._tuned, self._reset], layout="horizontal", labels=False)
        head1 = Label(value="<b>1. Find spots</b>")
        head2 = Label(value="<b>2. Keep the spots above a threshold</b><br>"
                            "Live: moving it does not run the network again.")
        form2 = Container(widgets=[self._threshold, self._floor, self._count], labels=True)
        self.extend([head1, self._choices.form, buttons, self._progress, self._status, head2, form2, thr_buttons])
        for lab in (head1, head2):
            lab.native.setWordWrap(True)
        for form in (form2, buttons, thr_buttons):
            form.margins = (0, 0, 0, 0)
        self._status.native.setMinimumWidth(200)
        # texts that change after a run wrap inside the panel's width instead of widening it past the dock
        for label in (self._count, self._status):
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            keep_wrapped_text_whole(label)
        make_scrollable(self)
        L.elide_layer_names(self.native)

    def close_panel(self, *_):
        """The panel was closed (taken out of its dock, or deleted): stop the run and every connection.

        A worker left running would call back into Qt widgets that no longer exist.
        """
        if self._closed:
            return
        self._closed = True
        self._job.close()
        stop_choice_updates(self._viewer, self)
        disconnect_all((self._models.added, self._on_session_model),
                       (self._models.use_requested, self.use_session_model),
                       (self._viewer.layers.events.removed, self._rethreshold.on_layer_removed),
                       (self._viewer.layers.selection.events.active, self._rethreshold.on_active_layer))
        self._rethreshold.stop()

    # -- what scripts and the other panels use ------------------------------------------------------------
    def set_image(self, layer) -> None:
        """Detect in ``layer`` (its axes are guessed at once; the Axes box overrides them)."""
        self._choices.image.value = layer

    def choose_model(self, kind: str, path=None) -> None:
        """"default", "file" or "folder" (with ``path``), "memory" (see :meth:`set_model`) or a session key."""
        if path is not None:
            self._choices.model_path.value = path
        self._choices.model_kind.value = kind

    def set_model(self, model: SpotModel) -> None:
        """Use an already-built model (scripts, notebooks, tests); it is offered as "In memory: <name>"."""
        self._memory_model = model
        self._choices.model_kind.reset_choices()
        self._choices.model_kind.value = "memory"

    def use_session_model(self, entry, detect_again: bool = False) -> bool:
        """Switch to a model fine-tuned in this session (the user accepted it); maybe detect again."""
        self._on_session_model(entry)
        self._choices.model_kind.value = entry.key
        if detect_again and self.problem() is None and not self.running:
            self.run()
        return True

    def problem(self) -> str | None:
        """Why Run cannot start now (a message for the user), or None when everything is ready."""
        if self.running:
            return "A detection is running; wait for it to end, or press Cancel."
        return self._choices.problem()

    def detect_options(self) -> DetectOptions:
        """The panel's detection settings as the engine takes them (checked when made; the axes go with the image)."""
        return self._choices.detect_options()

    @property
    def running(self) -> bool:
        return self._job.running

    def run(self, *_):
        """Start detection in a worker thread; returns the worker (None if the choices are not valid)."""
        msg = self.problem()
        if msg is not None:
            self._set_status(msg, error=True)
            return None
        layer = self._choices.image.value
        data = layer.data[0] if layer.multiscale else layer.data
        axes = self._choices.axes.value.strip().lower()
        remembered = self._choices.to_remember()
        options = self.detect_options().replace(axes=axes)
        if options.keep_maps and (layer.multiscale or not isinstance(data, np.ndarray)):
            # lazy images may not fit in memory: nor would their maps
            options = options.replace(keep_maps=temporary_map_store())
        gen = plane_messages(detection_steps(data, self._model_source(), options, model_cache=self._model_cache,
                                             threads=int(self._choices.threads.value) or None))
        self._clock = TimeLeft()
        # napari's many long-lived objects make a full garbage collection take ~1 s; one triggered by the
        # worker's allocations holds the GIL and freezes the viewer (benchmarks/bench_viewer.py). Objects
        # that exist now are left out of collections until the run ends.
        gc.freeze()
        context = {"layer": layer, "axes": axes, "remember": remembered}
        return self._job.start(gen, lambda res: self._on_result(res, context), "Starting…",
                               on_step=self._on_progress, on_end=self._on_finished)

    def cancel(self, *_):
        """Stop the running detection after the current tile batch; nothing is added."""
        self._job.cancel("Stopping after the current tile…")

    def apply_threshold(self, value: float | None = None) -> int:
        """Filter the cached detections at ``value`` (default: the slider) and update the layer; no network.

        Returns the number of spots the layer now shows (0 before any detection).
        """
        return self._rethreshold.apply_threshold(value)

    # -- choices ------------------------------------------------------------------------------------------
    def _model_kinds(self, _widget=None) -> list:
        """The fixed model kinds, the in-memory model and the models fine-tuned in this session.

        A callable, so napari's reset_choices (on every layer change) keeps the extra entries.
        """
        extra = [(f"In memory: {self._memory_model.info.name}", "memory")] if self._memory_model else []
        return [*MODEL_KINDS, *extra, *((e.label, k) for k, e in self._models.models.items())]

    def _on_session_model(self, entry) -> None:
        self._choices.model_kind.reset_choices()

    def _model_source(self):
        kind = self._choices.model_kind.value
        if kind == "memory":
            return self._memory_model
        if kind in self._models.models:
            return self._models.models[kind].source
        if kind == "default":
            return "default"
        return str(self._choices.model_path.value)

    def _validate(self, *_):
        if self.running:
            return
        msg = self.problem()
        self._run.enabled = msg is None
        self._set_status(msg or "Ready.", error=msg is not None)

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)

    def _restore_defaults(self, *_):
        """Default model, device and tile size; axes from the layer; the tuned threshold on the current result."""
        save_settings(SECTION, dict(DEFAULTS))
        self._memory_model = None
        self._choices.model_kind.reset_choices()
        self._choices.apply(dict(DEFAULTS))
        self._choices.guess_axes()
        self._validate()
        self._rethreshold.use_tuned_threshold()

    # -- a run's life ---------------------------------------------------------------------------------------
    def _on_progress(self, p):
        left = self._clock.left(p.done, p.total) if self._clock is not None else ""
        self._set_status(p.message + (f" · {left}" if left else ""))

    def _on_finished(self):
        gc.unfreeze()
        self._validate()
        if self._job.cancelled:
            self._set_status("Stopped; no spots were added.", error=True)
        elif self._job.error:
            self._set_status(self._job.error, error=True)
        else:
            self._rethreshold.show_summary()

    def _on_result(self, res, context):
        dets, model = res.detections, res.model
        image_layer, axes = context["layer"], context["axes"]
        if context.get("remember"):
            save_settings(SECTION, context["remember"])
        self._models.last_detection_model = model  # what the fine-tuning widget offers to start from
        # every layer is built before any is added, so a failure here leaves the viewer untouched
        shown = show_layers(self._viewer, build_layers(dets, model, image_layer, axes, bool(self._choices.maps.value)))
        if "z" in axes:
            show_neighbour_planes(self._viewer, image_layer, axes)
        self._viewer.layers.selection.active = shown[-1]
        self._rethreshold.set_target(shown[-1])
        draw_lightly(self._viewer, shown[-1], self.native)  # huge results draw a thinned set (the data stays whole)
