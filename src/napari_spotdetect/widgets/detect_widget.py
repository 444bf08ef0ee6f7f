"""The "Detect spots" dock widget: pick an image and a model, run in a worker, then move the threshold live.

The widget only collects choices, starts :func:`workers.detection_steps` in a thread and turns its result
into layers in the main thread. The threshold slider filters the cached :class:`Detections` (no network).
"""

from __future__ import annotations

import gc
import logging
import os
import time

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QSizePolicy

from .. import layer_keys as K
from ..core.common.device import available_devices
from ..core.detection.options import DetectOptions
from ..core.detection.speed import SPEEDS, check_speed
from ..core.errors import SpotDetectError
from ..core.models.base import SpotModel
from ..core.models.piscis import PERCENTILES
from ..core.models.zoo import bundled_path
from . import layers as L
from ._ui import (
    disconnect_all,
    keep_wrapped_text_whole,
    make_scrollable,
    show_status,
    stop_choice_updates,
    when_closed,
)
from .light_drawing import draw_lightly
from .measured import UNMEASURED, carry_measurements
from .model_registry import registry_for
from .planes import show_neighbour_planes
from .settings import load_settings, save_settings
from .workers import abandon_worker, detection_steps, start_worker

log = logging.getLogger(__name__)

SECTION = "detect"
DEFAULTS = {"model_kind": "default", "model_path": "", "show_maps": False,
            **DetectOptions(percentiles=PERCENTILES).remembered(), "threads": 0}
_MODEL_KINDS = [
    ("Bundled default model", "default"),
    ("Model file (.pt: piscis or ours)", "file"),
    ("DeepSpot model folder", "folder"),
]
_TIP = {
    "image": "The fluorescence image to search for spots.",
    "axes": "One letter per image dimension: t = time, c = channel, z = depth, y = rows, x = columns.\n"
            "Taken from the layer; change it if napari guessed wrong (e.g. 'cyx' for a channel stack).\n"
            "z-stacks are detected plane by plane and spots are merged across planes.",
    "model": "Which trained network finds the spots. The last model you used is remembered.",
    "path": "The model file (.pt) or DeepSpot SavedModel folder.",
    "device": "Where the network runs: a GPU (cuda, mps) is much faster than the CPU.",
    "tile": "The image is cut into square tiles of this many pixels (0 = the model's own size).\n"
            "Smaller tiles need less memory; the result is the same.",
    "maps": "Also add the model's score map as an image layer, aligned with the image.",
    "augment": "Run the network on the 8 flips and rotations of every tile and average what it sees:\n"
               "slightly more accurate positions and fewer misses, about 8x slower.",
    "speed": "exact: the model's own tiles in float32 (identical to piscis on piscis files).\n"
             "fast: fewer, larger tiles and bfloat16 where the CPU or GPU has it natively: 2-3x faster,\n"
             "the same spots to within 0.2 px (F1 >= 0.99 against exact, measured).",
    "threshold": "Spots whose score is above this value are kept. Moving it does not run the network again.",
    "contrast_floor": "Drop spots dimmer than this fraction of where this image's spots stand out from its\n"
                      "texture (the elbow of its peaks' contrasts). 0 keeps every spot the threshold keeps.\n"
                      "Around 0.35 counts only spots that stand out, as crowd annotators do. 2-D planes only;\n"
                      "moving it does not run the network again.",
    "min_distance": "Two spots closer than this many pixels count as one (the higher-scoring one is kept).\n"
                    "Raise it if one spot is found twice; keep 1 for tightly clustered spots.",
    "percentiles": "Models that normalise by percentiles (the bundled default) map these percentiles of each\n"
                   "plane to 0 and 1. Raise the high one if many bright spots make dim ones look faint; other\n"
                   "models (piscis files, DeepSpot) standardise each tile and ignore these.",
}


