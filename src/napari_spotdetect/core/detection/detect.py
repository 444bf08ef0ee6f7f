"""Tiled inference: image in, :class:`Detections` (spot table + compact candidates) out. Here the inputs are
checked and the run planned (:class:`Run`); what happens in each plane is :mod:`.planes`.

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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..common.device import default_batch_size
from ..common.steps import run_steps
from ..common.validate import check_image
from ..errors import SpotDetectError
from ..models.base import SpotModel
from .detections import LEFT_OUT, Detections, Progress, concat_spots
from .maps import check_map_memory, in_memory, map_sink
from .options import OPTION_NAMES, DetectOptions, check_tile, resolve
from .planes import CONTRAST_COLUMNS, iter_planes, plane_spots
from .rescore import merge_stack_proposals
from .speed import FAST_BATCH_PIXELS, FAST_TILE_FACTOR, SpeedSettings, speed_settings
from .tiling import plan_tiles, plan_tiles_even


@dataclass
class Run:
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
    #: candidates above the floor that the second stage's rules left out as no spots, by rule (:mod:`.rescore`)
    left_out: dict = field(default_factory=lambda: dict.fromkeys(LEFT_OUT, 0))

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
    def stack_proposals(self) -> bool:
        """Whether z-stack planes get the second stage's proposals (:func:`.rescore.stack_plane_proposals`)."""
        return self.stack and self.rescorer is not None and not self.feed_channels

    @property
    def net_floor(self) -> float:
        """The network score its planar peaks must beat: the rescorer's own when it rescores them."""
        return self.rescorer.net_floor if self.rescorer is not None and self.can_contrast else self.floor


def _prepare_run(image, model, opts: DetectOptions) -> Run:
    """Check the inputs against the model and decide the tile plan, batch, precision and channel routing."""
    from ..io.image_sources import as_lazy
    from ..models.zoo import load_model

    model = _with_percentiles(load_model(model, device=opts.device), opts.percentiles)
    settings = speed_settings(opts.speed, model.device)
    lazy = _is_lazy(image)
    arr, axes = check_image(as_lazy(image) if lazy else image, opts.axes)
    threshold = opts.threshold_for(model)
    contrast_floor = opts.contrast_floor_for(model)
    tile = check_tile(opts.tile_size or model.tile_size, model)
    feed_channels = _check_channels(model, arr, axes)
    stack = "z" in axes
    outer_axes = "".join(a for a in axes if a in "tc" and not (a == "c" and feed_channels))
    outer_shape = tuple(arr.shape[axes.index(a)] for a in outer_axes)
    h, w = arr.shape[-2:]
    nz = arr.shape[axes.index("z")] if stack else 1
    overlap = opts.overlap_for(model)
    map_shape = outer_shape + ((nz,) if stack else ()) + (h, w)
    # maps kept in memory are checked against RAM (a zarr store may be larger)
    if in_memory(opts.keep_maps):
        check_map_memory(map_shape, len(model.map_names), stack)
    plan, tile, fast_batch = _plan(model, (h, w), tile, overlap, settings, user_tile=bool(opts.tile_size))
    batch = opts.batch_size or fast_batch or default_batch_size(model.device, tile,
                                                               half_precision=settings.dtype is not None)
    # a model that normalises with more than per-plane statistics (DeepSpot: / plane maximum is one, but it
    # is applied to the whole plane) needs each plane in memory; lazy planes are otherwise read band by band
    whole_planes = not lazy or type(model).prepare_image is not SpotModel.prepare_image
    return Run(model=model, arr=arr, axes=axes, threshold=threshold, floor=min(threshold, model.threshold_range[0]),
                min_distance=opts.min_distance, contrast_floor=contrast_floor,
                want_contrast=bool(opts.contrast) or contrast_floor > 0, augment=opts.augment, speed=settings,
                plan=plan, tile=tile, overlap=overlap, pad_mode=model.tile_pad_mode((h, w)), batch=batch,
                feed_channels=feed_channels, stack=stack,
                outer_axes=outer_axes, outer_shape=outer_shape, nz=nz, whole_planes=whole_planes,
                maps=map_sink(opts.keep_maps, model.map_names, map_shape, tile))


