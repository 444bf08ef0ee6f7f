"""Draw at most a budget of markers of a huge detection layer, so a threshold move never freezes napari.

With 10^5 spots, one repaint of the canvas took 1.2-1.9 s in software OpenGL on a quiet 2-core machine, whatever
changed (about 16 us a marker zoomed out; 0.12 s with the layer hidden), and napari's ``shown`` mask cannot help:
napari 0.9 ignores it when slicing a layer whose every axis is displayed. So the canvas's marker node is handed
a thinned set instead: the spots in and around the view whose fixed pseudo-random key (from their coordinates,
so a spot kept at one threshold stays drawn at the next, and the picture does not flicker) is below the fraction
that leaves about ``budget`` markers on screen. Zoomed in far enough that the view holds fewer spots, every spot
is drawn; the view is thinned again when the camera pauses. The markers are handed over in the next turn of the
event loop, so the layer's update and the repaint are two short waits, not one long one.

Only the drawing changes: the layer's ``data``, ``features``, selection and every panel, saved file and QC see
all spots, and the counts the panels show are the layer's. Relies on napari's canvas internals (the layer's
vispy node and its view indices); when they are not as expected, the layer is drawn whole, as napari draws it.
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np

#: markers drawn on screen at most (in software OpenGL, under load, 8,000 took 0.25-0.3 s a repaint, 3,000 0.2 s)
DRAW_BUDGET = 4_000
#: the thinned set also covers this many view widths around the view, so a short pan shows no empty border
MARGIN_VIEWS = 0.5
#: ms the camera must rest before the view is thinned again
CAMERA_PAUSE_MS = 80


def spot_keys(coords: np.ndarray) -> np.ndarray:
    """A pseudo-random number in [0, 1) per spot that depends only on its coordinates (to 1e-3 px)."""
    h = np.zeros(len(coords), dtype=np.uint64)
    for col in np.asarray(coords, dtype=np.float64).T:
        q = np.round(col * 1000).astype(np.int64).view(np.uint64)
        h = (h ^ q) * np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiply, then splitmix64's finaliser
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def thinned(keys: np.ndarray, pos: np.ndarray, view: tuple | None, budget: int,
            margin: float = MARGIN_VIEWS) -> np.ndarray | None:
    """Which of the markers at ``pos`` (N, 2; canvas node coordinates) to draw: None for all of them.

    ``view`` is (lo, hi), the corners of what the canvas shows. About ``budget`` markers fall inside it; around
    it (``margin`` view widths on each side) the same fraction is kept, beyond that none.
    """
    n = len(pos)
    if n <= budget:
        return None
    if view is None:
        return np.flatnonzero(keys < budget / n)
    lo, hi = (np.asarray(v, dtype=np.float64) for v in view)
    inside = np.all((pos >= lo) & (pos <= hi), axis=1)
    n_view = int(inside.sum())
    if n_view <= budget:  # zoomed in: the view holds few enough spots; draw them all, and those near it
        frac = 1.0
    else:
        frac = budget / n_view
    pad = margin * (hi - lo)
    near = np.all((pos >= lo - pad) & (pos <= hi + pad), axis=1)
    keep = near & (keys < frac)
    if frac >= 1.0 and near.all():
        return None
    return np.flatnonzero(keep)


class LightDrawing:
    """Hands one Points layer's canvas node at most ``budget`` markers on screen (see the module notes)."""

    def __init__(self, viewer, layer, visual, budget: int):
        from qtpy.QtCore import QTimer

        self.budget = int(budget)
        self._viewer = viewer
        # weakly: the helper must not keep a removed layer (nor its canvas node, which holds it) alive
        self._layer_ref, self._visual_ref = weakref.ref(layer), weakref.ref(visual)
        self._keys = np.empty(0)
        self._keys_of = None  # the data array the keys were computed for
        self.drawn: np.ndarray | None = None  # the layer's rows drawn now; None: napari's own drawing
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(CAMERA_PAUSE_MS)
        self._timer.timeout.connect(self._on_camera_rest)
        self._soon = QTimer()
        self._soon.setSingleShot(True)
        self._soon.setInterval(0)
        self._soon.timeout.connect(self._draw_soon)
        # napari calls its connected methods by name at each event, so this replaces the node's update for every
        # event that redraws the markers (data, colours, sizes, symbols, slicing) and for napari's own calls
        visual._on_data_change = self.draw
        camera = _camera(viewer)
        camera.events.zoom.connect(self._on_camera)
        camera.events.center.connect(self._on_camera)

    def _on_camera(self, *_):
        if self._layer_alive():
            self._timer.start()

    def _on_camera_rest(self):
        if self._layer_alive() and (self.drawn is not None or len(self._layer.data) > self.budget):
            self.draw_now()

    @property
    def _layer(self):
        return self._layer_ref()

    @property
    def _visual(self):
        return self._visual_ref()

    def _layer_alive(self) -> bool:
        layer, visual = self._layer, self._visual
        return layer is not None and getattr(visual, "_on_data_change", None) == self.draw \
            and layer in self._viewer.layers

    def _view(self):
        """(lo, hi) of the canvas in the marker node's coordinates (x, y), or None when unknown."""
        node = self._visual.node
        canvas = getattr(node, "canvas", None)
        if canvas is None:
            return None
        w, h = canvas.size
        tr = node.get_transform(map_from="canvas", map_to="visual")
        corners = tr.map(np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64))[:, :2]
        if not np.all(np.isfinite(corners)):
            return None
        return corners.min(axis=0), corners.max(axis=0)

    def _thinning(self) -> bool:
        layer = self._layer
        return layer._slice_input.ndisplay == 2 and len(layer._view_indices) > self.budget

    def draw(self, *_):
        """What napari calls when the markers must be rebuilt: a small layer at once, as napari would; a huge one
        in the next turn of the event loop, so the layer's update and the drawing each leave napari free to
        answer the user in between."""
        if self._thinning():
            self._soon.start()
            return None
        self._soon.stop()
        self.drawn = None
        return type(self._visual)._on_data_change(self._visual)

    def _draw_soon(self):
        if self._layer_alive():
            self.draw_now()

    def draw_now(self):
        """Hand the canvas node the thinned markers (or, for a small layer, all of them as napari does)."""
        vis, layer = self._visual, self._layer
        whole = type(vis)._on_data_change
        idx = np.asarray(layer._view_indices)
        if not self._thinning():
            self.drawn = None
            return whole(vis)
        displayed = list(layer._slice_input.displayed)
        if self._keys_of is not layer.data or len(self._keys) != len(layer.data):
            self._keys, self._keys_of = spot_keys(layer.data), layer.data
        pos = layer.data[np.ix_(idx, displayed)][:, ::-1]  # the node draws (x, y)
        pick = thinned(self._keys[idx], pos, self._view(), self.budget)
        if pick is None:
            self.drawn = None
            return whole(vis)
        rows = idx[pick]
        if len(rows) == 0:  # the node needs one marker: an invisible one
            vis.node.points_markers.set_data(np.zeros((1, 2)), size=np.zeros(1), symbol="o",
                                             edge_color=np.zeros((1, 4), np.float32),
                                             face_color=np.zeros((1, 4), np.float32))
        else:
            scale = abs(layer.scale[-1])
            size = np.asarray(layer._view_size)[pick] * scale
            width = np.asarray(layer.border_width)[rows]
            border = ({"edge_width": None, "edge_width_rel": width} if layer.border_width_is_relative
                      else {"edge_width": np.minimum(width * scale, size), "edge_width_rel": None})
            vis.node.points_markers.set_data(pos[pick], size=size, symbol=_symbol_names(layer.symbol[rows]),
                                             edge_color=np.asarray(layer.border_color)[rows],
                                             face_color=np.asarray(layer.face_color)[rows], **border)
        self.drawn = rows
        vis.reset()
        return None