class DetectWidget(Container):
    """Dock widget for spot detection (npe2 command ``napari-spotdetect.detect_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._models = registry_for(viewer)  # this viewer's session: fine-tuned models, the last detection's
        self._settings = {**DEFAULTS, **load_settings(SECTION)}
        self._model_cache: dict = {}
        self._memory_model: SpotModel | None = None
        self._worker = None
        self._cancelled = False
        self._error: str | None = None
        self._target = None  # the Points layer the threshold slider drives

        self._image = create_widget(annotation=napari.layers.Image, label="Image", options={"tooltip": _TIP["image"]})
        self._axes = LineEdit(label="Axes", tooltip=_TIP["axes"])
        self._model_kind = ComboBox(label="Model", choices=self._choices, tooltip=_TIP["model"])
        self._model_path = FileEdit(label="Model file", mode="r", tooltip=_TIP["path"])
        self._device = ComboBox(label="Device", choices=["auto", *available_devices()], tooltip=_TIP["device"])
        self._threads = SpinBox(label="CPU threads (0: idle cores)", min=0, max=max(1, os.cpu_count() or 1),
                                tooltip="Threads the network uses on the CPU; 0 takes the cores that are idle when "
                                        "detection starts (all cores on a busy machine is many times slower).")
        self._tile = SpinBox(label="Tile size (0: auto)", min=0, max=8192, step=8, tooltip=_TIP["tile"])
        self._maps = CheckBox(text="Add the score map as an image", tooltip=_TIP["maps"])
        self._augment = CheckBox(text="Average 8 flips and rotations (slow)", tooltip=_TIP["augment"])
        self._speed = ComboBox(label="Speed", choices=list(SPEEDS), value="exact", tooltip=_TIP["speed"])
        self._min_distance = SpinBox(label="Min. distance (px)", min=1, max=20, value=1,
                                     tooltip=_TIP["min_distance"])
        self._p_low = FloatSpinBox(label="Low percentile", min=0.0, max=50.0, step=0.1,
                                   value=PERCENTILES[0], tooltip=_TIP["percentiles"])
        self._p_high = FloatSpinBox(label="High percentile", min=50.0, max=100.0, step=0.1,
                                    value=PERCENTILES[1], tooltip=_TIP["percentiles"])
        self._run = PushButton(text="Detect spots", tooltip="Find spots in the image with the chosen model.")
        self._cancel = PushButton(text="Cancel", enabled=False,
                                  tooltip="Stop after the current tile; nothing is added.")
        self._progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self._status = Label(value="")
        self._threshold = FloatSlider(label="Threshold", min=0.0, max=1.0, step=0.01, enabled=False,
                                      tooltip=_TIP["threshold"])
        self._floor = FloatSlider(label="Contrast floor", min=0.0, max=1.0, step=0.05, value=0.0, enabled=False,
                                  tooltip=_TIP["contrast_floor"])
        self._count = Label(label="Spots", value="run a detection first")
        self._tuned = PushButton(text="Model's own values", enabled=False,
                                 tooltip="Set the threshold (and contrast floor) the model's authors tuned on "
                                         "validation data.")
        self._reset = PushButton(text="Restore defaults",
                                 tooltip="Bundled model, automatic device and tile size, axes from the layer.")
        buttons = Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False)
        thr_buttons = Container(widgets=[self._tuned, self._reset], layout="horizontal", labels=False)
        head1 = Label(value="<b>1. Find spots</b>")
        head2 = Label(value="<b>2. Keep the spots above a threshold</b><br>"
                            "Live: moving it does not run the network again.")
        form1 = Container(widgets=[self._image, self._axes, self._model_kind, self._model_path, self._device,
                                   self._threads, self._tile, self._speed, self._min_distance, self._p_low,
                                   self._p_high, self._maps, self._augment], labels=True)
        form2 = Container(widgets=[self._threshold, self._floor, self._count], labels=True)
        self.extend([head1, form1, buttons, self._progress, self._status, head2, form2, thr_buttons])
        for lab in (head1, head2):
            lab.native.setWordWrap(True)
        for form in (form1, form2, buttons, thr_buttons):
            form.margins = (0, 0, 0, 0)
        self._status.native.setWordWrap(True)
        self._status.native.setMinimumWidth(200)
        # long choices (model names, layer names) are elided in the box instead of widening the panel
        for box in (self._image, self._model_kind):
            box.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.native.setMinimumContentsLength(12)
        # texts that change after a run wrap inside the panel's width instead of widening it past the dock
        for label in (self._count, self._status):
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for label in (self._count, self._status):
            keep_wrapped_text_whole(label)
        make_scrollable(self)
        L.elide_layer_names(self.native)

        self._apply_settings(self._settings)
        self._models.added.connect(self._on_session_model)
        self._models.use_requested.connect(self.use_session_model)
        self._image.changed.connect(self._on_image_changed)
        self._axes.changed.connect(self._validate)
        self._model_kind.changed.connect(self._on_model_kind)
        self._model_path.changed.connect(self._validate)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        self._tuned.changed.connect(self.use_tuned_threshold)
        self._reset.changed.connect(self.restore_defaults)
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(30)  # coalesce slider ticks: one layer update per pause, not per pixel moved
        self._timer.timeout.connect(self.apply_threshold)
        self._threshold.changed.connect(self._on_slider)
        self._floor.changed.connect(self._on_floor)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._closed = False
        self._close_watcher = when_closed(self.native, self.close_panel)
        self._on_image_changed()

    def close_panel(self, *_):
        """The panel was closed (taken out of its dock, or deleted): stop the run and every connection.

        A worker left running would call back into Qt widgets that no longer exist.
        """
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._cancelled = True
            abandon_worker(self._worker)
            self._worker = None
        stop_choice_updates(self._viewer, self)
        disconnect_all((self._models.added, self._on_session_model),
                       (self._models.use_requested, self.use_session_model),
                       (self._viewer.layers.events.removed, self._on_layer_removed),
                       (self._viewer.layers.selection.events.active, self._on_active_layer))
        try:
            self._timer.stop()
        except RuntimeError:
            pass

    # -- choices ------------------------------------------------------------------------------------------
    def _apply_settings(self, s: dict) -> None:
        kind = s.get("model_kind", "default")
        self._model_kind.value = kind if kind in {v for _, v in _MODEL_KINDS} else "default"
        path = s.get("model_path") or ""
        self._model_path.value = "" if path == "." else path  # "." was how an empty path used to be stored
        dev = s.get("device", "auto")
        self._device.value = dev if dev in self._device.choices else "auto"
        self._tile.value = int(s.get("tile_size") or 0)
        try:
            self._threads.value = min(self._threads.max, max(0, int(s.get("threads") or 0)))
        except (TypeError, ValueError):
            self._threads.value = 0
        self._maps.value = bool(s.get("show_maps", False))
        self._augment.value = bool(s.get("augment", False))
        self._speed.value = s.get("speed") if s.get("speed") in SPEEDS else "exact"
        try:
            self._min_distance.value = min(20, max(1, int(s.get("min_distance") or 1)))
        except (TypeError, ValueError):
            self._min_distance.value = 1
        try:
            self.set_percentiles(*(s.get("percentiles") or PERCENTILES))
        except (TypeError, ValueError, SpotDetectError):
            self.set_percentiles(*PERCENTILES)
        self._on_model_kind()

    # -- public settings (scripts, notebooks, tests) ------------------------------------------------------------
    def set_image(self, layer) -> None:
        """Detect in ``layer`` (its axes are guessed at once; :meth:`set_axes` overrides them)."""
        self._image.value = layer

    @property
    def image_layer(self):
        return self._image.value

    def set_axes(self, axes: str) -> None:
        self._axes.value = axes

    @property
    def axes(self) -> str:
        return self._axes.value.strip()

    def choose_model(self, kind: str, path=None) -> None:
        """"default", "file" or "folder" (with ``path``), "memory" (see :meth:`set_model`) or a session key."""
        if path is not None:
            self._model_path.value = path
        self._model_kind.value = kind

    @property
    def model_kind(self) -> str:
        return self._model_kind.value

    @property
    def model_path(self) -> str:
        return str(self._model_path.value)

    @property
    def model_choices(self) -> list:
        """The values :meth:`choose_model` accepts now."""
        return list(self._model_kind.choices)

    def set_device(self, device: str) -> None:
        """"auto", "cpu", or one of :func:`core.common.device.available_devices`."""
        self._device.value = device

    def set_options(self, *, show_maps: bool | None = None, augment: bool | None = None,
                    tile_size: int | None = None, speed: str | None = None) -> None:
        """Add the score map as an image; average over 8 flips/rotations; tile size (0: automatic);
        speed ("exact" or "fast", see :mod:`core.detection.speed`)."""
        if speed is not None:
            self._speed.value = check_speed(speed)
        if show_maps is not None:
            self._maps.value = bool(show_maps)
        if augment is not None:
            self._augment.value = bool(augment)
        if tile_size is not None:
            self._tile.value = int(tile_size)

    def options(self) -> dict:
        return {"show_maps": bool(self._maps.value), "augment": bool(self._augment.value),
                "tile_size": int(self._tile.value), "device": self._device.value, "speed": self._speed.value}

    @property
    def threshold(self) -> float:
        """The threshold slider's value (:meth:`apply_threshold` applies one at once)."""
        return float(self._threshold.value)

    @property
    def threshold_limits(self) -> tuple[float, float]:
        """The slider's ends: the model's score range."""
        return float(self._threshold.min), float(self._threshold.max)

    def move_threshold(self, value: float) -> None:
        """Move the slider as a user does: the layer follows after the debounce."""
        self._threshold.value = value

    @property
    def can_rethreshold(self) -> bool:
        return bool(self._threshold.enabled)

    @property
    def can_run(self) -> bool:
        return bool(self._run.enabled)

    @property
    def can_cancel(self) -> bool:
        return bool(self._cancel.enabled)

    @property
    def status(self) -> str:
        return self._status.value

    @property
    def count_text(self) -> str:
        """What the panel says about the spot count ("123 spots", "updating…")."""
        return self._count.value

    @property
    def error(self) -> str | None:
        """The message of the last run's error, or None."""
        return self._error

    @property
    def percentiles(self) -> tuple[float, float]:
        """The (low, high) input percentiles used by percentile-normalised models (the bundled default)."""
        return float(self._p_low.value), float(self._p_high.value)

    def set_percentiles(self, low: float, high: float) -> None:
        if not 0.0 <= float(low) < float(high) <= 100.0:
            raise SpotDetectError(f"Normalisation percentiles {low:g}-{high:g} are not 0 <= low < high <= 100.",
                                  f"use e.g. {PERCENTILES[0]:g} and {PERCENTILES[1]:g}.")
        self._p_low.value, self._p_high.value = float(low), float(high)

    @property
    def min_distance(self) -> int:
        """Two spots closer than this (px) count as one."""
        return int(self._min_distance.value)

    def set_min_distance(self, px: int) -> None:
        self._min_distance.value = int(px)

    def set_model(self, model: SpotModel) -> None:
        """Use an already-built model (scripts, notebooks, tests); it is offered as "In memory: <name>"."""
        self._memory_model = model
        self._model_kind.reset_choices()
        self._model_kind.value = "memory"

    def _choices(self, _widget=None) -> list:
        """The fixed model kinds, the in-memory model and the models fine-tuned in this session.

        A callable, so napari's reset_choices (on every layer change) keeps the extra entries.
        """
        extra = [(f"In memory: {self._memory_model.info.name}", "memory")] if self._memory_model else []
        return [*_MODEL_KINDS, *extra, *((e.label, k) for k, e in self._models.models.items())]

    def _on_session_model(self, entry) -> None:
        self._model_kind.reset_choices()

    def use_session_model(self, entry, detect_again: bool = False) -> bool:
        """Switch to a model fine-tuned in this session (the user accepted it); maybe detect again."""
        self._on_session_model(entry)
        self._model_kind.value = entry.key
        if detect_again and self.problem() is None and not self.running:
            self.run()
        return True

    def _on_model_kind(self, *_):
        kind = self._model_kind.value
        self._model_path.visible = kind in ("file", "folder")
        self._model_path.mode = "d" if kind == "folder" else "r"
        self._model_path.label = "Model folder" if kind == "folder" else "Model file"
        self._validate()

    def _on_image_changed(self, *_):
        layer = self._image.value
        if layer is None:
            self._axes.value = ""
        else:
            try:
                self._axes.value = L.guess_layer_axes(layer.ndim, layer.axis_labels, layer.rgb)
            except SpotDetectError:
                self._axes.value = ""
        self._validate()

    def _model_source(self):
        kind = self._model_kind.value
        if kind == "memory":
            return self._memory_model
        if kind in self._models.models:
            return self._models.models[kind].source
        if kind == "default":
            return "default"
        return str(self._model_path.value)

    def problem(self) -> str | None:
        """Why Run cannot start now (a message for the user), or None when everything is ready."""
        layer = self._image.value
        if layer is None:
            return "Open or choose an image layer."
        try:
            L.guess_layer_axes(layer.ndim, (), layer.rgb)  # refuses RGB
            from ..core.common.validate import check_axes

            check_axes(layer.ndim, self._axes.value.strip() or None)
        except SpotDetectError as err:
            return str(err)
        kind = self._model_kind.value
        if kind == "default" and not bundled_path("default").exists():
            return ("The bundled default model is not installed in this version. Choose 'Model file' and a "
                    "piscis .pt file (or one of ours), or a DeepSpot model folder.")
        if kind in ("file", "folder"):
            from pathlib import Path

            p = Path(str(self._model_path.value)).expanduser()
            if str(self._model_path.value) in ("", ".") or not p.exists():
                return "Choose the model file." if kind == "file" else "Choose the DeepSpot model folder."
            if kind == "file" and p.is_dir():
                return "This is a folder; choose a model file, or pick 'DeepSpot model folder'."
        return None

    def _validate(self, *_):
        if self._worker is not None:
            return
        msg = self.problem()
        self._run.enabled = msg is None
        self._set_status(msg or "Ready.", error=msg is not None)

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)

    # -- running ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def run(self, *_):
        """Start detection in a worker thread; returns the worker (None if the choices are not valid)."""
        msg = self.problem()
        if msg is not None:
            self._set_status(msg, error=True)
            return None
        layer = self._image.value
        data = layer.data[0] if layer.multiscale else layer.data
        axes = self._axes.value.strip().lower()
        remembered = self.choices_to_remember()
        options = self.detect_options().replace(axes=axes)
        if options.keep_maps and (layer.multiscale or not isinstance(data, np.ndarray)):
            # lazy images may not fit in memory: nor would their maps
            options = options.replace(keep_maps=_temporary_map_store())
        gen = _with_plane_messages(detection_steps(data, self._model_source(), options,
                                                   model_cache=self._model_cache,
                                                   threads=int(self._threads.value) or None))
        self._cancelled = False
        self._error = None
        self._run.enabled = False
        self._cancel.enabled = True
        self._progress.visible = True
        self._progress.max, self._progress.value = 1, 0
        self._set_status("Starting…")
        self._clock = _Clock()
        # napari's many long-lived objects make a full garbage collection take ~1 s; one triggered by the
        # worker's allocations holds the GIL and freezes the viewer (benchmarks/bench_viewer.py). Objects
        # that exist now are left out of collections until the run ends.
        gc.freeze()
        context = {"layer": layer, "axes": axes, "remember": remembered}
        self._worker = start_worker(
            gen, on_yield=self._on_progress, on_return=lambda res: self._on_result(res, context),
            on_error=self._on_error, on_finish=self._on_finished)
        return self._worker

    def choices_to_remember(self) -> dict | None:
        """The settings worth restoring next time, or None (a model in memory or of this session only).

        Saved only once the model has loaded and detected (see ``_on_result``): a model that failed to load
        must not come back at the next launch.
        """
        kind = self._model_kind.value
        if kind not in ("default", "file", "folder"):
            return None
        path = str(self._model_path.value) if kind != "default" else ""
        return {"model_kind": kind, "model_path": "" if path == "." else path, "show_maps": bool(self._maps.value),
                **self.detect_options().remembered(), "threads": int(self._threads.value)}

    def detect_options(self) -> DetectOptions:
        """The panel's detection settings as the engine takes them (checked when made; the axes go with the image)."""
        return DetectOptions(device=None if self._device.value == "auto" else self._device.value,
                             tile_size=int(self._tile.value) or None, keep_maps=bool(self._maps.value),
                             augment=bool(self._augment.value), min_distance=int(self._min_distance.value),
                             percentiles=self.percentiles, speed=self._speed.value)

    def cancel(self, *_):
        """Stop the running detection after the current tile batch; nothing is added."""
        if self._worker is not None:
            self._cancelled = True
            self._set_status("Stopping after the current tile…")
            self._worker.quit()

    def _on_progress(self, p):
        self._progress.max = max(int(p.total), 1)
        self._progress.value = min(int(p.done), self._progress.max)
        left = self._clock.left(p.done, p.total) if getattr(self, "_clock", None) else ""
        self._set_status(p.message + (f" · {left}" if left else ""))

    def _on_error(self, err):
        if isinstance(err, SpotDetectError):
            text = str(err)
        else:
            log.error("Spot detection failed", exc_info=err)
            text = f"Detection failed: {type(err).__name__}: {err}"
        self._error = text
        show_error(text)

    def _on_finished(self):
        gc.unfreeze()
        self._worker = None
        self._cancel.enabled = False
        self._progress.visible = False
        self._validate()
        if self._cancelled:
            self._set_status("Stopped; no spots were added.", error=True)
        elif self._error:
            self._set_status(self._error, error=True)
        elif self._target is not None:
            self._set_status(self._summary())

    def _on_result(self, res, context):
        if self._cancelled:  # cancel clicked after the last tile but before this ran: honour it
            return
        dets, model = res.detections, res.model
        image_layer, axes = context["layer"], context["axes"]
        if context.get("remember"):
            save_settings(SECTION, context["remember"])
        self._models.last_detection_model = model  # what the fine-tuning widget offers to start from
        new_layers = self._build_layers(dets, model, image_layer, axes)
        # every layer is built before any is added, so a failure above leaves the viewer untouched.
        # A previous result of the same model on the same image is updated in place (its data, features and
        # metadata swapped: no layer removed or added, so napari neither rebuilds its layer list and canvas
        # nodes nor collects garbage), unless someone edited it (or made it ground truth): a user's work is
        # never touched, and then both stay side by side.
        shown = []
        for lay in new_layers:
            old = next((o for o in self._viewer.layers if o.name == lay.name and replaceable(o)), None)
            kept = next((o for o in self._viewer.layers if o.name == lay.name and o.metadata.get(K.EDITED)), None)
            if old is None and kept is not None:  # the user's edited copy stays: say so in its name, not " [1]"
                kept.name = f"{lay.name} (edited)"
            if old is not None and update_in_place(old, lay):
                shown.append(old)
                continue
            if old is not None:
                self._viewer.layers.remove(old)
            self._viewer.layers.append(lay)
            shown.append(lay)
        if "z" in axes:
            show_neighbour_planes(self._viewer, image_layer, axes)
        self._viewer.layers.selection.active = shown[-1]
        self._set_target(shown[-1])

    def _build_layers(self, dets, model, image_layer, axes):
        from napari.layers import Image, Points

        scale, translate = np.asarray(image_layer.scale), np.asarray(image_layer.translate)
        out = []
        for name, arr in dets.maps.items():
            if name in L.HIDDEN_MAPS or not self._maps.value:
                continue
            if not isinstance(arr, np.ndarray):  # kept in a zarr store: shown lazily
                from ..core.io.image_sources import as_lazy

                arr = as_lazy(arr)
            data, dims = L.map_in_layer_order(arr, dets.axes, axes)
            out.append(Image(data, name=L.layer_name(f"{name} map", image_layer.name, model.info.name),
                             scale=scale[dims], translate=translate[dims], colormap="magma", blending="additive",
                             opacity=0.6, metadata={K.SCORE_MAP: name}))
        spots = dets.spots
        coords, features = L.points_from_spots(spots, axes)
        provenance = {**dets.provenance, "layer_axes": axes, "image_layer": image_layer.name}
        kw = L.points_layer_kwargs(L.layer_name("spots", image_layer.name, model.info.name), features,
                                   score_range=model.threshold_range,
                                   scale=scale, translate=translate, stack="z" in axes,
                                   metadata={K.PROVENANCE: provenance, K.DETECTIONS: dets})
        kw["ndim"] = len(axes)
        out.append(Points(coords, **kw))
        if len(coords) > L.MANY_SPOTS:
            show_warning(f"{len(coords):,} spots: the layer will be slow to draw and to re-threshold. "
                         "Raise the threshold or detect in a crop.")
        return out

    # -- threshold ----------------------------------------------------------------------------------------
    def _set_target(self, layer) -> None:
        self._target = layer
        draw_lightly(self._viewer, layer, self.native)  # huge results draw a thinned set (the data stays whole)
        dets = layer.metadata[K.DETECTIONS]
        lo, hi = dets.threshold_range  # the layer's own model, whichever model ran last
        lo = max(lo, dets.floor)
        with self._threshold.changed.blocked():
            self._threshold.min, self._threshold.max = lo, max(hi, dets.threshold)
            self._threshold.value = dets.threshold
        self._threshold.enabled = True
        with self._floor.changed.blocked():
            self._floor.value = dets.contrast_floor
        self._floor.enabled = dets.has_contrast
        self._tuned.enabled = dets.default_threshold is not None
        self._count.value = f"{len(layer.data):,} in '{_short(layer.name)}'"

    def _on_slider(self, value: float) -> None:
        """Count at once (a table filter, milliseconds); redraw the layer when the slider pauses."""
        layer = self._target
        dets = layer.metadata.get(K.DETECTIONS) if layer is not None else None
        if dets is not None and not dets.stack:
            n = dets.count(value)
            self._count.value = f"{n:,} at {float(value):.2f} (updating '{_short(layer.name)}'…)"
        self._timer.start()

    def _on_floor(self, value: float) -> None:
        """The contrast floor moved: filter the cached detections again, as the threshold slider does."""
        layer = self._target
        dets = layer.metadata.get(K.DETECTIONS) if layer is not None else None
        if dets is None:
            return
        dets.set_contrast_floor(float(value))
        if not dets.stack:  # the live count says what moved: the floor, not the threshold
            n = dets.count(self._threshold.value)
            self._count.value = f"{n:,} at contrast floor {float(value):.2f} (updating '{_short(layer.name)}'…)"
        self._timer.start()

    @property
    def contrast_floor(self) -> float:
        """The contrast floor slider's value (a fraction of each plane's elbow contrast; 0: off)."""
        return float(self._floor.value)

    def move_contrast_floor(self, value: float) -> None:
        """Move the contrast floor slider as a user would; the layer follows when the slider pauses."""
        self._floor.value = value

    def apply_threshold(self, value: float | None = None) -> int:
        """Filter the cached detections at ``value`` (default: the slider) and update the layer; no network."""
        self._timer.stop()
        layer = self._target
        if layer is None or K.DETECTIONS not in layer.metadata:
            return 0
        t = float(self._threshold.value if value is None else value)
        dets = layer.metadata[K.DETECTIONS]
        try:
            spots = dets.set_threshold(t)
        except SpotDetectError as err:
            self._set_status(str(err), error=True)
            return len(layer.data)
        coords, features = L.points_from_spots(spots, layer.metadata[K.PROVENANCE]["layer_axes"])
        features, unmeasured = carry_measurements(layer, coords, features)  # fits and cells stay with their spots
        t0 = time.perf_counter()
        try:
            L.replace_points(layer, coords, features)
        except Exception:  # never leave the count on "updating…"
            self._count.value = f"{len(layer.data):,} in '{_short(layer.name)}' (update failed, see the log)"
            raise
        # wait at least twice as long as an update takes before the next, so dragging never queues updates
        ms = 1000 * (time.perf_counter() - t0)
        self._timer.setInterval(int(min(1000, max(30, 2 * ms))))
        layer.metadata[K.PROVENANCE]["threshold"] = float(t)
        if dets.has_contrast:
            layer.metadata[K.PROVENANCE]["contrast_floor"] = dets.contrast_floor
        if unmeasured or UNMEASURED in layer.metadata[K.PROVENANCE]:
            layer.metadata[K.PROVENANCE][UNMEASURED] = unmeasured
        self._count.value = f"{len(coords):,} in '{_short(layer.name)}'" + (
            f" ({unmeasured:,} not measured yet)" if unmeasured else "")
        self._count.tooltip = layer.name
        if not self.running and self._status.value.startswith("Done:"):
            self._set_status(self._summary())  # the summary follows the sliders, never an old count
        return len(coords)

    def use_tuned_threshold(self, *_):
        """The threshold and contrast floor tuned for the model that made the layer the slider drives."""
        dets = self._target.metadata.get(K.DETECTIONS) if self._target is not None else None
        if dets is not None and dets.default_threshold is not None:
            if self._floor.enabled:
                self._floor.value = dets.default_contrast_floor  # its signal re-filters
            self._threshold.value = dets.default_threshold
            self.apply_threshold()

    def restore_defaults(self, *_):
        """Default model, device and tile size; axes from the layer; the tuned threshold on the current result."""
        save_settings(SECTION, dict(DEFAULTS))
        self._memory_model = None
        self._model_kind.reset_choices()
        self._apply_settings(dict(DEFAULTS))
        self._on_image_changed()
        if self._target is not None:
            self.use_tuned_threshold()

    def _summary(self) -> str:
        prov = self._target.metadata[K.PROVENANCE]
        floor = prov.get("contrast_floor")
        at_floor = f", contrast floor {floor:.2f}" if isinstance(floor, float) and floor > 0 else ""
        return (f"Done: {len(self._target.data):,} spots at threshold {prov['threshold']:.2f}{at_floor} "
                f"with {prov['model']} on {prov['device']}.")

    def _on_layer_removed(self, event):
        if L.same_layer(event.value, self._target):
            self._target = None
            self._threshold.enabled = False
            self._floor.enabled = False
            self._tuned.enabled = False
            self._count.value = "run a detection first"

    def _on_active_layer(self, event):
        layer = event.value
        if layer is not None and not L.same_layer(layer, self._target) \
                and K.DETECTIONS in getattr(layer, "metadata", {}):
            self._set_target(layer)


