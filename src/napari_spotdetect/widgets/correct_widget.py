"""The "Correct spots" dock widget: turn detections into ground truth by hand, saved after every edit.

napari's own Points tools add, delete and move spots; this widget listens to the layer's data events to
snap new points onto the spot centre, mark them ``manual``, remember deleted predictions as negatives,
keep an undo history (napari 0.9 has none for Points) and write the ground truth to disk at once, so a
crash loses nothing. The review list puts the least confident predictions first.
"""

from __future__ import annotations

import logging

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton, create_widget
from napari.layers.base._base_constants import ActionType
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QTableWidget

from .. import layer_keys as K
from ..core.groundtruth import annotations as A
from . import layers as L
from . import shortcuts as S
from ._ui import disconnect_all, make_scrollable, show_status, stop_choice_updates, when_closed
from .planes import visible_half_depth
from .review_list import REVIEWED, ReviewList, _reviewed
from .truth_files import GroundTruthFiles

log = logging.getLogger(__name__)

#: a snapped spot closer than this (pixels) to another spot has probably jumped onto that spot
SNAP_MERGE_PX = 1.0
#: action name -> the panel's method it runs; keys and descriptions in :data:`shortcuts.ACTIONS`
_ACTION_METHODS = {
    "napari-spotdetect:add_spot_at_cursor": "add_at_cursor",
    "napari-spotdetect:delete_spot_at_cursor": "delete_at_cursor",
    "napari-spotdetect:next_doubtful_spot": "next_doubtful",
    "napari-spotdetect:previous_doubtful_spot": "previous_doubtful",
    "napari-spotdetect:toggle_snapping": "toggle_snap",
    "napari-spotdetect:delete_selected_spots": "delete_selected",
    "napari-spotdetect:undo_correction": "undo_key",
    "napari-spotdetect:redo_correction": "redo_key",
}
SHORTCUTS = {S.key_of(name): S.ACTIONS[name][1].split(": ", 1)[1] for name in _ACTION_METHODS}
HELP = (
    "<b>Add</b> a missed spot: point at it and press <b>A</b>, or click it with the 'add' tool (P); it snaps "
    "to the spot's centre (hold <b>Shift</b> while clicking to place it exactly).<br>"
    "<b>Delete</b> a false spot: point at it and press <b>D</b>, or select it (S) and press Delete or X.<br>"
    "<b>Move</b>: drag it with the select tool.<br>"
    "Shortcuts: " + ", ".join(f"<b>{k.replace('Control', 'Ctrl')}</b> {v}" for k, v in SHORTCUTS.items())
)