def _is_lazy(image) -> bool:
    """A dask / zarr / lazily opened TIFF array (read by bands of tiles), not numpy and not a torch tensor."""
    from ..io.image_sources import is_lazy

    return image is not None and hasattr(image, "shape") and hasattr(image, "dtype") and is_lazy(image) \
        and not type(image).__module__.startswith("torch")


def _with_percentiles(model: SpotModel, percentiles) -> SpotModel:
    """The model normalising by other input percentiles, when it normalises by percentiles at all."""
    if percentiles is not None and "percentiles" in model.normalization():
        return model.with_percentiles(*percentiles)
    return model


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
    """The tile plan, the (maybe shrunk) tile and, for an even plan (fast mode, or a model whose own plan it is)
    on a CPU, the batch size it wants (else None)."""
    m = model.size_multiple
    if settings.name == "fast" or model.even_tiles:
        max_tile = tile if user_tile else tuple(FAST_TILE_FACTOR * t for t in tile)
        plan = plan_tiles_even(hw, max_tile, int(np.rint(overlap * min(tile))), m)
        batch = max(1, FAST_BATCH_PIXELS // (plan.tile[0] * plan.tile[1])) if model.device.type == "cpu" else None
        return plan, plan.tile, batch
    if model.fit_tiles_to_image:
        tile = tuple(min(t, -(-n // m) * m) for t, n in zip(tile, hw))
    return plan_tiles(hw, tile, overlap, end_align=m if model.fit_tiles_to_image else None), tile, None


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())  # of this thread (OpenMP's count is per thread)


def _provenance(run: Run) -> dict:
    from ... import __version__

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
        **({"left_out_as_no_spots": dict(run.left_out)} if run.rescorer is not None else {}),
        "normalization": run.model.normalization(),
        "axes": run.axes,
        "image_shape": [int(v) for v in run.arr.shape],  # checks labels and exports against the image's grid
        "tiling": {**run.plan.describe(), "overlap": run.overlap, "pad": run.pad_mode, "batch_size": run.batch},
        **run.speed.describe(),
        "device": str(run.model.device),
        "threads": _torch_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _detections(run: Run, frames: list) -> Detections:
    lead = list(run.outer_axes)
    if run.stack:
        # voxel row/col, never "c": that letter is the channel axis, an outer column of the same table
        vcols = lead + ["z", "row", "col", "score", "dy", "dx", "intensity"]
        candidates = (pd.concat(frames, ignore_index=True) if frames else
                      pd.DataFrame({c: pd.Series(dtype=np.float64) for c in vcols}))
        if "proposal" in candidates:  # (frames without proposals have NaN there)
            is_p = candidates.pop("proposal").to_numpy() == True  # noqa: E712
            candidates = merge_stack_proposals(candidates[~is_p], candidates[is_p], run.floor,
                                               lead + ["z", "row", "col"], tuple(run.outer_shape) + (run.nz, *run.hw))
        candidates = candidates[vcols].reset_index(drop=True)
    else:
        candidates = concat_spots(frames, lead, CONTRAST_COLUMNS if run.contrasts else ())
    model, arr, axes = run.model, run.arr, run.axes
    return Detections(
        axes=axes, image_shape=tuple(arr.shape), threshold=run.threshold, floor=run.floor, model_name=model.info.name,
        score_map=model.score_map, provenance=_provenance(run), maps=run.maps, candidates=candidates,
        stack=run.stack, contrast_floor=run.contrast_floor if run.can_contrast else 0.0, _outer_axes=run.outer_axes,
        score_range=(0.0, float(model.threshold_range[1])),
        threshold_range=tuple(float(v) for v in model.threshold_range),
        default_threshold=float(model.default_threshold),
        default_contrast_floor=float(getattr(model, "default_contrast_floor", 0.0) or 0.0),
        # stack intensities index planes first: a channel axis fed to the network goes after z
        _image=(arr.transpose(_z_before_c(axes)) if run.feed_channels else arr) if run.stack else None,
    )


def detect_iter(image, model, options: DetectOptions | float | None = None, *, threshold: float | None = None,
                axes: str | None = None, tile_size=None, overlap: float | None = None, batch_size: int | None = None,
                min_distance: int | None = None, keep_maps=None, device=None, augment: bool | None = None,
                speed: str | None = None, contrast_floor: float | None = None, contrast: bool | None = None,
                percentiles=None):
    """Generator form of :func:`detect` (the same arguments): yields :class:`Progress`, returns :class:`Detections`."""
    run = _prepare_run(image, model, resolve(options, **_given(locals())))
    total = run.n_planes * len(run.plan)
    yield Progress(0, total, f"{total} tiles in {run.n_planes} plane(s)", n_planes=run.n_planes)
    frames = []
    for k, (oidx, z, src) in enumerate(iter_planes(run)):
        frame = yield from plane_spots(run, src, oidx, z, k)
        if frame is not None:
            frames.append(frame)
    return _detections(run, frames)


def _given(arguments: dict) -> dict:
    """The option keywords of a call (None: not given), from its ``locals()``."""
    return {name: arguments[name] for name in OPTION_NAMES}


def _z_before_c(axes: str) -> tuple:
    order = list(range(len(axes)))
    ci, zi = axes.index("c"), axes.index("z")
    order.insert(zi, order.pop(ci))
    return tuple(order)


def detect(image, model, options: DetectOptions | float | None = None, *, threshold: float | None = None,
           axes: str | None = None, tile_size=None, overlap: float | None = None, batch_size: int | None = None,
           min_distance: int | None = None, keep_maps=None, device=None, augment: bool | None = None,
           speed: str | None = None, contrast_floor: float | None = None, contrast: bool | None = None,
           percentiles=None, progress=None, should_stop=None) -> Detections:
    """Find spots in ``image`` with ``model`` (a loaded model, a path or ``"default"``).

    The settings come from ``options`` (a :class:`~.options.DetectOptions`, checked when it was made; a number
    there is the threshold), and each keyword given (not None) overrides its field; see ``DetectOptions`` for
    each one's meaning and default.

    Args:
        image: numpy or dask array, 2-D to 5-D; ``axes`` names its dimensions (2-D is ``"yx"`` and 5-D
            ``"tczyx"`` unless named; 3-D and 4-D need them: ``"zyx"`` for a z-stack, ``"cyx"`` for channels...).
        threshold: score threshold; default the model's own (tuned) threshold.
        tile_size, overlap (fraction of a tile), batch_size: default the model's and the device's.
        min_distance: two spots closer than this (px) count as one (default 1).
        keep_maps: False (no maps, the default); True or ``"float32"``, ``"float16"``: in memory; a path, zarr
            group or store: written there.
        augment: average the maps over the 8 flips and transposes of each tile (about 7x slower; on real images
            no more accurate, its ranking a little better: README, *Accuracy on real images*).
        speed: ``"exact"``, the default (the model's own tiles in float32, piscis's spots), or ``"fast"``
            (larger tiles without wasted overlap, bfloat16/float16 where the hardware has it, 1.3-4x faster,
            as accurate on annotated real images; :mod:`napari_spotdetect.core.detection.speed`).
        contrast_floor: drop spots dimmer than this fraction of their plane's elbow contrast
            (:mod:`napari_spotdetect.core.detection.contrast`; default the model's own, 0 for piscis and DeepSpot
            files; 2-D planes only).
        contrast: True gives every planar spot its ``contrast`` and ``relative_contrast`` even at floor 0, so
            the floor can be moved afterwards with :meth:`Detections.set_contrast_floor` (default: only when
            the floor is above 0).
        percentiles: (low, high) input percentiles for a percentile-normalised model (others ignore them).
        progress: called with a :class:`Progress` after each tile batch.
        should_stop: called between batches; when it returns True, :class:`Cancelled` is raised.
    """
    opts = resolve(options, **_given(locals()))
    return run_steps(detect_iter(image, model, opts), progress, should_stop,
                     "Detection was stopped before it finished; no spots were kept.")
