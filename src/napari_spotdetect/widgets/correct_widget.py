"""The "Correct spots" dock widget: turn detections into ground truth by hand, saved after every edit.

napari's own Points tools add, delete and move spots; this widget listens to the layer's data events to
snap new points onto the spot centre, mark them ``manual``, remember deleted predictions as negatives,
keep an undo history (napari 0.9 has none for Points) and write the ground truth to disk at once, so a
crash loses nothing. The review list puts the least confident predictions first.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton, create_widget
from napari.layers.base._base_constants import ActionType
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QMessageBox, QTableWidget, QTableWidgetItem

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.groundtruth import annotations as A
from ..core.io.spots_io import provenance_path
from . import layers as L
from . import shortcuts as S
from ._ui import make_scrollable, show_status

log = logging.getLogger(__name__)

#: a snapped spot closer than this (pixels) to another spot has probably jumped onto that spot
SNAP_MERGE_PX = 1.0
#: annotation files written (created or knowingly overwritten) in this napari session: resolved paths
SESSION_FILES: set[str] = set()
#: feature column marking the spots a reviewer has looked at (N, Shift+N, a row click); saved with the spots
REVIEWED = "reviewed"
REVIEW_ROWS = 300  # the list shows this many of the least confident spots; more would not be reviewed
#: action name -> the panel's method it runs; keys and descriptions in :data:`shortcuts.ACTIONS`
_ACTION_METHODS = {
    "napari-spotdetect:add_spot_at_cursor": "add_at_cursor",
    "napari-spotdetect:delete_spot_at_cursor": "delete_at_cursor",
    "napari-spotdetect:next_doubtful_spot": "next_doubtful",
    "napari-spotdetect:previous_doubtful_spot": "previous_doubtful",
    "napari-spotdetect:toggle_snapping": "toggle_snap",
    "napari-spotdetect:delete_selected_spots": "delete_selected",
    "napari-spotdetect:undo_correction": "undo",
    "napari-spotdetect:redo_correction": "redo",
}
SHORTCUTS = {S.key_of(name): S.ACTIONS[name][1].split(": ", 1)[1] for name in _ACTION_METHODS}
HELP = (
    "<b>Add</b> a missed spot: point at it and press <b>A</b>, or click it with the 'add' tool (P); it snaps "
    "to the spot's centre (hold <b>Shift</b> while clicking to place it exactly).<br>"
    "<b>Delete</b> a false spot: point at it and press <b>D</b>, or select it (S) and press Delete or X.<br>"
    "<b>Move</b>: drag it with the select tool.<br>"
    "Shortcuts: " + ", ".join(f"<b>{k.replace('Control', 'Ctrl')}</b> {v}" for k, v in SHORTCUTS.items())
)


class CorrectWidget(Container):
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
        head = Label(value="<b>Check the least confident spots first</b> (click a row to go there)")
        self._review_state = Label(value="")
        form = Container(widgets=[self._points, self._image, self._folder], labels=True)
        buttons = Container(widgets=[self._undo_btn, self._redo_btn], layout="horizontal", labels=False)
        self.extend([form, self._open_csv, self._snap, self._copy, self._truth, self._where, buttons, help_label,
                     head])
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
        for name, method in _ACTION_METHODS.items():  # listed in napari's Preferences > Shortcuts
            S.connect(viewer, name, getattr(self, method))
        self.attach(self._points.value)

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

    def _key_actions(self) -> dict:
        """Key -> callback for the corrected layer's own keymap (it comes before napari's Points keys)."""
        out = {}
        for name, method in _ACTION_METHODS.items():
            fn = getattr(self, method)
            out[S.key_of(name)] = lambda _layer, fn=fn: fn()
        return out

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
                snapped = np.array([A.snap_point(data, p, axes) for p in pts[inside]])
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
        same_plane = np.all(np.abs(data[:, hidden] - pos[hidden]) < 0.5, axis=1) if hidden else np.ones(len(data), bool)
        dist = np.linalg.norm(data[:, disp] - pos[disp], axis=1)
        dist[~same_plane] = np.inf
        i = int(np.argmin(dist))
        radius = max(1.5, float(np.asarray(layer.size)[i]) / 2 if np.ndim(layer.size) else float(layer.size) / 2)
        if not np.isfinite(dist[i]) or dist[i] > radius:
            self._set_status("No spot under the cursor to delete.", error=True)
            return False
        layer.selected_data = {i}
        layer.remove_selected()
        return True

    def flush(self) -> None:
        """Write a pending change now (end of a drag, closing, switching layers)."""
        if self._dirty:
            self._save()

    # -- ground truth on disk -----------------------------------------------------------------------------
    def start_ground_truth(self, *_):
        """A copy of the chosen spots, marked as ground truth and saved at once; returns the new layer."""
        src = self._points.value
        if src is None:
            self._set_status("Choose a spots layer first.", error=True)
            return None
        image = self._image.value
        try:
            truth_path = self.paths()[0]
        except SpotDetectError:
            truth_path = None  # no place yet: the layer says so and saves once a folder is chosen
        if truth_path is not None and not self._may_write(None, truth_path):
            return None
        name = L.layer_name("truth", image.name if image is not None else src.name)
        meta = {k: v for k, v in src.metadata.items()
                if k not in (K.DETECTIONS, K.TRUTH, K.EDITED, K.SOURCE_FILE)}
        meta[K.REJECTED] = pd.DataFrame()
        meta[K.TRUTH] = {"image": image.name if image is not None else src.name}
        if truth_path is not None:
            meta[K.TRUTH]["path"] = str(truth_path.resolve())
        new = self._viewer.add_points(
            np.array(src.data, copy=True), name=name, features=src.features.copy(), ndim=src.ndim,
            size=src.size.copy() if len(src.data) else 7, face_color="transparent", border_color=L.TRUTH_COLOUR,
            border_width=0.15, border_width_is_relative=True, scale=src.scale, translate=src.translate,
            metadata=meta, projection_mode=getattr(src, "projection_mode", "none"),
        )
        src.visible = False
        for lay in self._viewer.layers:  # the score map hides the spots being corrected
            if K.SCORE_MAP in lay.metadata:
                lay.visible = False
        self._points.value = new  # attaches (and ticks 'Ground truth': the layer is marked already)
        self._last_error = None
        self._save()
        self._update_where()
        new.mode = "add"
        return new

    # -- never lose an annotation ---------------------------------------------------------------------------
    @staticmethod
    def confirm(title: str, text: str) -> bool:
        """Ask the user a yes/no question (tests replace this)."""
        answer = QMessageBox.question(None, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _may_write(self, layer, truth: Path) -> bool:
        """Whether ``layer`` (None: a layer about to be made) may write its ground truth to ``truth``.

        Never two layers to one file; never over a file this session did not write unless the user agrees
        (the layer was opened from that file, or the user said yes), and then a backup is kept first.
        """
        resolved = str(Path(truth).expanduser().resolve())
        meta = layer.metadata if layer is not None else {}
        if (meta.get(K.TRUTH) or {}).get("path") == resolved:
            return True
        for other in self._viewer.layers:
            if other is not layer and not L.same_layer(other, layer) \
                    and (other.metadata.get(K.TRUTH) or {}).get("path") == resolved:
                msg = (f"'{other.name}' already saves its ground truth to {resolved}; a second layer would "
                       f"overwrite it. Fix: correct '{other.name}', or close it before starting another.")
                self._refuse(msg)
                return False
        if Path(resolved).exists() and resolved not in SESSION_FILES:
            opened_from = meta.get(K.SOURCE_FILE)
            mine = opened_from and str(Path(opened_from).resolve()) == resolved
            if not mine and not self.confirm(
                    "Replace an existing annotation?",
                    f"{resolved} already exists and was not written in this session.\n\nReplace it? "
                    "A copy is kept as .bak beside it."):
                self._refuse(f"Kept {Path(resolved).name} as it was: nothing is saved from this layer. Fix: choose "
                             "another folder under 'Save in', or open that file (Open spots CSV…) to go on "
                             "correcting it.")
                return False
            self._backup(Path(resolved))
        SESSION_FILES.add(resolved)
        if layer is not None and K.TRUTH in layer.metadata:
            layer.metadata[K.TRUTH]["path"] = resolved
        return True

    @staticmethod
    def _backup(truth: Path) -> list[Path]:
        """Copy the truth CSV, its rejected file and provenance to ``*.bak``: the version before this session's
        first write (one backup per file, so a folder worked on over many sessions does not fill up)."""
        out = []
        for f in (truth, truth.with_name(truth.stem + ".rejected.csv"), provenance_path(truth)):
            if f.exists():
                bak = f.with_name(f.name + ".bak")
                shutil.copy2(f, bak)
                out.append(bak)
        return out

    def _refuse(self, msg: str) -> None:
        self._set_status(msg, error=True)
        show_error(msg)

    # -- opening spot tables ----------------------------------------------------------------------------------
    def open_spots_csv(self, path=None, truth_of: str | None = None):
        """Open a spot CSV with this plugin's reader (a file dialog when no path); returns the new layer.

        ``truth_of``: the image name whose ground truth the file is (the folder workflow), so that edits
        save back into it (after a backup, once).
        """
        from .._reader import _points_layer
        from ..core.io.spots_io import read_spots_csv

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.native, "Open a spot table", "", "Spot tables (*.csv)")
            if not path:
                return None
        path = Path(path)
        try:
            df = read_spots_csv(path)
        except (SpotDetectError, ValueError, OSError) as err:
            msg = (f"{path.name} is not a spot table ({err}). Fix: choose a CSV with y and x columns (z, t, c "
                   "for stacks), as this plugin and 'spotdetect predict' write them.")
            self._refuse(msg)
            return None
        data, kw, _ = _points_layer(df, path)
        rejected = path.with_name(path.stem + ".rejected.csv")
        if rejected.is_file():  # the deleted predictions saved with it: keep them (the next save rewrites them)
            try:
                kw["metadata"][K.REJECTED] = read_spots_csv(rejected)
            except (SpotDetectError, ValueError, OSError):
                pass
        if truth_of is not None:
            kw["metadata"][K.TRUTH] = {"image": truth_of}
            kw["name"], kw["border_color"] = L.layer_name("truth", truth_of), L.TRUTH_COLOUR
        layer = self._viewer.add_points(data, **kw)
        self._points.value = layer
        self._set_status(f"Opened {len(data):,} spots from {path.name}.")
        return layer

    def _on_truth_toggled(self, on) -> None:
        layer = self._layer
        if layer is None:
            return
        if on:
            image = self._image.value
            old = layer.metadata.get(K.TRUTH) or {}
            layer.metadata[K.TRUTH] = {**old, "image": image.name if image is not None else layer.name}
            self._last_error = None
            self._save()
            if K.TRUTH not in layer.metadata:  # refused (another layer's file, or the user said no)
                with self._truth.changed.blocked():
                    self._truth.value = False
        else:
            layer.metadata.pop(K.TRUTH, None)
        self._update_where()

    def paths(self):
        """(truth CSV, rejected CSV) for the current layer; raises SpotDetectError if there is no place."""
        image = self._image.value
        folder = str(self._folder.value) if str(self._folder.value) not in ("", ".") else None
        src = None
        if image is not None:
            src = image.metadata.get(K.IMAGE_FILE) or getattr(getattr(image, "source", None), "path", None)
        name = image.name if image is not None else self._layer.name
        return A.annotation_paths(name, src, folder)

    def _update_where(self):
        if self._layer is None or K.TRUTH not in self._layer.metadata:
            self._where.value = "Not saved automatically (tick 'Ground truth' to save after every edit)."
            return
        try:
            truth, rejected = self.paths()
            self._where.value = f"Saving to {truth} (deleted predictions: {rejected.name})"
        except SpotDetectError as err:
            self._where.value = str(err)

    def _save(self) -> None:
        self._dirty = False
        layer = self._layer
        if layer is None or K.TRUTH not in layer.metadata:
            return
        try:
            truth, rejected = self.paths()
            if not self._may_write(layer, truth):
                layer.metadata.pop(K.TRUTH, None)
                self._update_where()
                return
            table = A.spots_table(layer.data, layer.features, L.layer_axes(layer))
            prov = dict(layer.metadata.get(K.PROVENANCE) or {})
            prov["ground_truth"] = {"image": layer.metadata[K.TRUTH].get("image"), "n_spots": len(table),
                                    "n_manual": int((table.get("source", pd.Series(dtype=str)) == A.MANUAL).sum())}
            A.save_annotations(table, layer.metadata.get(K.REJECTED), truth, rejected, prov)
            self._last_error = None
            self._set_status(f"Saved {len(table)} spots to {truth.name}.")
        except (SpotDetectError, OSError) as err:
            msg = f"Ground truth NOT saved: {err}"
            self._set_status(msg, error=True)
            if msg != self._last_error:  # one pop-up per problem, not one per click
                show_error(msg)
            self._last_error = msg

    # -- undo ---------------------------------------------------------------------------------------------
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

    def refresh_review(self) -> None:
        """Fill the list with the least confident spots (hand-placed ones last)."""
        self._review_timer.stop()
        layer = self._layer
        order = [] if layer is None else A.review_order(layer.features)[:REVIEW_ROWS].tolist()
        self._row_index = order
        self._table.setRowCount(len(order))
        self._show_review_state()
        if layer is None:
            return
        axes = L.layer_axes(layer)
        iy, ix = axes.index("y") if "y" in axes else -2, axes.index("x") if "x" in axes else -1
        score = layer.features["score"] if "score" in layer.features else pd.Series(np.nan, index=layer.features.index)
        source = layer.features["source"] if "source" in layer.features else pd.Series("", index=layer.features.index)
        for row, i in enumerate(order):
            s = float(score.iloc[i])
            values = ["—" if np.isnan(s) else f"{s:.3f}", f"{layer.data[i, iy]:.1f}",
                      f"{layer.data[i, ix]:.1f}", str(source.iloc[i])]
            for col, v in enumerate(values):
                self._table.setItem(row, col, QTableWidgetItem(v))
        self._table.resizeColumnsToContents()

    def go_to(self, row: int) -> None:
        """Centre the view on the spot in review row ``row`` (its plane too) and select it."""
        layer = self._layer
        if layer is None or not 0 <= row < len(self._row_index):
            return
        i = self._row_index[row]
        self._cursor = row
        world = np.asarray(layer.data_to_world(layer.data[i]))
        dims = self._viewer.dims
        for d in range(min(len(world), dims.ndim)):
            if d not in dims.displayed:
                dims.set_point(d, world[d])
        self._viewer.camera.center = tuple(world[list(dims.displayed)])
        layer.selected_data = {i}
        self._table.selectRow(row)
        self._mark_reviewed(i)

    def _mark_reviewed(self, i: int) -> None:
        """Remember that spot ``i`` was looked at; saved with the ground truth, so a review resumes."""
        layer = self._layer
        features = layer.features.copy()
        reviewed = _reviewed(features)
        if reviewed[i]:
            return
        reviewed[i] = True
        features[REVIEWED] = reviewed
        layer.features = features
        if K.TRUTH in layer.metadata:
            self._save()
        self._show_review_state()

    def review_state(self) -> dict:
        """Counts for the review line: spots, reviewed, added by hand, deleted predictions."""
        layer = self._layer
        if layer is None:
            return {}
        f = layer.features
        return {"n": len(layer.data), "reviewed": int(_reviewed(f).sum()),
                "added": int((f["source"].astype(str) == A.MANUAL).sum()) if "source" in f else 0,
                "deleted": len(layer.metadata.get(K.REJECTED, pd.DataFrame()))}

    def _show_review_state(self) -> None:
        st = self.review_state()
        self._review_state.value = "" if not st else (
            f"{st['reviewed']} of {st['n']} reviewed · {st['added']} added · {st['deleted']} deleted")

    def next_doubtful(self, step: int = 1) -> None:
        if self._row_index:
            self.go_to((self._cursor + step) % len(self._row_index))

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)


def _key(key: str):
    """The keymap key napari stores for a key string (for unbinding)."""
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)


def _reviewed(features: pd.DataFrame) -> np.ndarray:
    """The 'reviewed' column as booleans (missing, NaN or text from a CSV count as not reviewed)."""
    if REVIEWED not in features.columns:
        return np.zeros(len(features), dtype=bool)
    col = features[REVIEWED]
    if col.dtype == bool:
        return col.to_numpy(copy=True)
    return col.astype(str).str.lower().isin(["true", "1", "1.0"]).to_numpy()