class CorrectWidget(GroundTruthFiles, ReviewList, Container):
    """Dock widget for correcting detections (npe2 command ``napari-spotdetect.correct_widget``)."""

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
        self._snap = CheckBox(value=True, text="Snap new spots to the spot centre (G)",
                              tooltip="A spot you add moves to the brightest point under it, to sub-pixel "
                                      "precision.\nHold Shift while clicking to place one exactly.")
        self._open_csv = PushButton(text="Open spots CSV…",
                                    tooltip="Open a spot table (CSV with y, x columns) as a Points layer with this "
                                            "plugin's reader (napari's own CSV reader makes a plain table).")
        self._copy = PushButton(text="Start ground truth from these spots",
                                tooltip="Copy the spots into a new layer that you correct and that is saved "
                                        "after every edit; the detections stay as they are for QC.")
        self._truth = CheckBox(value=False, text="Ground truth: save after every edit",
                               tooltip="Write this layer to <image>.csv (and deleted predictions to "
                                       "<image>.rejected.csv) after each change.")
        self._folder = FileEdit(label="Save in", mode="d",
                                tooltip="Folder for the ground truth. Empty: beside the image file.")
        self._where = Label(value="")
        self._undo_btn = PushButton(text="Undo", enabled=False, tooltip="Undo the last add, delete or move (Ctrl+Z).")
        self._redo_btn = PushButton(text="Redo", enabled=False, tooltip="Redo (Ctrl+Shift+Z).")
        self._status = Label(value="")
        help_label = Label(value=HELP)
        help_label.visible = False  # unfolded on demand: at 768 px it left the review list one row
        self._help_btn = PushButton(text="Keys and help…", tooltip="Show or hide how to add, delete and move "
                                    "spots, and every shortcut (also in Preferences > Shortcuts).")
        self._help_btn.changed.connect(lambda *_: setattr(help_label, "visible", not help_label.visible))
        head = Label(value="<b>Check the least confident spots first</b> (click a row to go there)")
        self._review_state = Label(value="")
        form = Container(widgets=[self._points, self._image, self._folder], labels=True)
        buttons = Container(widgets=[self._undo_btn, self._redo_btn], layout="horizontal", labels=False)
        self.extend([form, self._open_csv, self._snap, self._copy, self._truth, self._where, buttons, self._help_btn,
                     help_label, head])
        for w in (form, buttons):
            w.margins = (0, 0, 0, 0)
        for lab in (help_label, head, self._where, self._status):
            lab.native.setWordWrap(True)
        for lab in (help_label, head, self._where, self._status):
            lab.native.setMinimumWidth(300)
        self._where.native.setMinimumHeight(3 * self._where.native.fontMetrics().lineSpacing())  # a long path

        self._table = QTableWidget(0, 4)
        self._table.setHorizontalHeaderLabels(["score", "y", "x", "source"])
        self._table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._table.verticalHeader().setVisible(False)
        self._table.setMinimumHeight(180)
        self._table.horizontalHeader().setStretchLastSection(True)
        self._table.cellClicked.connect(lambda row, _col: self.go_to(row))
        self.append(self._review_state)
        self.native.layout().addWidget(self._table)
        self.append(self._status)
        make_scrollable(self)
        L.elide_layer_names(self.native)
        self._row_index: list[int] = []

        self._review_timer = QTimer()
        self._review_timer.setSingleShot(True)
        self._review_timer.setInterval(100)
        self._review_timer.timeout.connect(self.refresh_review)

        self._points.changed.connect(lambda *_: self.attach(self._points.value))
        self._truth.changed.connect(self._on_truth_toggled)
        self._folder.changed.connect(lambda *_: self._on_truth_toggled(self._truth.value))
        self._copy.changed.connect(self.start_ground_truth)
        self._open_csv.changed.connect(lambda *_: self.open_spots_csv())
        self._undo_btn.changed.connect(self.undo)
        self._redo_btn.changed.connect(self.redo)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.selection.events.active.connect(self._lend_keys)
        for name, method in _ACTION_METHODS.items():  # listed in napari's Preferences > Shortcuts
            S.connect(viewer, name, getattr(self, method))
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
        for name, method in _ACTION_METHODS.items():
            S.disconnect(self._viewer, name, getattr(self, method))
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
        for key, func in self._key_actions().items():
            layer.bind_key(key, func, overwrite=True)
        self._lend_keys()
        image_name = (layer.metadata.get(K.TRUTH) or {}).get("image") or \
            (layer.metadata.get(K.PROVENANCE) or {}).get("image_layer")
        if image_name in self._viewer.layers:
            self._image.value = self._viewer.layers[image_name]
        with self._truth.changed.blocked():
            self._truth.value = K.TRUTH in layer.metadata
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

    def set_snap(self, on: bool) -> None:
        """Snap added spots to the spot's centre (A and clicks)."""
        self._snap.value = bool(on)

    @property
    def can_undo(self) -> bool:
        return self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history.can_redo

    @property
    def status(self) -> str:
        return self._status.value

    @property
    def where(self) -> str:
        """Where the ground truth is saved, as the panel says it."""
        return self._where.value

    @property
    def review_text(self) -> str:
        """"k of n reviewed · a added · d deleted", as the panel shows it."""
        return self._review_state.value

    def set_truth(self, on: bool) -> None:
        """Mark the corrected layer as ground truth (saved to CSV after every edit), or not."""
        self._truth.value = bool(on)

    def review_table_text(self) -> list[list[str]]:
        """The least-confident-first list as the panel shows it: (score, y, x, source) per row."""
        t = self._table
        return [[t.item(r, c).text() if t.item(r, c) else "" for c in range(t.columnCount())]
                for r in range(t.rowCount())]

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
        for key in self._key_actions():
            layer.keymap.pop(_key(key), None)
        self._layer = None
        self._lend_keys()

    def _key_actions(self) -> dict:
        """Key -> callback for the corrected layer's own keymap (it comes before napari's Points keys)."""
        out = {}
        for name, method in _ACTION_METHODS.items():
            fn = getattr(self, method)
            out[S.key_of(name)] = lambda _layer, fn=fn: fn()
        return out

    def _lend_keys(self, *_) -> None:
        """Our keys act on the corrected layer whichever layer is selected (they are viewer actions), but a
        selected layer's own keys come first: on another Points layer, A ran napari's "select all". While we
        correct a layer, another selected Points layer gets our handler for each of our keys its type binds; it
        gets its own back when it is no longer selected or we stop correcting."""
        if self._lent is not None:
            lent, keys = self._lent
            self._lent = None
            for key in keys:
                lent.keymap.pop(key, None)
        active = self._viewer.layers.selection.active
        if self._layer is None or not isinstance(active, napari.layers.Points) or L.same_layer(active, self._layer):
            return  # a Labels layer keeps its own Ctrl+Z (painting undo)
        taken = active.class_keymap  # (through the proxy napari hands plugins)
        keys = [_key(k) for k, fn in self._key_actions().items()
                if _key(k) in taken and _key(k) not in active.keymap]
        for key, fn in self._key_actions().items():
            if _key(key) in keys:
                active.bind_key(key, fn, overwrite=True)
        if keys:
            self._lent = (active, keys)

    def previous_doubtful(self) -> None:
        self.next_doubtful(-1)

    def delete_selected(self) -> None:
        """X: delete the selected spots (as Delete does), kept as rejected predictions."""
        if self._layer is not None:
            self._layer.remove_selected()

    def _on_layer_removed(self, event):
        if L.same_layer(event.value, self._layer):
            self.detach()
            self.refresh_review()

    # -- edits --------------------------------------------------------------------------------------------
    def _snapshot(self) -> A.Snapshot:
        lay = self._layer
        return A.Snapshot.take(lay.data, lay.features, lay.metadata.get(K.REJECTED, pd.DataFrame()))

    def _on_mouse(self, layer, event):
        self._shift = "Shift" in event.modifiers
        self._dragging, self._drag_pushed = True, False
        yield
        while event.type == "mouse_move":
            yield
        self._dragging = False
        if self._dirty:  # napari's own release step may move the points once more: save after it
            QTimer.singleShot(0, self.flush)

    def _on_data(self, event) -> None:
        if self._restoring or self._layer is None:
            return
        action = getattr(event, "action", None)
        layer = self._layer
        if action == ActionType.REMOVING:  # remember what is about to go, while it is still there
            idx = [i for i in event.data_indices if 0 <= i < len(layer.features)]
            self._removing = (np.array(layer.data[idx]), layer.features.iloc[idx].copy()) if idx else None
            return
        if action not in (ActionType.ADDED, ActionType.REMOVED, ActionType.CHANGED):
            return
        moving = action == ActionType.CHANGED
        if action == ActionType.ADDED:
            indices = list(event.data_indices)
            if indices and all(i < 0 for i in indices):  # layer.add(): points placed by the user
                if not self._handle_added([len(layer.data) + i for i in indices]):
                    return  # every new point was refused: nothing changed
        elif action == ActionType.REMOVED and self._removing is not None:
            removed = A.spots_table(*self._removing, L.layer_axes(layer))
            rejected = A.rejected_rows(removed)
            if len(rejected):
                old = layer.metadata.get(K.REJECTED, pd.DataFrame())
                layer.metadata[K.REJECTED] = pd.concat([old, rejected], ignore_index=True)
            self._removing = None
        layer.metadata[K.EDITED] = True  # a new detection must never replace this layer now
        if not (moving and self._drag_pushed):
            self._history.push(self._before)
            self._drag_pushed = moving and self._dragging
        self._before = self._snapshot()
        self._update_buttons()
        if moving and self._dragging:
            self._dirty = True  # one write when the drag ends, not one per mouse move
        else:
            self._save()
        self._review_timer.start()

    def _on_features(self, _event=None) -> None:
        """New features for the same spots (the threshold slider sets them after the data) join the last state.

        Only the features: napari also emits this during a drag, before the move is recorded.
        """
        lay = self._layer
        if not self._restoring and lay is not None and self._before is not None \
                and len(lay.features) == len(self._before.data):
            self._before.features = lay.features.copy()

    def _handle_added(self, rows: list[int]) -> int:
        """Snap, mark and style new points; refuse those outside the image. Returns how many were kept."""
        layer = self._layer
        image = self._image.value
        warnings = []
        if image is not None:
            data = image.data[0] if image.multiscale else image.data
            pts = L.to_layer_coords(layer, image, layer.data[rows])
            inside = ((pts >= -0.5) & (pts < np.asarray(np.shape(data)) - 0.5)).all(axis=1)
            if not inside.all():
                self._drop_rows([r for r, ok in zip(rows, inside) if not ok])
                rows = rows[: int(inside.sum())]  # the new points are the last rows, in order
                warnings.append(f"{int((~inside).sum())} spot(s) outside '{image.name}' were not added.")
            if rows and self._snap.value and not self._shift:
                axes = L.layer_axes(layer)
                if len(axes) != data.ndim:
                    axes = L.guess_layer_axes(data.ndim, image.axis_labels, image.rgb)
                clicked = np.array(layer.data[rows], copy=True)
                marked = L.to_layer_coords(layer, image, np.delete(np.asarray(layer.data), rows, axis=0))
                snapped = np.array([A.snap_point(data, p, axes, avoid=marked) for p in pts[inside]])
                layer.data[rows] = L.to_layer_coords(image, layer, snapped)
                others = np.delete(np.asarray(layer.data), rows, axis=0)
                if len(others):
                    from scipy.spatial import cKDTree

                    dist, _ = cKDTree(others).query(np.asarray(layer.data[rows]))
                    onto = dist < SNAP_MERGE_PX
                    if onto.any():  # snapping would merge two spots into one: keep the click instead
                        layer.data[np.asarray(rows)[onto]] = clicked[onto]
                        warnings.append(f"{int(onto.sum())} new spot(s) would have snapped onto an existing "
                                        "spot; placed where you clicked instead (check them).")
        if warnings:
            self._set_status(" ".join(warnings), error=True)
            show_warning(" ".join(warnings))
        if not rows:
            return 0
        features = A.manual_features(layer.features, rows)
        features[REVIEWED] = _reviewed(features)
        features.loc[rows, REVIEWED] = True  # placed by the reviewer: looked at by definition
        layer.features = features
        L.style_by_source(layer)
        layer.refresh()
        return len(rows)

    def _drop_rows(self, rows: list[int]) -> None:
        """Remove points without recording an edit (they were refused, never accepted)."""
        layer = self._layer
        keep = np.setdiff1d(np.arange(len(layer.data)), rows)
        self._restoring = True
        try:
            layer.selected_data = set()
            features = layer.features.iloc[keep].reset_index(drop=True)
            layer.data = np.asarray(layer.data)[keep]
            layer.features = features
        finally:
            self._restoring = False

    # -- keys that act at the mouse cursor ----------------------------------------------------------------
    def _cursor_data(self) -> np.ndarray:
        layer = self._layer
        return np.asarray(layer.world_to_data(self._viewer.cursor.position), dtype=np.float64)

    def add_at_cursor(self) -> None:
        """A: add a spot where the mouse points, whatever tool is active (it snaps as a click would)."""
        if self._layer is None:
            return
        self._shift = False
        self._layer.add(self._cursor_data()[None, :])

    def delete_at_cursor(self) -> bool:
        """D: delete the spot under the mouse (within its drawn radius) in the plane on view."""
        layer = self._layer
        if layer is None or len(layer.data) == 0:
            return False
        pos = self._cursor_data()
        dims = list(self._viewer.dims.displayed)[-layer.ndim:]
        disp = [d - (self._viewer.dims.ndim - layer.ndim) for d in dims]
        hidden = [d for d in range(layer.ndim) if d not in disp]
        data = np.asarray(layer.data)
        size = np.broadcast_to(np.asarray(layer.size, dtype=float), (len(data),))
        # a ring drawn on a neighbouring plane (z-stacks) is as deletable as one on its own plane: it shows
        # shrinking with the distance, over the depth napari draws out-of-slice points
        shrink = np.ones(len(data))
        for d in hidden:
            half = visible_half_depth(self._viewer, layer, d)
            off = np.abs(data[:, d] - pos[d])
            shrink = np.where(off < half, shrink * (1 - off / half if half > 0.5 else 1.0), 0.0)
        radius = np.maximum(1.5, size / 2 * shrink)
        dist = np.linalg.norm(data[:, disp] - pos[disp], axis=1)
        dist[(shrink <= 0) | (dist > radius)] = np.inf
        i = int(np.argmin(dist))
        if not np.isfinite(dist[i]):
            self._set_status("No spot under the cursor to delete.", error=True)
            return False
        layer.selected_data = {i}
        layer.remove_selected()
        return True

    def flush(self) -> None:
        """Write a pending change now (end of a drag, closing, switching layers)."""
        if self._dirty:
            self._save()

    # -- undo ---------------------------------------------------------------------------------------------
    def undo_key(self) -> None:
        """Ctrl+Z: undo here only while the corrected layer (or no layer) is selected; another layer's
        Ctrl+Z must not silently change the ground truth."""
        if self._key_acts_here("undo"):
            self.undo()

    def redo_key(self) -> None:
        if self._key_acts_here("redo"):
            self.redo()

    def _key_acts_here(self, what: str) -> bool:
        if self._layer is None:
            return False
        active = self._viewer.layers.selection.active
        if active is None or L.same_layer(active, self._layer):
            return True
        self._set_status(f"The {what} key acts on '{self._layer.name}' only when it is selected (now: "
                         f"'{active.name}'). Select it in the layer list, or use the {what.title()} button.",
                         error=True)
        return False

    def undo(self, *_):
        if self._layer is not None:
            self._restore(self._history.undo(self._snapshot()))

    def redo(self, *_):
        if self._layer is not None:
            self._restore(self._history.redo(self._snapshot()))

    def _restore(self, state: A.Snapshot | None) -> None:
        if state is None:
            return
        layer = self._layer
        self._restoring = True
        try:
            layer.selected_data = set()
            layer.data = state.data.copy()
            layer.features = state.features.copy()
            layer.metadata[K.REJECTED] = state.rejected.copy()
            L.style_by_source(layer)
        finally:
            self._restoring = False
        self._before = self._snapshot()
        self._update_buttons()
        self._save()
        self.refresh_review()

    def _update_buttons(self):
        self._undo_btn.enabled = self._history.can_undo
        self._redo_btn.enabled = self._history.can_redo

    # -- review -------------------------------------------------------------------------------------------
    def toggle_snap(self):
        self._snap.value = not self._snap.value
        self._set_status(f"Snapping {'on' if self._snap.value else 'off'}.")

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)


def _key(key: str):
    """The keymap key napari stores for a key string (for unbinding)."""
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)
