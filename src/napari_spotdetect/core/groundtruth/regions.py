"""Annotated regions: a rectangle of a plane in which the user marked every spot; outside it is unknown.

A region lets a biologist teach or calibrate a model from a few dozen clicks instead of a whole image.
Three rules hold on every face (API, CLI ``--regions``, napari Shapes layers):

- an example is ``(plane, spots, box)``: the *whole* plane travels with its box, so the network sees the
  region normalised by the whole image's statistics, exactly as detection will (a region's brightest pixels
  are dimmer than the image's: normalised on its own, a region teaches a spot brightness the image lacks);
- only spots inside the box count, as truth and as detections; nothing outside is "no spot";
- a box is ``(y0, x0, y1, x1)`` in plane pixels, ends exclusive.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import SpotDetectError


def check_box(box, shape) -> tuple[int, int, int, int]:
    """The box as integers clipped to the plane; refused when empty or not four numbers."""
    try:
        y0, x0, y1, x1 = (float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise SpotDetectError(f"Region {box!r} is not four numbers.",
                              "give a region as (y0, x0, y1, x1) in pixels.") from err
    if not all(np.isfinite((y0, x0, y1, x1))):
        raise SpotDetectError(f"Region {box!r} has a NaN or infinite corner.", "give finite pixel coordinates.")
    h, w = int(shape[-2]), int(shape[-1])
    y0, y1 = sorted((y0, y1))
    x0, x1 = sorted((x0, x1))
    b = (max(0, int(np.floor(y0))), max(0, int(np.floor(x0))), min(h, int(np.ceil(y1))), min(w, int(np.ceil(x1))))
    if b[2] - b[0] < 2 or b[3] - b[1] < 2:
        raise SpotDetectError(f"Region {box!r} covers less than 2 x 2 pixels of the {h} x {w} image.",
                              "draw the rectangle over the part of the image where you marked the spots.")
    return b


def inside(yx, box) -> np.ndarray:
    """Which (N, 2) points lie in the box (pixel centres; a spot at y = y1 - 0.5 is in, at y1 is not)."""
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    if box is None:
        return np.ones(len(yx), dtype=bool)
    y0, x0, y1, x1 = box
    return ((yx[:, 0] >= y0 - 0.5) & (yx[:, 0] < y1 - 0.5) & (yx[:, 1] >= x0 - 0.5) & (yx[:, 1] < x1 - 0.5))


def region_examples(image, spots, boxes) -> list:
    """``(plane, spots inside, box)`` for each box over one 2-D plane (its spots: (N, 2) y/x)."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise SpotDetectError(f"Regions are drawn on 2-D planes; this image has shape {img.shape}.",
                              "pick the plane (or project the stack) first.")
    pts = np.asarray(spots, dtype=np.float64).reshape(-1, 2)
    out = []
    for b in boxes:
        b = check_box(b, img.shape)
        out.append((img, pts[inside(pts, b)], b))
    return out


def boxes_from_shapes(data) -> list:
    """Boxes from a napari Shapes layer's data (each shape an array of vertices; the last two axes y, x)."""
    out = []
    for verts in data:
        v = np.asarray(verts, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] < 2 or len(v) < 2:
            continue
        yx = v[:, -2:]
        # the pixels whose centres the rectangle covers (pixel i spans i - 0.5 .. i + 0.5)
        out.append((np.ceil(yx[:, 0].min() - 1e-6), np.ceil(yx[:, 1].min() - 1e-6),
                    np.floor(yx[:, 0].max() + 1e-6) + 1, np.floor(yx[:, 1].max() + 1e-6) + 1))
    return out


def read_regions_csv(path) -> dict:
    """Boxes by image stem (key ``""``: every image) from a CSV.

    Two layouts: ours, one row per box with columns ``y0, x0, y1, x1`` and optionally ``image`` (a file name
    or stem); or what napari's *Save layer* writes for a Shapes layer (``index, shape-type, vertex-index,
    axis-0, axis-1``), whose rectangles then apply to every image.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise SpotDetectError(f"Cannot read the regions file {path} ({err}).",
                              "give a CSV with columns y0,x0,y1,x1 (and image), or a napari Shapes CSV.") from err
    cols = {c.strip().lower() for c in (rows[0].keys() if rows else [])}
    out: dict = {}
    try:
        if {"y0", "x0", "y1", "x1"} <= cols:
            for r in rows:
                r = {k.strip().lower(): v for k, v in r.items()}
                key = Path(r.get("image") or "").stem
                out.setdefault(key, []).append(tuple(float(r[k]) for k in ("y0", "x0", "y1", "x1")))
        elif {"index", "axis-0", "axis-1"} <= cols:
            shapes: dict = {}
            last = max((int(c.split("-")[1]) for c in cols if c.startswith("axis-")), default=1)
            for r in rows:
                ax = (float(r[f"axis-{last - 1}"]), float(r[f"axis-{last}"]))
                shapes.setdefault(int(r["index"]), []).append(ax)
            out[""] = boxes_from_shapes([np.array(v) for _, v in sorted(shapes.items())])
        else:
            raise SpotDetectError(f"{path.name} has columns {sorted(cols)}, not regions.",
                                  "use columns y0,x0,y1,x1 (optionally image), or save a napari Shapes layer as CSV.")
    except (KeyError, ValueError) as err:
        raise SpotDetectError(f"A row of {path.name} is not a region ({err}).",
                              "every row needs numbers in y0,x0,y1,x1 (or axis-0, axis-1).") from err
    if not any(out.values()):
        raise SpotDetectError(f"{path.name} holds no region.", "draw at least one rectangle.")
    return out


def regions_for(table: dict, stem: str) -> list:
    """The boxes of one image: its own rows, and those that apply to every image."""
    return list(table.get(stem, [])) + list(table.get("", []))


def split_box(box, share: float, spots) -> tuple:
    """(train box, validation box): ``share`` of the box cut off along its longer side; None when a part would
    hold no spot (then there is nothing held out to judge by)."""
    y0, x0, y1, x1 = box
    if y1 - y0 >= x1 - x0:
        cut = y1 - max(1, int(round((y1 - y0) * share)))
        a, b = (y0, x0, cut, x1), (cut, x0, y1, x1)
    else:
        cut = x1 - max(1, int(round((x1 - x0) * share)))
        a, b = (y0, x0, y1, cut), (y0, cut, y1, x1)
    if min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) < 2:
        return None
    if not inside(spots, a).any() or not inside(spots, b).any():
        return None
    return a, b


__all__ = ["boxes_from_shapes", "check_box", "inside", "read_regions_csv", "region_examples", "regions_for",
           "split_box"]
