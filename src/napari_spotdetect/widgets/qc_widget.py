"""The "Check against ground truth" dock widget: how good are the detections, and where are the mistakes.

The numbers come from :func:`core.groundtruth.metrics.evaluate` (the function ``spotdetect evaluate`` prints), so the
widget and the command line never disagree. On the canvas, predictions are coloured found (TP) or false
alarm (FP) and the missed true spots (FN) get their own layer, so the user sees where the model fails.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, FloatSpinBox, Label, PushButton, create_widget
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.groundtruth import annotations as A
from . import layers as L
from ._ui import make_scrollable

#: the table leads with the numbers people compare; counts follow
_SHOWN = ["image", "f1", "f1_integral", "precision", "recall", "tp", "fp", "fn", "n_pred", "n_true"]


def image_key(layer) -> str:
    """The image a spots layer belongs to: from the detection or ground-truth mark, else from its name."""
    meta = layer.metadata
    if K.TRUTH in meta:
        return str(meta[K.TRUTH].get("image"))
    prov = meta.get(K.PROVENANCE) or {}
    if prov.get("image_layer"):
        return str(prov["image_layer"])
    for prefix in ("truth: ", "spots: "):
        if layer.name.startswith(prefix):
            return layer.name[len(prefix):]
    for suffix in (" ground truth", " truth", " spots"):
        if layer.name.endswith(suffix):
            return layer.name[: -len(suffix)]
    return layer.name


def auto_pairs(layers) -> list[tuple]:
    """(predictions, ground truth) for each image that has both open: detections vs layers marked truth."""
    points = [lay for lay in layers if isinstance(lay, napari.layers.Points) and K.QC_MISSED not in lay.metadata]
    truths = {image_key(lay): lay for lay in points if K.TRUTH in lay.metadata}
    preds = [lay for lay in points if K.is_detection(lay)]
    return [(p, truths[image_key(p)]) for p in preds if image_key(p) in truths]


class QCWidget(Container):
    """Dock widget for quality control (npe2 command ``napari-spotdetect.qc_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self.rows: list[dict] = []
        self._pred = create_widget(annotation=napari.layers.Points, label="Predictions",
                                   options={"tooltip": "The detected spots to check."})
        self._truth = create_widget(annotation=napari.layers.Points, label="Ground truth",
                                    options={"tooltip": "The correct spots (e.g. made with 'Correct spots')."})
        self._radius = FloatSpinBox(label="Match radius (px)", value=1.0, min=0.1, max=20.0, step=0.5,
                                    tooltip="A prediction counts as found if a true spot lies within this "
                                            "distance (one-to-one). 'spotdetect evaluate --radius' uses the same.")
        self._all = CheckBox(value=True, text="Also every other image with both layers open",
                             tooltip="Pairs detections with the ground truth made for the same image.")
        self._run = PushButton(text="Compare", tooltip="Score the predictions and colour them on the canvas.")
        self._summary = Label(value="Choose predictions and ground truth, then Compare.")
        self._legend = Label(value=(f"<span style='color:{L.QC_COLOURS['TP']}'>■ found (TP)</span> &nbsp; "
                                    f"<span style='color:{L.QC_COLOURS['FP']}'>■ false alarm (FP)</span> &nbsp; "
                                    f"<span style='color:{L.QC_COLOURS['FN']}'>■ missed (FN)</span><br>"
                                    f"<span style='color:{L.TRUTH_COLOUR}'>○ ground truth</span>"))
        self._legend.native.setWordWrap(True)
        self._out = FileEdit(label="Table file", mode="w", filter="*.csv", tooltip="Where to export the table.")
        self._export = PushButton(text="Export table (CSV)", enabled=False)
        form = Container(widgets=[self._pred, self._truth, self._radius], labels=True)
        form.margins = (0, 0, 0, 0)
        self.extend([form, self._all, self._run, self._summary, self._legend])
        self._summary.native.setWordWrap(True)
        self._summary.native.setMinimumWidth(300)
        self._table = QTableWidget(0, len(_SHOWN))
        self._table.setHorizontalHeaderLabels(["image", "F1", "F1 int.", "precision", "recall", "TP", "FP", "FN",
                                               "pred", "true"])
        self._table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._table.verticalHeader().setVisible(False)
        self._table.setMinimumHeight(120)
        self.native.layout().addWidget(self._table)
        out_form = Container(widgets=[self._out], labels=True)
        out_form.margins = (0, 0, 0, 0)
        self.extend([out_form, self._export])
        make_scrollable(self)
        L.elide_layer_names(self.native)
        self._run.changed.connect(self.compare)
        self._export.changed.connect(self.export)
        self._compared: list[tuple] = []  # the (predictions, truth) layers behind the numbers shown
        self._again = QTimer()  # spots changed after Compare: compare again once the edits pause
        self._again.setSingleShot(True)
        self._again.setInterval(300)
        self._again.timeout.connect(self._recompare)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        pairs = auto_pairs(viewer.layers)
        if pairs:
            self._pred.value, self._truth.value = pairs[0]

    # -- public API (scripts, notebooks, tests) ----------------------------------------------------------
    def set_layers(self, predictions, truth, *, radius: float | None = None, all_images: bool | None = None) -> None:
        """Compare ``predictions`` with ``truth`` (Points layers) at ``radius`` px; with ``all_images``, also
        every other image whose detections and ground truth are open."""
        self._pred.value, self._truth.value = predictions, truth
        if radius is not None:
            self._radius.value = float(radius)
        if all_images is not None:
            self._all.value = bool(all_images)

    @property
    def radius(self) -> float:
        return float(self._radius.value)

    @property
    def summary(self) -> str:
        """The panel's summary of the first compared image (or why nothing was compared)."""
        return self._summary.value

    @property
    def can_export(self) -> bool:
        return bool(self._export.enabled)

    def prediction_choices(self) -> list:
        return [v for v in self._pred.choices if v is not None]

    @property
    def chosen(self) -> tuple:
        """The (predictions, ground truth) layers chosen in the panel."""
        return self._pred.value, self._truth.value

    def table_text(self) -> list[list[str]]:
        """The per-image table as the panel shows it, row by row."""
        t = self._table
        return [[t.item(r, c).text() if t.item(r, c) else "" for c in range(t.columnCount())]
                for r in range(t.rowCount())]

    def export_table(self, path):
        """Write the table to ``path`` (.csv added if missing); returns the file, or None."""
        self._out.value = path
        return self.export()

    def pairs(self) -> list[tuple]:
        chosen = (self._pred.value, self._truth.value)
        out = [chosen] if all(v is not None for v in chosen) else []
        if self._all.value:
            seen = {tuple(id(L.unwrap_layer(x)) for x in pair) for pair in out}
            out += [p for p in auto_pairs(self._viewer.layers)
                    if tuple(id(L.unwrap_layer(x)) for x in p) not in seen]
        return out

    def compare(self, *_) -> list[dict]:
        """Score every pair, colour the predictions, show the missed spots; returns the table rows."""
        pairs = self.pairs()
        if not pairs:
            self._summary.value = "Choose a predictions layer and a ground-truth layer."
            return []
        radius = float(self._radius.value)
        rows = []
        try:
            for pred, truth in pairs:
                if L.unwrap_layer(pred) is L.unwrap_layer(truth):
                    raise SpotDetectError("Predictions and ground truth are the same layer.",
                                          "choose the detections and the corrected copy.")
                truth_xy = L.to_layer_coords(truth, pred, truth.data)
                scores, is_tp, found = A.qc_compare(pred.data, truth_xy, radius)
                self._colour(pred, is_tp)
                self._missed_layer(pred, truth_xy[~found])
                rows.append({"image": image_key(pred), "predictions": pred.name, "truth": truth.name,
                             "radius": radius, **{k: scores[k] for k in A.QC_COLUMNS if k in scores}})
        except SpotDetectError as err:
            self._summary.value = str(err)
            show_error(str(err))
            return []
        self.rows = rows
        self._follow(pairs)
        r = rows[0]
        self._summary.value = (f"<b>{r['image']}</b> at {radius:g} px: precision {r['precision']:.3f}, recall "
                               f"{r['recall']:.3f}, <b>F1 {r['f1']:.3f}</b>; F1 integral (0–3 px) "
                               f"{r['f1_integral']:.3f}.<br>{r['tp']} found, {r['fp']} false alarms, "
                               f"{r['fn']} missed.")
        self._fill_table()
        self._export.enabled = True
        return rows

    # -- keeping the numbers true to the layers ---------------------------------------------------------------
    def _follow(self, pairs) -> None:
        """Listen to the compared layers: a threshold move or an edit makes the numbers stale."""
        self._unfollow()
        self._compared = [(L.unwrap_layer(p), L.unwrap_layer(t)) for p, t in pairs]
        for lay in self._followed():
            lay.events.data.connect(self._on_spots_changed)

    def _followed(self) -> list:
        out = []
        for pair in self._compared:
            out += [lay for lay in pair if all(lay is not o for o in out)]
        return out

    def _unfollow(self) -> None:
        for lay in self._followed():
            lay.events.data.disconnect(self._on_spots_changed)
        self._compared = []

    def _on_spots_changed(self, event=None) -> None:
        if not self.rows:
            return
        if "Outdated" not in self._summary.value:
            self._summary.value = ("<b>Outdated</b>: the spots changed since Compare; comparing again…<br>"
                                   + self._summary.value)
        self._again.start()

    def _recompare(self) -> None:
        if self._compared:
            with self._pred.changed.blocked(), self._truth.changed.blocked():
                self._pred.value, self._truth.value = self._compared[0]
            self.compare()

    def _on_layer_removed(self, event) -> None:
        """A compared layer closed: its numbers and its 'missed' layer describe nothing on screen any more."""
        gone = L.unwrap_layer(event.value)
        if not any(gone is lay for lay in self._followed()):
            return
        preds = [p for p, _t in self._compared]
        self._again.stop()
        self._unfollow()
        self.rows = []
        self._table.setRowCount(0)
        self._export.enabled = False
        self._summary.value = "The compared layers were closed. Choose predictions and ground truth, then Compare."
        for lay in [lay for lay in self._viewer.layers if K.QC_MISSED in lay.metadata
                    and any(lay.metadata[K.QC_MISSED] == p.name for p in preds)]:
            self._viewer.layers.remove(lay)

    def _colour(self, pred, is_tp: np.ndarray) -> None:
        features = pred.features.copy()
        features["qc"] = np.where(is_tp, "TP", "FP")
        pred.features = features
        if len(pred.data):
            pred.border_color = [L.QC_COLOURS["TP"] if t else L.QC_COLOURS["FP"] for t in is_tp]

    def _missed_layer(self, pred, coords: np.ndarray):
        name = L.layer_name("missed (FN)", image_key(pred))
        existing = [lay for lay in self._viewer.layers if lay.name == name and K.QC_MISSED in lay.metadata]
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, pred.ndim)
        if existing:
            layer = existing[0]
            layer.data = coords
        else:
            layer = self._viewer.add_points(
                coords, ndim=pred.ndim, name=name, symbol="square", size=9, face_color="transparent",
                border_color=L.QC_COLOURS["FN"], border_width=0.15, border_width_is_relative=True,
                scale=pred.scale, translate=pred.translate, metadata={K.QC_MISSED: pred.name},
                projection_mode=getattr(pred, "projection_mode", "none"))
        return layer

    def _fill_table(self):
        self._table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            for j, key in enumerate(_SHOWN):
                v = row[key]
                text = f"{v:.3f}" if isinstance(v, float) else str(v)
                self._table.setItem(i, j, QTableWidgetItem(text))
        self._table.resizeColumnsToContents()

    def export(self, *_):
        """Write the table to the chosen CSV file (atomic); returns the path or None."""
        path = str(self._out.value)
        if not self.rows or path in ("", "."):
            self._summary.value = "Compare first, then choose a file to export the table to."
            return None
        if not path.lower().endswith(".csv"):
            path += ".csv"
        try:
            out = A.write_qc_table(self.rows, path)
        except OSError as err:
            show_error(f"Cannot write {path}: {err}")
            return None
        self._summary.value += f"<br>Table saved to {out}."
        return out
