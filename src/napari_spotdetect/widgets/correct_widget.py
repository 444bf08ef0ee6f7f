"""The "Correct spots" dock widget: turn detections into ground truth by hand, saved after every edit.

napari's own Points tools add, delete and move spots; this widget listens to the layer's data events to
snap new points onto the spot centre, mark them ``manual``, remember deleted predictions as negatives,
keep an undo history (napari 0.9 has none for Points) and write the ground truth to disk at once, so a
crash loses nothing. The review list puts the least confident predictions first.
"""

from __future__ import annotations

import logging

import napari
import pandas as pd
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton, create_widget
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QTableWidget

from .. import layer_keys as K
from ..core.groundtruth import annotations as A
from . import layers as L
from . import shortcuts as S
from ._ui import disconnect_all, make_scrollable, show_status, stop_choice_updates, when_closed
from .correct_edits import EditRecorder
from .correct_keys import HELP, CorrectKeys
from .review_list import ReviewList
from .truth_files import GroundTruthFiles

log = logging.getLogger(__name__)


class CorrectWidget(EditRecorder, CorrectKeys, GroundTruthFiles, ReviewList, Container):
    """Dock widget for correcting detections (npe2 command ``napari-spotdetect.correct_widget``).

    Its controls are public (``snap``, ``truth``, ``undo_button``, ``redo_button``; the labels ``where``,
    ``status``, ``review_line``; the ``review_table``): scripts and tests drive and read them as a user does.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._layer = None
        self._history = A.History()
        self._before: A.Snapshot | None = None
        self._removing: pd.DataFrame | None = None
        self._restoring = False
        self._shift = False
        self._dragging = False
        self._drag_pushed = False
        self._dirty = False
        self._last_error: str | None = None
        self._cursor = -1  # position in the review order for N / Shift-N
        self._lent: tuple | None = None  # (another selected layer, keys of ours bound on it)

        self._points = create_widget(annotation=napari.layers.Points, label="Spots",
                                     options={"tooltip": "The spots to correct (a detection or ground-truth layer)."})
        self._image = create_widget(annotation=napari.layers.Image, label="Image",
                                    options={"tooltip": "The image the spots belong to: used to snap new spots "
                                                        "and to name the saved file."})
        self.snap = CheckBox(value=True, text="Snap new spots to the spot centre (G)",
                             tooltip="A spot you add moves to the brightest point under it, to sub-pixel "
                                     "precision.\nHold Shift while clicking to place one exactly.")
        self._open_csv = PushButton(text="Open spots CSV…",
                                    tooltip="Open a spot table (CSV with y, x columns) as a Points layer with this "
                                            "plugin's reader (napari's own CSV reader makes a plain table).")
        self._copy = PushButton(text="Start ground truth from these spots",
                                tooltip="Copy the spots into a new layer that you correct and that is saved "
                                        "after every edit; the detections stay as they are for QC.")
        self.truth = CheckBox(value=False, text="Ground truth: save after every edit",
                              tooltip="Write this layer to <image>.csv (and deleted predictions to "
                                      "<image>.rejected.csv) after each change.")
        self._folder = FileEdit(label="Save in", mode="d",
                                tooltip="Folder for the ground truth. Empty: beside the image file.")
        self.where = Label(value="")
        self.undo_button = PushButton(text="Undo", enabled=False,
                                      tooltip="Undo the last add, delete or move (Ctrl+Z).")
        self.redo_button = PushButton(text="Redo", enabled=False, tooltip="Redo (Ctrl+Shift+Z).")
        self.status = Label(value="")
        help_label = Label(value=HELP)
        help_label.visible = False  # unfolded on demand: at 768 px it left the review list one row
        self._help_btn = PushButton(text="Keys and help…", tooltip="Show or hide how to add, delete and move "
                                    "spots, and every shortcut (also in Preferences > Shortcuts).")
        self._help_btn.changed.connect(lambda *_: setattr(help_label, "visible", not help_label.visible))
        head = Label(value="<b>Check the least confident spots first</b> (click a row to go there)")
        self.review_line = Label(value="")
        form = Container(widgets=[self._points, self._image, self._folder], labels=True)
        buttons = Container(widgets=[self.undo_button, self.redo_button], layout="horizontal", labels=False)
        self.extend([form, self._open_csv, self.snap, self._copy, self.truth, self.where, buttons, self._help_btn,
                     help_label, head])
        for w in (form, buttons):
            w.margins = (0, 0, 0, 0)
        for lab in (help_label, head, self.where, self.status):
            lab.native.setWordWrap(True)
        for lab in (help_label, head, self.where, self.status):
            lab.native.setMinimumWidth(300)
        self.where.native.setMinimumHeight(3 * self.where.native.fontMetrics().lineSpacing())  # a long path

        self.review_table = QTableWidget(0, 4)
        self.review_table.setHorizontalHeaderLabels(["score", "y", "x", "source"])
        self.review_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.review_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.review_table.verticalHeader().setVisible(False)
        self.review_table.setMinimumHeight(180)
        self.review_table.horizontalHeader().setStretchLastSection(True)
        self.review_table.cellClicked.connect(lambda row, _col: self.go_to(row))
        self.append(self.review_line)
        self.native.layout().addWidget(self.review_table)
        self.append(self.status)
        make_scrollable(self)
        L.elide_layer_names(self.native)
        self._row_index: list[int] = []

        self._review_timer = QTimer()
        self._review_timer.setSingleShot(True)
        self._review_timer.setInterval(100)
        self._review_timer.timeout.connect(self.refresh_review)

        self._points.changed.connect(lambda *_: self.attach(self._points.value))
        self.truth.changed.connect(self._on_truth_toggled)
        self._folder.changed.connect(lambda *_: self._on_truth_toggled(self.truth.value))
        self._copy.changed.connect(self.start_ground_truth)
        self._open_csv.changed.connect(lambda *_: self.open_spots_csv())
        self.undo_button.changed.connect(self.undo)
        self.redo_button.changed.connect(self.redo)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.selection.events.active.connect(self._lend_keys)
        self._connect_actions(S.connect)  # listed in napari's Preferences > Shortcuts
        self._closed = False
        self._close_watcher = when_closed(self.native, self.close_panel)
        self.attach(self._points.value)

    def reset_choices(self, *_) -> None:
        """napari calls this when layers come and go. A panel opened before detecting shows the first Points
        layer (the sample's "true spots"); once a detection arrives, that is what there is to correct, unless
        the user has started on the layer shown."""
        super().reset_choices()
        current = self._points.value
        if current is not None and (self._history.can_undo or any(
                key in current.metadata for key in (K.PROVENANCE, K.TRUTH, K.SOURCE_FILE, K.EDITED))):
            return
        detections = [lay for lay in self._viewer.layers if K.is_detection(lay)]
        if detections:
            self._points.value = detections[-1]

    def close_panel(self, *_) -> None:
        """The panel closed: save a pending edit, let go of the layer's keys and mouse, and of the viewer's."""
        if self._closed:
            return
        self._closed = True
        try:
            self.detach()
        except RuntimeError:  # Qt parts already deleted at exit
            pass
        disconnect_all((self._viewer.layers.events.removed, self._on_layer_removed),
                       (self._viewer.layers.selection.events.active, self._lend_keys))
        stop_choice_updates(self._viewer, self)
        self._connect_actions(S.disconnect)
        try:
            self._review_timer.stop()
        except RuntimeError:
            pass

    # -- attaching to a layer -----------------------------------------------------------------------------
    def attach(self, layer) -> None:
        """Follow ``layer``'s edits (and stop following the previous one)."""
        if L.same_layer(layer, self._layer):
            return
        self.detach()
        self._layer = layer
        self._history = A.History()
        if layer is None:
            self.refresh_review()
            return
        layer.metadata.setdefault(K.REJECTED, pd.DataFrame())
        self._before = self._snapshot()
        layer.events.data.connect(self._on_data)
        layer.events.features.connect(self._on_features)
        layer.mouse_drag_callbacks.insert(0, self._on_mouse)
        self._bind_keys(layer)
        self._lend_keys()
        image_name = (layer.metadata.get(K.TRUTH) or {}).get("image") or \
            (layer.metadata.get(K.PROVENANCE) or {}).get("image_layer")
        if image_name in self._viewer.layers:
            self._image.value = self._viewer.layers[image_name]
        with self.truth.changed.blocked():
            self.truth.value = K.TRUTH in layer.metadata
        self._update_where()
        self._update_buttons()
        self.refresh_review()

    # -- public API (scripts, notebooks, tests) ----------------------------------------------------------
    def set_layer(self, layer) -> None:
        """Correct the spots of ``layer`` (a Points layer), as choosing it in the panel does."""
        self._points.value = layer

    @property
    def layer(self):
        """The Points layer being corrected (None when there is none)."""
        return self._layer

    def set_image(self, layer) -> None:
        """The image the spots belong to (snapping reads it)."""
        self._image.value = layer

    def set_folder(self, folder) -> None:
        """Where ground-truth CSVs are saved (default: beside the image's file)."""
        self._folder.value = folder

    def layer_choices(self) -> list:
        """The Points layers the panel offers to correct."""
        return [v for v in self._points.choices if v is not None]

    def detach(self) -> None:
        layer = self._layer
        if layer is None:
            return
        self.flush()
        layer.events.data.disconnect(self._on_data)
        layer.events.features.disconnect(self._on_features)
        if self._on_mouse in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_mouse)
        self._unbind_keys(layer)
        self._layer = None
        self._lend_keys()

    def _on_layer_removed(self, event):
        if L.same_layer(event.value, self._layer):
            self.detach()
            self.refresh_review()

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self.status, text, error)
