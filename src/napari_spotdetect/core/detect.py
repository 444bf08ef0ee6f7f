"""Tiled inference: image in, :class:`Detections` (spot table + cached maps) out.

``detect_iter`` is a generator that yields :class:`Progress` after every tile batch and returns the
:class:`Detections`, so a napari ``thread_worker`` (or any caller) can show progress and stop between
batches; ``detect`` runs it to the end. Memory is bounded by the tile batch: only one batch of tiles is
materialised at a time (plus the stitched maps, if kept).

Spots are found per tile at the lowest threshold the model allows and kept by the tile that owns their
position. Re-thresholding filters that table, so it never runs the network again and, for planes, is
exactly what detecting at the new threshold would give. For z-stacks spots are merged across planes as
piscis does (one spot per 3-D connected component above the threshold), from the stitched maps.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .device import default_batch_size, free_cached_memory, is_out_of_memory
from .errors import SpotDetectError
from .models.base import SpotModel
from .ops import stack_components
from .steps import run_steps
from .tiling import extract_tile, plan_tiles
from .validate import check_finite, check_image, check_positive_int, check_threshold


@dataclass
class Progress:
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class Detections:
    """Spots found in an image, with what is needed to re-threshold without the network.

    ``spots`` is a DataFrame with one row per spot: the outer axes present (``t``, ``c``), ``z`` for stacks,
    ``y``, ``x`` (pixel centres at integers), ``score``, ``intensity`` (raw image value at the spot's
    pixel), ``source`` (``"predicted"``) and ``model``. ``maps`` holds the stitched model maps by name,
    shaped like the image (axes ``axes``) without its channel axis when channels were fed together.
    """

    axes: str
    image_shape: tuple
    threshold: float
    floor: float
    model_name: str
    score_map: str
    provenance: dict
    maps: dict = field(default_factory=dict)
    candidates: pd.DataFrame | None = None  # planes: every spot above `floor`
    stack: bool = False
    score_range: tuple = (0.0, float("inf"))  # the model's score scale, for checking thresholds
    _image: object = None  # the (canonical) image, for intensities of stack spots
    _outer_axes: str = ""

    @property
    def spots(self) -> pd.DataFrame:
        return self.rethreshold(self.threshold)

    def set_threshold(self, threshold: float) -> pd.DataFrame:
        spots = self.rethreshold(threshold)  # checks it: a NaN threshold must not become the layer's
        self.threshold = float(threshold)
        self.provenance["threshold"] = self.threshold
        return spots

    def rethreshold(self, threshold: float) -> pd.DataFrame:
        """The spots whose score is above ``threshold``; the network is not run again."""
        threshold = check_threshold(threshold, self.score_range)
        if not self.stack:
            if threshold < self.floor - 1e-12:
                raise SpotDetectError(
                    f"Threshold {threshold} is below {self.floor}, the lowest one this detection kept.",
                    f"run detection again with threshold <= {threshold}.")
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

    def _above(self, threshold: float) -> np.ndarray:
        return self.candidates["score"].to_numpy() > threshold  # strict, as peak finding at a threshold

    def _stack_spots(self, threshold: float) -> pd.DataFrame:
        score = self.maps[self.score_map]
        zero = np.zeros_like(score)
        dy, dx = self.maps.get("dy", zero), self.maps.get("dx", zero)  # models without offsets: voxel centres
        outer_shape = score.shape[: len(self._outer_axes)]
        frames = []
        for idx in np.ndindex(*outer_shape):
            vox, peak = stack_components(score[idx], threshold)
            z, r, c = vox[:, 0], vox[:, 1], vox[:, 2]
            y = r + dy[idx][z, r, c].astype(np.float64)
            x = c + dx[idx][z, r, c].astype(np.float64)
            h, w = score.shape[-2:]
            keep = (y > -0.5) & (y < h - 0.5) & (x > -0.5) & (x < w - 0.5)
            cols = {a: np.full(int(keep.sum()), i) for a, i in zip(self._outer_axes, idx)}
            img = self._image[idx] if self._image is not None else None
            inten = _intensity(img, np.stack([y, x], 1)[keep], z[keep]) if img is not None else np.nan
            cols.update(z=z[keep].astype(np.float64), y=y[keep], x=x[keep], score=peak[keep].astype(np.float64),
                        intensity=inten)
            frames.append(pd.DataFrame(cols))
        return _concat(frames, list(self._outer_axes) + ["z"])


def _intensity(img: np.ndarray, yx: np.ndarray, z=None) -> np.ndarray:
    """Raw value at each spot's nearest pixel; ``img`` is (H, W), (C, H, W) or (Z, [C,] H, W)."""
    h, w = img.shape[-2:]
    r = np.clip(np.rint(yx[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(yx[:, 1]).astype(np.int64), 0, w - 1)
    if z is not None:
        img = np.asarray(img[np.asarray(z, dtype=np.int64)] if img.ndim >= 3 else img)
        if img.ndim == 4:  # (K, C, H, W): first channel
            img = img[:, 0]
        return img[np.arange(len(r)), r, c].astype(np.float64)
    img = np.asarray(img)
    while img.ndim > 2:
        img = img[0]
    return img[r, c].astype(np.float64)


def _concat(frames, lead):
    cols = lead + ["y", "x", "score", "intensity"]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in cols})
    return pd.concat(frames, ignore_index=True)[cols]


