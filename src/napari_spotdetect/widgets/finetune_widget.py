"""The "Fine-tune on my spots" dock widget: adapt a model to corrected spots, watch it learn, then adopt it.

The user pairs images with Points layers of correct spots (or picks a folder of images and CSVs), chooses
the model to start from, and presses Train. Training is :func:`core.training.finetuning.iter_finetune` (the call
the CLI and the API make, with the same defaults) in a thread; this widget only draws progress and the live
plot. The model used for detection is never touched: the
tuned model is offered in the detection widget, and becomes the one in use only when the user accepts it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QSizePolicy, QWidget

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.models.zoo import bundled_path
from ..core.training import finetuning
from ..core.training.examples import planes_with_spots, split_examples
from ..core.training.finetune_defaults import DEFAULTS as FT
from ._ui import show_status, when_closed
from .model_registry import registry_for
from .progress_text import format_seconds
from .settings import load_settings, save_settings
from .workers import start_worker

log = logging.getLogger(__name__)

SECTION = "finetune"
DEFAULT_OUT = str(Path.home() / "napari-spotdetect" / "models")
#: the panel's starting values: the core's fine-tuning defaults (the CLI's too), plus where to save
DEFAULTS = {"start": "default", "epochs": FT.epochs, "steps": FT.steps_per_epoch, "lr": FT.lr, "loss": FT.loss,
            "val_percent": int(round(100 * FT.val_share)), "out_dir": DEFAULT_OUT, "crop": FT.crop,
            "batch": FT.batch_size, "threads": 0}
_LRS = [("gentle (0.0001)", 1e-4), ("moderate (0.0003)", 3e-4), ("standard (0.001)", 1e-3)]
_LOSSES = [("SmoothF1 (recommended)", "smoothf1"), ("Dice", "dice"), ("Weighted cross-entropy", "ce"),
           ("Focal", "focal")]
_SOURCES = [("Images and spot layers in this viewer", "layers"), ("A folder: images + one CSV each", "folder")]
_DONE_SOURCE = ("Every image marked done (Folder tab)", "done")
_TIP = {
    "pairs": "Each row: an image and the Points layer holding its correct spots (e.g. a corrected detection).\n"
             "Every point counts as a true spot; missing spots teach the model to ignore them.",
    "folder": "A folder of images, each with a CSV of its spots (columns y, x; z too for stacks) named like the image.",
    "start": "The model to adapt. It is copied: the model you detect with is not changed by training.",
    "epochs": "One epoch = the steps below, then a check on the validation images.\nMore epochs: longer, and "
              "a risk of learning your few examples by heart; the best epoch is kept.",
    "steps": "Training steps (batches of random crops) per epoch.",
    "lr": "How big each learning step is. 'gentle' changes the model least (use it for DeepSpot models).",
    "loss": "What training minimises. SmoothF1 is the Piscis paper's loss; the others are for comparison.",
    "val": "Share of the images set aside to choose the threshold and the best epoch. A single image (or region)\n"
           "is split: a strip of this share is held out. 0: checked on the training examples, which flatters.",
    "regions": "Train only inside the rectangles of this Shapes layer (mark every spot in them); outside is\n"
               "unknown, not 'no spot'. Each rectangle is normalised as the whole image, as detection sees it.",
    "out": "The fine-tuned model (.pt) is saved in this folder, with a model card describing the training.",
    "name": "File name of the new model (without .pt).",
    "crop": "Training crops are this many pixels square (a multiple of 8).",
    "batch": "Crops per step. Larger batches: smoother learning, more memory and time per step.",
    "threads": "Threads training uses on the CPU; 0 takes the cores that are idle when training starts\n"
               "(all cores on a busy machine is many times slower).",
    "source": "Where the examples come from: Points layers of correct spots in this viewer, a folder of images\n"
              "with one CSV of spots each, or the images marked done in the Folder tab.",
    "advanced": "Show the crop size, batch size, CPU threads and decoder-only training.",
}


# -- the live plot ----------------------------------------------------------------------------------------
class TrainingPlot(QWidget):
    """Loss per step and per epoch (left axis) and validation F1 per epoch (right axis, 0-1), against epochs.

    The loss is shown positive (1 - F1 + L2 for SmoothF1: :func:`core.training.finetuning.display_loss`); epoch 0 is
    the starting model's F1 at its own threshold, the number the QC panel shows for it.

    A small QPainter plot: matplotlib and pyqtgraph are not napari dependencies, and this needs no more.
    """

    COLORS = {"step": QColor(150, 150, 150), "loss": QColor(80, 160, 255), "f1": QColor(255, 160, 40)}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedHeight(200)  # a fixed height: the wrapped labels around it must not squeeze it
        self.setMinimumWidth(240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.clear()

    def clear(self, epochs: int = 1) -> None:
        self.epochs = max(int(epochs), 1)
        self.step_loss: list[tuple[float, float]] = []  # (epoch position, loss)
        self.epoch_loss: list[tuple[float, float]] = []
        self.val_f1: list[tuple[float, float]] = []
        self.update()

    def add_step(self, x: float, loss: float) -> None:
        if np.isfinite(loss):
            self.step_loss.append((float(x), float(loss)))
            self.update()

    def add_epoch(self, x: float, loss: float | None, f1: float | None) -> None:
        if loss is not None and np.isfinite(loss):
            self.epoch_loss.append((float(x), float(loss)))
        if f1 is not None:
            self.val_f1.append((float(x), float(f1)))
        self.update()

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        losses = [v for _, v in self.step_loss + self.epoch_loss]
        lo, hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        digits = 2 if hi - lo >= 0.1 else 3
        ticks_y = [(v, f"{v:.{digits}f}") for v in (lo, (lo + hi) / 2, hi)]
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        left = max(fm.horizontalAdvance(t) for _, t in ticks_y) + 8
        right, top, bottom = fm.horizontalAdvance("1.0") + 12, 8 + fm.height(), fm.height() + 10
        w, h = self.width() - left - right, self.height() - top - bottom
        if w < 40 or h < 40:
            return

        def X(x):
            return left + w * x / self.epochs

        def Y(v, a=lo, b=hi):
            return top + h * (1 - (v - a) / (b - a))

        # frame, ticks and labels
        p.setPen(QPen(fg, 1))
        p.drawRect(left, top, w, h)
        for v, text in ticks_y:
            p.drawText(2, int(Y(v)) + fm.ascent() // 2, text)
        p.setPen(QPen(self.COLORS["f1"], 1))
        for v in (0.0, 0.5, 1.0):
            p.drawText(left + w + 4, int(Y(v, 0, 1)) + fm.ascent() // 2, f"{v:.1f}")
        p.setPen(QPen(fg, 1))
        ticks = sorted({0, self.epochs, *range(0, self.epochs + 1, max(1, self.epochs // 5))})
        for e in ticks:
            p.drawLine(int(X(e)), top + h, int(X(e)), top + h + 3)
            label = str(e)
            p.drawText(int(X(e)) - fm.horizontalAdvance(label) // 2, top + h + 3 + fm.ascent(), label)
        p.drawText(left + w - fm.horizontalAdvance("epoch"), self.height() - 2, "epoch")
        # legend
        x0 = left
        legend = (("step", "loss per step"), ("loss", "loss per epoch"),
                  ("f1", f"validation F1 ({FT.radius:g} px)"))
        for key, text in legend:
            p.setPen(QPen(self.COLORS[key], 2))
            p.drawLine(x0, fm.height() // 2 + 2, x0 + 14, fm.height() // 2 + 2)
            p.setPen(QPen(fg, 1))
            p.drawText(x0 + 18, fm.ascent(), text)
            x0 += 18 + fm.horizontalAdvance(text) + 14
        # series
        self._line(p, [(X(x), Y(v)) for x, v in self.step_loss], "step", 1, dots=False)
        self._line(p, [(X(x), Y(v)) for x, v in self.epoch_loss], "loss", 2, dots=True)
        self._line(p, [(X(x), Y(v, 0, 1)) for x, v in self.val_f1], "f1", 2, dots=True)
        if not (self.step_loss or self.val_f1):
            p.setPen(QPen(fg, 1))
            p.drawText(left, top, w, h, Qt.AlignmentFlag.AlignCenter, "The curves appear here during training.")
        p.end()

    def _line(self, p, pts, key, width, dots):
        if not pts:
            return
        p.setPen(QPen(self.COLORS[key], width))
        path = QPainterPath(QPointF(*pts[0]))
        for q in pts[1:]:
            path.lineTo(QPointF(*q))
        p.drawPath(path)
        if dots:
            p.setBrush(self.COLORS[key])
            for q in pts:
                p.drawEllipse(QPointF(*q), 3, 3)
            p.setBrush(Qt.BrushStyle.NoBrush)


# -- training data from layers ----------------------------------------------------------------------------
def pairs_from_layers(image_layer, points_layer, load: bool = True) -> list:
    """[(2-D plane, (N, 2) y/x in the image's pixels)] from two layers, honouring their scale and translate.

    A 2-D image gives one pair; a z-stack or time series gives one pair per plane that has points
    (:func:`core.training.examples.planes_with_spots`). ``load=False`` only checks (no pixel copy), for the validation
    that runs on every layer change.
    """
    if image_layer is None or points_layer is None:
        raise SpotDetectError("A row has no image or no spot layer chosen.", "pick both, or remove the row.")
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    nd = np.ndim(data)
    if image_layer.rgb or nd < 2:
        raise SpotDetectError(f"'{image_layer.name}' is {'RGB' if image_layer.rgb else f'{nd}-D'}; "
                              "fine-tuning learns from single-channel fluorescence planes.",
                              "choose a grey-level image (2-D, a z-stack or a time series).")
    pts = np.asarray(points_layer.data, dtype=np.float64)
    if pts.ndim != 2 or (len(pts) and pts.shape[1] != nd):
        raise SpotDetectError(f"'{points_layer.name}' has {pts.shape[-1]}-D points; '{image_layer.name}' is {nd}-D.",
                              "choose a Points layer drawn on this image.")
    if len(pts) == 0:
        raise SpotDetectError(f"'{points_layer.name}' has no points.",
                              "add the correct spots (or choose the layer that holds them).")
    world = pts * np.asarray(points_layer.scale) + np.asarray(points_layer.translate)
    px = (world - np.asarray(image_layer.translate)) / np.asarray(image_layer.scale)
    inside = ((px >= -0.5) & (px < np.asarray(np.shape(data)) - 0.5)).all(axis=1)
    if not inside.any():
        raise SpotDetectError(f"No point of '{points_layer.name}' lies on '{image_layer.name}'.",
                              "pair each image with the spot layer drawn on it.")
    if not load:
        return []
    return planes_with_spots(data, px[inside])


def split_pairs(pairs: list, val_percent: float, seed: int = 0) -> tuple[list, list | None]:
    """Hold out ``val_percent`` % of the pairs: :func:`core.training.examples.split_examples` (the CLI's split)."""
    return split_examples(pairs, val_percent / 100.0, seed)


def _compact(*combos) -> None:
    """Let combo boxes shrink below their longest item (layer and model names can be long): the panel
    scrolls, so a wide item would otherwise widen it past the dock and cut off its right side."""
    for c in combos:
        c.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        c.native.setMinimumContentsLength(8)


class PairRow(Container):
    """One training example: an image layer and the Points layer with its correct spots."""

    def __init__(self, viewer, on_remove):
        from napari.layers import Image, Points

        def layers(kind):
            return lambda _w: [(lay.name, lay) for lay in viewer.layers if isinstance(lay, kind)]

        self.image = ComboBox(choices=layers(Image), tooltip="The image.", nullable=True)
        def truth_candidates(_w):  # QC pictures ("missed (FN)") are never anyone's correct spots
            return [(lay.name, lay) for lay in viewer.layers
                    if isinstance(lay, Points) and K.is_training_candidate(lay)]

        self.points = ComboBox(choices=truth_candidates, tooltip="Its correct spots (a Points layer).", nullable=True)
        self.remove = PushButton(text="✕", tooltip="Remove this example.")
        _compact(self.image, self.points)
        super().__init__(widgets=[self.image, self.points, self.remove], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self.remove.native.setMaximumWidth(28)
        self.remove.changed.connect(lambda *_: on_remove(self))


# -- the widget -------------------------------------------------------------------------------------------
class FinetuneWidget(Container):
    """Dock widget for fine-tuning (npe2 command ``napari-spotdetect.finetune_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._models = registry_for(viewer)  # this viewer's session: fine-tuned models, the last detection's
        s = {**DEFAULTS, **load_settings(SECTION)}
        self._worker = None
        self._stop = threading.Event()
        self._error: str | None = None
        self._result = None  # the last FinetuneResult
        self._entry = None  # its SessionModel
        self._rows: list[PairRow] = []

        self.done_source = None  # set by the tabbed dock: () -> (folder, names of the images marked done)
        self._source = ComboBox(label="Learn from", choices=self._source_choices, tooltip=_TIP["source"])
        self._rows_box = Container(labels=False)
        self._rows_box.margins = (0, 0, 0, 0)
        self._add_row = PushButton(text="+ Add an image", tooltip="Train on one more image and its spots.")
        self._folder = FileEdit(label="Folder", mode="d", tooltip=_TIP["folder"])
        self._start = ComboBox(label="Start from", choices=self._start_choices, tooltip=_TIP["start"])
        self._start_path = FileEdit(label="Model file", mode="r", tooltip=_TIP["start"])
        self._epochs = SpinBox(label="Epochs", min=1, max=500, value=int(s["epochs"]), tooltip=_TIP["epochs"])
        self._steps = SpinBox(label="Steps per epoch", min=1, max=10_000, value=int(s["steps"]), tooltip=_TIP["steps"])
        self._lr = ComboBox(label="Learning rate", choices=_LRS, tooltip=_TIP["lr"])
        self._loss = ComboBox(label="Loss", choices=_LOSSES, tooltip=_TIP["loss"])
        self._val = SpinBox(label="Validation (%)", min=0, max=50, value=int(s["val_percent"]),
                            tooltip=_TIP["val"])
        self._regions = ComboBox(label="Only inside", choices=self._region_choices, tooltip=_TIP["regions"])
        self._advanced = CheckBox(text="More settings", value=False, tooltip=_TIP["advanced"])
        self._crop = SpinBox(label="Crop size (px)", min=32, max=1024, step=8, value=int(s["crop"]),
                             tooltip=_TIP["crop"])
        self._batch = SpinBox(label="Batch size", min=1, max=64, value=int(s["batch"]), tooltip=_TIP["batch"])
        cores = max(1, os.cpu_count() or 1)
        self._threads = SpinBox(label="CPU threads (0: idle cores)", min=0, max=cores, tooltip=_TIP["threads"],
                                value=min(cores, max(0, int(s.get("threads") or 0))))
        self._threads_used: int | None = None
        self._decoder_only = CheckBox(text="Decoder only (fast)", value=False,
                                      tooltip="Keep the encoder and BatchNorm statistics as loaded and train the "
                                              "decoder and heads: about 3x less CPU a step, no recalibration.")
        self._out = FileEdit(label="Save in", mode="d", value=s["out_dir"], tooltip=_TIP["out"])
        self._name = LineEdit(label="Model name", value=_default_name(), tooltip=_TIP["name"])
        self._train = PushButton(text="Train", tooltip="Start fine-tuning; the viewer stays usable meanwhile.")
        self._stop_btn = PushButton(text="Stop", enabled=False,
                                    tooltip="Stop after the current step; the best epoch so far is kept.")
        self._progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self._status = Label(value="")
        self._plot = TrainingPlot()
        self._outcome = Label(value="")
        self._use = PushButton(text="Use this model", enabled=False,
                               tooltip="Select the new model in 'Detect spots' (the old one stays available).")
        self._use_run = PushButton(text="Use it and detect again", enabled=False,
                                   tooltip="Select the new model in 'Detect spots' and run it on the chosen image.")

        heads = [Label(value="<b>1. Examples with correct spots</b>"), Label(value="<b>2. Model and training</b>"),
                 Label(value="<b>3. Train and watch the curves</b>"), Label(value="<b>4. Use the new model</b>")]
        self._plot_hint = Label(value="Loss should fall and validation F1 rise. Epoch 0 is the model you start "
                                      "from; the best epoch is kept.")
        use_hint = Label(value="Nothing changes in 'Detect spots' until you press one of these.")
        _compact(self._source, self._start, self._lr, self._loss)
        for lab in (self._status, self._outcome, self._plot_hint, use_hint):  # before insertion: the scroll
            lab.native.setWordWrap(True)  # area takes its minimum width from the unwrapped text otherwise
            lab.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            lab.native.setMinimumWidth(200)
        self._data_form = Container(widgets=[self._source, self._folder, self._regions], labels=True)
        form = Container(widgets=[self._start, self._start_path, self._epochs, self._steps, self._lr, self._loss,
                                  self._val], labels=True)
        self._adv_form = Container(widgets=[self._crop, self._batch, self._threads, self._decoder_only], labels=True,
                                   visible=False)
        out_form = Container(widgets=[self._out, self._name], labels=True)
        buttons = Container(widgets=[self._train, self._stop_btn], layout="horizontal", labels=False)
        use = Container(widgets=[self._use, self._use_run], layout="horizontal", labels=False)
        self.body = Container(labels=False, widgets=[
            heads[0], self._data_form, self._rows_box, self._add_row, heads[1], form, self._advanced,
            self._adv_form, out_form, heads[2], buttons, self._progress, self._status, self._plot_hint, heads[3],
            use_hint, self._outcome, use])
        layout = self.body.native.layout()  # the plot is a plain QWidget: place it under its explanation
        layout.insertWidget(layout.indexOf(self._plot_hint.native) + 1, self._plot)
        # The panel is taller than a shared dock: scroll rather than squeeze (squeezed widgets overlap).
        # Our own QScrollArea, because napari docks `.native`, which for magicgui's scrollable=True is the
        # inner widget, torn out of its scroll area.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.body.native)
        scroll.setMinimumWidth(self.body.native.minimumSizeHint().width() + 16)
        scroll.setMinimumHeight(140)  # a slit otherwise; any taller and four docks overflow a 768 px screen
        self.native.layout().addWidget(scroll)
        self._scroll = scroll
        from .layers import elide_layer_names

        elide_layer_names(self.native)
        self.margins = (0, 0, 0, 0)
        for c in (self._data_form, form, self._adv_form, out_form, buttons, use):
            c.margins = (0, 0, 0, 0)

        self._lr.value = min((v for _, v in _LRS), key=lambda v: abs(v - float(s["lr"])))
        self._loss.value = s["loss"] if s["loss"] in {v for _, v in _LOSSES} else "smoothf1"
        self._source.changed.connect(self._on_source)
        self._add_row.changed.connect(lambda *_: self.add_pair())
        self._start.changed.connect(self._on_start)
        self._advanced.changed.connect(lambda v: setattr(self._adv_form, "visible", bool(v)))
        for w in (self._folder, self._start_path, self._out, self._name):
            w.changed.connect(self._validate)
        self._train.changed.connect(self.train)
        self._stop_btn.changed.connect(self.stop)
        self._use.changed.connect(lambda *_: self.use_model(detect_again=False))
        self._use_run.changed.connect(lambda *_: self.use_model(detect_again=True))
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._on_layers_changed)
        self._models.added.connect(self._on_session_model)
        start = s["start"]
        self._start.value = start if start in self._start.choices else self._start.choices[0]
        self.add_pair()
        self._on_source()
        self._on_start()
        self._closed = False
        self._close_watcher = when_closed(self.native, self.close_panel)

    def close_panel(self, *_) -> None:
        """The panel was closed (its dock's x, or deleted): stop training as Stop does, and let go of the viewer.

        The run still ends properly in its thread, so the best epoch so far becomes the model file; a
        notification says where it is (the panel that would have said it is gone).
        """
        if self._closed:
            return
        self._closed = True
        from ._ui import disconnect_all

        disconnect_all((self._viewer.layers.events.inserted, self._on_layers_changed),
                       (self._viewer.layers.events.removed, self._on_layers_changed),
                       (self._models.added, self._on_session_model))
        worker = self._worker
        if worker is None:
            return
        self._stop.set()
        self._worker = None
        handlers = getattr(worker, "_spotdetect_handlers", [])
        for signal, handler in handlers:
            try:
                signal.disconnect(handler)
            except (TypeError, RuntimeError):
                pass
        worker._spotdetect_handlers = []
        _finish_unattended(worker, self._models)

    # -- choices ----------------------------------------------------------------------------------------
    def _start_choices(self, _widget=None) -> list:
        out = []
        if bundled_path("default").exists():
            out.append(("Bundled default model", "default"))
        if self._models.last_detection_model is not None:
            out.append((f"Model of the last detection ({self._models.last_detection_model.info.name})", "last"))
        out += [(e.label, k) for k, e in self._models.models.items()]
        out.append(("Model file (.pt)", "file"))
        return out

    def add_pair(self, image=None, points=None) -> PairRow:
        """Add a row; by default the first image not yet used and a ground-truth (else the last) Points layer."""
        row = PairRow(self._viewer, self._remove_row)
        self._rows.append(row)
        self._rows_box.append(row)
        row.reset_choices()
        used = {r.image.value for r in self._rows}
        images = [v for v in row.image.choices if v is not None]
        points_layers = [v for v in row.points.choices if v is not None]
        row.image.value = image or next((i for i in images if i not in used), images[0] if images else None)
        if points is None and row.image.value is not None:  # prefer ground truth, and a name like the image's
            named = [p for p in points_layers if row.image.value.name in p.name]
            gt = [p for p in points_layers if K.is_truth(p)]
            points = ([p for p in gt if p in named] or named or gt or points_layers or [None])[-1]
        row.points.value = points
        row.image.changed.connect(self._validate)
        row.points.changed.connect(self._validate)
        self._validate()
        return row

    def _remove_row(self, row) -> None:
        if row in self._rows:
            self._rows.remove(row)
            self._rows_box.remove(row)
        self._validate()

    def _on_layers_changed(self, *_):
        for row in self._rows:
            row.reset_choices()
        self._start.reset_choices()  # a detection may have just made "last detection" available
        self._regions.reset_choices()
        self._validate()

    def _on_session_model(self, _entry) -> None:
        self._start.reset_choices()

    def _region_choices(self, _widget=None) -> list:
        from napari.layers import Shapes

        return [("the whole images", None), *((lay.name, lay) for lay in self._viewer.layers
                                               if isinstance(lay, Shapes) and lay.name != "click here next")]

    def set_regions(self, layer) -> None:
        """Train only inside the rectangles of ``layer`` (a Shapes layer; None: the whole images)."""
        self._regions.reset_choices()
        self._regions.value = layer

    def _source_choices(self, _widget=None) -> list:
        return [*_SOURCES, _DONE_SOURCE] if getattr(self, "done_source", None) is not None else list(_SOURCES)

    def train_on_done(self):
        """'Train on everything marked done' in the folder loop: choose that source and start; the worker."""
        self._source.reset_choices()
        self._source.value = "done"
        return self.train()

    def _on_source(self, *_):
        folder = self._source.value == "folder"
        self._folder.visible = folder
        self._rows_box.visible = self._add_row.visible = self._regions.visible = self._source.value == "layers"
        self._validate()

    def _on_start(self, *_):
        self._start_path.visible = self._start.value == "file"
        self._validate()

    def _model_source(self):
        kind = self._start.value
        if kind == "last":
            return self._models.last_detection_model
        if kind in self._models.models:
            return self._models.models[kind].model
        if kind == "file":
            return str(self._start_path.value)
        return kind

    def _model_path(self) -> Path:
        return Path(str(self._out.value)).expanduser() / f"{self._name.value.strip()}.pt"

    def problem(self) -> str | None:
        """Why Train cannot start (a message for the user), or None."""
        if self._source.value == "folder":
            f = str(self._folder.value)
            if f in ("", ".") or not Path(f).expanduser().is_dir():
                return "Choose the folder of images and spot CSVs."
        elif self._source.value == "done":
            folder, names = self.done_source() if self.done_source else (None, [])
            if not names:
                return "No image is marked done yet: correct one in the Folder tab and press Ctrl+Enter."
        else:
            if not self._rows:
                return "Add an image and its spots (+ Add an image)."
            try:
                for row in self._rows:
                    if row.image.value is None or row.points.value is None:
                        raise SpotDetectError("Pick an image and its spot layer in every row (or remove the row).")
                    pairs_from_layers(row.image.value, row.points.value, load=False)
            except SpotDetectError as err:
                return str(err)
        if self._start.value is None:
            return "Choose the model to start from."
        if self._start.value == "file":
            p = Path(str(self._start_path.value)).expanduser()
            if str(self._start_path.value) in ("", ".") or not p.is_file():
                return "Choose the model file to start from."
        name = self._name.value.strip()
        if not name or any(c in name for c in '/\\:*?"<>|'):
            return "Give the new model a name (letters, digits, - and _)."
        if str(self._out.value) in ("", "."):
            return "Choose the folder to save the model in."
        if self._model_path().exists():
            return f"A model named '{name}' already exists in that folder; choose another name."
        return None

    def _validate(self, *_):
        if self._worker is not None:
            return
        msg = self.problem()
        self._train.enabled = msg is None
        self._set_status(msg or "Ready to train.", error=msg is not None)

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)

    # -- public API (scripts, notebooks, tests) ----------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the viewer's layers and the session's models into the choices (napari does it on changes)."""
        self._on_layers_changed()

    def set_example(self, image, points, row: int = 0) -> None:
        """Train on ``image`` (an Image layer) with the spots of ``points`` (a Points layer), in row ``row``."""
        self.set_source("layers")
        self.refresh()
        while len(self._rows) <= row:
            self.add_pair()
        r = self._rows[row]
        r.image.value, r.points.value = image, points

    def examples(self) -> list[tuple]:
        """The (image layer, Points layer) chosen in each example row."""
        return [(r.image.value, r.points.value) for r in self._rows]

    def spot_layer_choices(self, row: int = 0) -> list:
        """The Points layers a row offers as correct spots (QC pictures never are)."""
        return [v for v in self._rows[row].points.choices if v is not None]

    def set_source(self, source: str, folder=None) -> None:
        """Learn from "layers" (the example rows), a "folder" of images and CSVs, or the images marked "done"."""
        self._source.reset_choices()
        self._source.value = source
        if folder is not None:
            self._folder.value = folder

    @property
    def source(self) -> str:
        return self._source.value

    def set_start(self, start: str, path=None) -> None:
        """The model to start from: "default", "last" (the last detection's), "file" (with ``path``), or the
        key of a model fine-tuned in this viewer's session."""
        self._start.reset_choices()
        if path is not None:
            self._start_path.value = path
        self._start.value = start

    def set_options(self, *, epochs=None, steps=None, lr=None, loss=None, val_percent=None, crop=None, batch=None,
                    out_dir=None, name=None, threads=None) -> None:
        """Training settings (None leaves one as it is); ``lr``: one of the panel's rates; ``threads`` 0: idle cores."""
        for widget, value in ((self._epochs, epochs), (self._steps, steps), (self._lr, lr), (self._loss, loss),
                              (self._val, val_percent), (self._crop, crop), (self._batch, batch),
                              (self._out, out_dir), (self._name, name), (self._threads, threads)):
            if value is not None:
                widget.value = value

    def options(self) -> dict:
        """The training settings as the panel shows them."""
        return {"epochs": int(self._epochs.value), "steps": int(self._steps.value), "lr": float(self._lr.value),
                "loss": self._loss.value, "val_percent": int(self._val.value), "crop": int(self._crop.value),
                "batch": int(self._batch.value), "out_dir": Path(str(self._out.value)).expanduser(),
                "name": self._name.value.strip(), "threads": int(self._threads.value)}

    @property
    def threads_used(self) -> int | None:
        """torch CPU threads the last run trained with (the setting, or the idle cores for 0)."""
        return self._threads_used

    def config(self):
        """The :class:`~napari_spotdetect.core.training.train.TrainConfig` that Train would use."""
        return self._config()

    @property
    def can_train(self) -> bool:
        return bool(self._train.enabled)

    @property
    def can_stop(self) -> bool:
        return bool(self._stop_btn.enabled)

    @property
    def can_use_model(self) -> bool:
        return bool(self._use.enabled)

    @property
    def plot(self) -> TrainingPlot:
        """The live plot: ``step_loss``, ``epoch_loss`` and ``val_f1`` as (epoch position, value) lists."""
        return self._plot

    @property
    def result(self):
        """The last run's :class:`~napari_spotdetect.core.training.finetuning.FinetuneResult` (None before one ends)."""
        return self._result

    @property
    def session_entry(self):
        """The last run's model as offered to 'Detect spots' (None before one ends)."""
        return self._entry

    @property
    def error(self) -> str | None:
        """The message of the last run's error, or None."""
        return self._error

    @property
    def status(self) -> str:
        return self._status.value

    @property
    def outcome(self) -> str:
        """What the last run produced, as the panel tells the user."""
        return self._outcome.value

    # -- training ---------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _config(self):
        return finetuning.finetune_config(epochs=int(self._epochs.value), steps_per_epoch=int(self._steps.value),
                                    lr=float(self._lr.value), loss=self._loss.value, crop=int(self._crop.value),
                                    batch_size=int(self._batch.value), freeze_encoder=bool(self._decoder_only.value))

    def train(self, *_):
        """Start fine-tuning in a worker thread; returns the worker (None when the choices are not valid)."""
        msg = self.problem()
        if msg is not None:
            self._set_status(msg, error=True)
            return None
        save_settings(SECTION, {"start": self._start.value if self._start.value in ("default", "file") else "default",
                                "epochs": int(self._epochs.value), "steps": int(self._steps.value),
                                "lr": float(self._lr.value), "loss": self._loss.value,
                                "val_percent": int(self._val.value), "out_dir": str(self._out.value),
                                "crop": int(self._crop.value), "batch": int(self._batch.value),
                                "threads": int(self._threads.value)})
        only = None
        if self._source.value == "folder":
            folder, pairs = str(self._folder.value), None
            info = {"folder": str(Path(folder).expanduser().resolve())}
        elif self._source.value == "done":
            folder, only = self.done_source()
            folder, pairs = str(folder), None
            info = {"folder": str(Path(folder).resolve()), "images_marked_done": list(only)}
        else:
            folder = None
            pairs = [p for r in self._rows for p in self._examples_of(r)]
            info = {"layers": [[r.image.value.name, r.points.value.name] for r in self._rows]}
            if self._regions.value is not None:
                info["regions"] = self._regions.value.name
        cfg, val_percent = self._config(), int(self._val.value)
        source, name, out = self._model_source(), self._name.value.strip(), Path(str(self._out.value)).expanduser()
        self._stop = threading.Event()
        stop = self._stop
        self.native.destroyed.connect(stop.set)  # closing the panel (or napari) ends training too
        threads = int(self._threads.value) or None
        self._threads_used = None

        def steps():
            from ..core.common.device import use_threads
            from ..core.training.examples import pairs_from_folder

            self._threads_used = use_threads(threads)  # in the worker thread: torch's count is per thread

            all_pairs = pairs_from_folder(folder, only=only) if folder else pairs
            info["n_examples"] = len(all_pairs)
            return (yield from finetuning.iter_finetune(source, all_pairs, None, cfg, out=out / f"{name}.pt",
                                                        stop=stop, val_share=val_percent / 100.0, data_info=info))

        self._error, self._result, self._entry = None, None, None
        self._plot.clear(cfg.epochs)
        self._train.enabled, self._stop_btn.enabled = False, True
        self._use.enabled = self._use_run.enabled = False
        self._outcome.value = ""
        self._progress.visible = True
        self._progress.max, self._progress.value = cfg.epochs * cfg.steps_per_epoch, 0
        self._set_status("Starting…")
        self._worker = start_worker(steps(), on_yield=self._on_event, on_return=self._on_result,
                                    on_error=self._on_error, on_finish=self._on_finished)
        return self._worker

    def stop(self, *_):
        """Ask the trainer to stop after the current step (or validation image); the best epoch is kept."""
        if self._worker is not None:
            self._stop.set()
            self._stop_btn.enabled = False
            self._set_status("Stopping after the current step…")

    def _on_event(self, ev):
        steps = max(ev.steps, 1)
        if ev.epochs:
            self._progress.max = ev.epochs * steps
            self._progress.value = min(self._progress.max, ev.done_steps)
        if ev.kind == "start" and ev.val_f1 is not None:  # the starting model, measured before training
            self._plot.add_epoch(0, None, ev.val_f1)
        if ev.kind == "start" and ev.advice:
            from napari.utils.notifications import show_warning

            show_warning(ev.advice)
        if ev.kind == "step":
            loss = float("nan") if ev.loss is None else ev.loss
            self._plot.add_step(ev.epoch - 1 + ev.step / steps, loss)
            best = f" · best validation F1 so far {ev.best_f1:.2f}" if ev.best_f1 is not None else ""
            left = f" · about {format_seconds(ev.eta_s)} left" if ev.eta_s is not None else ""
            self._set_status(f"Epoch {ev.epoch} of {ev.epochs} · step {ev.step} of {steps} · "
                             f"loss {loss:.4f}{best}{left}")
        elif ev.kind == "epoch":
            self._plot.add_epoch(ev.epoch, ev.loss, ev.val_f1)
            self._set_status(ev.message)
        elif ev.message:
            self._set_status(ev.message)

    def _examples_of(self, row) -> list:
        """A row's training examples: its planes, or only its regions when 'Only inside' names a Shapes layer."""
        pairs = pairs_from_layers(row.image.value, row.points.value)
        shapes = self._regions.value
        if shapes is None:
            return pairs
        from ..core.groundtruth.regions import region_examples
        from .adapt_widget import regions_in_image

        if len(pairs) != 1:
            raise SpotDetectError("Regions are drawn on 2-D images; this row has a stack.",
                                  "choose 'the whole images' for stacks.")
        boxes = regions_in_image(shapes, row.image.value)
        if not boxes:
            raise SpotDetectError(f"'{shapes.name}' holds no rectangle.",
                                  "draw a region, or train on the whole images.")
        return region_examples(pairs[0][0], pairs[0][1], boxes)

    def _on_result(self, res):
        self._result = res
        if res.model is None:
            self._outcome.value = ("Stopped before the first epoch ended: nothing was saved, and the model you "
                                   "detect with is unchanged.")
            self._scroll.ensureWidgetVisible(self._outcome.native)
            return
        self._entry = self._models.add(res.model, res.path)
        card = res.model.info.card
        on_itself = (" (measured on the training examples themselves)"
                     if "no held-out" in str(card.get("validation_data")) else "")
        self._outcome.value = f"{res.verdict()}{on_itself}<br>File: {res.path}"
        self._use.enabled = self._use_run.enabled = True
        self._name.value = _next_name(self._name.value.strip(), Path(str(self._out.value)).expanduser())

    def _on_error(self, err):
        if isinstance(err, SpotDetectError):
            text = str(err)
        else:
            log.error("Fine-tuning failed", exc_info=err)
            text = f"Training failed: {type(err).__name__}: {err}"
        self._error = text
        show_error(text)

    def _on_finished(self):
        self._worker = None
        self._stop_btn.enabled = False
        self._progress.visible = False
        self._validate()
        if self._error:
            self._set_status(self._error, error=True)
        elif self._result is not None:
            self._set_status("Stopped." if self._result.stopped else "Training finished.")
        # the verdict and the Use buttons sit below the fold on a laptop screen: bring them into view
        self._scroll.ensureWidgetVisible(self._use_run.native, 0, 20)
        self._scroll.ensureWidgetVisible(self._outcome.native, 0, 20)

    # -- adopting the result ----------------------------------------------------------------------------
    def use_model(self, detect_again: bool = False) -> bool:
        """Make the new model the one 'Detect spots' uses (docking that widget if needed); maybe detect again."""
        if self._entry is None:
            return False
        if self._models.use(self._entry, detect_again) == 0:
            self._viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
            self._models.use(self._entry, detect_again)
        note = f"<br>→ 'Detect spots' now uses {self._entry.model.info.name}"
        self._outcome.value = self._outcome.value.split("<br>→")[0] + note + (
            " and is detecting again." if detect_again else ".")
        return True


_UNATTENDED: set = set()  # workers of closed panels, kept alive until they end


def _finish_unattended(worker, models) -> None:
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


def _default_name() -> str:
    return "finetuned-" + _dt.datetime.now().strftime("%Y%m%d-%H%M")


def _next_name(name: str, folder: Path) -> str:
    """``name`` or ``name-2``, ``name-3``… : the first that is not taken, so Train can be pressed again."""
    stem, k = name, 2
    if "-" in name and name.rsplit("-", 1)[1].isdigit() and len(name.rsplit("-", 1)[1]) < 3:
        stem, k = name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1]) + 1
    cand = name
    while (folder / f"{cand}.pt").exists():
        cand, k = f"{stem}-{k}", k + 1
    return cand
