"""Spot and cell tables in the formats the next tool reads: TrackMate XML (Fiji) and plain tables for
SpatialData / AnnData / pandas users, with readers for each.

TrackMate keeps positions in physical units (``POSITION_X/Y/Z`` in the image calibration, ``spatialunits``
on the Model) and the calibration itself in ``Settings/ImageData``; without a pixel size we write pixels
and say so (``spatialunits="pixel"``, pixel sizes 1). Every numeric column of the spot table becomes a
declared spot feature, so TrackMate's own feature filters and colour-by work on score, SNR, sigma, cell...

The points table has ``x, y[, z]`` in micrometres when the pixel size is known (the names SpatialData's
``PointsModel.parse`` and most tools expect), the pixel coordinates as ``x_px, y_px[, z_px]`` and the
features after them; the per-cell table has one row per cell with ``cell`` first (the obs index an
``AnnData`` takes).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SpotDetectError
from .files import atomic_write_text
from .units import SPATIAL, as_pixel_size, positions_px

TRACKMATE_VERSION = "7.11.1"  # the file layout we write; TrackMate 3 to 7 read it
#: spot attributes TrackMate itself needs on every Spot element
TRACKMATE_REQUIRED = ("ID", "name", "POSITION_X", "POSITION_Y", "POSITION_Z", "POSITION_T", "FRAME", "QUALITY",
                      "RADIUS", "VISIBILITY")
_STANDARD = [("QUALITY", "Quality", "QUALITY", False), ("POSITION_X", "X", "POSITION", False),
             ("POSITION_Y", "Y", "POSITION", False), ("POSITION_Z", "Z", "POSITION", False),
             ("POSITION_T", "T", "TIME", False), ("FRAME", "Frame", "NONE", True),
             ("RADIUS", "Radius", "LENGTH", False), ("VISIBILITY", "Visibility", "NONE", True)]
#: our columns that are already written as a standard TrackMate feature (or are coordinates)
_NOT_EXTRA = {"t", "z", "y", "x", "z_fit", "y_fit", "x_fit", "z_um", "y_um", "x_um", "score"}


def _feature_name(col: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(col)).upper()


def _num(v) -> str:
    """A number as Java's ``Double.parseDouble`` (TrackMate's reader) accepts it: NaN, Infinity."""
    v = float(v)
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def _dimension(col: str) -> str:
    if "intensity" in col or col in ("amplitude", "background"):
        return "INTENSITY"
    if col.startswith("sigma"):
        return "LENGTH"
    return "NONE"


def write_trackmate_xml(spots: pd.DataFrame, path, *, pixel_size=None, image_shape=None, image_name: str = "",
                        frame_interval: float = 1.0, radius_px: float = 1.5) -> Path:
    """Write spots as a TrackMate XML file that Fiji's TrackMate (File > Load a TrackMate file) opens.

    Args:
        spots: spot table (``y, x`` and optional ``z``, ``t``; ``score`` becomes ``QUALITY``; fitted centres
            are used where the fit succeeded; the spot's radius is ``sqrt(2) * sigma`` when fitted).
        pixel_size: ``(z, y, x)`` um (or one number / ``(y, x)``); positions are then in micrometres.
        image_shape: ``(..., [z,] y, x)`` sizes for ``ImageData`` (default: the extent of the spots).
        image_name: the image file name TrackMate tries to open beside the XML (may be empty).
        frame_interval: time between frames (``POSITION_T = FRAME x frame_interval``).
        radius_px: radius of spots without a fitted sigma, in pixels.
    """
    if not {"y", "x"} <= set(spots.columns):
        raise SpotDetectError("The spot table has no 'y' and 'x' columns.", "pass a table from detect() or a layer.")
    physical, size = _voxel_size(pixel_size)
    pos = positions_px(spots)
    n = len(spots)
    frame = spots["t"].to_numpy(dtype=np.int64) if "t" in spots.columns else np.zeros(n, dtype=np.int64)
    extra = [c for c in spots.columns if c not in _NOT_EXTRA and (pd.api.types.is_numeric_dtype(spots[c])
                                                                  or pd.api.types.is_bool_dtype(spots[c]))]

    root = ET.Element("TrackMate", version=TRACKMATE_VERSION)
    ET.SubElement(root, "Log").text = f"Written by napari-spotdetect: {n} spots."
    model = ET.SubElement(root, "Model", spatialunits="µm" if physical else "pixel", timeunits="frame")
    _declare_features(ET.SubElement(model, "FeatureDeclarations"), spots, extra)
    _add_spots(ET.SubElement(model, "AllSpots", nspots=str(n)), spots, pos, frame, size, extra,
               frame_interval, radius_px)
    ET.SubElement(model, "AllTracks")
    ET.SubElement(model, "FilteredTracks")
    _add_settings(ET.SubElement(root, "Settings"), pos, frame, size, image_shape, image_name, frame_interval,
                  radius_px)
    ET.SubElement(root, "GUIState", state="ConfigureViews")
    ET.indent(root)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    path = Path(path)
    atomic_write_text(path, text)
    return path


def _voxel_size(pixel_size) -> tuple[bool, dict]:
    """(whether positions are physical, the ``z, y, x`` size of a voxel: um, or 1 for pixels)."""
    ps = as_pixel_size(pixel_size)
    physical = ps is not None
    size = dict(zip(SPATIAL, ps)) if physical else {a: 1.0 for a in SPATIAL}
    if physical and np.isnan(size["z"]):
        size["z"] = size["x"]  # z step unknown: only matters when the spots have z
    return physical, size


def _declare_features(decl, spots: pd.DataFrame, extra: list) -> None:
    """TrackMate's standard spot features, then one per extra numeric column (TrackMate shows them all)."""
    sf = ET.SubElement(decl, "SpotFeatures")
    for feat, name, dim, isint in _STANDARD:
        ET.SubElement(sf, "Feature", feature=feat, name=name, shortname=name, dimension=dim,
                      isint=str(isint).lower())
    for c in extra:
        isint = pd.api.types.is_integer_dtype(spots[c]) or pd.api.types.is_bool_dtype(spots[c])
        ET.SubElement(sf, "Feature", feature=_feature_name(c), name=str(c), shortname=str(c)[:12],
                      dimension=_dimension(str(c)), isint=str(bool(isint)).lower())
    ET.SubElement(decl, "EdgeFeatures")
    ET.SubElement(decl, "TrackFeatures")


def _radii_px(spots: pd.DataFrame, radius_px: float) -> np.ndarray:
    """``sqrt(2) * sigma`` where the fit succeeded, else ``radius_px``."""
    if "sigma" not in spots.columns:
        return np.full(len(spots), float(radius_px))
    sig = spots["sigma"].to_numpy(dtype=np.float64)
    ok = spots["fit_ok"].to_numpy(dtype=bool) if "fit_ok" in spots.columns else np.isfinite(sig)
    return np.where(ok & np.isfinite(sig), np.sqrt(2.0) * sig, radius_px)


def _add_spots(all_spots, spots: pd.DataFrame, pos: dict, frame: np.ndarray, size: dict, extra: list,
               frame_interval: float, radius_px: float) -> None:
    """One ``Spot`` per row, grouped in ``SpotsInFrame`` by frame; positions scaled to the file's units."""
    n = len(spots)
    quality = spots["score"].to_numpy(dtype=np.float64) if "score" in spots.columns else np.ones(n)
    quality = np.nan_to_num(quality, nan=1.0)  # hand-placed spots have no score
    r_px = _radii_px(spots, radius_px)
    xs, ys = pos["x"] * size["x"], pos["y"] * size["y"]
    zs = pos["z"] * size["z"] if "z" in pos else np.zeros(n)
    extra_vals = {c: spots[c].to_numpy() for c in extra}
    order = np.argsort(frame, kind="stable")
    for f in np.unique(frame):
        frame_el = ET.SubElement(all_spots, "SpotsInFrame", frame=str(int(f)))
        for i in order[frame[order] == f]:
            attrs = {"ID": str(int(i)), "name": f"ID{int(i)}", "QUALITY": repr(float(quality[i])),
                     "POSITION_X": repr(float(xs[i])), "POSITION_Y": repr(float(ys[i])),
                     "POSITION_Z": repr(float(zs[i])), "POSITION_T": repr(float(f) * float(frame_interval)),
                     "FRAME": str(int(f)), "RADIUS": repr(float(r_px[i] * size["x"])), "VISIBILITY": "1"}
            for c, vals in extra_vals.items():
                v = vals[i]
                attrs[_feature_name(c)] = str(int(v)) if isinstance(v, (bool, np.bool_)) else _num(v)
            ET.SubElement(frame_el, "Spot", attrs)


def _image_extent(pos: dict, frame: np.ndarray, image_shape) -> tuple[int, int, int, int]:
    """(width, height, slices, frames) of the image: from its shape when given, else the spots' extent."""
    n = len(frame)
    shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
    width = shape[-1] if shape else int(np.ceil(pos["x"].max() + 1)) if n else 1
    height = shape[-2] if shape else int(np.ceil(pos["y"].max() + 1)) if n else 1
    nslices = (shape[-3] if shape and len(shape) >= 3 and "z" in pos else
               int(np.ceil(pos["z"].max() + 1)) if "z" in pos and n else 1)
    nframes = int(frame.max()) + 1 if n else 1
    return width, height, nslices, nframes


def _add_settings(settings, pos: dict, frame: np.ndarray, size: dict, image_shape, image_name: str,
                  frame_interval: float, radius_px: float) -> None:
    """The image TrackMate opens beside the file, its calibration, and a manual detector's settings."""
    width, height, nslices, nframes = _image_extent(pos, frame, image_shape)
    p = Path(image_name) if image_name else None
    ET.SubElement(settings, "ImageData", filename=p.name if p else "", folder=str(p.parent) if p else "",
                  width=str(width), height=str(height), nslices=str(nslices), nframes=str(nframes),
                  pixelwidth=repr(size["x"]), pixelheight=repr(size["y"]), voxeldepth=repr(size["z"]),
                  timeinterval=repr(float(frame_interval)))
    ET.SubElement(settings, "BasicSettings", xstart="0", xend=str(width - 1), ystart="0", yend=str(height - 1),
                  zstart="0", zend=str(nslices - 1), tstart="0", tend=str(nframes - 1))
    ET.SubElement(settings, "DetectorSettings", DETECTOR_NAME="MANUAL_DETECTOR",
                  RADIUS=repr(float(radius_px * size["x"])))
    ET.SubElement(settings, "InitialSpotFilter", feature="QUALITY", value="0.0", isabove="true")
    ET.SubElement(settings, "SpotFilterCollection")
    ET.SubElement(settings, "TrackFilterCollection")


def read_trackmate_xml(path) -> pd.DataFrame:
    """Spots of a TrackMate XML file as a spot table: ``t, z, y, x`` in pixels, ``score`` (QUALITY),
    ``radius`` (in the file's units) and every other spot feature as a lower-case column (a feature whose
    name would take a position's or the frame's column, e.g. ``X`` or ``T``, becomes ``feature_x``).

    ``df.attrs`` holds ``pixel_size`` ``(z, y, x)`` and ``spatial_units`` from the file. Anything the file
    gets wrong (missing or non-finite positions, frames that are not whole numbers) is a
    :class:`SpotDetectError` that names it.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, ValueError, LookupError, RecursionError) as err:  # LookupError: encoding
        raise SpotDetectError(f"{path} cannot be read as XML: {err}.", "pass a TrackMate .xml file.") from err
    model = root.find("Model")
    if root.tag != "TrackMate" or model is None or model.find("AllSpots") is None:
        raise SpotDetectError(f"{path} is not a TrackMate file (no TrackMate/Model/AllSpots).",
                              "pass an XML file saved by TrackMate or by napari-spotdetect.")
    img = root.find("Settings/ImageData")

    def cal(attr):
        v = _finite_float(img.get(attr) if img is not None else None)
        return v if v is not None and v > 0 else 1.0

    size = {"z": cal("voxeldepth"), "y": cal("pixelheight"), "x": cal("pixelwidth")}
    df = pd.DataFrame([sp.attrib for sp in model.iterfind("AllSpots/SpotsInFrame/Spot")])
    if df.empty:
        df = pd.DataFrame({"t": pd.Series(dtype=np.int64), "y": pd.Series(dtype=float),
                           "x": pd.Series(dtype=float)})
    else:
        df = _trackmate_spots(df, path, size, _finite_float(img.get("nslices")) if img is not None else None)
    units = str(model.get("spatialunits", "pixel"))
    df.attrs["spatial_units"] = units
    df.attrs["pixel_size"] = None if units.lower() in ("pixel", "pixels") else (size["z"], size["y"], size["x"])
    return df


def _finite_float(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if np.isfinite(v) else None


def _floats(values) -> np.ndarray:
    """Attribute strings as float64; NaN where one is missing or not a number (pandas' own parse raises on some)."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:
                out[i] = float(v)
            except (ValueError, OverflowError):
                pass
    return out


def _trackmate_spots(df: pd.DataFrame, path: Path, size: dict, nslices) -> pd.DataFrame:
    """The Spot elements' attributes (strings) as our columns, each checked."""
    missing = [c for c in ("POSITION_X", "POSITION_Y") if c not in df.columns]
    if missing:
        raise SpotDetectError(f"{path}: spots without {' and '.join(missing)}.",
                              "pass a TrackMate file whose spots have positions.")
    num = {c: pd.Series(_floats(df[c])) for c in df.columns if c != "name"}

    def positions(col):
        v = num[col].to_numpy() if col in num else np.zeros(len(df))
        bad = ~np.isfinite(v)
        if bad.any():
            raise SpotDetectError(f"{path}: {int(bad.sum())} of {len(v)} spots have a {col} that is missing, "
                                  f"not a number or infinite (first: {df[col].iloc[int(np.argmax(bad))]!r}).",
                                  "fix or remove those spots in TrackMate and save the file again.")
        return v

    frame = positions("FRAME") if "FRAME" in num else np.zeros(len(df))
    if np.any(frame < 0) or np.any(frame != np.round(frame)) or np.any(frame > 2**31):
        raise SpotDetectError(f"{path}: FRAME values must be whole numbers from 0 (got e.g. "
                              f"{frame[(frame < 0) | (frame != np.round(frame)) | (frame > 2**31)][0]!r}).",
                              "fix the frames in TrackMate and save the file again.")
    out = {"id": (np.nan_to_num(num["ID"].to_numpy(), nan=-1).clip(-1, 2**62).astype(np.int64) if "ID" in num
                  else np.arange(len(df), dtype=np.int64)),
           "t": frame.astype(np.int64)}
    zs = positions("POSITION_Z") if "POSITION_Z" in num else np.zeros(len(df))
    if (nslices or 1) > 1 or np.any(zs != 0):
        out["z"] = zs / size["z"]
    out["y"] = positions("POSITION_Y") / size["y"]
    out["x"] = positions("POSITION_X") / size["x"]
    out["score"] = num["QUALITY"].to_numpy() if "QUALITY" in num else np.full(len(df), np.nan)
    out["radius"] = num["RADIUS"].to_numpy() if "RADIUS" in num else np.full(len(df), np.nan)
    for c in df.columns:
        if c in TRACKMATE_REQUIRED:
            continue
        name = str(c).lower()
        if name in out or name in ("t", "c", "z", "y", "x", "name"):  # a feature X, T, Z, score...: never ours
            name = f"feature_{name}"
        while name in out:
            name += "_"
        out[name] = num[c].to_numpy() if c in num and num[c].notna().any() else df[c].to_numpy()
    return pd.DataFrame(out)


def points_table(spots: pd.DataFrame, pixel_size=None) -> pd.DataFrame:
    """``x, y[, z]`` (um when ``pixel_size`` is known, else pixels), ``x_px, y_px[, z_px]``, then the features."""
    ps = as_pixel_size(pixel_size)
    pos = positions_px(spots)
    out = {}
    for a in ("x", "y", "z"):
        if a in pos:
            if ps is not None and not np.isnan(ps[SPATIAL.index(a)]):
                out[a] = pos[a] * ps[SPATIAL.index(a)]
            elif ps is not None:
                raise SpotDetectError("The spots have z but the pixel size has no z step.",
                                      "pass pixel_size=(z, y, x) in micrometres.")
            else:
                out[a] = pos[a]
    for a in ("x", "y", "z"):
        if a in pos:
            out[f"{a}_px"] = pos[a]
    skip = {"x", "y", "z", "x_um", "y_um", "z_um"}
    table = pd.DataFrame(out)
    for c in spots.columns:
        if c not in skip:
            table[c] = spots[c].to_numpy()
    return table


def write_points_table(spots: pd.DataFrame, path, pixel_size=None) -> Path:
    """Write :func:`points_table` as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow); units go in a
    ``<stem>.units.json`` sidecar."""
    path = Path(path)
    table = points_table(spots, pixel_size)
    ps = as_pixel_size(pixel_size)
    meta = {"coordinates": "micrometre" if ps is not None else "pixel",
            "pixel_size_zyx_um": list(ps) if ps is not None else None}
    if path.suffix.lower() == ".parquet":
        try:
            table.to_parquet(path, index=False)
        except ImportError as err:
            raise SpotDetectError("Writing Parquet needs pyarrow.", "pip install pyarrow, or write .csv.") from err
    else:
        atomic_write_text(path, table.to_csv(index=False, float_format="%.10g"))
    atomic_write_text(path.with_name(path.stem + ".units.json"),
                      json.dumps(meta, indent=2, default=lambda v: None if v != v else v))
    return path


def read_points_table(path) -> pd.DataFrame:
    """A points table back as a spot table: ``y, x[, z]`` in pixels (from ``*_px``), the rest as features."""
    path = Path(path)
    try:
        df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError, ImportError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise SpotDetectError(f"{path} cannot be read as a table ({type(err).__name__}: {err}).",
                              "pass a points table written by spotdetect export --to points.") from err
    if not {"x_px", "y_px"} <= set(df.columns):
        raise SpotDetectError(f"{path} has no x_px/y_px columns.", "pass a table written by write_points_table.")
    meta = _units_sidecar(path.with_name(path.stem + ".units.json"))
    in_um = meta.get("coordinates") == "micrometre"  # else x, y, z repeat the pixels
    um = {a: df[a].to_numpy() for a in ("x", "y", "z") if a in df.columns}
    out = df.drop(columns=list(um)).rename(columns={f"{a}_px": a for a in "xyz"})
    for a, v in um.items():
        if in_um and f"{a}_px" in df.columns:
            out[f"{a}_um"] = v
    cols = [a for a in ("z", "y", "x") if a in out.columns]
    out = out[cols + [c for c in out.columns if c not in cols]]
    if meta.get("pixel_size_zyx_um"):
        out.attrs["pixel_size"] = tuple(np.nan if v is None else float(v) for v in meta["pixel_size_zyx_um"])
    return out


def _units_sidecar(units: Path) -> dict:
    """The ``<stem>.units.json`` beside a points table, checked ({} when there is none)."""
    if not units.is_file():
        return {}
    fix = f"restore {units.name} (written with the table), or move it away to read the table in pixels."
    try:
        meta = json.loads(units.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise SpotDetectError(f"{units} is not valid JSON ({err}).", fix) from err
    if not isinstance(meta, dict):
        raise SpotDetectError(f"{units} holds a JSON {type(meta).__name__}, not the table's units.", fix)
    if meta.get("coordinates", "pixel") not in ("micrometre", "pixel"):
        raise SpotDetectError(f"{units}: coordinates {meta.get('coordinates')!r} is neither 'micrometre' nor "
                              "'pixel'.", fix)
    ps = meta.get("pixel_size_zyx_um")
    if ps is not None:
        ok = (isinstance(ps, list) and len(ps) == 3 and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0)
            for v in ps) and ps[1] is not None and ps[2] is not None)
        if not ok:
            raise SpotDetectError(f"{units}: pixel_size_zyx_um {str(ps)[:80]} is not three positive sizes "
                                  "(z may be null).", fix)
    return meta


def write_cell_table(table: pd.DataFrame, path) -> Path:
    """Per-cell table as CSV, ``cell`` first (``pd.read_csv(path, index_col="cell")`` gives AnnData's obs)."""
    if "cell" not in table.columns:
        raise SpotDetectError("The table has no 'cell' column.", "pass the table from cell_table().")
    cols = ["cell"] + [c for c in table.columns if c != "cell"]
    path = Path(path)
    atomic_write_text(path, table[cols].to_csv(index=False, float_format="%.10g"))
    return path


def read_cell_table(path) -> pd.DataFrame:
    df = pd.read_csv(path)
    if "cell" not in df.columns:
        raise SpotDetectError(f"{path} has no 'cell' column.", "pass a table written by write_cell_table.")
    return df


def write_h5ad(table: pd.DataFrame, path) -> Path:
    """The per-cell table as an AnnData file: ``X`` = the ``n_*`` counts per cell (spots, molecules, per
    compartment, per gene with ``by="c"``), obs = the rest.

    Needs the optional ``anndata`` package.
    """
    try:
        import anndata
    except ImportError as err:
        raise SpotDetectError("Writing .h5ad needs the anndata package.",
                              "pip install anndata, or export the per-cell CSV.") from err
    counts = [c for c in table.columns if str(c).startswith("n_")]  # spots, molecules, per compartment/gene
    obs = table.drop(columns=counts).set_index(table["cell"].astype(str)).drop(columns=["cell"])
    adata = anndata.AnnData(X=table[counts].to_numpy(dtype=np.float32), obs=obs,
                            var=pd.DataFrame(index=counts))
    adata.obs["cell"] = table["cell"].to_numpy()
    path = Path(path)
    adata.write_h5ad(path)
    return path
