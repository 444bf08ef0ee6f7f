"""Spot tables in, measured spot tables out: Gaussian fits per plane/stack and molecule counts of clusters.

:func:`measure_spots` takes a detection's table (with ``t``/``c``/``z`` columns as the image has them) and
fits every spot in its own plane or z-stack; the loop is over frames and channels, never over spots.
:func:`count_molecules` turns each spot's integrated intensity into a number of molecules, with the
single-molecule intensity taken as the median over isolated spots: a transcription site or a tight cluster
that the detector reports as one spot then counts as the several molecules it holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..common.steps import run_steps
from ..common.validate import check_image
from ..detection.detect import Progress
from ..errors import SpotDetectError
from ..io.units import as_pixel_size, with_micrometres
from .fit import FIT_COLUMNS, fit_gaussians_iter


def measure_spots_iter(image, spots: pd.DataFrame, *, axes: str | None = None, channel: int | None = None,
                       sigma=None, window=None, pixel_size=None, max_iter: int = 30):
    """Generator form of :func:`measure_spots`: yields :class:`Progress`, returns the measured table."""
    arr, canon = check_image(image, axes)
    spatial = "zyx" if "z" in canon else "yx"
    outer = _check_spot_columns(arr, canon, spots, spatial, channel)
    groups_by = [a for a in outer if a in spots.columns]
    n = len(spots)
    cols: dict = {}
    if n:
        keys = spots[groups_by].to_numpy(dtype=np.int64) if groups_by else np.zeros((n, 0), dtype=np.int64)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        for k, key in enumerate(uniq):
            rows = np.flatnonzero(inverse == k)
            sel = _plane_index(arr, canon, outer, groups_by, key, channel)
            vol = np.asarray(arr[sel], dtype=np.float64)
            centres = spots[list(spatial)].to_numpy(dtype=np.float64)[rows]
            gen = fit_gaussians_iter(vol, centres, sigma=sigma, window=window, max_iter=max_iter)
            table = yield from _relabel(gen, k, len(uniq))
            for c in table.columns:
                cols.setdefault(c, np.empty(n, dtype=table[c].dtype))[rows] = table[c].to_numpy()
    else:
        yield Progress(1, 1, "no spots to fit")
        stack_only = {"z_fit", "sigma_z"}
        cols = {c: np.zeros(0, dtype=bool if c == "fit_ok" else np.float64) for c in FIT_COLUMNS
                if spatial == "zyx" or c not in stack_only}
    out = spots.reset_index(drop=True).copy()
    for c, v in cols.items():
        out[c] = v
    return with_micrometres(out, pixel_size) if pixel_size is not None else out


def _check_spot_columns(arr, canon: str, spots: pd.DataFrame, spatial: str, channel) -> list:
    """The image's outer axes (``t``, ``c``), after checking the spots say where they are along each."""
    missing = [a for a in spatial if a not in spots.columns]
    if missing:
        raise SpotDetectError(f"The spot table has no {', '.join(missing)} column(s) for a {canon!r} image.",
                              f"pass spots detected in this image (columns {', '.join(spatial)}).")
    outer = [a for a in canon if a in "tc"]
    if "c" in outer and "c" not in spots.columns:
        n_c = arr.shape[canon.index("c")]
        if channel is None and n_c > 1:
            raise SpotDetectError(f"The image has {n_c} channels and the spots say not which one they are in.",
                                  "pass channel=<index> (the channel the spots were seen in).")
    return outer


def _plane_index(arr, canon: str, outer: list, groups_by: list, key, channel) -> tuple:
    """The index of one group's plane or stack: its ``t``/``c`` from the spots (or ``channel``), checked."""
    sel = []
    for a in outer:
        size = arr.shape[canon.index(a)]
        i = int(key[groups_by.index(a)]) if a in groups_by else int(channel or 0)
        if not 0 <= i < size:
            raise SpotDetectError(f"Spots refer to {a}={i}, the image has {size} along {a!r}.",
                                  "pass the image the spots were detected in.")
        sel.append(i)
    return tuple(sel)


