"""Spots per cell: which cell (and nucleus or cytoplasm) each spot is in, and one row of counts per cell.

Cells and nuclei are label images (0 = background, one integer per object), 2-D ``(y, x)`` or 3-D
``(z, y, x)``, on the pixel grid of the image the spots were found in. A 2-D segmentation is used for
every plane of a z-stack (a common case: cells outlined on a projection). Everything is table arithmetic
(``bincount``), so a million spots and thousands of cells take well under a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..common.validate import axes_for_rank
from ..errors import SpotDetectError
from ..io.units import as_pixel_size, positions_px

OUTSIDE, NUCLEUS, CYTOPLASM, CELL = "outside", "nucleus", "cytoplasm", "cell"


def _check_labels(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise SpotDetectError(f"The {name} labels are {arr.ndim}-D.",
                              f"pass a 2-D (y, x) or 3-D (z, y, x) label image of {name}.")
    if arr.dtype.kind not in "iub":
        raise SpotDetectError(f"The {name} labels have dtype {arr.dtype}, not integers.",
                              f"pass a label image (0 = background, 1, 2, ... one per {name[:-1]}).")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise SpotDetectError(f"The {name} labels have negative values.", "use 0 for background and 1, 2, ... ")
    return arr.astype(np.int64, copy=False)


def check_labels_match(labels, image_shape, axes: str | None, name: str = "cells", image: str = "the image") -> None:
    """Labels on another pixel grid than the image give wrong counts silently (spots fall in the wrong cell or
    "outside"): refuse them, naming both shapes. 2-D labels must match the image's (y, x) plane, 3-D labels
    its (z, y, x) stack."""
    shape = tuple(int(v) for v in np.shape(labels))
    image_shape = tuple(int(v) for v in image_shape)
    if axes is None or len(axes) != len(image_shape):
        axes = axes_for_rank(len(image_shape)) if len(image_shape) in (2, 3) else None
    if axes is None:
        return
    grid = dict(zip(axes, image_shape))
    want = tuple(grid[a] for a in axes_for_rank(len(shape)) if a in grid) if len(shape) in (2, 3) else ()
    if len(shape) in (2, 3) and shape == want:
        return
    plane = (grid.get("y"), grid.get("x"))
    what = f"{plane[0]} x {plane[1]} (y, x)" + (f", {grid['z']} planes" if "z" in grid else "")
    hint = (" (the same numbers swapped: the labels are transposed)" if len(shape) >= 2 and shape[-2:] == plane[::-1]
            and plane[0] != plane[1] else "")
    raise SpotDetectError(f"The {name} labels have shape {shape} but {image} is {tuple(image_shape)} with axes "
                          f"{axes!r}: its plane is {what}{hint}. Counting spots in labels of another grid gives "
                          "wrong per-cell counts.",
                          f"pass the {name} label image segmented on this image (same height and width"
                          + (", and the same number of planes for 3-D labels" if "z" in grid else "")
                          + "), not a resized, cropped or transposed one.")


def label_at(labels: np.ndarray, spots: pd.DataFrame, name: str = "cells") -> np.ndarray:
    """The label under each spot's (fitted, when fitted) position; 0 outside the label image."""
    pos = positions_px(spots)
    axes = axes_for_rank(labels.ndim)
    if labels.ndim == 3 and "z" not in pos:
        raise SpotDetectError(f"The {name} labels are 3-D but the spots have no z column.",
                              "pass 2-D labels for 2-D spots, or spots detected in the z-stack.")
    idx = [np.rint(pos[a]).astype(np.int64) for a in axes]
    inside = np.ones(len(spots), dtype=bool)
    for i, _a in enumerate(axes):
        inside &= (idx[i] >= 0) & (idx[i] < labels.shape[i])
    clipped = tuple(np.clip(v, 0, labels.shape[i] - 1) for i, v in enumerate(idx))
    return np.where(inside, labels[clipped] if len(spots) else np.zeros(0, np.int64), 0)