def _camera(viewer):
    """The viewer's camera (napari 0.9 keeps it in ``viewer.scene``; earlier versions on the viewer)."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def _symbol_names(symbols: np.ndarray):
    """vispy's names of napari's symbols; one name when all are the same (no per-marker work in vispy)."""
    # napari's symbols are a few shared enum members: tell them apart by identity, name each kind once
    ids = np.fromiter(map(id, symbols), dtype=np.int64, count=len(symbols))
    kinds, first, which = np.unique(ids, return_index=True, return_inverse=True)
    names = np.array([str(symbols[i]) for i in first])
    return str(names[0]) if len(kinds) == 1 else names[which].tolist()


def draw_lightly(viewer, layer, native=None, budget: int | None = None) -> LightDrawing | None:
    """Draw ``layer`` with at most ``budget`` markers on screen from now on (once per layer; idempotent).

    ``native`` is one of our docked Qt widgets, through which the canvas is found; ``budget`` defaults to
    :data:`DRAW_BUDGET`. Returns the drawing helper, or None where napari's canvas is not there (no window, or
    other internals).
    """
    budget = DRAW_BUDGET if budget is None else budget
    from .layers import unwrap_layer

    layer = unwrap_layer(layer)
    helper = _HELPERS.get(layer)
    if helper is None:
        try:
            visual = _canvas(viewer, native).layer_to_visual[layer]
            ok = hasattr(visual.node.points_markers, "set_data") and hasattr(layer, "_view_indices")
        except (AttributeError, KeyError, TypeError, RuntimeError):
            return None
        if not ok:
            return None
        helper = _HELPERS[layer] = LightDrawing(viewer, layer, visual, budget)
    helper.budget = int(budget)
    helper.draw_now()  # before napari first paints the layer
    return helper


#: the helper of each layer drawn lightly, for as long as the layer lives
_HELPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _canvas(viewer, native):
    """napari's canvas of ``viewer``: found through Qt from a docked widget of ours, else through the window."""
    from qtpy.QtWidgets import QWidget

    model = getattr(viewer, "__wrapped__", viewer)
    if native is not None:
        for w in native.window().findChildren(QWidget):
            if type(w).__name__ == "QtViewer" and getattr(w, "viewer", None) is model:
                return w.canvas
    with warnings.catch_warnings():  # napari warns that plugins should not reach its window's internals
        warnings.simplefilter("ignore", FutureWarning)
        return viewer.window._qt_viewer.canvas
