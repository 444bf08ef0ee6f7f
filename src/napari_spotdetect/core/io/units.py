"""Physical units: one pixel size, ``(z, y, x)`` in micrometres, for every table and export.

Pixel sizes come from the caller: an explicit ``pixel_size`` argument, or a napari layer's ``scale`` turned
into one by :func:`pixel_size_from_scale` (reading them from file metadata belongs to image reading). A z
step that differs from the lateral pixel (anisotropic stacks) is kept as its own number everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import SpotDetectError

SPATIAL = ("z", "y", "x")


def as_pixel_size(pixel_size) -> tuple | None:
    """``None``, one number (isotropic), ``(y, x)`` or ``(z, y, x)`` in um -> ``(z, y, x)`` or None.

    With ``(y, x)`` the z step is unknown (NaN): z coordinates then stay in pixels only.
    """
    if pixel_size is None:
        return None
    ps = np.atleast_1d(np.asarray(pixel_size, dtype=np.float64))
    if ps.size == 1:
        ps = np.repeat(ps, 3)
    elif ps.size == 2:
        ps = np.array([np.nan, ps[0], ps[1]])
    if ps.size != 3 or np.any(ps[~np.isnan(ps)] <= 0) or np.isnan(ps[1:]).any() or np.isinf(ps).any():
        raise SpotDetectError(f"Pixel size {pixel_size!r} is not one positive number, (y, x) or (z, y, x).",
                              "pass the size of a pixel in micrometres, e.g. pixel_size=(0.3, 0.11, 0.11).")
    return tuple(float(v) for v in ps)


def pixel_size_from_scale(scale, axes: str) -> tuple | None:
    """A napari layer's ``scale`` (one value per axis in ``axes``) as ``(z, y, x)`` um, or None when unset.

    napari's default scale is 1 on every axis, which says nothing about the microscope: that gives None.
    """
    scale = [float(v) for v in scale]
    if len(scale) != len(axes):
        raise SpotDetectError(f"Scale {scale} has {len(scale)} values for axes {axes!r}.",
                              "give one scale value per layer axis.")
    by_axis = dict(zip(axes, scale))
    spatial = [by_axis.get(a, np.nan) for a in SPATIAL]
    known = [v for v in spatial if not np.isnan(v)]
    if all(v == 1.0 for v in known):
        return None
    return as_pixel_size(spatial if "z" in by_axis else spatial[1:])


def positions_px(spots: pd.DataFrame, prefer_fit: bool = True) -> dict:
    """Spot positions per spatial axis in pixels: fitted centres where a fit succeeded, else detected ones."""
    ok = spots["fit_ok"].to_numpy(dtype=bool) if prefer_fit and "fit_ok" in spots.columns else None
    out = {}
    for a in SPATIAL:
        if a not in spots.columns:
            continue
        v = spots[a].to_numpy(dtype=np.float64)
        if ok is not None and f"{a}_fit" in spots.columns:
            v = np.where(ok, spots[f"{a}_fit"].to_numpy(dtype=np.float64), v)
        out[a] = v
    return out


def with_micrometres(spots: pd.DataFrame, pixel_size, prefer_fit: bool = True) -> pd.DataFrame:
    """A copy of ``spots`` with ``z_um, y_um, x_um`` (and ``sigma_um``, ``sigma_z_um``) added.

    Positions use fitted centres where the fit succeeded. Without a pixel size the table is returned as is.
    """
    ps = as_pixel_size(pixel_size)
    out = spots.copy()
    if ps is None:
        return out
    size = dict(zip(SPATIAL, ps))
    for a, v in positions_px(spots, prefer_fit).items():
        if not np.isnan(size[a]):
            out[f"{a}_um"] = v * size[a]
    if "sigma" in out.columns:
        out["sigma_um"] = out["sigma"].to_numpy(dtype=np.float64) * size["x"]
    if "sigma_z" in out.columns and not np.isnan(size["z"]):
        out["sigma_z_um"] = out["sigma_z"].to_numpy(dtype=np.float64) * size["z"]
    return out


_MICRO = {"um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
          "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3}


def pixel_size_um(info) -> tuple | None:
    """The pixel size a file's metadata gives (an ``ImageInfo``) as (z, y, x) um, or None when unknown."""
    factor = _MICRO.get(str(info.unit or "").strip().lower()) if info.pixel_size else None
    if factor is None or "y" not in info.pixel_size or "x" not in info.pixel_size:
        return None
    return tuple(float(info.pixel_size[a]) * factor if a in info.pixel_size else float("nan") for a in "zyx")