def assign_cells(spots: pd.DataFrame, cells, nuclei=None) -> pd.DataFrame:
    """A copy of ``spots`` with ``cell`` (0: in no cell) and ``compartment`` columns.

    ``compartment`` is ``nucleus`` or ``cytoplasm`` when nuclei are given (a spot in a nucleus but outside
    every cell keeps ``cell`` 0 and is ``nucleus``), ``cell`` when they are not, and ``outside`` for spots in
    no cell and no nucleus.
    """
    cells = _check_labels(cells, "cells")
    out = spots.copy()
    cell = label_at(cells, spots, "cells")
    out["cell"] = cell
    comp = np.where(cell > 0, CELL, OUTSIDE).astype(object)
    if nuclei is not None:
        nuc = _check_labels(nuclei, "nuclei")
        if nuc.shape[-2:] != cells.shape[-2:]:
            raise SpotDetectError(f"Nuclei labels {nuc.shape} and cell labels {cells.shape} differ in size.",
                                  "pass both segmentations of the same image.")
        in_nuc = label_at(nuc, spots, "nuclei") > 0
        comp = np.where(in_nuc, NUCLEUS, np.where(cell > 0, CYTOPLASM, OUTSIDE)).astype(object)
    out["compartment"] = pd.Categorical(comp, categories=[NUCLEUS, CYTOPLASM, CELL, OUTSIDE])
    return out


def cell_table(spots: pd.DataFrame, cells, nuclei=None, *, pixel_size=None, image=None,
               by: str | None = None) -> pd.DataFrame:
    """One row per cell label (cells without spots included): counts, sizes, densities, mean intensities.

    Columns: ``cell``, ``n_spots`` (and ``n_nucleus``, ``n_cytoplasm`` with nuclei; ``n_molecules`` when the
    spots were counted in molecules), ``mean_spot_intensity`` (of the spots' ``intensity``, and
    ``mean_integrated_intensity`` when fitted), ``area_px`` (2-D) or ``volume_px`` (3-D), the centroid
    in pixels, and with a pixel size ``area_um2`` / ``volume_um3`` and ``spots_per_um2`` / ``spots_per_um3``.
    With ``image`` (same grid as the labels), ``mean_image_intensity`` of each cell's pixels. With ``by``
    (a column such as ``"c"`` for channels, i.e. genes, or ``"t"``), also ``n_spots_<by><value>`` per value:
    the cells x genes counts matrix.
    """
    cells = _check_labels(cells, "cells")
    if "cell" not in spots.columns:
        spots = assign_cells(spots, cells, nuclei)
    ids = np.unique(cells)
    ids = ids[ids > 0]
    n_lab = int(cells.max()) + 1 if cells.size else 1
    cell = spots["cell"].to_numpy(dtype=np.int64)
    if len(cell) and cell.max() >= n_lab:
        raise SpotDetectError("The spots' cell column has labels the cell image does not have.",
                              "assign the spots with these labels (drop the old 'cell' column).")

    def per_cell(weights=None, mask=None):
        c = cell if mask is None else cell[mask]
        w = None if weights is None else (weights if mask is None else weights[mask])
        return np.bincount(c, weights=w, minlength=n_lab)[ids]

    table = {"cell": ids, "n_spots": per_cell().astype(np.int64)}
    comp = spots["compartment"].astype(str).to_numpy() if "compartment" in spots.columns else None
    if nuclei is not None and comp is not None:
        table["n_nucleus"] = per_cell(mask=comp == NUCLEUS).astype(np.int64)
        table["n_cytoplasm"] = per_cell(mask=comp == CYTOPLASM).astype(np.int64)
    if "molecules" in spots.columns:
        table["n_molecules"] = per_cell(spots["molecules"].to_numpy(dtype=np.float64)).astype(np.int64)
    if by is not None:
        table.update(_counts_by(spots, by, per_cell))
    with np.errstate(invalid="ignore", divide="ignore"):
        for col, name in (("intensity", "mean_spot_intensity"), ("integrated_intensity", "mean_integrated_intensity")):
            if col in spots.columns:
                v = spots[col].to_numpy(dtype=np.float64)
                ok = np.isfinite(v)
                table[name] = per_cell(np.where(ok, v, 0.0)) / per_cell(ok.astype(np.float64))
    flat = cells.ravel()
    size = np.bincount(flat, minlength=n_lab)[ids]
    table.update(_geometry(cells, nuclei, ids, n_lab, size))
    table.update(_densities(table["n_spots"], size, as_pixel_size(pixel_size), cells.ndim))
    if image is not None:
        img = np.asarray(image, dtype=np.float64)
        if img.shape != cells.shape:
            raise SpotDetectError(f"The image {img.shape} and the cell labels {cells.shape} differ in shape.",
                                  "pass the plane or stack the cells were segmented in.")
        table["mean_image_intensity"] = np.bincount(flat, weights=img.ravel(), minlength=n_lab)[ids] / size
    return pd.DataFrame(table)


