"""z-stacks in the viewer: detection rings shown on the neighbouring planes, images on their own plane only.

napari draws out-of-slice points (projection ``rescale_linear``) only within the slice thickness, so the
Detect panel widens the thickness along z. napari's image layers default to projecting (a mean) over that
thickness: every image layer, also one added later, is kept on its one plane while the viewer shows a slab
this module set.
"""

from __future__ import annotations

import numpy as np

from .per_viewer import PerViewer

_slabs = PerViewer(dict)  # viewer -> {"watching": True} once its inserted-layer handler is connected


def show_neighbour_planes(viewer, image_layer, axes: str, planes: float = 2.0) -> None:
    """Draw a spot's ring, shrinking, on the ``planes`` planes above and below its own (a thickness the
    user chose is kept); every image layer shows its one plane."""
    dims = viewer.dims
    z = dims.ndim - len(axes) + axes.index("z")
    if not 0 <= z < dims.ndim:
        return
    thickness = list(dims.thickness)
    step = float(np.asarray(image_layer.scale)[axes.index("z")])
    if thickness[z] <= step:
        thickness[z] = 2 * planes * step
        dims.thickness = tuple(thickness)
    for lay in viewer.layers:
        _one_plane(lay)
    state = _slabs.get(viewer)
    if not state:
        state["watching"] = True
        viewer.layers.events.inserted.connect(_on_inserted)


def _on_inserted(event) -> None:
    _one_plane(event.value)


def _one_plane(layer) -> None:
    """An image (or score map) shows the plane on view, not a mean over the slab."""
    if hasattr(layer, "contrast_limits") and str(getattr(layer, "projection_mode", "none")) != "none":
        layer.projection_mode = "none"


def visible_half_depth(viewer, layer, d: int) -> float:
    """Half the depth (data units along layer dim ``d``) over which ``layer``'s out-of-slice points are drawn."""
    if str(getattr(layer, "projection_mode", "none")) == "none":
        return 0.5
    world = viewer.dims.ndim - layer.ndim + d
    thickness = float(viewer.dims.thickness[world]) if 0 <= world < viewer.dims.ndim else 1.0
    return max(0.5, 0.5 * thickness / abs(float(layer.scale[d])))
