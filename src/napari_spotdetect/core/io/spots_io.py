"""Spot tables on disk (CSV) and images from disk.

Spot CSVs have a header row; coordinates are ``y, x`` (and ``z``, ``t``, ``c``) in pixels with pixel
centres at integers, the same convention as napari. Readers also accept the layouts found in the field:
``row,col`` headers, napari's own ``axis-0, axis-1, ...``, DeepSpot's ``y_row,x_col`` and piscis's
headerless coordinate files. Writes are atomic (temporary file, then rename) so a crash never leaves a
half-written table.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.validate import CANONICAL, axes_for_rank
from ..errors import SpotDetectError
from .files import atomic_write_text

COORD_ORDER = ["t", "c", "z", "y", "x"]
_ALIASES = {"row": "y", "col": "x", "column": "x", "y_row": "y", "x_col": "x", "plane": "z",
            "frame": "t", "channel": "c", "time": "t"}
IMAGE_SUFFIXES = {".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg", ".bmp"}


class NotASpotTable(SpotDetectError):
    """The CSV has no recognisable coordinate columns."""


def coordinate_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in COORD_ORDER if c in df.columns]


def write_spots_csv(spots: pd.DataFrame, path, provenance: dict | None = None) -> Path:
    """Write ``spots`` (coordinates first, then features) atomically; provenance goes to ``<stem>.provenance.json``."""
    path = Path(path)
    coords = coordinate_columns(spots)
    if "y" not in coords or "x" not in coords:
        raise SpotDetectError("The spot table has no 'y' and 'x' columns.", "pass a table from detect() or a layer.")
    cols = coords + [c for c in spots.columns if c not in coords]
    atomic_write_text(path, spots[cols].to_csv(index=False, float_format="%.6f"))
    if provenance is not None:
        atomic_write_text(provenance_path(path), json.dumps(provenance, indent=2, default=str))
    return path


def provenance_path(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.stem + ".provenance.json")


def is_sidecar(path) -> bool:
    """Files we write beside a spot table that are not themselves the spots of an image."""
    name = Path(path).name
    return name.endswith((".rejected.csv", ".provenance.json")) or name == "predict_summary.csv"


def _decode_csv(raw: bytes) -> str:
    """The text of a CSV as spreadsheets save it: UTF-8 (with or without Excel's BOM), UTF-16 with a BOM
    (Excel's "Unicode text"), else Windows-1252 / Latin-1 (older Excel on Windows: "µm" is one byte there)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\x00" in raw:  # binary, or UTF-16 without a BOM: not a text table we can read safely
            raise
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_spots_csv(path) -> pd.DataFrame:
    """Read a spot table into a DataFrame with canonical coordinate columns (``z``, ``y``, ``x``, ...).

    Raises :class:`NotASpotTable` when the file has no coordinate columns we recognise.
    """
    path = Path(path)
    try:
        text = _decode_csv(path.read_bytes())
    except (OSError, UnicodeDecodeError) as err:
        raise NotASpotTable(f"{path} cannot be read as text ({type(err).__name__}).",
                            "pass a CSV file of spot coordinates (saved as UTF-8, UTF-16 or Windows-1252 text)."
                            ) from err
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return pd.DataFrame({"y": pd.Series(dtype=float), "x": pd.Series(dtype=float)})
    df = _canonical_columns(path, _parse_table(path, text, lines[0]))
    if len(df) == 0:  # a header-only table: no spots, but the columns still say what it is
        return df.astype({c: np.float64 for c in coordinate_columns(df)})
    _check_coordinates(path, df)
    return df


def _parse_table(path: Path, text: str, first_line: str) -> pd.DataFrame:
    """The table as written: with a header row, or headerless numbers (piscis's ``np.savetxt`` output)."""
    try:
        if all(_is_number(v) for v in first_line.split(",")):
            arr = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)
            if arr.shape[1] not in (2, 3):
                raise NotASpotTable(f"{path} has {arr.shape[1]} unnamed columns.",
                                    "use a header row naming the columns (y,x or z,y,x).")
            return pd.DataFrame(arr, columns=["z", "y", "x"][-arr.shape[1]:])
        return pd.read_csv(io.StringIO(text))
    except NotASpotTable:
        raise
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as err:
        raise NotASpotTable(f"{path} is not a well-formed CSV table ({type(err).__name__}: {str(err)[:150]}).",
                            "check the file's delimiter (commas), quotes and number format.") from err


def _canonical_columns(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Coordinate columns renamed to ``t, c, z, y, x`` (aliases such as row/col, napari's axis-0...)."""
    df.columns = [str(c) for c in df.columns]
    df = df.rename(columns={c: _ALIASES.get(c.strip().lower(), c.strip().lower()) for c in df.columns
                            if c.strip().lower() in _ALIASES or c.strip().lower() in COORD_ORDER})
    axis_cols = [c for c in df.columns if re.fullmatch(r"axis-\d+", c)]
    axis_cols.sort(key=lambda c: int(c.split("-")[1]))
    if axis_cols and not {"y", "x"} <= set(df.columns):
        if len(axis_cols) > len(CANONICAL):
            raise NotASpotTable(f"{path} has {len(axis_cols)} napari axis columns; at most 5 (t, c, z, y, x) "
                                "are known.",
                                "export the points of a 2-D to 5-D layer.")
        # napari's Points export names coordinates axis-0, axis-1, ...: what they mean, by how many there are
        df = df.rename(columns=dict(zip(axis_cols, axes_for_rank(len(axis_cols)))))
        df = df.drop(columns=[c for c in ("index",) if c in df.columns])
    if len(set(df.columns)) != len(df.columns):
        raise NotASpotTable(f"{path} names a coordinate twice (columns {list(df.columns)[:8]}).",
                            "keep one column per axis (e.g. not both 'row' and 'y').")
    if not {"y", "x"} <= set(df.columns):
        raise NotASpotTable(f"{path} has no y/x coordinate columns (found {list(df.columns)[:6]}).",
                            "name the coordinate columns y,x (or z,y,x), row,col, or axis-0,axis-1.")
    return df


def _check_coordinates(path: Path, df: pd.DataFrame) -> None:
    """Numeric, finite coordinates in every row (the first bad row is named)."""
    for c in coordinate_columns(df):
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            raise NotASpotTable(f"Column {c!r} of {path} is not numeric.", "check the file's delimiter and header.")
    coords = df[coordinate_columns(df)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise NotASpotTable(f"{path} has {int(bad.sum())} row(s) with a missing, NaN or infinite coordinate "
                            f"(the first is data row {row + 1}).", "fill in or delete those rows.")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_image(path) -> np.ndarray:
    """Read an image file (TIFF, NumPy .npy, PNG/JPEG) into an array."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise SpotDetectError(f"{path.name}: unsupported image type {suffix!r}.",
                              f"use one of {sorted(IMAGE_SUFFIXES)}.")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        from skimage.io import imread

        return imread(path)
    except (OSError, ValueError) as err:
        raise SpotDetectError(f"Cannot read the image {path}: {err}.", "check that the file is complete.") from err
