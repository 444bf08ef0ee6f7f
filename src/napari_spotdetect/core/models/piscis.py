"""Piscis as a :class:`SpotModel`: input normalisation, pooled labels + displacements, peak finding.

Normalisations (``adjustment``): ``"standardize"`` and ``"normalize"`` work per tile, as piscis does (its model
files keep that, for parity); ``"percentile"`` maps each whole plane's 1st-99.8th percentiles to 0-1, in every
tile of that plane (the percentiles come from a subsample, so lazy planes are never loaded whole). Per-tile
standardisation stretches the noise of an empty tile to unit variance, so faint specks there
look like spots; whole-plane percentiles keep every spot's brightness relative to the image it is in, which
is what the bundled model uses since it was trained on real images (see its model card).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import ModelFileError, SpotDetectError
from .base import ModelInfo, SpotModel, TileCandidates
from .bright_regions import without_bright_regions
from .ops import deformable_pool, local_maxima, weights_version
from .piscis_net import PiscisConfig, PiscisNet, fold_batchnorm
from .tile_threads import parallel_tiles_possible, run_tiles

#: pooling variant -> (deformable pooling mode, default threshold, slider range, lowest threshold kept)
VARIANTS = {
    "current": ("max", 0.5, (0.005, 1.0)),  # down to 0.005: labs that count faint spots calibrate there
    "legacy": ("sum", 1.0, (0.1, 9.0)),
}


#: input normalisations a Piscis-architecture model can use
ADJUSTMENTS = ("standardize", "normalize", "percentile", None)
#: the percentiles that ``"percentile"`` maps to 0 and 1
PERCENTILES = (1.0, 99.8)


#: percentiles are taken from at most this many pixels per channel (a regular subsample of larger planes)
PERCENTILE_SAMPLE = 4_000_000


def percentile_limits(plane, percentiles=PERCENTILES, ignore_bright_regions: bool = True) -> np.ndarray:
    """(C, 2) low/high values of each channel of a (C, H, W) or (H, W) plane, numpy or lazy (dask, zarr).

    Planes over :data:`PERCENTILE_SAMPLE` pixels are read at a regular stride, so a lazy plane is never
    loaded whole and an in-memory one gives the same limits. Flat channels (or ones where 99.8 % of the pixels
    share a value) fall back to their minimum and maximum. A bright region that holds the brightest pixels
    instead of the spots does not set the high limit (:mod:`.bright_regions`) unless ``ignore_bright_regions``
    is False.
    """
    x = plane if plane.ndim > 2 else plane[None]
    h, w = x.shape[-2:]
    step = max(1, int(np.ceil(np.sqrt(h * w / PERCENTILE_SAMPLE))))
    sub = x[..., ::step, ::step]
    sub = np.asarray(sub.compute(scheduler="synchronous") if hasattr(sub, "compute") else sub, dtype=np.float64)
    sub = sub.reshape((-1,) + sub.shape[-2:])
    out = np.zeros((len(sub), 2))
    for i, ch in enumerate(sub):
        lo, hi = np.percentile(ch, percentiles)
        if not hi > lo:
            lo, hi = ch.min(), ch.max()
        elif ignore_bright_regions:
            hi = without_bright_regions(ch, lo, hi, percentiles[1], step)[0]
        out[i] = lo, hi
    return out


def apply_limits(x: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """(..., C, h, w) -> float32 with each channel's limits at 0 and 1 (a flat channel: all 0)."""
    lo = limits[:, 0].reshape((-1, 1, 1))
    span = (limits[:, 1] - limits[:, 0]).reshape((-1, 1, 1))
    safe = np.where(span > 0, span, 1.0)
    out = np.where(span > 0, (np.asarray(x, dtype=np.float64) - lo) / safe, 0.0)
    return out.astype(np.float32)


def percentile_normalize(plane: np.ndarray, percentiles=PERCENTILES, ignore_bright_regions: bool = True) -> np.ndarray:
    """(C, H, W) or (H, W) -> float32 with each channel's low/high percentile at 0/1 (flat images: all 0)."""
    x = np.asarray(plane)
    flat = x.reshape((-1,) + x.shape[-2:]) if x.ndim > 2 else x[None]
    return apply_limits(flat, percentile_limits(flat, percentiles, ignore_bright_regions)).reshape(x.shape)


