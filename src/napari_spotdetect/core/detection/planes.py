"""One plane of a detection at a time: its tiles through the network, the spots (or z-stack voxels) each tile
owns with their raw intensity, the plane's spot table, and its contrast features.

Apart from :mod:`.detect` (which checks the inputs, plans the run and assembles :class:`Detections`) so that
the per-plane work, where the time goes, can be read and profiled on its own (``benchmarks/profile_detect.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..common.device import free_cached_memory, is_out_of_memory
from ..common.validate import check_finite
from ..errors import SpotDetectError
from ..models.base import SpotModel
from .contrast import contrast_features, elbow
from .detections import Progress
from .maps import check_plane_memory
from .rescore import drop_hot_voxels, fill_clipped_spots, rescore_frame, rescore_voxels, stack_plane_proposals
from .tiling import extract_tile

if TYPE_CHECKING:
    from .detect import Run


def spot_intensity(plane: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Raw value at each spot's nearest pixel of a (C, H, W) plane's first channel."""
    h, w = plane.shape[-2:]
    r = np.clip(np.rint(yx[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(yx[:, 1]).astype(np.int64), 0, w - 1)
    return plane[0][r, c].astype(np.float64)


def tile_intensity(raw_tile: np.ndarray, tile, yx: np.ndarray, reader, h: int, w: int) -> np.ndarray:
    """:func:`spot_intensity` from a raw (C, th, tw) tile; pixels outside the tile's image part are read apart."""
    r = np.clip(np.rint(yx[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(yx[:, 1]).astype(np.int64), 0, w - 1)
    inside = ((r >= tile.rows.start) & (r < tile.rows.stop) & (c >= tile.cols.start) & (c < tile.cols.stop))
    out = np.empty(len(r), dtype=np.float64)
    out[inside] = raw_tile[0][r[inside] - tile.rows.start, c[inside] - tile.cols.start]
    if not inside.all():
        out[~inside] = reader.pixels(r[~inside], c[~inside])
    return out


def forward(model: SpotModel, x: np.ndarray, augment: bool = False, dtype: torch.dtype | None = None) -> np.ndarray:
    """Run a batch (under autocast to ``dtype`` if given), halving it on out-of-memory errors until one tile."""
    cast = dtype is not None and model.runs_in(dtype)  # weights in dtype: feed it dtype, no autocast
    try:
        with torch.inference_mode(), torch.autocast(model.device.type, dtype=dtype,
                                                    enabled=dtype is not None and not cast):
            xt = torch.from_numpy(x).to(model.device)
            xt = xt.to(dtype) if cast else xt
            run = model.forward_maps_augmented if augment else model.forward_maps
            return run(xt).float().cpu().numpy()
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
        if not is_out_of_memory(err):
            raise
        free_cached_memory(model.device)
        if len(x) == 1:
            raise SpotDetectError(f"Out of memory on {model.device} even for a single tile.",
                                  "use a smaller tile size or device='cpu'.") from err
        half = len(x) // 2
        return np.concatenate([forward(model, x[:half], augment, dtype), forward(model, x[half:], augment, dtype)])


def iter_planes(run: Run):
    """(outer index, z, plane (C, H, W) lazy or in memory) for every plane, in order."""
    for oidx in np.ndindex(*run.outer_shape) if run.outer_shape else [()]:
        vol = run.arr[outer_selector(run.axes, run.outer_axes, oidx)]
        if run.feed_channels and run.stack:
            vol = vol.transpose((1, 0, 2, 3))  # (C, Z, H, W) -> (Z, C, H, W)
        for z in range(run.nz):
            src = vol[z] if run.stack else vol
            yield oidx, z, (src[None] if src.ndim == 2 else src)


def plane_spots(run: Run, src, oidx: tuple, z: int, plane_index: int):
    """Detect in one plane: yields :class:`Progress`, returns its spot table with its features (None: no spots)."""
    cands = yield from detect_plane(run, src, oidx, z, plane_index, plane_index * len(run.plan))
    if run.stack_proposals:
        yx = np.concatenate([c.pop("_yx2d") for c in cands]) if cands else np.zeros((0, 2))
        net = np.concatenate([c.pop("_score2d") for c in cands]) if cands else np.zeros(0)
        outer = dict(zip(run.outer_axes, oidx))
        props, hot, plateaus = stack_plane_proposals(run.rescorer, src[0], z, yx, net, run.floor, outer,
                                                     run.model.device, run.left_out)
        frame, props = fill_clipped_spots(drop_hot_voxels(plane_frame(run, cands, oidx), hot), props, plateaus, z,
                                           outer)
        if not len(props):
            return frame
        props["proposal"] = True
        return props if frame is None else pd.concat([frame.assign(proposal=False), props], ignore_index=True)
    frame = plane_frame(run, cands, oidx)
    if run.rescorer is not None and run.can_contrast:
        frame = rescore_frame(run.rescorer, frame, src[0], dict(zip(run.outer_axes, oidx)), run.floor,
                              run.model.device, run.left_out)
    elif frame is not None and run.contrasts:
        add_contrast(frame, src[0])
    return frame


def plane_where(run: Run, oidx: tuple, z: int) -> dict:
    """The plane's position by axis name, e.g. ``{"t": 3, "z": 7}`` (empty for a single plane)."""
    names = run.outer_axes + ("z" if run.stack else "")
    return dict(zip(names, tuple(int(i) for i in oidx) + ((z,) if run.stack else ())))


def detect_plane(run: Run, src, oidx: tuple, z: int, plane_index: int, done: int):
    """Detect in one plane, batch by batch; yields :class:`Progress`, returns the plane's candidate columns."""
    from ..io.image_sources import BandReader, read

    model, plan, total = run.model, run.plan, run.n_planes * len(run.plan)
    where = plane_where(run, oidx, z)
    label = f" (plane {where})" if run.n_planes > 1 else ""
    reader = BandReader(src)
    stats = model.plane_statistics(src)  # e.g. percentiles, from a subsample: never the whole plane
    raw_plane = plane = None
    if run.whole_planes:
        check_plane_memory(src)
        raw_plane = read(src)
        check_finite(raw_plane, label)
        plane = model.prepare_image(raw_plane)
    cands = []
    for start in range(0, len(plan), run.batch):
        tiles = plan.tiles[start:start + run.batch]
        if run.whole_planes:
            raw = np.stack([extract_tile(plane, t, run.tile, run.pad_mode) for t in tiles])
        else:
            raw = np.stack([reader.tile(t, run.tile, run.pad_mode) for t in tiles])
            check_finite(raw, label)
        x = model.normalize_tiles(raw) if stats is None else model.normalize_tiles(raw, stats)
        out = forward(model, x, run.augment, run.speed.dtype)
        for k, (t, tmaps) in enumerate(zip(tiles, out)):
            if run.maps:
                write_maps(run, tmaps, t, oidx + ((z,) if run.stack else ()))
            pixels = raw_plane if run.whole_planes else (raw[k], reader)
            cands.append(tile_spots(run, tmaps, t, z, pixels))
        done += len(tiles)
        yield Progress(done, total, f"tile {done}/{total}", plane=plane_index, n_planes=run.n_planes, where=where)
    return cands


def write_maps(run: Run, tmaps: np.ndarray, t, map_index: tuple) -> None:
    """Copy the part of a tile's maps that the tile owns into the stitched maps."""
    r0, r1, c0, c1 = t.own
    for i, n in enumerate(run.model.map_names):
        run.maps[n][map_index + (slice(r0, r1), slice(c0, c1))] = tmaps[
            i, r0 - t.rows.start:r1 - t.rows.start, c0 - t.cols.start:c1 - t.cols.start]


def tile_spots(run: Run, tmaps: np.ndarray, t, z: int, pixels) -> dict:
    """The candidates a tile owns, as columns: spots (planes) or voxels with offsets (stacks)."""
    h, w = run.hw
    if run.stack:
        names = list(run.model.map_names)
        i_dy, i_dx = (names.index("dy"), names.index("dx")) if {"dy", "dx"} <= set(names) else (None, None)
        if run.stack_proposals:  # the plane's 2-D network peaks: the neighbours of its proposals
            tc = run.model.tile_candidates(tmaps, run.rescorer.net_floor, run.min_distance)
            yx2d = tc.coords + (t.rows.start, t.cols.start)
            own = t.owns(yx2d)
            extra = {"_yx2d": yx2d[own], "_score2d": tc.scores[own]}
        if run.rescorer is not None:  # voxel scores through the rescorer's monotone calibration
            tmaps = rescore_voxels(run.rescorer, tmaps, names.index(run.model.score_map))
        rr, cc, vals = owned_voxels(tmaps, t, run.floor, names.index(run.model.score_map), i_dy, i_dx)
        yx = np.stack([rr + vals[1], cc + vals[2]], 1)
    else:
        tc = run.model.tile_candidates(tmaps, run.net_floor, run.min_distance)
        yx = tc.coords + (t.rows.start, t.cols.start)
        keep = t.owns(yx)
        yx = yx[keep]
    if isinstance(pixels, tuple):
        inten = tile_intensity(pixels[0], t, yx, pixels[1], h, w)
    else:
        inten = spot_intensity(pixels, yx)
    if run.stack:
        return dict(z=np.full(len(rr), z, dtype=np.int32), row=rr.astype(np.int32), col=cc.astype(np.int32),
                    score=vals[0], dy=vals[1], dx=vals[2], intensity=inten, **(extra if run.stack_proposals else {}))
    return dict(y=yx[:, 0], x=yx[:, 1], score=tc.scores[keep], intensity=inten)


def plane_frame(run: Run, cands: list, oidx: tuple) -> pd.DataFrame | None:
    if not cands:
        return None
    cols = {key: np.concatenate([c[key] for c in cands]) for key in cands[0]}
    n = len(cols["score"])
    return pd.DataFrame({**{a: np.full(n, i) for a, i in zip(run.outer_axes, oidx)}, **cols})


#: the contrast features of planar spots (:func:`add_contrast`)
CONTRAST_COLUMNS = ("contrast", "relative_contrast")


def add_contrast(frame: pd.DataFrame, plane) -> None:
    """Each spot's contrast over the plane's noise, and that contrast over the plane's elbow (:mod:`.contrast`)."""
    at, _, peaks, _ = contrast_features(plane, frame[["y", "x"]].to_numpy())
    e = elbow(peaks)
    frame["contrast"] = at
    frame["relative_contrast"] = at / e if np.isfinite(e) and e > 0 else np.inf


def owned_voxels(tmaps: np.ndarray, t, floor: float, i_score: int, i_dy, i_dx):
    """Rows, columns and (score, dy, dx) of the tile's owned pixels above ``floor`` and their 8 neighbours.

    The neighbours carry the offsets a component's centroid may need when it falls just outside it.
    """
    from scipy import ndimage

    r0, r1, c0, c1 = t.own
    lr, lc = r0 - t.rows.start, c0 - t.cols.start
    score = tmaps[i_score]
    above = score > floor
    near = ndimage.binary_dilation(above, structure=np.ones((3, 3), dtype=bool)) if above.any() else above
    rr, cc = np.nonzero(near[lr:lr + r1 - r0, lc:lc + c1 - c0])
    rr, cc = rr + lr, cc + lc
    zero = np.zeros(len(rr), dtype=np.float32)
    vals = (score[rr, cc].astype(np.float32),
            tmaps[i_dy][rr, cc].astype(np.float32) if i_dy is not None else zero,
            tmaps[i_dx][rr, cc].astype(np.float32) if i_dx is not None else zero)
    return rr + t.rows.start, cc + t.cols.start, vals


def outer_selector(axes: str, outer_axes: str, oidx: tuple) -> tuple:
    return tuple(oidx[outer_axes.index(a)] if a in outer_axes else slice(None) for a in axes)