def _counts_by(spots: pd.DataFrame, by: str, per_cell) -> dict:
    """``n_spots_<by><value>`` per value of the ``by`` column: the cells x genes (or frames) counts matrix."""
    if by not in spots.columns:
        raise SpotDetectError(f"The spots have no {by!r} column to split the counts by.",
                              f"pass by= one of {list(spots.columns)[:8]}, or none.")
    groups = spots[by].to_numpy()
    values = np.unique(groups) if pd.api.types.is_numeric_dtype(spots[by]) else pd.unique(groups)
    out = {}
    for value in values:
        label = f"{int(value)}" if isinstance(value, (int, np.integer, float, np.floating)) \
            and float(value).is_integer() else str(value)
        out[f"n_spots_{by}{label}"] = per_cell(mask=groups == value).astype(np.int64)
    return out


def _geometry(cells: np.ndarray, nuclei, ids: np.ndarray, n_lab: int, size: np.ndarray) -> dict:
    """Each cell's size in pixels, its centroid and (with nuclei) its nucleus's size."""
    flat = cells.ravel()
    size_name = "area_px" if cells.ndim == 2 else "volume_px"
    out = {size_name: size}
    grids = np.indices(cells.shape, sparse=True)
    for a, g in zip(axes_for_rank(cells.ndim), grids):
        coord = np.broadcast_to(g, cells.shape).ravel().astype(np.float64)
        out[f"centroid_{a}"] = np.bincount(flat, weights=coord, minlength=n_lab)[ids] / size
    if nuclei is not None:
        nuc = _check_labels(nuclei, "nuclei")
        nuc_b = np.broadcast_to(nuc, cells.shape) if nuc.ndim < cells.ndim else nuc
        if nuc_b.shape == cells.shape:
            inside = (nuc_b > 0).ravel()
            out["nucleus_" + size_name] = np.bincount(flat[inside], minlength=n_lab)[ids]
    return out


def _densities(n_spots: np.ndarray, size: np.ndarray, ps, ndim: int) -> dict:
    """Areas (volumes) in um and spots per um^2 (um^3), when the pixel size is known."""
    if ps is None:
        return {}
    if ndim == 2:
        area = size * ps[1] * ps[2]
        return {"area_um2": area, "spots_per_um2": n_spots / area}
    if np.isnan(ps[0]):
        return {}
    volume = size * ps[0] * ps[1] * ps[2]
    return {"volume_um3": volume, "spots_per_um3": n_spots / volume}


def count_spots_in_cells(spots: pd.DataFrame, cells, nuclei=None, *, pixel_size=None, image=None,
                         by: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``assign_cells`` then ``cell_table``: (spots with cell and compartment, the per-cell table)."""
    assigned = assign_cells(spots, cells, nuclei)
    return assigned, cell_table(assigned, cells, nuclei, pixel_size=pixel_size, image=image, by=by)
