"""A finished detection as layers in the viewer: every layer is built first, then each replaces or updates the
previous result of the same model on the same image, unless someone worked on that one.

A user's work (an edited or ground-truth layer) is never touched: the new result then sits beside it.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_warning

from .. import layer_keys as K
from . import layers as L


def build_layers(dets, model, image_layer, axes: str, show_maps: bool) -> list:
    """The Points layer of ``dets`` (last) and, with ``show_maps``, its score maps, aligned with ``image_layer``."""
    from napari.layers import Image, Points

    scale, translate = np.asarray(image_layer.scale), np.asarray(image_layer.translate)
    out = []
    for name, arr in dets.maps.items():
        if name in L.HIDDEN_MAPS or not show_maps:
            continue
        if not isinstance(arr, np.ndarray):  # kept in a zarr store: shown lazily
            from ..core.io.image_sources import as_lazy

            arr = as_lazy(arr)
        data, dims = L.map_in_layer_order(arr, dets.axes, axes)
        out.append(Image(data, name=L.layer_name(f"{name} map", image_layer.name, model.info.name),
                         scale=scale[dims], translate=translate[dims], colormap="magma", blending="additive",
                         opacity=0.6, metadata={K.SCORE_MAP: name}))
    spots = dets.spots
    coords, features = L.points_from_spots(spots, axes)
    provenance = {**dets.provenance, "layer_axes": axes, "image_layer": image_layer.name}
    kw = L.points_layer_kwargs(L.layer_name("spots", image_layer.name, model.info.name), features,
                               score_range=model.threshold_range,
                               scale=scale, translate=translate, stack="z" in axes,
                               metadata={K.PROVENANCE: provenance, K.DETECTIONS: dets})
    kw["ndim"] = len(axes)
    out.append(Points(coords, **kw))
    if len(coords) > L.MANY_SPOTS:
        show_warning(f"{len(coords):,} spots: the layer will be slow to draw and to re-threshold. "
                     "Raise the threshold or detect in a crop.")
    return out


def show_layers(viewer, new_layers) -> list:
    """Put freshly built layers in ``viewer``; returns the layers that now show them (updated or added).

    A previous result of the same name is updated in place (its data, features and metadata swapped: no layer
    removed or added, so napari neither rebuilds its layer list and canvas nodes nor collects garbage), unless
    someone edited it (or made it ground truth): then both stay side by side.
    """
    shown = []
    for lay in new_layers:
        old = next((o for o in viewer.layers if o.name == lay.name and replaceable(o)), None)
        kept = next((o for o in viewer.layers if o.name == lay.name and o.metadata.get(K.EDITED)), None)
        if old is None and kept is not None:  # the user's edited copy stays: say so in its name, not " [1]"
            kept.name = f"{lay.name} (edited)"
        if old is not None and update_in_place(old, lay):
            shown.append(old)
            continue
        if old is not None:
            viewer.layers.remove(old)
        viewer.layers.append(lay)
        shown.append(lay)
    return shown


def update_in_place(old, new) -> bool:
    """Give layer ``old`` the data, features, metadata and placement of the freshly built ``new``.

    Only for layers of the same kind and dimensionality (False otherwise: then the caller replaces the
    layer). The user's display choices on ``old`` (colours, opacity, visibility, point size) are kept.
    """
    from napari.layers import Image, Points

    if type(L.unwrap_layer(old)) is not type(L.unwrap_layer(new)) or old.ndim != new.ndim:
        return False
    if isinstance(new, Points):
        old.metadata = new.metadata
        _same_placement(old, new)
        L.replace_points(old, new.data, new.features)
        return True
    if isinstance(new, Image) and not old.multiscale and not new.multiscale and old.rgb == new.rgb:
        _same_placement(old, new)
        old.metadata = new.metadata
        old.data = new.data
        old.contrast_limits_range = new.contrast_limits_range
        old.contrast_limits = new.contrast_limits
        return True
    return False


def _same_placement(old, new) -> None:
    if not np.allclose(old.scale, new.scale):
        old.scale = new.scale
    if not np.allclose(old.translate, new.translate):
        old.translate = new.translate


def replaceable(layer) -> bool:
    """True for a detection (or map) layer nobody has touched since it was made; False for anyone's work."""
    meta = layer.metadata
    if K.SCORE_MAP in meta:
        return True
    if K.DETECTIONS not in meta or K.TRUTH in meta or meta.get(K.EDITED):
        return False
    dets, axes = meta[K.DETECTIONS], (meta.get(K.PROVENANCE) or {}).get("layer_axes")
    if not axes:
        return False
    coords, _ = L.points_from_spots(dets.spots, axes)
    return coords.shape == np.shape(layer.data) and np.allclose(coords, layer.data)


def temporary_map_store() -> str:
    """A zarr store for the maps of a lazy image, removed when Python exits."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    folder = tempfile.mkdtemp(prefix="spotdetect-maps-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(Path(folder) / "maps.zarr")
