"""Writer for Points layers: a spot CSV (coordinates, then every feature) and its provenance beside it.

Column names come from the detection's axes when the layer came from this plugin, else from the layer's
axis labels, else the last axes are y, x (then z, t). The write is atomic: the file is complete or absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import layer_keys as K
from .core.common.validate import axes_for_rank
from .core.io.spots_io import write_spots_csv
from .widgets.layers import axes_from_labels


def _layer_table(data, meta: dict) -> tuple[pd.DataFrame, str]:
    """A Points layer's coordinates (named by its axes) and features as one table."""
    data = np.asarray(data, dtype=float).reshape(-1, np.shape(data)[-1] if np.ndim(data) == 2 else 2)
    axes = _layer_axes(data.shape[1], meta)
    df = pd.DataFrame({a: data[:, i] for i, a in enumerate(axes)})
    features = meta.get("features")
    if features is not None and len(features) == len(df):
        feats = pd.DataFrame(features).reset_index(drop=True)
        df = pd.concat([df, feats.drop(columns=[c for c in feats.columns if c in axes])], axis=1)
    return df, axes


def write_points(path: str, data, meta: dict) -> list[str]:
    df, _ = _layer_table(data, meta)
    metadata = meta.get("metadata") or {}
    prov = metadata.get(K.PROVENANCE)
    write_spots_csv(df, path, provenance=dict(prov) if isinstance(prov, dict) else None)
    return [str(path)]


def _layer_axes(ndim: int, meta: dict) -> str:
    metadata = meta.get("metadata") or {}
    for axes in ((metadata.get(K.PROVENANCE) or {}).get("layer_axes"), metadata.get(K.AXES),
                 axes_from_labels(meta.get("axis_labels") or ())):
        if axes and len(axes) == ndim:
            return axes
    return axes_for_rank(ndim)


def write_trackmate(path: str, data, meta: dict) -> list[str]:
    """Save a Points layer as TrackMate XML, in micrometres when the layer's scale holds a pixel size."""
    from .core.io.exports import write_trackmate_xml
    from .core.io.units import pixel_size_from_scale

    df, axes = _layer_table(data, meta)
    scale = meta.get("scale")
    ps = pixel_size_from_scale(scale, axes) if scale is not None and len(scale) == len(axes) else None
    # napari draws points in world units (data x scale): TrackMate wants pixels x pixel size, the same thing
    write_trackmate_xml(df, path, pixel_size=ps)
    return [str(path)]
