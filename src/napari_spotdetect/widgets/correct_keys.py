"""The Correct panel's keys: napari actions (listed in Preferences > Shortcuts) that act on the corrected layer
whichever layer is selected, the same keys bound on that layer and lent to another selected Points layer, and
the keys that act at the mouse cursor (A adds, D deletes).

A mixin of :class:`correct_widget.CorrectWidget` (its layer, viewer and controls live there).
"""

from __future__ import annotations

import napari
import numpy as np

from . import layers as L
from . import shortcuts as S
from .planes import visible_half_depth

#: action name -> the panel's method it runs; keys and descriptions in :data:`shortcuts.ACTIONS`
ACTION_METHODS = {
    "napari-spotdetect:add_spot_at_cursor": "add_at_cursor",
    "napari-spotdetect:delete_spot_at_cursor": "delete_at_cursor",
    "napari-spotdetect:next_doubtful_spot": "next_doubtful",
    "napari-spotdetect:previous_doubtful_spot": "previous_doubtful",
    "napari-spotdetect:toggle_snapping": "toggle_snap",
    "napari-spotdetect:delete_selected_spots": "delete_selected",
    "napari-spotdetect:undo_correction": "undo_key",
    "napari-spotdetect:redo_correction": "redo_key",
}
SHORTCUTS = {S.key_of(name): S.ACTIONS[name][1].split(": ", 1)[1] for name in ACTION_METHODS}
HELP = (
    "<b>Add</b> a missed spot: point at it and press <b>A</b>, or click it with the 'add' tool (P); it snaps "
    "to the spot's centre (hold <b>Shift</b> while clicking to place it exactly).<br>"
    "<b>Delete</b> a false spot: point at it and press <b>D</b>, or select it (S) and press Delete or X.<br>"
    "<b>Move</b>: drag it with the select tool.<br>"
    "Shortcuts: " + ", ".join(f"<b>{k.replace('Control', 'Ctrl')}</b> {v}" for k, v in SHORTCUTS.items())
)


class CorrectKeys:
    """The keys of the Correct panel."""

    def _connect_actions(self, connect) -> None:
        """``connect`` (:func:`shortcuts.connect` or ``disconnect``) each of our actions to its method."""
        for name, method in ACTION_METHODS.items():
            connect(self._viewer, name, getattr(self, method))

    def _key_actions(self) -> dict:
        """Key -> callback for the corrected layer's own keymap (it comes before napari's Points keys)."""
        out = {}
        for name, method in ACTION_METHODS.items():
            fn = getattr(self, method)
            out[S.key_of(name)] = lambda _layer, fn=fn: fn()
        return out

    def _bind_keys(self, layer) -> None:
        for key, func in self._key_actions().items():
            layer.bind_key(key, func, overwrite=True)

    def _unbind_keys(self, layer) -> None:
        for key in self._key_actions():
            layer.keymap.pop(_key(key), None)

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

    # -- the other keys -------------------------------------------------------------------------------------
    def previous_doubtful(self) -> None:
        self.next_doubtful(-1)

    def delete_selected(self) -> None:
        """X: delete the selected spots (as Delete does), kept as rejected predictions."""
        if self._layer is not None:
            self._layer.remove_selected()

    def toggle_snap(self):
        self.snap.value = not self.snap.value
        self._set_status(f"Snapping {'on' if self.snap.value else 'off'}.")

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


def _key(key: str):
    """The keymap key napari stores for a key string (for unbinding)."""
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)
