"""Cutting an image into overlapping tiles and deciding which tile owns which pixel.

The rules are those of piscis 1.1.0 (via deeptile), because Piscis normalises each tile on its own and its
outputs depend on exactly where tiles start: overlap only on axes longer than a tile, ``rint(0.1 * tile)``
pixels of overlap, the last tile ending at the image edge, and ownership borders half-way into each
overlap. Every position in ``(-0.5, L - 0.5)`` belongs to exactly one tile, so a spot is reported once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..io.image_sources import mirror_index


@dataclass(frozen=True)
class AxisPlan:
    starts: tuple[int, ...]
    stops: tuple[int, ...]  # exclusive; the last tile stops at the image edge (shorter than a tile)
    borders: tuple[int, ...]  # ownership: tile k owns positions in (borders[k] - 0.5, borders[k+1] - 0.5)


def plan_axis(length: int, tile: int, overlap: float = 0.1, end_align: int | None = None) -> AxisPlan:
    """Tiles along one axis.

    By default the last tile is cut at the image edge and padded (piscis). With ``end_align=m`` the last
    tile is instead moved back to end at the image edge (its start rounded up to a multiple of ``m``, so at
    most ``m - 1`` pixels of padding past the edge), so that models that see far past a tile's edge
    (DeepSpot) never see padding where there is image.
    """
    if length <= tile:
        return AxisPlan((0,), (length,), (0, length))
    ov = int(np.rint(tile * overlap))
    stride = tile - ov
    n = max(1, math.ceil((length - ov) / stride))
    starts = [k * stride for k in range(n)]
    half = round(ov / 2)  # Python round: half to even, as deeptile
    borders = [0] + [k * stride + half for k in range(1, n)] + [length]
    if end_align and n > 1:
        last = -(-(length - tile) // end_align) * end_align
        if last <= starts[-2]:  # the previous tile already reaches the end
            starts, borders = starts[:-1], borders[:-2] + [length]
        else:
            starts[-1] = last
            borders[-2] = (starts[-2] + tile + last) // 2  # middle of the last overlap
    stops = [min(s + tile, length) for s in starts]
    return AxisPlan(tuple(starts), tuple(stops), tuple(borders))


@dataclass(frozen=True)
class Tile:
    index: int
    rows: slice  # the part of the image the tile covers (before padding)
    cols: slice
    own: tuple[int, int, int, int]  # ownership box r0, r1, c0, c1

    def owns(self, yx: np.ndarray) -> np.ndarray:
        """Mask of image coordinates (K, 2) that this tile reports."""
        r0, r1, c0, c1 = self.own
        y, x = yx[:, 0], yx[:, 1]
        return (y > r0 - 0.5) & (y < r1 - 0.5) & (x > c0 - 0.5) & (x < c1 - 0.5)


@dataclass(frozen=True)
class TilePlan:
    shape: tuple[int, int]
    tile: tuple[int, int]
    tiles: tuple[Tile, ...]
    grid: tuple[int, int]

    def __len__(self) -> int:
        return len(self.tiles)

    def describe(self) -> dict:
        """Plain-data summary for provenance."""
        return {"tile": list(self.tile), "grid": list(self.grid), "n_tiles": len(self.tiles)}


def plan_tiles(shape, tile, overlap: float = 0.1, end_align: int | None = None) -> TilePlan:
    """Row-major tiles covering a (H, W) image (see :func:`plan_axis` for ``end_align``)."""
    h, w = (int(v) for v in shape[-2:])
    th, tw = (int(v) for v in tile)
    ay, ax = plan_axis(h, th, overlap, end_align), plan_axis(w, tw, overlap, end_align)
    return _tiles_from_axes(h, w, th, tw, ay, ax)


def plan_axis_even(length: int, max_tile: int, margin: int, multiple: int = 8) -> tuple[AxisPlan, int]:
    """Fewest equal tiles of at most ``max_tile`` that cover ``length`` with at least ``margin`` shared pixels.

    For speed, not parity: no tile sticks out of the image (only an image shorter than a tile is padded, by
    less than ``multiple`` pixels), and the overlap is the ``margin`` the network needs for context, not a
    fixed fraction. Returns the plan and the tile length (a multiple of ``multiple``).
    """
    up = -(-length // multiple) * multiple
    if up <= max_tile:
        return AxisPlan((0,), (length,), (0, length)), up
    n = max(2, math.ceil((length - margin) / (max_tile - margin)))
    tile = -(-math.ceil((length + (n - 1) * margin) / n) // multiple) * multiple
    starts = [round(k * (length - tile) / (n - 1)) for k in range(n)]
    stops = [s + tile for s in starts]
    borders = [0] + [(starts[k] + stops[k - 1]) // 2 for k in range(1, n)] + [length]
    return AxisPlan(tuple(starts), tuple(stops), tuple(borders)), tile


def plan_tiles_even(shape, max_tile, margin: int, multiple: int = 8) -> TilePlan:
    """Row-major tiles from :func:`plan_axis_even` on both axes (the fast tile plan)."""
    h, w = (int(v) for v in shape[-2:])
    mt = (int(max_tile),) * 2 if np.isscalar(max_tile) else tuple(int(v) for v in max_tile)
    (ay, th), (ax, tw) = plan_axis_even(h, mt[0], margin, multiple), plan_axis_even(w, mt[1], margin, multiple)
    return _tiles_from_axes(h, w, th, tw, ay, ax)


def _tiles_from_axes(h, w, th, tw, ay: AxisPlan, ax: AxisPlan) -> TilePlan:
    tiles = []
    rows, cols = enumerate(zip(ay.starts, ay.stops)), enumerate(zip(ax.starts, ax.stops))
    for (i, (r0, r1)), (j, (c0, c1)) in product(rows, cols):
        own = (ay.borders[i], ay.borders[i + 1], ax.borders[j], ax.borders[j + 1])
        tiles.append(Tile(len(tiles), slice(r0, r1), slice(c0, c1), own))
    return TilePlan((h, w), (th, tw), tuple(tiles), (len(ay.starts), len(ax.starts)))


def extract_tile(image: np.ndarray, tile: Tile, size, mode: str) -> np.ndarray:
    """The tile's pixels (..., h, w) padded at the bottom/right to ``size``.

    ``symmetric`` padding is taken from the image itself (a mirror about the last pixel, as deeptile's
    net effect), not from the short tile, so a pad longer than the tile still mirrors real image content.
    """
    th, tw = size
    r0, c0 = tile.rows.start, tile.cols.start
    h, w = image.shape[-2:]
    if tile.rows.stop - r0 == th and tile.cols.stop - c0 == tw:
        return image[..., tile.rows, tile.cols]
    if mode == "symmetric":
        rows = mirror_index(np.arange(r0, r0 + th), h)
        cols = mirror_index(np.arange(c0, c0 + tw), w)
        return image[..., rows[:, None], cols[None, :]]
    out = np.zeros(image.shape[:-2] + (th, tw), dtype=image.dtype)
    part = image[..., tile.rows, tile.cols]
    out[..., : part.shape[-2], : part.shape[-1]] = part
    return out
