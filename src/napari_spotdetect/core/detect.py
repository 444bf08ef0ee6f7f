"""Tiled inference: image in, :class:`Detections` (spot table + compact candidates) out.

``detect_iter`` is a generator that yields :class:`Progress` after every tile batch and returns the
:class:`Detections`, so a napari ``thread_worker`` (or any caller) can show progress and stop between
batches; ``detect`` runs it to the end. Memory is bounded by the tile batch: only one batch of tiles is
materialised at a time. Lazy images (dask, zarr, a TIFF opened through tifffile's zarr interface) are read
one band of tiles at a time (tile height x image width), never whole, unless the model normalises whole
planes (DeepSpot divides a plane by its maximum, so it reads each plane whole).

What is kept for re-thresholding is compact, never full-size maps:

- planes: every spot above the *candidate floor* (``min(threshold, model.threshold_range[0])``) with its
  score and intensity. Re-thresholding filters that table, so it never runs the network again and is
  exactly what detecting at the new threshold would give, for any threshold >= the floor.
- z-stacks (spots merged across planes as piscis does: one spot per 3-D connected component above the
  threshold): every voxel above the floor (position, score, offsets, intensity), plus the in-plane
  neighbours of those voxels (for the offsets at a component's centroid, which may fall just outside it).
  Components, their centroids and maxima are found from these voxels alone, so stack re-thresholding gives
  the same spots as thresholding full maps; the only exception is a component whose truncated centroid
  lies more than one pixel (in y or x) from all its voxels, where the offset is taken as 0.

Full maps are kept only when asked for (``keep_maps``): float32 or float16 in memory, or a zarr store.

Spots of single-channel 2-D planes can also get ``contrast`` (over the plane's noise) and ``relative_contrast``
(over the plane's elbow, where its spots stand out from its texture; :mod:`.contrast`): when the contrast floor
(``contrast_floor``, the model's own by default) is above 0, or when asked (``contrast=True``, as the napari
panel does for its live floor slider). The floor filters on ``relative_contrast``, live like the threshold. It
is a second pass over each plane on the CPU (about 0.1 s per megapixel), so it is not paid when not used.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .contrast import contrast_features, elbow
from .device import default_batch_size, free_cached_memory, is_out_of_memory
from .errors import SpotDetectError
from .models.base import SpotModel
from .rescore import rescore_frame, rescore_voxels
from .speed import FAST_BATCH_PIXELS, FAST_TILE_FACTOR, SpeedSettings, check_speed, speed_settings
from .steps import run_steps
from .tiling import extract_tile, plan_tiles, plan_tiles_even
from .validate import check_contrast_floor, check_finite, check_image, check_positive_int, check_threshold


@dataclass
class Progress:
    """How far a long step is: ``done`` of ``total`` units (tiles, batches, epochs).

    Detection also says which plane the last tile belonged to: ``plane`` (0-based, in the order planes are
    detected: outer axes, then z), ``n_planes`` and ``where`` (the plane's index by axis name, e.g.
    ``{"t": 2, "z": 5}``), so a caller need not infer it from tile counts.
    """

    done: int
    total: int
    message: str = ""
    plane: int | None = None
    n_planes: int = 1
    where: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class Detections:
    """Spots found in an image, with what is needed to re-threshold without the network.

    ``spots`` is a DataFrame with one row per spot: the outer axes present (``t``, ``c``), ``z`` for stacks,
    ``y``, ``x`` (pixel centres at integers), ``score``, ``intensity`` (raw image value at the spot's
    pixel), ``source`` (``"predicted"``) and ``model``. ``candidates`` is what re-thresholding filters:
    spots above ``floor`` (planes) or voxels above ``floor`` with their offsets (stacks; see the module
    notes). ``maps`` holds the stitched model maps by name only when ``keep_maps`` asked for them, shaped
    like the image (axes ``axes``) without its channel axis when channels were fed together.
    """

    axes: str
    image_shape: tuple
    threshold: float
    floor: float
    model_name: str
    score_map: str
    provenance: dict
    maps: dict = field(default_factory=dict)
    candidates: pd.DataFrame | None = None
    stack: bool = False
    #: candidates below this fraction of their plane's elbow contrast are left out (0: none; planes only)
    contrast_floor: float = 0.0
    score_range: tuple = (0.0, float("inf"))  # the model's score scale, for checking thresholds
    _image: object = None  # the (canonical) image, for the rare stack spot whose centroid voxel was not kept
    _outer_axes: str = ""

    @property
    def spots(self) -> pd.DataFrame:
        return self.rethreshold(self.threshold)

    def set_threshold(self, threshold: float) -> pd.DataFrame:
        spots = self.rethreshold(threshold)  # checks it: a NaN threshold must not become the layer's
        self.threshold = float(threshold)
        self.provenance["threshold"] = self.threshold
        return spots

    @property
    def has_contrast(self) -> bool:
        """Whether the spots carry contrast features, so a contrast floor can act (2-D planes)."""
        return self.candidates is not None and "relative_contrast" in self.candidates

    def set_contrast_floor(self, contrast_floor: float) -> None:
        """Keep only spots at least ``contrast_floor`` x their plane's elbow contrast (0: all); no network run.
        Needs the contrast features (detection with ``contrast=True`` or a floor above 0)."""
        k = check_contrast_floor(contrast_floor)
        if k > 0 and not self.has_contrast:
            raise SpotDetectError("This detection has no contrast features, so a contrast floor cannot act.",
                                  "detect again with contrast=True (2-D planes; z-stacks have none).")
        self.contrast_floor = k
        self.provenance["contrast_floor"] = k

    def rethreshold(self, threshold: float) -> pd.DataFrame:
        """The spots whose score is above ``threshold`` (and that pass the contrast floor); no network run."""
        threshold = check_threshold(threshold, self.score_range)
        if threshold < self.floor - 1e-12:
            raise SpotDetectError(
                f"Threshold {threshold} is below {self.floor}, the lowest one this detection kept.",
                f"run detection again with threshold <= {threshold}.")
        if not self.stack:
            out = self.candidates[self._above(threshold)].reset_index(drop=True)
        else:
            out = self._stack_spots(threshold)
        out["source"] = "predicted"
        out["model"] = self.model_name
        return out

    def count(self, threshold: float) -> int:
        """How many spots ``threshold`` keeps; for planes a mask count, no table is built."""
        threshold = check_threshold(threshold, self.score_range)
        if self.stack:
            return len(self._stack_spots(threshold))
        return int(self._above(threshold).sum())

    def passes_contrast_floor(self) -> np.ndarray:
        """Which planar candidates are at or above the contrast floor (all of them without a floor)."""
        if self.contrast_floor > 0 and self.has_contrast:
            return self.candidates["relative_contrast"].to_numpy() >= self.contrast_floor
        return np.ones(len(self.candidates), dtype=bool)

    def _above(self, threshold: float) -> np.ndarray:
        # strict, as peak finding at a threshold
        return (self.candidates["score"].to_numpy() > threshold) & self.passes_contrast_floor()

    def _stack_spots(self, threshold: float) -> pd.DataFrame:
        """One spot per 26-connected component of voxels above ``threshold`` (piscis's rule for stacks).

        Its voxel is the component's centroid truncated to integers, moved by the offsets read there; its
        score the component's maximum.
        """
        from .ops import voxel_components  # noqa: PLC0415

        vox = self.candidates
        outer = list(self._outer_axes)
        nz, h, w = (self.image_shape[self.axes.index(a)] for a in "zyx")
        groups = vox.groupby(outer, sort=True) if outer else [((), vox)]
        frames = []
        for idx, g in groups:
            idx = idx if isinstance(idx, tuple) else (idx,)
            zrc = g[["z", "r", "c"]].to_numpy(np.int64)
            keys = np.ravel_multi_index(zrc.T, (nz, h, w))
            order = np.argsort(keys)
            keys = keys[order]
            score = g["score"].to_numpy()
            above = score > threshold
            lab, n = voxel_components(zrc[above], (nz, h, w))
            if n == 0:
                continue
            pts = zrc[above].astype(np.float64)
            counts = np.bincount(lab, minlength=n)
            cent = np.stack([np.bincount(lab, weights=pts[:, i], minlength=n) / counts for i in range(3)], 1)
            cvox = cent.astype(np.int64)  # truncation, as piscis casts the centroid
            peak = np.full(n, -np.inf, dtype=np.float32)
            np.maximum.at(peak, lab, score[above].astype(np.float32))
            pos = np.clip(np.searchsorted(keys, np.ravel_multi_index(cvox.T, (nz, h, w))), 0, len(keys) - 1)
            found = keys[pos] == np.ravel_multi_index(cvox.T, (nz, h, w))
            row = order[pos]
            dy = np.where(found, g["dy"].to_numpy()[row], 0.0).astype(np.float32).astype(np.float64)
            dx = np.where(found, g["dx"].to_numpy()[row], 0.0).astype(np.float32).astype(np.float64)
            y, x = cvox[:, 1] + dy, cvox[:, 2] + dx
            inten = np.where(found, g["intensity"].to_numpy()[row], np.nan)
            if not found.all():
                inten[~found] = self._pixel_values(idx, cvox[~found, 0], y[~found], x[~found])
            keep = (y > -0.5) & (y < h - 0.5) & (x > -0.5) & (x < w - 0.5)
            cols = {a: np.full(int(keep.sum()), i) for a, i in zip(outer, idx)}
            cols.update(z=cvox[keep, 0].astype(np.float64), y=y[keep], x=x[keep],
                        score=peak[keep].astype(np.float64), intensity=inten[keep])
            frames.append(pd.DataFrame(cols))
        return _concat(frames, outer + ["z"])

    def _pixel_values(self, idx, z, y, x) -> np.ndarray:
        if self._image is None:
            return np.full(len(z), np.nan)
        from .image_sources import read  # noqa: PLC0415

        h, w = self.image_shape[-2:]
        r = np.clip(np.rint(y).astype(np.int64), 0, h - 1)
        c = np.clip(np.rint(x).astype(np.int64), 0, w - 1)
        vol = self._image[tuple(idx)] if idx else self._image  # (Z, [C,] H, W)
        lead = (0,) if vol.ndim == 4 else ()
        return np.array([float(read(vol[(int(zz),) + lead + (int(rr), int(cc))])) for zz, rr, cc in zip(z, r, c)])


def _intensity(plane: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Raw value at each spot's nearest pixel of a (C, H, W) plane's first channel."""
    h, w = plane.shape[-2:]
    r = np.clip(np.rint(yx[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(yx[:, 1]).astype(np.int64), 0, w - 1)
    return plane[0][r, c].astype(np.float64)


def _tile_intensity(raw_tile: np.ndarray, tile, yx: np.ndarray, reader, h: int, w: int) -> np.ndarray:
    """:func:`_intensity` from a raw (C, th, tw) tile; pixels outside the tile's image part are read apart."""
    r = np.clip(np.rint(yx[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(yx[:, 1]).astype(np.int64), 0, w - 1)
    inside = ((r >= tile.rows.start) & (r < tile.rows.stop) & (c >= tile.cols.start) & (c < tile.cols.stop))
    out = np.empty(len(r), dtype=np.float64)
    out[inside] = raw_tile[0][r[inside] - tile.rows.start, c[inside] - tile.cols.start]
    if not inside.all():
        out[~inside] = reader.pixels(r[~inside], c[~inside])
    return out


def _concat(frames, lead, extra=()):
    cols = lead + ["y", "x", "score", "intensity"] + list(extra)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in cols})
    return pd.concat(frames, ignore_index=True)[cols]


def _forward(model: SpotModel, x: np.ndarray, augment: bool = False, dtype: torch.dtype | None = None) -> np.ndarray:
    """Run a batch (under autocast to ``dtype`` if given), halving it on out-of-memory errors until one tile."""
    try:
        with torch.inference_mode(), torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None):
            xt = torch.from_numpy(x).to(model.device)
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
        return np.concatenate([_forward(model, x[:half], augment, dtype), _forward(model, x[half:], augment, dtype)])


@dataclass
class _Run:
    """Everything one detection decided before reading pixels: the image, the model, the plan."""

    model: SpotModel
    arr: object
    axes: str
    threshold: float
    floor: float
    min_distance: int
    contrast_floor: float
    want_contrast: bool  # contrast features asked for (or needed by a floor above 0)
    augment: bool
    speed: SpeedSettings
    plan: object
    tile: tuple
    overlap: float
    pad_mode: str
    batch: int
    feed_channels: bool  # a multi-channel model gets the 'c' axis as its input channels
    stack: bool
    outer_axes: str  # axes looped over outside the planes ('t', and 'c' unless fed to the network)
    outer_shape: tuple
    nz: int
    whole_planes: bool  # read each plane whole (in memory, or a model with whole-plane pre-processing)
    maps: dict

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.outer_shape, dtype=np.int64)) * self.nz

    @property
    def can_contrast(self) -> bool:
        """Whether spots can get contrast features: single-channel 2-D planes (not z-stacks, not fed channels)."""
        return not self.stack and not self.feed_channels

    @property
    def contrasts(self) -> bool:
        """Whether this run computes them."""
        return self.can_contrast and self.want_contrast

    @property
    def hw(self) -> tuple:
        return tuple(self.arr.shape[-2:])

    @property
    def rescorer(self):
        """The model's second stage (:mod:`.rescore`), or None."""
        return getattr(self.model, "rescorer", None)

    @property
    def net_floor(self) -> float:
        """The network score its planar peaks must beat: the rescorer's own when it rescores them."""
        return self.rescorer.net_floor if self.rescorer is not None and self.can_contrast else self.floor


