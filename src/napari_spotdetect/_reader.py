"""Readers for spot tables (CSV) and TrackMate XML: coordinates become a Points layer, the rest features.

Any CSV or XML reaches these readers, so they answer None for files that hold no spots and napari tries
the next reader.
"""

from __future__ import annotations

import json
from pathlib import Path

from .core.spots_io import COORD_ORDER, NotASpotTable, provenance_path, read_spots_csv


def get_reader(path):
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    try:
        df = read_spots_csv(path)
    except (NotASpotTable, ValueError, OSError):
        return None
    if {"x_px", "y_px"} <= set(df.columns):  # a points table: x, y in um, pixels in *_px
        return lambda _path: [_points_table_layer(path)]
    return lambda _path: [_points_layer(df, path)]


def _points_table_layer(path: Path):
    """A points table (``write_points_table``) in pixels, scaled to um when it records its pixel size."""
    import numpy as np

    from .core.exports import read_points_table

    df = read_points_table(path)
    data, kw, kind = _points_layer(df, path)
    ps = df.attrs.get("pixel_size")
    axes = kw["metadata"]["spotdetect_axes"]
    if ps is not None:
        size = dict(zip("zyx", ps))
        kw["scale"] = [1.0 if np.isnan(size.get(a, np.nan)) else size[a] for a in axes]
    kw["features"] = kw["features"].drop(columns=[c for c in ("x_um", "y_um", "z_um") if c in kw["features"]])
    return data, kw, kind


def _points_layer(df, path: Path):
    axes = [c for c in COORD_ORDER if c in df.columns]
    coords = df[axes].to_numpy(dtype=float)
    features = df.drop(columns=axes).reset_index(drop=True)
    metadata = {"spotdetect_axes": "".join(axes), "source_file": str(path)}
    prov = provenance_path(path)
    if prov.is_file():
        try:
            metadata["spotdetect"] = {**json.loads(prov.read_text()), "layer_axes": "".join(axes)}
        except ValueError:
            pass
    kw = {"name": path.stem, "features": features, "metadata": metadata, "size": 7,
          "face_color": "transparent", "border_color": "#ffd700", "border_width": 0.18}
    return coords, kw, "points"


def get_trackmate_reader(path):
    """Spots of a TrackMate XML file, scaled to micrometres when the file has a calibration."""
    from .core.errors import SpotDetectError
    from .core.exports import read_trackmate_xml

    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    if path.suffix.lower() != ".xml" or not path.is_file():
        return None
    try:
        df = read_trackmate_xml(path)
    except SpotDetectError:
        return None
    return lambda _path: [_trackmate_layer(df, path)]


def _trackmate_layer(df, path: Path):
    if "t" in df.columns and df["t"].nunique() <= 1:
        df = df.drop(columns=["t"])
    axes = [c for c in COORD_ORDER if c in df.columns]
    ps = df.attrs.get("pixel_size")
    scale = [dict(zip("zyx", ps)).get(a, 1.0) for a in axes] if ps else [1.0] * len(axes)
    features = df.drop(columns=axes).reset_index(drop=True)
    metadata = {"spotdetect_axes": "".join(axes), "source_file": str(path),
                "spotdetect": {"layer_axes": "".join(axes), "source": "trackmate", "pixel_size_zyx_um": ps}}
    kw = {"name": path.stem, "features": features, "metadata": metadata, "size": 7, "scale": scale,
          "face_color": "transparent", "border_color": "#40e0d0", "border_width": 0.18}
    return df[axes].to_numpy(dtype=float), kw, "points"
