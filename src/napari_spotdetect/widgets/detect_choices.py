"""The Detect panel's "1. Find spots" form: its controls, their defaults, the settings remembered between
sessions, and the :class:`DetectOptions` they make.

Kept apart from the panel so that a new detection option touches one GUI file: its control here, its place in
:meth:`DetectChoices.detect_options`, and (through :meth:`DetectOptions.remembered`) its default and memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, LineEdit, SpinBox, create_widget
from qtpy.QtWidgets import QComboBox

from ..core.common.device import available_devices
from ..core.detection.options import DetectOptions
from ..core.detection.speed import SPEEDS
from ..core.errors import SpotDetectError
from ..core.models.piscis import PERCENTILES
from ..core.models.zoo import bundled_path
from . import layers as L

#: the settings file's section for this panel
SECTION = "detect"
DEFAULTS = {"model_kind": "default", "model_path": "", "show_maps": False,
            **DetectOptions(percentiles=PERCENTILES).remembered(), "threads": 0}
MODEL_KINDS = [
    ("Bundled default model", "default"),
    ("Model file (.pt: piscis or ours)", "file"),
    ("DeepSpot model folder", "folder"),
]
TIPS = {
    "image": "The fluorescence image to search for spots.",
    "axes": "One letter per image dimension: t = time, c = channel, z = depth, y = rows, x = columns.\n"
            "Taken from the layer; change it if napari guessed wrong (e.g. 'cyx' for a channel stack).\n"
            "z-stacks are detected plane by plane and spots are merged across planes.",
    "model": "Which trained network finds the spots. The last model you used is remembered.",
    "path": "The model file (.pt) or DeepSpot SavedModel folder.",
    "device": "Where the network runs: a GPU (cuda, mps) is much faster than the CPU.",
    "threads": "Threads the network uses on the CPU; 0 takes the cores that are idle when detection starts "
               "(all cores on a busy machine is many times slower).",
    "tile": "The image is cut into square tiles of this many pixels (0 = the model's own size).\n"
            "Smaller tiles need less memory; the result is the same.",
    "maps": "Also add the model's score map as an image layer, aligned with the image.",
    "augment": "Run the network on the 8 flips and rotations of every tile and average what it sees:\n"
               "about 7x slower; on real images no more accurate, its scores rank a little better.",
    "speed": "exact: the model's own tiles in float32 (identical to piscis on piscis files).\n"
             "fast: bfloat16 where the CPU or GPU has it natively (and fewer, larger tiles on piscis\n"
             "files): 1.3-4x faster. The bundled and your own models plan the same tiles in both modes,\n"
             "so their spots differ by precision alone; against annotated real images both measured alike.",
    "threshold": "Spots whose score is above this value are kept. Moving it does not run the network again.",
    "contrast_floor": "Drop spots dimmer than this fraction of where this image's spots stand out from its\n"
                      "texture (the elbow of its peaks' contrasts). 0 keeps every spot the threshold keeps.\n"
                      "Around 0.35 counts only spots that stand out, as crowd annotators do. 2-D planes only;\n"
                      "moving it does not run the network again.",
    "min_distance": "Two spots closer than this many pixels count as one (the higher-scoring one is kept).\n"
                    "Raise it if one spot is found twice; keep 1 for tightly clustered spots.",
    "percentiles": "Models that normalise by percentiles (the bundled default) map these percentiles of each\n"
                   "plane to 0 and 1. Raise the high one if many bright spots make dim ones look faint; other\n"
                   "models (piscis files, DeepSpot) standardise each tile and ignore these. A bright region\n"
                   "that holds the plane's brightest pixels (autofluorescence, debris) is left out of the high one.",
}


class DetectChoices:
    """The form's controls (image, axes, model, device, tiling, speed, peaks, normalisation, extras).

    ``model_kinds`` is the model box's choices callable (the panel adds its in-memory and session models).
    """

    def __init__(self, model_kinds):
        self.image = create_widget(annotation=napari.layers.Image, label="Image", options={"tooltip": TIPS["image"]})
        self.axes = LineEdit(label="Axes", tooltip=TIPS["axes"])
        self.model_kind = ComboBox(label="Model", choices=model_kinds, tooltip=TIPS["model"])
        self.model_path = FileEdit(label="Model file", mode="r", tooltip=TIPS["path"])
        self.device = ComboBox(label="Device", choices=["auto", *available_devices()], tooltip=TIPS["device"])
        self.threads = SpinBox(label="CPU threads (0: idle cores)", min=0, max=max(1, os.cpu_count() or 1),
                               tooltip=TIPS["threads"])
        self.tile = SpinBox(label="Tile size (0: auto)", min=0, max=8192, step=8, tooltip=TIPS["tile"])
        self.maps = CheckBox(text="Add the score map as an image", tooltip=TIPS["maps"])
        self.augment = CheckBox(text="Average 8 flips and rotations (slow)", tooltip=TIPS["augment"])
        self.speed = ComboBox(label="Speed", choices=list(SPEEDS), value="exact", tooltip=TIPS["speed"])
        self.min_distance = SpinBox(label="Min. distance (px)", min=1, max=20, value=1, tooltip=TIPS["min_distance"])
        self.p_low = FloatSpinBox(label="Low percentile", min=0.0, max=50.0, step=0.1,
                                  value=PERCENTILES[0], tooltip=TIPS["percentiles"])
        self.p_high = FloatSpinBox(label="High percentile", min=50.0, max=100.0, step=0.1,
                                   value=PERCENTILES[1], tooltip=TIPS["percentiles"])
        self.form = Container(widgets=[self.image, self.axes, self.model_kind, self.model_path, self.device,
                                       self.threads, self.tile, self.speed, self.min_distance, self.p_low,
                                       self.p_high, self.maps, self.augment], labels=True)
        self.form.margins = (0, 0, 0, 0)
        # long choices (model names, layer names) are elided in the box instead of widening the panel
        for box in (self.image, self.model_kind):
            box.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.native.setMinimumContentsLength(12)
        self.model_kind.changed.connect(self.show_model_path)
        self.image.changed.connect(self.guess_axes)

    def apply(self, s: dict) -> None:
        """Show the settings ``s`` (remembered ones may be old or hand-edited: what is not valid falls back)."""
        kind = s.get("model_kind", "default")
        self.model_kind.value = kind if kind in {v for _, v in MODEL_KINDS} else "default"
        path = s.get("model_path") or ""
        self.model_path.value = "" if path == "." else path  # "." was how an empty path used to be stored
        dev = s.get("device", "auto")
        self.device.value = dev if dev in self.device.choices else "auto"
        self.tile.value = int(s.get("tile_size") or 0)
        self.threads.value = _int_within(s.get("threads"), 0, self.threads.max, fallback=0)
        self.maps.value = bool(s.get("show_maps", False))
        self.augment.value = bool(s.get("augment", False))
        self.speed.value = s.get("speed") if s.get("speed") in SPEEDS else "exact"
        self.min_distance.value = _int_within(s.get("min_distance"), 1, 20, fallback=1)
        try:
            self.p_low.value, self.p_high.value = DetectOptions(
                percentiles=s.get("percentiles") or PERCENTILES).percentiles
        except (TypeError, ValueError, SpotDetectError):
            self.p_low.value, self.p_high.value = PERCENTILES
        self.show_model_path()

    def show_model_path(self, *_) -> None:
        """The path box, only for the kinds that need one, asking for a file or a folder."""
        kind = self.model_kind.value
        self.model_path.visible = kind in ("file", "folder")
        self.model_path.mode = "d" if kind == "folder" else "r"
        self.model_path.label = "Model folder" if kind == "folder" else "Model file"

    def guess_axes(self, *_) -> None:
        """The chosen layer's axes (from its labels or its rank); empty where none can be detected."""
        layer = self.image.value
        if layer is None:
            self.axes.value = ""
        else:
            try:
                self.axes.value = L.guess_layer_axes(layer.ndim, layer.axis_labels, layer.rgb)
            except SpotDetectError:
                self.axes.value = ""

    def problem(self) -> str | None:
        """Why a detection cannot start with these choices (a message for the user), or None."""
        layer = self.image.value
        if layer is None:
            return "Open or choose an image layer."
        try:
            L.guess_layer_axes(layer.ndim, (), layer.rgb)  # refuses RGB
            from ..core.common.validate import check_axes

            check_axes(layer.ndim, self.axes.value.strip() or None)
        except SpotDetectError as err:
            return str(err)
        kind = self.model_kind.value
        if kind == "default" and not bundled_path("default").exists():
            return ("The bundled default model is not installed in this version. Choose 'Model file' and a "
                    "piscis .pt file (or one of ours), or a DeepSpot model folder.")
        if kind in ("file", "folder"):
            p = Path(str(self.model_path.value)).expanduser()
            if str(self.model_path.value) in ("", ".") or not p.exists():
                return "Choose the model file." if kind == "file" else "Choose the DeepSpot model folder."
            if kind == "file" and p.is_dir():
                return "This is a folder; choose a model file, or pick 'DeepSpot model folder'."
        try:
            self.detect_options()  # e.g. both percentile boxes at 50: said here, not raised by Run
        except SpotDetectError as err:
            return str(err)
        return None

    def detect_options(self) -> DetectOptions:
        """The detection settings as the engine takes them (checked when made; the axes go with the image)."""
        return DetectOptions(device=None if self.device.value == "auto" else self.device.value,
                             tile_size=int(self.tile.value) or None, keep_maps=bool(self.maps.value),
                             augment=bool(self.augment.value), min_distance=int(self.min_distance.value),
                             percentiles=(float(self.p_low.value), float(self.p_high.value)),
                             speed=self.speed.value)

    def to_remember(self) -> dict | None:
        """The settings worth restoring next time, or None (a model in memory or of this session only).

        Saved only once the model has loaded and detected: a model that failed to load must not come back at
        the next launch.
        """
        kind = self.model_kind.value
        if kind not in ("default", "file", "folder"):
            return None
        path = str(self.model_path.value) if kind != "default" else ""
        return {"model_kind": kind, "model_path": "" if path == "." else path, "show_maps": bool(self.maps.value),
                **self.detect_options().remembered(), "threads": int(self.threads.value)}


def _int_within(value, low: int, high: int, fallback: int) -> int:
    """``value`` as an int clipped to [low, high]; ``fallback`` when it is missing or not a number."""
    try:
        return min(high, max(low, int(value or fallback)))
    except (TypeError, ValueError):
        return fallback