class PiscisModel(SpotModel):
    map_names = ("labels", "dy", "dx")
    score_map = "labels"
    vector_maps = ("dy", "dx")
    size_multiple = 8
    tile_overlap = 0.1

    def __init__(self, net: PiscisNet, info: ModelInfo, *, adjustment: str | None = "standardize",
                 tile_size=(256, 256), default_threshold: float | None = None, device=None, rescorer=None):
        if adjustment not in ADJUSTMENTS:
            raise ModelFileError(f"Unknown input normalisation {adjustment!r} in this model.",
                                 f"use one of {', '.join(repr(a) for a in ADJUSTMENTS)}; the file may be damaged.")
        variant = "legacy" if net.cfg.pooling == "sum" else "current"
        _, thr, rng = VARIANTS[variant]
        info.variant = info.variant or variant
        self.adjustment = adjustment
        #: a second stage (:mod:`..rescore`) that adds proposals and calibrates scores; its scores are
        #: probabilities, so the slider reaches down to LOWEST_THRESHOLD
        self.rescorer = rescorer
        if rescorer is not None:
            from .rescorer import LOWEST_THRESHOLD

            rng = (LOWEST_THRESHOLD, 1.0)
        super().__init__(net, info, tile_size=tile_size, channels=net.cfg.in_channels,
                         default_threshold=thr if default_threshold is None else default_threshold,
                         threshold_range=rng, device=device)

    @property
    def cfg(self) -> PiscisConfig:
        return self.net.cfg

    def tile_pad_mode(self, image_shape) -> str:
        # piscis mirrors unless the image is smaller than half a tile on either axis, then pads with zeros
        h, w = image_shape[-2:]
        th, tw = self.tile_size
        return "symmetric" if (2 * h >= th and 2 * w >= tw) else "constant"

    #: the percentiles that ``"percentile"`` maps to 0 and 1 (:meth:`with_percentiles` for others)
    percentiles = PERCENTILES
    #: a bright region holding the plane's top pixels is left out of its high limit (:mod:`.bright_regions`;
    #: :meth:`with_bright_region_rule` turns that off, e.g. to measure what the rule prevents)
    ignore_bright_regions = True

    def plane_statistics(self, plane):
        if self.adjustment != "percentile":
            return None
        return percentile_limits(plane, self.percentiles, self.ignore_bright_regions)

    def normalization(self) -> dict:
        out = {"kind": self.adjustment or type(self).__name__}
        if self.adjustment == "percentile":
            out["percentiles"] = [float(v) for v in self.percentiles]
            out["bright_regions"] = ("left out of the high percentile" if self.ignore_bright_regions
                                     else "kept in the high percentile (rule off)")
        return out

    def with_bright_region_rule(self, on: bool) -> PiscisModel:
        """This model (same network, no copy of the weights) with the bright-region rule of its percentile
        normalisation on or off; fine-tuning it trains with the same choice."""
        other = copy.copy(self)
        other.ignore_bright_regions = bool(on)
        return other

    def with_percentiles(self, low: float, high: float) -> PiscisModel:
        """This model (same network, no copy of the weights) normalising by other percentiles of each plane.

        For images whose spots are rarer or denser than the training images': a higher ``high`` keeps dim
        spots from saturating when bright ones are many. Only percentile-normalised models use them.
        """
        if self.adjustment != "percentile":
            raise SpotDetectError(f"{self.info.name} normalises its input by {self.adjustment!r}, not by "
                                  "percentiles.", "leave the percentiles at their defaults for this model.")
        low, high = float(low), float(high)
        if not 0.0 <= low < high <= 100.0:
            raise SpotDetectError(f"Normalisation percentiles {low:g}-{high:g} are not 0 <= low < high <= 100.",
                                  f"use e.g. {PERCENTILES[0]:g} and {PERCENTILES[1]:g}.")
        other = copy.copy(self)
        other.percentiles = (low, high)
        return other

    def normalize_tiles(self, tiles: np.ndarray, stats=None) -> np.ndarray:
        """Per tile and channel, over the padded tile: standardise, min-max normalise, or leave as is; with
        ``"percentile"``, the plane's limits (``stats``, from :meth:`plane_statistics`) map to 0 and 1."""
        if self.adjustment == "percentile":
            if stats is None:
                raise SpotDetectError("Percentile normalisation needs the statistics of the tiles' plane.",
                                      "pass stats=model.plane_statistics(plane) (detect() does).")
            return apply_limits(tiles, stats)
        if tiles.dtype not in (np.float32, np.float64):
            tiles = tiles.astype(np.float64)  # integers are normalised in float64, as piscis does
        out = np.empty(tiles.shape, dtype=np.float32)
        for idx in np.ndindex(tiles.shape[:-2]):
            t = _safe_scale(np.ascontiguousarray(tiles[idx]))
            if self.adjustment == "standardize":
                t = (t - t.mean()) / (t.std() + 1e-7)
            elif self.adjustment == "normalize":
                lo, hi = t.min(), t.max()
                t = (t - lo) / (hi - lo + 1e-7)
            out[idx] = t
        return out

    def to(self, device=None) -> PiscisModel:
        super().to(device)
        # NHWC is what oneDNN (CPU) and cuDNN prefer for these convolutions; results are unchanged (<1e-6)
        self.net.to(memory_format=torch.channels_last)
        self._low_nets = {}  # reduced-precision copies, made again for the new device when asked
        return self

    def runs_in(self, dtype) -> bool:
        # bfloat16 on a CPU: a copy of the network with bfloat16 weights runs every layer in bfloat16 through
        # oneDNN without autocast's cast per operation: 1.2-1.3x autocast's speed for the bundled model
        # (benchmarks/bench_fast_variants.py); on GPUs autocast is kept
        return dtype == torch.bfloat16 and self.device.type == "cpu"

    def _net_for(self, x: torch.Tensor) -> PiscisNet:
        """The network for input ``x``: a cached inference copy, in float32 with its BatchNorms folded (same
        outputs up to rounding, 1.2x faster on one CPU thread) or in bfloat16 (head float32); while the
        network trains, the network itself."""
        low = x.dtype == torch.bfloat16 and self.runs_in(x.dtype)
        if self.net.training or (x.dtype != torch.float32 and not low):
            return self.net
        cache = self.__dict__.setdefault("_low_nets", {})
        # a new net, or weights or BN statistics changed in place (their version counters move, as in
        # fine-tuning or load_state_dict): never reuse the old copy
        key = (id(self.net), x.dtype, x.device.type, weights_version([*self.net.parameters(), *self.net.buffers()]))
        if key not in cache:
            cache.clear()
            net = fold_batchnorm(self.net)  # each BatchNorm a pass over a full-size map fewer, in either precision
            if low:
                net = net.to(x.dtype)
                net.fpn.output.float()  # the 1x1 head in float32, as under autocast (it casts its input itself)
            cache[key] = net.eval()
        return cache[key]

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        net = self._net_for(x)

        def maps(t):
            pooled, deltas = net(t)
            return torch.cat([pooled[:, None], deltas], dim=1)

        # on a CPU with several threads, one tile per single-threaded worker (tile_threads); else the batch
        x = x.contiguous(memory_format=torch.channels_last)
        return run_tiles(maps, x, 1 if parallel_tiles_possible(x) else len(x))

    def forward_maps_augmented(self, x: torch.Tensor) -> torch.Tensor:
        # average the un-pooled label probabilities and displacements, then pool once: pooling is a max, and
        # pooling the averaged maps is slightly better than averaging pooled ones (F1 integral 0.949 vs 0.948)
        def heads(v):
            labels, deltas = self._net_for(v).heads(v.contiguous(memory_format=torch.channels_last))
            return torch.cat([labels[:, None], deltas], dim=1)

        avg = self.average_views(x, heads)
        pooled = deformable_pool(avg[:, 0], avg[:, 1:], self.cfg.kernel_size, self.cfg.pooling)
        return torch.cat([pooled[:, None], avg[:, 1:]], dim=1)

    def tile_candidates(self, maps: np.ndarray, floor: float, min_distance: int = 1) -> TileCandidates:
        score = maps[0]
        peaks = local_maxima(score, floor, min_distance)
        r, c = peaks[:, 0], peaks[:, 1]
        coords = peaks + np.stack([maps[1][r, c], maps[2][r, c]], axis=1).astype(np.float64)
        return TileCandidates(coords.reshape(-1, 2), score[r, c].astype(np.float64))


#: outside this range of magnitudes the usual formulas lose the image: squares overflow (float32 above
#: about 1e19, float64 above about 1e154) or the 1e-7 guard outweighs the whole signal (below about 1e-6)
_SAFE_MAGNITUDE = (1e-3, 1e15)


def _safe_scale(t: np.ndarray) -> np.ndarray:
    """``t`` divided by its largest magnitude (in float64) when that is extreme, else ``t`` unchanged.

    Standardising and min-max normalising are scale-invariant, so this changes nothing but the rounding;
    tiles of ordinary magnitude are left alone, so results stay identical to piscis's.
    """
    top = float(np.max(np.abs(t))) if t.size else 0.0
    if top == 0.0 or not np.isfinite(top) or _SAFE_MAGNITUDE[0] <= top <= _SAFE_MAGNITUDE[1]:
        return t
    return t.astype(np.float64) / top