def _prepare_run(image, model, threshold, *, axes, tile_size, overlap, batch_size, min_distance, keep_maps,
                 device, augment, speed, contrast_floor=None, contrast=None) -> _Run:
    """Check the inputs and decide the tile plan, batch, precision and channel routing."""
    from .image_sources import as_lazy, is_lazy  # noqa: PLC0415
    from .models.zoo import load_model  # noqa: PLC0415 (avoid an import cycle)

    model = load_model(model, device=device)
    settings = speed_settings(speed, model.device)
    lazy = image is not None and hasattr(image, "shape") and hasattr(image, "dtype") and is_lazy(image) \
        and not type(image).__module__.startswith("torch")
    arr, axes = check_image(as_lazy(image) if lazy else image, axes)
    threshold = check_threshold(model.default_threshold if threshold is None else threshold, model.threshold_range)
    min_distance = check_positive_int(min_distance, "min_distance")
    contrast_floor = check_contrast_floor(model.default_contrast_floor if contrast_floor is None else contrast_floor)
    if contrast is False and contrast_floor > 0:
        raise SpotDetectError(f"contrast=False with a contrast floor of {contrast_floor:g}: the floor needs the "
                              "contrast features.", "pass contrast_floor=0, or leave contrast at its default.")
    tile = _check_tile(tile_size or model.tile_size, model)
    batch = check_positive_int(batch_size, "batch_size") if batch_size is not None else None
    feed_channels = _check_channels(model, arr, axes)
    stack = "z" in axes
    outer_axes = "".join(a for a in axes if a in "tc" and not (a == "c" and feed_channels))
    outer_shape = tuple(arr.shape[axes.index(a)] for a in outer_axes)
    h, w = arr.shape[-2:]
    nz = arr.shape[axes.index("z")] if stack else 1
    overlap = model.tile_overlap if overlap is None else float(overlap)
    if not 0.0 <= overlap < 0.5:
        raise SpotDetectError(f"Tile overlap {overlap} is out of range.", "use a fraction between 0 and 0.5.")
    map_shape = outer_shape + ((nz,) if stack else ()) + (h, w)
    # maps kept in memory are checked against RAM (a zarr store may be larger)
    if keep_maps is True or (isinstance(keep_maps, str) and keep_maps in ("float32", "float16")):
        _check_map_memory(map_shape, len(model.map_names), stack)
    plan, tile, fast_batch = _plan(model, (h, w), tile, overlap, settings, user_tile=bool(tile_size))
    if batch_size is None:
        batch = fast_batch or default_batch_size(model.device, tile, half_precision=settings.dtype is not None)
    # a model that normalises with more than per-plane statistics (DeepSpot: / plane maximum is one, but it
    # is applied to the whole plane) needs each plane in memory; lazy planes are otherwise read band by band
    whole_planes = not lazy or type(model).prepare_image is not SpotModel.prepare_image
    return _Run(model=model, arr=arr, axes=axes, threshold=threshold, floor=min(threshold, model.threshold_range[0]),
                min_distance=min_distance, contrast_floor=contrast_floor,
                want_contrast=bool(contrast) or contrast_floor > 0, augment=augment, speed=settings, plan=plan,
                tile=tile, overlap=overlap, pad_mode=model.tile_pad_mode((h, w)), batch=batch,
                feed_channels=feed_channels, stack=stack,
                outer_axes=outer_axes, outer_shape=outer_shape, nz=nz, whole_planes=whole_planes,
                maps=_map_sink(keep_maps, model.map_names, map_shape, tile))