def _temporary_map_store() -> str:
    """A zarr store for the maps of a lazy image, removed when Python exits."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    folder = tempfile.mkdtemp(prefix="spotdetect-maps-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(Path(folder) / "maps.zarr")


def _short(name: str, keep: int = 14) -> str:
    """A layer name cut in the middle, as the layer list shows it, so the count never widens the panel."""
    return name if len(name) <= 2 * keep + 1 else f"{name[:keep]}…{name[-keep:]}"


def _with_plane_messages(gen):
    """Re-word the engine's tile progress as "plane k of n (t=.., z=..)" for stacks and time series.

    The engine's :class:`Progress` says which plane each tile batch belonged to (``plane``, ``where``).
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if p.total and p.done and p.plane is not None and p.n_planes > 1:
            where = ", ".join(f"{a}={i}" for a, i in p.where.items())
            p.message = f"plane {p.plane + 1} of {p.n_planes} ({where}) · tile {p.done} of {p.total}"
        elif p.total and p.done:
            p.message = f"tile {p.done} of {p.total}"
        yield p


def update_in_place(old, new) -> bool:
    """Give layer ``old`` the data, features, metadata and placement of the freshly built ``new``.

    Only for layers of the same kind and dimensionality (False otherwise: then the caller replaces the
    layer). The user's display choices on ``old`` (colours, opacity, visibility, point size) are kept.
    """
    from napari.layers import Image, Points

    if type(L.unwrap_layer(old)) is not type(L.unwrap_layer(new)) or old.ndim != new.ndim:
        return False
    if isinstance(new, Points):
        old.metadata = new.metadata
        _same_placement(old, new)
        L.replace_points(old, new.data, new.features)
        return True
    if isinstance(new, Image) and not old.multiscale and not new.multiscale and old.rgb == new.rgb:
        _same_placement(old, new)
        old.metadata = new.metadata
        old.data = new.data
        old.contrast_limits_range = new.contrast_limits_range
        old.contrast_limits = new.contrast_limits
        return True
    return False