def _forward(model: SpotModel, x: np.ndarray, augment: bool = False) -> np.ndarray:
    """Run a batch, halving it on out-of-memory errors until one tile at a time."""
    try:
        with torch.inference_mode():
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
        return np.concatenate([_forward(model, x[:half], augment), _forward(model, x[half:], augment)])


def detect_iter(image, model, threshold: float | None = None, *, axes: str | None = None,
                tile_size=None, overlap: float | None = None, batch_size: int | None = None,
                min_distance: int = 1, keep_maps: bool = True, device=None, augment: bool = False):
    """Generator form of :func:`detect`: yields :class:`Progress`, returns :class:`Detections`."""
    from .models.zoo import load_model  # noqa: PLC0415 (avoid an import cycle)

    from .. import __version__  # noqa: PLC0415

    model = load_model(model, device=device)
    arr, axes = check_image(image, axes)
    threshold = check_threshold(model.default_threshold if threshold is None else threshold, model.threshold_range)
    min_distance = check_positive_int(min_distance, "min_distance")
    floor = min(threshold, model.threshold_range[0])
    tile = _check_tile(tile_size or model.tile_size, model)
    m = model.size_multiple
    batch = check_positive_int(batch_size, "batch_size") if batch_size is not None else default_batch_size(model.device)

    feed_channels = "c" in axes and model.channels > 1
    if model.channels > 1:
        if not feed_channels or arr.shape[axes.index("c")] != model.channels:
            raise SpotDetectError(
                f"This model takes {model.channels} channels at once, the image has axes {axes!r} "
                f"and shape {tuple(arr.shape)}.",
                f"pass an image with a 'c' axis of length {model.channels}.")
    stack = "z" in axes
    outer_axes = "".join(a for a in axes if a in "tc" and not (a == "c" and feed_channels))
    outer_shape = tuple(arr.shape[axes.index(a)] for a in outer_axes)
    h, w = arr.shape[-2:]
    nz = arr.shape[axes.index("z")] if stack else 1
    overlap = model.tile_overlap if overlap is None else float(overlap)
    if not 0.0 <= overlap < 0.5:
        raise SpotDetectError(f"Tile overlap {overlap} is out of range.", "use a fraction between 0 and 0.5.")
    keep_maps = keep_maps or stack
    map_shape = outer_shape + ((nz,) if stack else ()) + (h, w)
    if keep_maps:
        _check_map_memory(map_shape, len(model.map_names), stack)
    if model.fit_tiles_to_image:
        tile = tuple(min(t, -(-n // m) * m) for t, n in zip(tile, (h, w)))
    plan = plan_tiles((h, w), tile, overlap, end_align=m if model.fit_tiles_to_image else None)
    pad_mode = model.tile_pad_mode((h, w))
    maps = {n: np.zeros(map_shape, dtype=np.float32) for n in model.map_names} if keep_maps else {}

    n_planes = int(np.prod(outer_shape, dtype=np.int64)) * nz
    total = n_planes * len(plan)
    done = 0
    yield Progress(0, total, f"{total} tiles in {n_planes} plane(s)")
    frames = []
    for oidx in np.ndindex(*outer_shape) if outer_shape else [()]:
        sel = _outer_selector(axes, outer_axes, oidx)
        vol = arr[sel]
        if feed_channels and stack:
            vol = np.moveaxis(vol, 0, 1)  # (C, Z, H, W) -> (Z, C, H, W)
        for z in range(nz):
            plane = np.asarray(vol[z] if stack else vol)  # (C, H, W) or (H, W)
            if plane.ndim == 2:
                plane = plane[None]
            where = f" (plane {dict(zip(outer_axes + ('z' if stack else ''), oidx + ((z,) if stack else ())))})"
            check_finite(plane, where if n_planes > 1 else "")
            raw_plane = plane
            plane = model.prepare_image(plane)
            cands = []
            for start in range(0, len(plan), batch):
                tiles = plan.tiles[start:start + batch]
                raw = np.stack([extract_tile(plane, t, tile, pad_mode) for t in tiles])
                out = _forward(model, model.normalize_tiles(raw), augment)
                for t, tmaps in zip(tiles, out):
                    r0, r1, c0, c1 = t.own
                    if keep_maps:
                        ms = oidx + ((z,) if stack else ())
                        for i, n in enumerate(model.map_names):
                            maps[n][ms + (slice(r0, r1), slice(c0, c1))] = tmaps[
                                i, r0 - t.rows.start:r1 - t.rows.start, c0 - t.cols.start:c1 - t.cols.start]
                    if not stack:
                        tc = model.tile_candidates(tmaps, floor, min_distance)
                        yx = tc.coords + (t.rows.start, t.cols.start)
                        keep = t.owns(yx)
                        cands.append((yx[keep], tc.scores[keep]))
                done += len(tiles)
                yield Progress(done, total, f"tile {done}/{total}")
            if not stack:
                yx = np.concatenate([c[0] for c in cands]) if cands else np.zeros((0, 2))
                sc = np.concatenate([c[1] for c in cands]) if cands else np.zeros(0)
                cols = {a: np.full(len(sc), i) for a, i in zip(outer_axes, oidx)}
                cols.update(y=yx[:, 0], x=yx[:, 1], score=sc, intensity=_intensity(raw_plane, yx))
                frames.append(pd.DataFrame(cols))
    provenance = {
        "package": "napari-spotdetect",
        "package_version": __version__,
        "model": model.info.name,
        "model_arch": model.info.arch,
        "model_variant": model.info.variant,
        "model_source": model.info.source,
        "model_sha256": model.info.sha256,
        "threshold": threshold,
        "min_distance": int(min_distance),
        "test_time_augmentation": bool(augment),
        "axes": axes,
        "tiling": {**plan.describe(), "overlap": overlap, "pad": pad_mode, "batch_size": batch},
        "device": str(model.device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return Detections(
        axes=axes, image_shape=tuple(arr.shape), threshold=threshold, floor=floor, model_name=model.info.name,
        score_map=model.score_map, provenance=provenance, maps=maps,
        candidates=None if stack else _concat(frames, list(outer_axes)),
        stack=stack, _outer_axes=outer_axes, score_range=(0.0, float(model.threshold_range[1])),
        # stack intensities index planes first: a channel axis fed to the network goes after z
        _image=(np.moveaxis(arr, axes.index("c"), axes.index("z")) if feed_channels else arr) if stack else None,
    )


def _check_map_memory(map_shape: tuple, n_maps: int, stack: bool) -> None:
    """Refuse, before allocating, stitched maps that would take more than half of the machine's memory."""
    need = 4 * n_maps * float(np.prod(map_shape, dtype=np.float64))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: no check
        return
    if total > 0 and need > total / 2:
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
            ``min_distance``, ``keep_maps``, ``device``, ``augment`` (average the maps over the 8 flips and
            transposes of each tile: about 8x slower, slightly more accurate).
    """
    return run_steps(detect_iter(image, model, threshold, **kwargs), progress, should_stop,
                     "Detection was stopped before it finished; no spots were kept.")