def _relabel(gen, k: int, n_groups: int):
    """Pass a per-plane fit's progress on, saying which plane of how many it is."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if n_groups > 1:
            p = Progress(k * p.total + p.done, n_groups * p.total, f"plane {k + 1}/{n_groups}: {p.message}")
        yield p


def measure_spots(image, spots: pd.DataFrame, *, axes: str | None = None, channel: int | None = None,
                  sigma=None, window=None, pixel_size=None, max_iter: int = 30, progress=None) -> pd.DataFrame:
    """Fit a Gaussian to every spot of ``spots`` in ``image``; returns the table with the fit's columns added.

    Args:
        image: the image the spots were detected in (2-D to 5-D; ``axes`` names its dimensions as in
            :func:`detect`).
        spots: a spot table (``Detections.spots``, a CSV read with ``read_spots_csv``, a layer's table).
        channel: for a multi-channel image whose spots have no ``c`` column, the channel to fit in.
        sigma, window, max_iter: see :func:`core.analysis.fit.fit_gaussians`.
        pixel_size: ``(z, y, x)`` um (or one number, or ``(y, x)``): adds ``*_um`` columns.
    """
    gen = measure_spots_iter(image, spots, axes=axes, channel=channel, sigma=sigma, window=window,
                             pixel_size=pixel_size, max_iter=max_iter)
    return run_steps(gen, progress)


def isolated(spots: pd.DataFrame, distance: float, pixel_size=None) -> np.ndarray:
    """True for spots with no other spot (same frame and channel) closer than ``distance`` lateral pixels."""
    ps = as_pixel_size(pixel_size)
    zfac = ps[0] / ps[2] if ps is not None and not np.isnan(ps[0]) else 1.0  # z step in lateral pixels
    coords = [a for a in ("z", "y", "x") if a in spots.columns]
    pts = spots[coords].to_numpy(dtype=np.float64).copy()
    if "z" in coords:
        pts[:, 0] *= zfac
    groups = [a for a in ("t", "c") if a in spots.columns]
    out = np.ones(len(spots), dtype=bool)
    if len(spots) < 2:
        return out
    keys = spots[groups].to_numpy() if groups else np.zeros((len(spots), 1))
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    for k in range(len(uniq)):  # frames and channels, not spots
        rows = np.flatnonzero(np.asarray(inverse).reshape(-1) == k)
        if len(rows) < 2:
            continue
        d, _ = cKDTree(pts[rows]).query(pts[rows], k=2)
        out[rows] = d[:, 1] >= distance
    return out


def count_molecules(spots: pd.DataFrame, reference: float | None = None, *, isolation: float = 5.0,
                    pixel_size=None) -> tuple[pd.DataFrame, float]:
    """Molecules per spot from its integrated intensity; returns (table with ``molecules``, ``cluster``,
    the single-molecule reference intensity).

    ``reference`` defaults to the median ``integrated_intensity`` of spots whose fit succeeded and that
    have no neighbour within ``isolation`` pixels: most isolated smFISH spots are single molecules.
    A spot counts ``max(1, round(intensity / reference))`` molecules; ``cluster`` marks those with 2 or more.
    """
    if "integrated_intensity" not in spots.columns:
        raise SpotDetectError("The spot table has no integrated_intensity column.",
                              "fit the spots first (measure_spots, 'spotdetect measure' or the Fit button).")
    inten = spots["integrated_intensity"].to_numpy(dtype=np.float64)
    if reference is None:
        ok = spots["fit_ok"].to_numpy(dtype=bool) if "fit_ok" in spots.columns else np.ones(len(spots), bool)
        good = ok & isolated(spots, isolation, pixel_size) & np.isfinite(inten) & (inten > 0)
        if not good.any():
            raise SpotDetectError("No isolated, well-fitted spot to take the single-molecule intensity from.",
                                  "pass reference=<integrated intensity of one molecule> or lower isolation.")
        reference = float(np.median(inten[good]))
    if not (np.isfinite(reference) and reference > 0):
        raise SpotDetectError(f"Reference intensity {reference} is not a positive number.",
                              "pass the integrated intensity of a single molecule.")
    mol = np.maximum(1, np.rint(np.nan_to_num(inten, nan=reference) / reference)).astype(np.int64)
    out = spots.copy()
    out["molecules"] = mol
    out["cluster"] = mol >= 2
    return out, float(reference)