def _same_placement(old, new) -> None:
    if not np.allclose(old.scale, new.scale):
        old.scale = new.scale
    if not np.allclose(old.translate, new.translate):
        old.translate = new.translate


def replaceable(layer) -> bool:
    """True for a detection (or map) layer nobody has touched since it was made; False for anyone's work."""
    meta = layer.metadata
    if K.SCORE_MAP in meta:
        return True
    if K.DETECTIONS not in meta or K.TRUTH in meta or meta.get(K.EDITED):
        return False
    dets, axes = meta[K.DETECTIONS], (meta.get(K.PROVENANCE) or {}).get("layer_axes")
    if not axes:
        return False
    coords, _ = L.points_from_spots(dets.spots, axes)
    return coords.shape == np.shape(layer.data) and np.allclose(coords, layer.data)


class _Clock:
    """Time left from the pace of the work since the first finished step (loading the model and warming up
    come before it and made early guesses about 45 % high); shown once a few percent are done."""

    def __init__(self, now=time.perf_counter):
        self._now = now
        self.t0 = now()
        self._first: tuple[float, int] | None = None

    def left(self, done, total) -> str:
        if not total or done <= 0 or done >= total:
            return ""
        t = self._now()
        if self._first is None:
            self._first = (t, done)
            return ""
        t1, d1 = self._first
        if done <= d1 or done / total < 0.05 or t - t1 < 2.0:
            return ""
        return "about " + format_seconds((t - t1) * (total - done) / (done - d1)) + " left"


def format_seconds(s: float) -> str:
    """"45 s", "4 min 05 s", "2 h 10 min": rounded once, so 299.6 s is "5 min 00 s", never "4 min 60 s"."""
    s = int(round(max(0.0, float(s))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = int(round(s / 60))
    return f"{m // 60} h {m % 60:02d} min"
