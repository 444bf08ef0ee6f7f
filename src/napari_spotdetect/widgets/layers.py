"""From detections to napari layer data, and the layer updates a threshold change needs.

Kept apart from the widget so it can be tested and benchmarked without one. The engine works in canonical
axis order (``tczyx``); layers keep the user's order, so every conversion goes through the layer's axes.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd

from .. import layer_keys as K
from ..core.common.validate import RANK_AXES, axes_for_rank, check_axes
from ..core.errors import SpotDetectError
from ..core.io.spots_io import COORD_ORDER
from .points_swap import swap_points

_LABEL_ALIASES = {
    "t": "t", "time": "t", "frame": "t", "frames": "t", "timepoint": "t",
    "c": "c", "ch": "c", "channel": "c", "channels": "c",
    "z": "z", "depth": "z", "plane": "z", "planes": "z", "slice": "z",
    "y": "y", "row": "y", "rows": "y",
    "x": "x", "col": "x", "column": "x", "columns": "x",
}
#: maps not worth showing as images (sub-pixel offsets)
HIDDEN_MAPS = {"dy", "dx"}
#: above this many spots a threshold move makes napari wait (bench_viewer.py --spots: 10^5 spots, 0.1-0.2 s a
#: move; 10^6, 0.7-1.5 s, on a loaded 2-core machine)
MANY_SPOTS = 500_000


def axes_from_labels(labels) -> str | None:
    """Axes letters from a layer's axis labels, or None when the labels are napari's defaults or unknown."""
    letters = [_LABEL_ALIASES.get(str(lab).strip().lower()) for lab in labels]
    if any(a is None for a in letters):
        return None
    axes = "".join(letters)
    try:
        return check_axes(len(axes), axes)
    except SpotDetectError:
        return None


def guess_layer_axes(ndim: int, axis_labels=(), rgb: bool = False) -> str:
    """The axes to propose for an image layer; raises a user-facing error for what cannot be detected."""
    if rgb:
        raise SpotDetectError("This image layer is RGB colour; spots are found in one fluorescence channel.",
                              "split the channels (right-click the layer > Split RGB) and choose one.")
    named = axes_from_labels(axis_labels) if axis_labels else None
    if named is not None:
        return named
    if ndim not in RANK_AXES:
        raise SpotDetectError(f"The image layer has {ndim} dimensions; 2 to 5 are supported.",
                              "choose a 2-D to 5-D image layer.")
    return RANK_AXES[ndim]


def points_from_spots(spots: pd.DataFrame, layer_axes: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, ndim) coordinates in the layer's axis order, and the remaining columns as features.

    An axis the table lacks (channels fed to the network together) gets 0.
    """
    n = len(spots)
    coords = np.zeros((n, len(layer_axes)), dtype=np.float64)
    for i, a in enumerate(layer_axes):
        if a in spots.columns:
            coords[:, i] = spots[a].to_numpy(dtype=np.float64)
    features = spots.drop(columns=[c for c in COORD_ORDER if c in spots.columns]).reset_index(drop=True)
    return coords, features


def map_in_layer_order(arr: np.ndarray, detection_axes: str, layer_axes: str) -> tuple[np.ndarray, list[int]]:
    """A stitched model map (canonical order, maybe without 'c') in the layer's order, plus the layer dims it spans."""
    map_axes = detection_axes if arr.ndim == len(detection_axes) else detection_axes.replace("c", "")
    target = [a for a in layer_axes if a in map_axes]
    out = np.transpose(arr, [map_axes.index(a) for a in target])
    return out, [layer_axes.index(a) for a in target]


def points_layer_kwargs(name: str, features: pd.DataFrame, *, score_range, scale, translate,
                        stack: bool, metadata: dict) -> dict:
    """Style of a detection layer: hollow rings coloured by score, so the spot itself stays visible."""
    kw = dict(
        name=name, features=features, size=7, face_color="transparent", border_color="score",
        border_colormap="plasma", border_contrast_limits=tuple(float(v) for v in score_range),
        border_width=0.18, border_width_is_relative=True, scale=tuple(scale), translate=tuple(translate),
        metadata=metadata,
    )
    if stack:
        # spots are drawn, shrinking, on the planes next to theirs (napari < 0.9: out_of_slice_display)
        from napari.layers import Points

        if hasattr(Points, "projection_mode"):
            kw["projection_mode"] = "rescale_linear"
        else:  # pragma: no cover - older napari
            kw["out_of_slice_display"] = True
    return kw


