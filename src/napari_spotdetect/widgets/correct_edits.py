"""The Correct panel's record of edits: each add, delete or move of a spot becomes one undo step and one save
(a drag is one step, saved when it ends); added spots are refused outside the image, snapped to the spot's
centre (never onto another spot) and marked ``manual``; deleted predictions are kept as negatives.

napari 0.9 has no undo for Points, so the panel keeps its own (:class:`core.groundtruth.annotations.History`).
A mixin of :class:`correct_widget.CorrectWidget` (its layer, controls and saving live there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.layers.base._base_constants import ActionType
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer

from .. import layer_keys as K
from ..core.groundtruth import annotations as A
from . import layers as L
from .review_list import REVIEWED, _reviewed

#: a snapped spot closer than this (pixels) to another spot has probably jumped onto that spot
SNAP_MERGE_PX = 1.0


class EditRecorder:
    """Recording, snapping, undo and redo of the Correct panel's edits."""

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
        if action == ActionType.REMOVING:  # remember what is about to go, while it is still there
            self._removing = self._about_to_go(event.data_indices)
            return
        if action == ActionType.ADDED and not self._accept_added(event.data_indices):
            return  # every new point was refused: nothing changed
        if action == ActionType.REMOVED:
            self._keep_rejected()
        if action in (ActionType.ADDED, ActionType.REMOVED, ActionType.CHANGED):
            self._record(moving=action == ActionType.CHANGED)

    def _about_to_go(self, indices) -> tuple | None:
        layer = self._layer
        idx = [i for i in indices if 0 <= i < len(layer.features)]
        return (np.array(layer.data[idx]), layer.features.iloc[idx].copy()) if idx else None

    def _accept_added(self, indices) -> bool:
        """Points the user placed (``layer.add()``: negative indices) are checked, snapped and marked; False
        when every one of them was refused."""
        indices = list(indices)
        if not indices or not all(i < 0 for i in indices):
            return True
        return bool(self._handle_added([len(self._layer.data) + i for i in indices]))

    def _keep_rejected(self) -> None:
        """The deleted predictions join the layer's rejected spots (saved beside the ground truth)."""
        if self._removing is None:
            return
        layer = self._layer
        rejected = A.rejected_rows(A.spots_table(*self._removing, L.layer_axes(layer)))
        if len(rejected):
            old = layer.metadata.get(K.REJECTED, pd.DataFrame())
            layer.metadata[K.REJECTED] = pd.concat([old, rejected], ignore_index=True)
        self._removing = None

    def _record(self, moving: bool) -> None:
        """One undo step and one save for the edit just made (a drag: one step, one save when it ends)."""
        self._layer.metadata[K.EDITED] = True  # a new detection must never replace this layer now
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

    # -- added spots ----------------------------------------------------------------------------------------
    def _handle_added(self, rows: list[int]) -> int:
        """Snap, mark and style new points; refuse those outside the image. Returns how many were kept."""
        layer = self._layer
        image = self._image.value
        warnings = []
        if image is not None:
            rows = self._place_added(image, rows, warnings)
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

    def _place_added(self, image, rows: list[int], warnings: list) -> list[int]:
        """Drop the new points outside ``image`` and snap the others (unless Shift or snapping is off)."""
        layer = self._layer
        data = image.data[0] if image.multiscale else image.data
        pts = L.to_layer_coords(layer, image, layer.data[rows])
        inside = ((pts >= -0.5) & (pts < np.asarray(np.shape(data)) - 0.5)).all(axis=1)
        if not inside.all():
            self._drop_rows([r for r, ok in zip(rows, inside) if not ok])
            rows = rows[: int(inside.sum())]  # the new points are the last rows, in order
            warnings.append(f"{int((~inside).sum())} spot(s) outside '{image.name}' were not added.")
        if rows and self.snap.value and not self._shift:
            self._snap_added(image, data, rows, pts[inside], warnings)
        return rows

    def _snap_added(self, image, data, rows: list[int], pts: np.ndarray, warnings: list) -> None:
        """Move the new points to their spot's centre; one that would land on another spot stays where clicked."""
        layer = self._layer
        axes = L.layer_axes(layer)
        if len(axes) != data.ndim:
            axes = L.guess_layer_axes(data.ndim, image.axis_labels, image.rgb)
        clicked = np.array(layer.data[rows], copy=True)
        marked = L.to_layer_coords(layer, image, np.delete(np.asarray(layer.data), rows, axis=0))
        snapped = np.array([A.snap_point(data, p, axes, avoid=marked) for p in pts])
        layer.data[rows] = L.to_layer_coords(image, layer, snapped)
        others = np.delete(np.asarray(layer.data), rows, axis=0)
        if not len(others):
            return
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(others).query(np.asarray(layer.data[rows]))
        onto = dist < SNAP_MERGE_PX
        if onto.any():  # snapping would merge two spots into one: keep the click instead
            layer.data[np.asarray(rows)[onto]] = clicked[onto]
            warnings.append(f"{int(onto.sum())} new spot(s) would have snapped onto an existing "
                            "spot; placed where you clicked instead (check them).")

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

    def flush(self) -> None:
        """Write a pending change now (end of a drag, closing, switching layers)."""
        if self._dirty:
            self._save()

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
        self.undo_button.enabled = self._history.can_undo
        self.redo_button.enabled = self._history.can_redo
