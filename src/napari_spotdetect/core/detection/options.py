"""The settings of a detection as one value: made (and checked) once, carried by every face into the engine.

The Python API (``detect(image, model, options, threshold=...)``), the CLI (``spotdetect predict``, through
:class:`~.batch.PredictOptions`), the Dask workers and the napari Detect panel all build a
:class:`DetectOptions`; what can be checked without the image or the model is checked when it is made, what
depends on the model by :meth:`DetectOptions.check_for` (a batch calls it once, before any image is read), what
depends on the image by :func:`~.detect.detect_iter`. Adding an option means a field and its check here, its
use in the engine (``detect.py``), its keyword in ``detect``/``detect_iter``, and the face that shows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..common.validate import check_axes, check_contrast_floor, check_positive_int, check_threshold
from ..errors import SpotDetectError
from .speed import check_speed

#: smaller tiles are mostly padding and context the network never sees; 8-pixel tiles miss spots
MIN_TILE = 32
#: where ``keep_maps`` may keep the maps in memory (anything else that is not False is a path, group or store)
IN_MEMORY_MAPS = (True, "float32", "float16")


@dataclass(frozen=True)
class DetectOptions:
    """Every setting of a detection but the image and the model; ``None`` means "the model's own"."""

    #: score threshold (None: the model's tuned default)
    threshold: float | None = None
    #: names of the image's dimensions, e.g. ``"zyx"`` (None: ``"yx"`` for 2-D, ``"tczyx"`` for 5-D images)
    axes: str | None = None
    #: tile size in pixels, one number or (height, width) (None: the model's own)
    tile_size: int | tuple | None = None
    #: tile overlap as a fraction of a tile, 0 to 0.5 (None: the model's own)
    overlap: float | None = None
    #: tiles per forward pass (None: chosen from the device's memory)
    batch_size: int | None = None
    #: two spots closer than this (px) count as one
    min_distance: int = 1
    #: False: no maps; True, ``"float32"``, ``"float16"``: in memory; a path, zarr group or store: written there
    keep_maps: object = False
    #: ``"cpu"``, ``"cuda"``, ``"mps"`` ... (None: the best available, or the loaded model's)
    device: str | None = None
    #: average the maps over the 8 flips and transposes of each tile (about 8x slower)
    augment: bool = False
    #: ``"exact"`` (the model's own tiles, float32) or ``"fast"`` (:mod:`.speed`)
    speed: str = "exact"
    #: drop spots dimmer than this fraction of their plane's elbow contrast (None: the model's own; 0: none)
    contrast_floor: float | None = None
    #: True: give planar spots their contrast features even at floor 0 (None: only when the floor needs them)
    contrast: bool | None = None
    #: (low, high) input percentiles for a percentile-normalised model (None: the model's own; others ignore it)
    percentiles: tuple | None = None

    def __post_init__(self):
        put = object.__setattr__  # frozen: the checked, normalised values replace the given ones once
        if self.threshold is not None:  # its range is the model's (threshold_for)
            put(self, "threshold", _finite_threshold(self.threshold))
        if self.axes is not None:  # the letters here; their number against the image in detect_iter
            axes = str(self.axes).strip().lower()
            put(self, "axes", check_axes(len(axes), axes) if axes else None)
        if self.tile_size is not None:
            tile = _whole_pixels(self.tile_size)
            put(self, "tile_size", tile if any(tile) else None)  # 0: the model's own, as the panel says it
        if self.overlap is not None:
            put(self, "overlap", _overlap(self.overlap))
        if self.batch_size is not None:
            put(self, "batch_size", check_positive_int(self.batch_size, "batch_size"))
        put(self, "min_distance", check_positive_int(self.min_distance, "min_distance"))
        put(self, "speed", check_speed(self.speed))
        put(self, "augment", bool(self.augment))
        if self.contrast_floor is not None:
            put(self, "contrast_floor", check_contrast_floor(self.contrast_floor))
            _floor_needs_contrast(self.contrast, self.contrast_floor)
        if self.percentiles is not None:
            put(self, "percentiles", _percentiles(self.percentiles))

    def replace(self, **changes) -> DetectOptions:
        """A copy with ``changes`` (checked again); keywords left at None keep this value's setting."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def check_for(self, model) -> None:
        """What depends on the model: the threshold within its score range, a tile size it can take, and a
        contrast floor (its own, when none is given) with ``contrast=False``."""
        self.threshold_for(model)
        check_tile(self.tile_size or model.tile_size, model)
        self.contrast_floor_for(model)

    def threshold_for(self, model) -> float:
        return check_threshold(model.default_threshold if self.threshold is None else self.threshold,
                               model.threshold_range)

    def contrast_floor_for(self, model) -> float:
        floor = check_contrast_floor(model.default_contrast_floor if self.contrast_floor is None
                                     else self.contrast_floor)
        _floor_needs_contrast(self.contrast, floor)
        return floor

    def overlap_for(self, model) -> float:
        return model.tile_overlap if self.overlap is None else self.overlap

    def remembered(self) -> dict:
        """What a face remembers between sessions (the Detect panel's settings file), as plain JSON values:
        device ``"auto"`` and tile size 0 stand for "the best available" and "the model's own"."""
        return {"device": self.device or "auto", "tile_size": self.tile_size[0] if self.tile_size else 0,
                "augment": self.augment, "min_distance": self.min_distance,
                "percentiles": list(self.percentiles) if self.percentiles else None, "speed": self.speed}


