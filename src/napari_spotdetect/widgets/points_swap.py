"""Give a Points layer new spots and features in one step, without napari's per-point Python work.

napari's ``data`` setter, when a threshold move changes the number of spots, re-validates every point's symbol
one Python call at a time (0.15 s per 10^5 points on a loaded 2-core machine, when spots are added), re-maps every
score through the colormap twice and rebuilds the index tuples of its data events point by point. What it
leaves behind is simple: the per-point style arrays cut to the new length or extended with the layer's current
style, the colours of the new features, and the same events. :func:`swap_points` leaves exactly that, with array
operations (``tests/widgets/test_points_swap.py`` compares both paths on every kind of change). It works only
where it recognises napari's state (checked on each call); elsewhere it returns False and the caller takes
napari's own path.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd

#: the private parts of napari's Points layer (0.5-0.9) the swap reads and writes
_NEEDED = ("_data", "_size", "_border_width", "_symbol", "_shown", "_border", "_face", "_feature_table",
           "_update_dims", "_reset_editable", "current_size", "current_border_width", "current_symbol")


def can_swap(layer, coords: np.ndarray, features: pd.DataFrame) -> bool:
    """Whether :func:`swap_points` knows how to update this layer to these spots."""
    if not all(hasattr(layer, a) for a in _NEEDED):
        return False
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != layer.ndim or len(features) != len(coords):
        return False
    n_old = len(layer._data)
    if not (len(layer._size) == len(layer._border_width) == len(layer._symbol) == len(layer._shown) == n_old):
        return False
    if not _no_text(layer):
        return False  # text labels are laid out per point by napari: leave them to it
    for manager in (layer._border, layer._face):
        if _mode(manager) == "direct":
            if len(manager.colors) != n_old:
                return False
        elif manager.color_properties is None or manager.color_properties.name not in features.columns:
            return False  # napari would drop the colouring feature (with a warning): its own path says so
    return True


def swap_points(layer, coords: np.ndarray, features: pd.DataFrame) -> bool:
    """Set ``layer``'s data to ``coords`` and its features to ``features``, as ``layer.data = coords`` then
    ``layer.features = features`` would; returns False (having changed nothing) where it cannot.

    The layer's listeners hear the same ``data`` events (changing, then changed, with the same indices) and then
    one ``features`` event, once the spots and their features agree.
    """
    if not can_swap(layer, coords, features):
        return False
    coords = np.array(coords, dtype=np.float64, copy=True)
    n_old, n = len(layer._data), len(coords)
    changing = {"value": layer._data, "vertex_indices": ((),), "data_indices": tuple(range(n_old))}
    if n_old and n:
        action_before, action_after = "CHANGING", "CHANGED"
    elif n:
        action_before, action_after = "ADDING", "ADDED"
        changing["data_indices"] = tuple(range(n))
    else:
        action_before, action_after = "REMOVING", "REMOVED"
    from napari.layers.base._base_constants import ActionType

    layer.events.data(**changing, action=getattr(ActionType, action_before))
    with contextlib.ExitStack() as quiet:
        # no text is shown (checked above): napari would still rebuild the canvas's empty text node
        for emitter in (layer.events.features, layer.events.properties, layer.text.events):
            quiet.enter_context(emitter.blocker())
        with layer.events.blocker_all(), layer._border.events.blocker_all(), layer._face.events.blocker_all():
            layer._data = coords
            layer._size = _fit(layer._size, n, layer.current_size)
            layer._border_width = _fit(layer._border_width, n, layer.current_border_width)
            layer._symbol = _fit(layer._symbol, n, layer.current_symbol, dtype=object)
            layer._shown = _fit(layer._shown, n, True)
            for manager in (layer._border, layer._face):
                if _mode(manager) == "direct":
                    manager.colors = _fit_colors(manager.colors, n, manager.current_color)
            layer._update_dims()
            layer._reset_editable()
            layer.set_view_slice()  # the view's indices count the new spots before any colour is drawn
        layer.features = features  # napari's own: the feature table, the colours of the new scores, text
    layer.events.data(value=layer._data, vertex_indices=((),), data_indices=tuple(range(n)),
                      action=getattr(ActionType, action_after))
    layer.events.properties()
    layer.events.features()
    return True


def _mode(manager) -> str:
    return str(getattr(manager.color_mode, "value", manager.color_mode))


def _no_text(layer) -> bool:
    """True when the layer shows no text (napari's default: one constant empty string)."""
    string = getattr(getattr(layer, "text", None), "string", None)
    constant = getattr(string, "constant", None)
    return type(string).__name__ == "ConstantStringEncoding" and constant is not None and str(constant) == ""


def _fit(arr: np.ndarray, n: int, fill, dtype=None) -> np.ndarray:
    """``arr`` cut to ``n`` entries, or extended with ``fill`` (what napari gives points it adds)."""
    if n <= len(arr):
        return arr[:n]
    extra = np.empty(n - len(arr), dtype=dtype or arr.dtype)
    extra[:] = fill if dtype is not object else [fill] * len(extra)
    return np.concatenate((arr, extra))


def _fit_colors(colors: np.ndarray, n: int, current) -> np.ndarray:
    if n <= len(colors):
        return colors[:n]
    from napari.utils.colormaps.standardize_color import transform_color

    fill = np.broadcast_to(transform_color(current)[0], (n - len(colors), 4))
    return np.concatenate((colors, fill)).astype(colors.dtype)