def _check_channels(model, arr, axes: str) -> bool:
    """Whether the 'c' axis goes into the network (multi-channel models), checking it fits the model."""
    feed = "c" in axes and model.channels > 1
    if model.channels > 1 and (not feed or arr.shape[axes.index("c")] != model.channels):
        raise SpotDetectError(
            f"This model takes {model.channels} channels at once, the image has axes {axes!r} "
            f"and shape {tuple(arr.shape)}.",
            f"pass an image with a 'c' axis of length {model.channels}.")
    return feed


def _plan(model, hw, tile, overlap, settings, user_tile: bool):
    """The tile plan, the (maybe shrunk) tile and, in fast mode on a CPU, the batch size it wants (else None)."""
    m = model.size_multiple
    if settings.name == "fast":
        max_tile = tile if user_tile else tuple(FAST_TILE_FACTOR * t for t in tile)
        plan = plan_tiles_even(hw, max_tile, int(np.rint(overlap * min(tile))), m)
        batch = max(1, FAST_BATCH_PIXELS // (plan.tile[0] * plan.tile[1])) if model.device.type == "cpu" else None
        return plan, plan.tile, batch
    if model.fit_tiles_to_image:
        tile = tuple(min(t, -(-n // m) * m) for t, n in zip(tile, hw))
    return plan_tiles(hw, tile, overlap, end_align=m if model.fit_tiles_to_image else None), tile, None


def _planes(run: _Run):
    """(outer index, z, plane (C, H, W) lazy or in memory) for every plane, in order."""
    for oidx in np.ndindex(*run.outer_shape) if run.outer_shape else [()]:
        vol = run.arr[_outer_selector(run.axes, run.outer_axes, oidx)]
        if run.feed_channels and run.stack:
            vol = vol.transpose((1, 0, 2, 3))  # (C, Z, H, W) -> (Z, C, H, W)
        for z in range(run.nz):
            src = vol[z] if run.stack else vol
            yield oidx, z, (src[None] if src.ndim == 2 else src)


def _plane_where(run: _Run, oidx: tuple, z: int) -> dict:
    """The plane's position by axis name, e.g. ``{"t": 3, "z": 7}`` (empty for a single plane)."""
    names = run.outer_axes + ("z" if run.stack else "")
    return dict(zip(names, tuple(int(i) for i in oidx) + ((z,) if run.stack else ())))


def _detect_plane(run: _Run, src, oidx: tuple, z: int, plane_index: int, done: int):
    """Detect in one plane, batch by batch; yields :class:`Progress`, returns the plane's candidate columns."""
    from .image_sources import BandReader, read  # noqa: PLC0415

    model, plan, total = run.model, run.plan, run.n_planes * len(run.plan)
    where = _plane_where(run, oidx, z)
    label = f" (plane {where})" if run.n_planes > 1 else ""
    reader = BandReader(src)
    stats = model.plane_statistics(src)  # e.g. percentiles, from a subsample: never the whole plane
    raw_plane = plane = None
    if run.whole_planes:
        _check_plane_memory(src)
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
        out = _forward(model, x, run.augment, run.speed.dtype)
        for k, (t, tmaps) in enumerate(zip(tiles, out)):
            if run.maps:
                _write_maps(run, tmaps, t, oidx + ((z,) if run.stack else ()))
            pixels = raw_plane if run.whole_planes else (raw[k], reader)
            cands.append(_tile_spots(run, tmaps, t, z, pixels))
        done += len(tiles)
        yield Progress(done, total, f"tile {done}/{total}", plane=plane_index, n_planes=run.n_planes, where=where)
    return cands


def _write_maps(run: _Run, tmaps: np.ndarray, t, map_index: tuple) -> None:
    """Copy the part of a tile's maps that the tile owns into the stitched maps."""
    r0, r1, c0, c1 = t.own
    for i, n in enumerate(run.model.map_names):
        run.maps[n][map_index + (slice(r0, r1), slice(c0, c1))] = tmaps[
            i, r0 - t.rows.start:r1 - t.rows.start, c0 - t.cols.start:c1 - t.cols.start]


def _tile_spots(run: _Run, tmaps: np.ndarray, t, z: int, pixels) -> dict:
    """The candidates a tile owns, as columns: spots (planes) or voxels with offsets (stacks)."""
    h, w = run.hw
    if run.stack:
        names = list(run.model.map_names)
        i_dy, i_dx = (names.index("dy"), names.index("dx")) if {"dy", "dx"} <= set(names) else (None, None)
        if run.rescorer is not None:  # voxel scores through the rescorer's monotone calibration
            tmaps = rescore_voxels(run.rescorer, tmaps, names.index(run.model.score_map))
        rr, cc, vals = _owned_voxels(tmaps, t, run.floor, names.index(run.model.score_map), i_dy, i_dx)
        yx = np.stack([rr + vals[1], cc + vals[2]], 1)
    else:
        tc = run.model.tile_candidates(tmaps, run.net_floor, run.min_distance)
        yx = tc.coords + (t.rows.start, t.cols.start)
        keep = t.owns(yx)
        yx = yx[keep]
    if isinstance(pixels, tuple):
        inten = _tile_intensity(pixels[0], t, yx, pixels[1], h, w)
    else:
        inten = _intensity(pixels, yx)
    if run.stack:
        return dict(z=np.full(len(rr), z, dtype=np.int32), r=rr.astype(np.int32), c=cc.astype(np.int32),
                    score=vals[0], dy=vals[1], dx=vals[2], intensity=inten)
    return dict(y=yx[:, 0], x=yx[:, 1], score=tc.scores[keep], intensity=inten)


def _plane_frame(run: _Run, cands: list, oidx: tuple) -> pd.DataFrame | None:
    if not cands:
        return None
    cols = {key: np.concatenate([c[key] for c in cands]) for key in cands[0]}
    n = len(cols["score"])
    return pd.DataFrame({**{a: np.full(n, i) for a, i in zip(run.outer_axes, oidx)}, **cols})


#: the contrast features of planar spots (:func:`_add_contrast`)
CONTRAST_COLUMNS = ("contrast", "relative_contrast")


def _add_contrast(frame: pd.DataFrame, plane) -> None:
    """Each spot's contrast over the plane's noise, and that contrast over the plane's elbow (:mod:`.contrast`)."""
    at, _, peaks, _ = contrast_features(plane, frame[["y", "x"]].to_numpy())
    e = elbow(peaks)
    frame["contrast"] = at
    frame["relative_contrast"] = at / e if np.isfinite(e) and e > 0 else np.inf


def _provenance(run: _Run) -> dict:
    from .. import __version__  # noqa: PLC0415

    info = run.model.info
    return {
        "package": "napari-spotdetect",
        "package_version": __version__,
        "model": info.name,
        "model_arch": info.arch,
        "model_variant": info.variant,
        "model_source": info.source,
        "model_sha256": info.sha256,
        "threshold": run.threshold,
        "candidate_floor": run.floor,
        "min_distance": int(run.min_distance),
        "contrast_floor": run.contrast_floor if run.can_contrast else "not applied (z-stack or channels fed together)",
        "test_time_augmentation": bool(run.augment),
        "normalization": run.model.normalization(),
        "axes": run.axes,
        "tiling": {**run.plan.describe(), "overlap": run.overlap, "pad": run.pad_mode, "batch_size": run.batch},
        **run.speed.describe(),
        "device": str(run.model.device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _detections(run: _Run, frames: list) -> Detections:
    lead = list(run.outer_axes)
    if run.stack:
        vcols = lead + ["z", "r", "c", "score", "dy", "dx", "intensity"]
        candidates = (pd.concat(frames, ignore_index=True)[vcols] if frames else
                      pd.DataFrame({c: pd.Series(dtype=np.float64) for c in vcols}))
    else:
        candidates = _concat(frames, lead, CONTRAST_COLUMNS if run.contrasts else ())
    model, arr, axes = run.model, run.arr, run.axes
    return Detections(
        axes=axes, image_shape=tuple(arr.shape), threshold=run.threshold, floor=run.floor, model_name=model.info.name,
        score_map=model.score_map, provenance=_provenance(run), maps=run.maps, candidates=candidates,
        stack=run.stack, contrast_floor=run.contrast_floor if run.can_contrast else 0.0, _outer_axes=run.outer_axes,
        score_range=(0.0, float(model.threshold_range[1])),
        # stack intensities index planes first: a channel axis fed to the network goes after z
        _image=(arr.transpose(_z_before_c(axes)) if run.feed_channels else arr) if run.stack else None,
    )


def detect_iter(image, model, threshold: float | None = None, *, axes: str | None = None,
                tile_size=None, overlap: float | None = None, batch_size: int | None = None,
                min_distance: int = 1, keep_maps=False, device=None, augment: bool = False, speed: str | None = None,
                contrast_floor: float | None = None, contrast: bool | None = None):
    """Generator form of :func:`detect`: yields :class:`Progress`, returns :class:`Detections`."""
    run = _prepare_run(image, model, threshold, axes=axes, tile_size=tile_size, overlap=overlap,
                       batch_size=batch_size, min_distance=min_distance, keep_maps=keep_maps, device=device,
                       augment=augment, speed=speed, contrast_floor=contrast_floor, contrast=contrast)
    total = run.n_planes * len(run.plan)
    yield Progress(0, total, f"{total} tiles in {run.n_planes} plane(s)", n_planes=run.n_planes)
    frames = []
    for k, (oidx, z, src) in enumerate(_planes(run)):
        cands = yield from _detect_plane(run, src, oidx, z, k, k * len(run.plan))
        frame = _plane_frame(run, cands, oidx)
        if run.rescorer is not None and run.can_contrast:
            frame = rescore_frame(run.rescorer, frame, src[0], dict(zip(run.outer_axes, oidx)), run.floor)
        elif frame is not None:
            if run.contrasts:
                _add_contrast(frame, src[0])
        if frame is not None:
            frames.append(frame)
    return _detections(run, frames)


def check_settings(model, threshold=None, *, axes=None, tile_size=None, batch_size=None, min_distance=1,
                   speed=None, contrast_floor=None) -> None:
    """Check detection settings against a model before any image is read (a batch refuses bad ones at once).

    What depends on the image (axes against its dimensions, its size) is checked by :func:`detect_iter`.
    """
    from .validate import check_axes  # noqa: PLC0415

    check_threshold(model.default_threshold if threshold is None else threshold, model.threshold_range)
    _check_tile(tile_size or model.tile_size, model)
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    check_positive_int(min_distance, "min_distance")
    check_speed(speed)
    if contrast_floor is not None:
        check_contrast_floor(contrast_floor)
    if axes:
        check_axes(len(axes), axes)


def _machine_memory() -> int:
    """Bytes of physical memory, or 0 where the platform does not say (then nothing is refused)."""
    try:
        return max(0, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _check_plane_memory(plane) -> None:
    """Refuse, before reading it, a plane that would not fit in memory with its normalised copy."""
    n = float(np.prod(plane.shape, dtype=np.float64))
    need = n * (np.dtype(plane.dtype).itemsize + 4 + 1)  # the pixels, a float32 copy, a mask
    total = _machine_memory()
    if total and need > total / 2:
        raise SpotDetectError(f"An image plane of shape {tuple(plane.shape)} would take {need / 2**30:.1f} GB to "
                              f"process in memory, more than half of this machine's {total / 2**30:.1f} GB.",
                              "pass it as a dask or zarr array (e.g. dask.array.from_array(image) or a zarr "
                              "store), which is read and detected tile by tile, or detect a crop.")


def _check_map_memory(map_shape: tuple, n_maps: int, stack: bool) -> None:
    """Refuse, before allocating, stitched maps that would take more than half of the machine's memory."""
    need = 4 * n_maps * float(np.prod(map_shape, dtype=np.float64))
    total = _machine_memory()
    if total and need > total / 2:
        fix = ("detect fewer planes at a time (a crop or a sub-stack)" if stack else
               "pass keep_maps=False (the spots are the same; only the maps are not kept), or detect a crop")
        raise SpotDetectError(f"The model's maps for an image of shape {map_shape} would take {need / 2**30:.1f} GB, "
                              f"more than half of this machine's {total / 2**30:.1f} GB of memory.", f"{fix}.")


#: smaller tiles are mostly padding and context the network never sees; 8-pixel tiles miss spots
MIN_TILE = 32


def _check_tile(tile, model) -> tuple:
    try:
        tile = (int(tile),) if np.isscalar(tile) else tuple(int(v) for v in tile)
    except (TypeError, ValueError, OverflowError) as err:
        raise SpotDetectError(f"Tile size {tile!r} is not a whole number of pixels.",
                              f"use e.g. tile_size={model.tile_size[0]}.") from err
    if len(tile) == 1:
        tile = (tile[0], tile[0])
    m = model.size_multiple
    if len(tile) != 2 or any(t < max(m, MIN_TILE) or t % m for t in tile):
        raise SpotDetectError(f"Tile size {tile} does not fit this model.",
                              f"use a tile size of at least {max(m, MIN_TILE)} pixels that is a multiple of {m} "
                              f"(e.g. tile_size={model.tile_size[0]}).")
    return tile


def _z_before_c(axes: str) -> tuple:
    order = list(range(len(axes)))
    ci, zi = axes.index("c"), axes.index("z")
    order.insert(zi, order.pop(ci))
    return tuple(order)


def _owned_voxels(tmaps: np.ndarray, t, floor: float, i_score: int, i_dy, i_dx):
    """Rows, columns and (score, dy, dx) of the tile's owned pixels above ``floor`` and their 8 neighbours.

    The neighbours carry the offsets a component's centroid may need when it falls just outside it.
    """
    from scipy import ndimage  # noqa: PLC0415

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


def _map_sink(keep_maps, names, shape, tile) -> dict:
    """Where stitched maps go: nowhere (False), numpy float32 (True / "float32") or float16, or a zarr store.

    A zarr store is a path (``maps.zarr``), a zarr group or a store; each map becomes an array in it,
    chunked by tiles, so maps larger than memory can be kept.
    """
    if keep_maps is None or keep_maps is False:
        return {}
    if keep_maps is True or (isinstance(keep_maps, str) and keep_maps in ("float32", "float16")):
        dtype = np.float16 if keep_maps == "float16" else np.float32
        return {n: np.zeros(shape, dtype=dtype) for n in names}
    try:
        import zarr  # noqa: PLC0415
    except ImportError as err:
        raise SpotDetectError("Keeping maps in a zarr store needs the zarr package.",
                              "pip install zarr, or pass keep_maps=True / 'float16'.") from err
    group = keep_maps if isinstance(keep_maps, zarr.Group) else zarr.open_group(keep_maps, mode="w")
    chunks = (1,) * (len(shape) - 2) + tuple(int(v) for v in tile)
    return {n: group.create_array(n, shape=shape, chunks=chunks, dtype="float32", fill_value=0.0, overwrite=True)
            for n in names}


def _outer_selector(axes: str, outer_axes: str, oidx: tuple) -> tuple:
    return tuple(oidx[outer_axes.index(a)] if a in outer_axes else slice(None) for a in axes)


def detect(image, model, threshold: float | None = None, *, progress=None, should_stop=None, **kwargs) -> Detections:
    """Find spots in ``image`` with ``model`` (a loaded model, a path or ``"default"``).

    Args:
        image: numpy or dask array, 2-D to 5-D; ``axes`` names its dimensions (default ``"yx"``, ``"tyx"``,
            ``"tzyx"``, ``"tczyx"`` by rank; use ``"zyx"`` for a z-stack, ``"cyx"`` for channels).
        threshold: score threshold; default the model's own (tuned) threshold.
        progress: called with a :class:`Progress` after each tile batch.
        should_stop: called between batches; when it returns True, :class:`Cancelled` is raised.
        **kwargs: ``axes``, ``tile_size``, ``overlap`` (fraction of a tile; default the model's), ``batch_size``,
            ``min_distance``, ``keep_maps`` (False: no maps, the default; True or ``"float32"``, ``"float16"``:
            in memory; a path, zarr group or store: written there), ``device``, ``augment`` (average the maps
            over the 8 flips and transposes of each tile: about 8x slower, slightly more accurate), ``speed``
            (``"exact"``, the default: the model's own tiles in float32, piscis's spots; ``"fast"``: larger
            tiles without wasted overlap and bfloat16/float16 where the hardware has it, about 2x faster,
            F1 >= 0.99 against exact; see :mod:`napari_spotdetect.core.speed`), ``contrast_floor`` (drop spots
            dimmer than this fraction of their plane's elbow contrast, :mod:`napari_spotdetect.core.contrast`;
            default the model's own, 0 for piscis and DeepSpot files; 2-D planes only), ``contrast`` (True: give
            every planar spot its ``contrast`` and ``relative_contrast`` even at floor 0, so the floor can be
            moved afterwards with :meth:`Detections.set_contrast_floor`; default: only when the floor is above 0).
    """
    return run_steps(detect_iter(image, model, threshold, **kwargs), progress, should_stop,
                     "Detection was stopped before it finished; no spots were kept.")