#: the fields, in order: the keywords of ``detect`` and ``detect_iter``
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(DetectOptions))


def resolve(options, **given) -> DetectOptions:
    """The options of one call: ``options`` (a :class:`DetectOptions`, None, or a number: the threshold, as the
    third argument of ``detect`` was before) with the keywords that were given (not None) on top."""
    if options is None:
        base = DetectOptions()
    elif isinstance(options, DetectOptions):
        base = options
    elif isinstance(options, (int, float, np.integer, np.floating)) and not isinstance(options, bool):
        base = DetectOptions()
        if given.get("threshold") is None:
            given["threshold"] = options
    else:
        raise SpotDetectError(f"{type(options).__name__} is not detection options.",
                              "pass DetectOptions(...), a threshold, or the settings as keywords (threshold=...).")
    return base.replace(**given)


def check_tile(tile, model) -> tuple:
    """A tile size (one number or height, width) that ``model`` can take: a multiple of its size step."""
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


def _finite_threshold(value) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError) as err:
        raise SpotDetectError(f"Threshold {value!r} is not a number.", "pass a number, e.g. 0.5.") from err
    if not np.isfinite(t):
        raise SpotDetectError(f"Threshold {t} is not a number.",
                              "pass a finite threshold, or none for the model's tuned one.")
    return t


def _whole_pixels(tile) -> tuple:
    try:
        sizes = (int(tile),) if np.isscalar(tile) else tuple(int(v) for v in tile)
        ok = all(s == v for s, v in zip(sizes, np.atleast_1d(tile))) and 1 <= len(sizes) <= 2
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise SpotDetectError(f"Tile size {tile!r} is not a whole number of pixels.",
                              "use e.g. tile_size=256 (a multiple of the model's size step), or leave it out.")
    return sizes if len(sizes) == 2 else (sizes[0], sizes[0])


def _overlap(overlap) -> float:
    try:
        value = float(overlap)
    except (TypeError, ValueError) as err:
        raise SpotDetectError(f"Tile overlap {overlap!r} is not a number.", "use a fraction between 0 and 0.5.") \
            from err
    if not 0.0 <= value < 0.5:
        raise SpotDetectError(f"Tile overlap {overlap} is out of range.", "use a fraction between 0 and 0.5.")
    return value


def _percentiles(pair) -> tuple:
    try:
        low, high = (float(v) for v in pair)
        ok = 0.0 <= low < high <= 100.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SpotDetectError(f"Normalisation percentiles {pair!r} are not 0 <= low < high <= 100.",
                              "use e.g. percentiles=(1, 99.9), or leave them out for the model's own.")
    return low, high


def _floor_needs_contrast(contrast, floor: float) -> None:
    if contrast is False and floor > 0:
        raise SpotDetectError(f"contrast=False with a contrast floor of {floor:g}: the floor needs the "
                              "contrast features.", "pass contrast_floor=0, or leave contrast at its default.")
