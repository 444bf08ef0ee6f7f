"""Readers for spot tables (CSV), TrackMate XML and TIFFs: coordinates become a Points layer, the rest features.

Any CSV, XML or TIFF reaches these readers, so they answer None for files that hold nothing of ours and
napari tries the next reader.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import layer_keys as K
from .core.io.spots_io import COORD_ORDER, NotASpotTable, provenance_path, read_spots_csv
from .widgets.layers import TRUTH_COLOUR

#: ring colour of a spot table that is not ground truth (none of the QC legend's colours either)
SPOTS_COLOUR = "#60b0ff"


def _one_file(path, suffixes) -> Path | None:
    """The single existing file napari offers (a path or a one-item list) if it ends in ``suffixes``, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    return path if path.suffix.lower() in suffixes and path.is_file() else None


def get_reader(path):
    path = _one_file(path, (".csv",))
    if path is None:
        return None
    try:
        df = read_spots_csv(path)
    except (NotASpotTable, ValueError, OSError):
        return None
    if {"x_px", "y_px"} <= set(df.columns):  # a points table: x, y in um, pixels in *_px
        from .core.errors import SpotDetectError

        try:  # read now: a table or units sidecar we cannot read is declined, never a traceback
            layer = _points_table_layer(path)
        except SpotDetectError:
            return None
        return lambda _path: [layer]
    return lambda _path: [_points_layer(df, path)]


def _points_table_layer(path: Path):
    """A points table (``write_points_table``) in pixels, scaled to um when it records its pixel size."""
    import numpy as np

    from .core.io.exports import read_points_table

    df = read_points_table(path)
    data, kw, kind = _points_layer(df, path)
    ps = df.attrs.get("pixel_size")
    axes = kw["metadata"][K.AXES]
    if ps is not None:
        size = dict(zip("zyx", ps))
        kw["scale"] = [1.0 if np.isnan(size.get(a, np.nan)) else size[a] for a in axes]
    kw["features"] = kw["features"].drop(columns=[c for c in ("x_um", "y_um", "z_um") if c in kw["features"]])
    return data, kw, kind


def _points_layer(df, path: Path):
    axes = [c for c in COORD_ORDER if c in df.columns]
    coords = df[axes].to_numpy(dtype=float)
    features = df.drop(columns=axes).reset_index(drop=True)
    metadata = {K.AXES: "".join(axes), K.SOURCE_FILE: str(path)}
    prov = provenance_path(path)
    if prov.is_file():
        try:
            doc = json.loads(prov.read_text())
        except (ValueError, OSError):
            doc = None
        if isinstance(doc, dict):  # valid JSON that is not an object is not our provenance: ignore it
            metadata[K.PROVENANCE] = {**doc, "layer_axes": "".join(axes)}
    truth = (metadata.get(K.PROVENANCE) or {}).get("ground_truth")
    if isinstance(truth, dict) and truth.get("image"):  # saved by 'Correct spots': it is ground truth again
        metadata[K.TRUTH] = {"image": str(truth["image"])}
    kw = {"name": f"{'truth' if K.TRUTH in metadata else 'spots'}: {path.stem}", "features": features,
          "metadata": metadata, "size": 7, "face_color": "transparent",
          "border_color": TRUTH_COLOUR if K.TRUTH in metadata else SPOTS_COLOUR, "border_width": 0.18}
    return coords, kw, "points"


def get_image_reader(path):
    """TIFFs as layers that carry the axes and pixel size their metadata (ImageJ, OME, tifffile) gives.

    Channels become one layer each (napari's ``channel_axis``), so a DAPI + FISH file never hands DAPI to
    the detector as a plane of a time series; the other axes become the layer's axis labels, which the
    Detect panel reads, and the pixel size its scale. A TIFF that says nothing opens as a plain layer (a
    user who made this napari's reader for .tif must still be able to open every TIFF); a damaged one is
    left to napari, which reports that no reader could open it.
    """
    path = _one_file(path, (".tif", ".tiff"))
    if path is None:
        return None
    from .core.errors import SpotDetectError
    from .core.io.image_files import read_image_with_info

    try:
        data, info = read_image_with_info(path)
    except SpotDetectError:
        return None  # napari's reader then reports the damaged file its own way
    return lambda _path: [image_layer_data(data, info, path.stem)]


def image_layer_data(data, info, name: str):
    """(data, kwargs, "image"); with known axes, channels split along ``channel_axis`` and axes as labels."""
    axes = info.axes
    if axes is None:
        scale = [float(info.pixel_size.get(a, 1.0)) for a in "yx"] if data.ndim >= 2 else []
        kw = {"name": name, "metadata": {K.SOURCE_FILE: info.path, "pixel_size": dict(info.pixel_size),
                                         "pixel_unit": info.unit}}
        if info.pixel_size and data.ndim >= 2:
            kw["scale"] = tuple([1.0] * (data.ndim - 2) + scale)
        return data, kw, "image"
    plane_axes = axes.replace("c", "")
    kw = {"name": name, "axis_labels": tuple(plane_axes),
          "scale": tuple(float(info.pixel_size.get(a, 1.0)) for a in plane_axes),
          "metadata": {K.AXES: plane_axes, K.SOURCE_FILE: info.path,
                       "pixel_size": dict(info.pixel_size), "pixel_unit": info.unit}}
    if "c" in axes:
        kw["channel_axis"] = axes.index("c")
        kw["name"] = [f"{name} c{i}" for i in range(data.shape[axes.index("c")])]
    return data, kw, "image"


def get_trackmate_reader(path):
    """Spots of a TrackMate XML file, scaled to micrometres when the file has a calibration."""
    from .core.errors import SpotDetectError
    from .core.io.exports import read_trackmate_xml

    path = _one_file(path, (".xml",))
    if path is None:
        return None
    try:
        df = read_trackmate_xml(path)
        layer = _trackmate_layer(df, path)
    except SpotDetectError:
        return None
    except Exception:
        return None
    return lambda _path: [layer]


def _trackmate_layer(df, path: Path):
    if "t" in df.columns and df["t"].nunique() <= 1:
        df = df.drop(columns=["t"])
    axes = [c for c in COORD_ORDER if c in df.columns]
    ps = df.attrs.get("pixel_size")
    scale = [dict(zip("zyx", ps)).get(a, 1.0) for a in axes] if ps else [1.0] * len(axes)
    features = df.drop(columns=axes).reset_index(drop=True)
    metadata = {K.AXES: "".join(axes), K.SOURCE_FILE: str(path),
                K.PROVENANCE: {"layer_axes": "".join(axes), "source": "trackmate", "pixel_size_zyx_um": ps}}
    kw = {"name": path.stem, "features": features, "metadata": metadata, "size": 7, "scale": scale,
          "face_color": "transparent", "border_color": "#40e0d0", "border_width": 0.18}
    return df[axes].to_numpy(dtype=float), kw, "points"