def replace_points(layer, coords: np.ndarray, features: pd.DataFrame) -> None:
    """Swap a Points layer's spots and features as one batch, drawn once.

    Setting the data and then the features makes napari rebuild the canvas's marker arrays three times
    (data, border colours from the new scores, colour properties: a list of 10^5 symbol strings each time).
    Those drawing events are held while both change and the layer is redrawn once at the end; the ``data`` and
    ``features`` events, which other panels listen to, still fire as before. Where it recognises napari's state,
    the spots are swapped with array operations (:mod:`.points_swap`: napari's own path re-validates every
    point's symbol in Python); what remains is about 1 ms per 1,000 points under load (bench_viewer.py --spots),
    so callers still debounce.
    """
    with contextlib.ExitStack() as held:
        for emitter in _drawing_events(layer):
            held.enter_context(emitter.blocker())
        block = getattr(layer, "_block_refresh", None)  # napari >= 0.5: one re-slice at the end, not one per
        if block is not None:                           # setter inside napari's data update (3 when growing)
            held.enter_context(block())
        if not swap_points(layer, coords, features):  # napari's own path where the swap does not apply
            layer.data = coords
            if not layer.visible:
                # napari skips re-slicing a hidden layer, so its view indices still count the old points and
                # setting the features would index past the end (IndexError inside napari's drawing code)
                layer.set_view_slice()
            layer.features = features
    # one redraw (a hidden layer is re-sliced when shown). With nothing selected or hovered the highlight stays
    # empty: redrawing it would only make the canvas paint the old markers once more before the new ones
    lit = bool(layer.selected_data) or len(getattr(layer, "_highlight_index", [0])) > 0
    try:
        layer.refresh(highlight=lit)
    except TypeError:  # napari without the refresh options
        layer.refresh()


def _drawing_events(layer) -> list:
    """The events of a Points layer that make the canvas rebuild its markers (and nothing else of ours)."""
    names = ("set_data", "symbol", "border_width", "border_color", "face_color")
    out = [getattr(layer.events, n) for n in names if hasattr(layer.events, n)]
    for manager in (getattr(layer, "_border", None), getattr(layer, "_face", None)):
        events = getattr(manager, "events", None)
        out += [getattr(events, n) for n in ("colors", "color_properties") if events is not None and hasattr(events, n)]
    return out


def layer_name(role: str, image: str, model: str | None = None) -> str:
    """Role first, so a narrow layer list still says what a layer is: ``spots: cells.tif (default)``.

    The list elides long names in the middle (see :func:`elide_layer_names`) and its tooltip shows the
    whole name; the model in the name lets two runs on one image sit side by side.
    """
    return f"{role}: {image}" + (f" ({model})" if model else "")


def elide_layer_names(native) -> None:
    """Make napari's layer list cut long names in the middle, keeping the role (start) and model (end) visible.

    ``native`` is one of our docked Qt widgets; the list is found among its window's children once the
    widget is docked (next event-loop turn), through Qt alone: napari's own attributes for it are private.
    """
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QAbstractItemView

    def apply():
        try:
            for view in native.window().findChildren(QAbstractItemView):
                if type(view).__name__ == "QtLayerList":
                    view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        except RuntimeError:  # the widget was closed meanwhile
            pass

    QTimer.singleShot(0, apply)


#: ring colour of hand-placed spots (their score is NaN, so the score colormap gives them no colour);
#: the face stays transparent so the spot under the ring stays visible
MANUAL_BORDER = (0.0, 0.9, 1.0, 1.0)
#: QC colours: found (true positive), false alarm (false positive), missed truth (false negative)
QC_COLOURS = {"TP": "#30d030", "FP": "#ff3030", "FN": "#ffd000"}
#: ground-truth rings: magenta, none of the QC legend's colours (green, red, yellow)
TRUTH_COLOUR = "#ff66ff"


def layer_axes(layer) -> str:
    """A Points layer's axes: from the detection's provenance, else its axis labels, else the default order."""
    prov = layer.metadata.get(K.PROVENANCE) or {}
    axes = prov.get("layer_axes")
    if isinstance(axes, str) and len(axes) == layer.ndim:
        return axes
    named = axes_from_labels(layer.axis_labels)
    if named is not None:
        return named
    return axes_for_rank(layer.ndim)


def to_layer_coords(src, dst, coords: np.ndarray) -> np.ndarray:
    """Data coordinates of ``src`` as data coordinates of ``dst`` (through world space: scale, translate)."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, src.ndim)
    if len(coords) == 0:
        return np.zeros((0, dst.ndim))
    if np.allclose(src.affine.affine_matrix, dst.affine.affine_matrix) and np.allclose(src.scale, dst.scale) \
            and np.allclose(src.translate, dst.translate) and src.ndim == dst.ndim:
        return coords.copy()
    return np.array([dst.world_to_data(src.data_to_world(c)) for c in coords]).reshape(-1, dst.ndim)


def style_by_source(layer) -> None:
    """Hand-placed spots hollow cyan diamonds, predictions rings, so a reviewer tells them apart and still
    sees the spot under either."""
    n = len(layer.data)
    if n == 0 or "source" not in layer.features.columns:
        return
    manual = layer.features["source"].astype(str).to_numpy() == "manual"
    layer.face_color = np.zeros((n, 4))
    layer.symbol = np.where(manual, "diamond", "disc")
    if layer.border_color_mode == "direct" and manual.any():
        border = np.array(layer.border_color, copy=True)
        border[manual] = MANUAL_BORDER
        layer.border_color = border


def unwrap_layer(layer):
    """The real layer behind napari's plugin proxy (npe2 hands widgets proxied objects)."""
    return getattr(layer, "__wrapped__", layer)


def same_layer(a, b) -> bool:
    """Identity through plugin proxies: a proxied layer is not ``is`` the layer itself."""
    return unwrap_layer(a) is unwrap_layer(b)
