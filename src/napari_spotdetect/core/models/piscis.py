"""Piscis as a :class:`SpotModel`: input normalisation, pooled labels + displacements, peak finding.

Normalisations (``adjustment``): ``"standardize"`` and ``"normalize"`` work per tile, as piscis does (its model
files keep that, for parity); ``"percentile"`` maps each whole plane's 1st-99.8th percentiles to 0-1 before
tiling. Per-tile standardisation stretches the noise of an empty tile to unit variance, so faint specks there
look like spots; whole-plane percentiles keep every spot's brightness relative to the image it is in, which
is what the bundled model uses since it was trained on real images (see its model card).
"""

from __future__ import annotations

import numpy as np
import torch

from ..ops import deformable_pool, local_maxima
from .base import ModelInfo, SpotModel, TileCandidates
from .piscis_net import PiscisConfig, PiscisNet

#: pooling variant -> (deformable pooling mode, default threshold, slider range, lowest threshold kept)
VARIANTS = {
    "current": ("max", 0.5, (0.05, 1.0)),
    "legacy": ("sum", 1.0, (0.1, 9.0)),
}


#: input normalisations a Piscis-architecture model can use
ADJUSTMENTS = ("standardize", "normalize", "percentile", None)
#: the percentiles that ``"percentile"`` maps to 0 and 1
PERCENTILES = (1.0, 99.8)


def percentile_normalize(plane: np.ndarray, percentiles=PERCENTILES) -> np.ndarray:
    """(C, H, W) or (H, W) -> float32 with each channel's low/high percentile at 0/1 (flat images: all 0)."""
    x = np.asarray(plane)
    flat = x.reshape((-1,) + x.shape[-2:]) if x.ndim > 2 else x[None]
    out = np.empty(flat.shape, dtype=np.float32)
    for i, ch in enumerate(flat):
        ch = ch.astype(np.float64)
        lo, hi = np.percentile(ch, percentiles)
        if not hi > lo:  # a flat plane, or one where 99.8 % of pixels share a value
            lo, hi = ch.min(), ch.max()
        out[i] = (ch - lo) / (hi - lo) if hi > lo else 0.0
    return out.reshape(x.shape)


class PiscisModel(SpotModel):
    map_names = ("labels", "dy", "dx")
    score_map = "labels"
    vector_maps = ("dy", "dx")
    size_multiple = 8
    tile_overlap = 0.1

    def __init__(self, net: PiscisNet, info: ModelInfo, *, adjustment: str | None = "standardize",
                 tile_size=(256, 256), default_threshold: float | None = None, device=None):
        if adjustment not in ADJUSTMENTS:
            from ..errors import ModelFileError  # noqa: PLC0415

            raise ModelFileError(f"Unknown input normalisation {adjustment!r} in this model.",
                                 f"use one of {', '.join(repr(a) for a in ADJUSTMENTS)}; the file may be damaged.")
        variant = "legacy" if net.cfg.pooling == "sum" else "current"
        _, thr, rng = VARIANTS[variant]
        info.variant = info.variant or variant
        self.adjustment = adjustment
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

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        return percentile_normalize(image) if self.adjustment == "percentile" else image

    def normalize_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Per tile and channel, over the padded tile: standardise, min-max normalise, or leave as is."""
        if self.adjustment == "percentile":  # done per plane in prepare_image
            return np.ascontiguousarray(tiles, dtype=np.float32)
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

    def to(self, device=None) -> "PiscisModel":
        super().to(device)
        # NHWC is what oneDNN (CPU) and cuDNN prefer for these convolutions; results are unchanged (<1e-6)
        self.net.to(memory_format=torch.channels_last)
        return self

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        pooled, deltas = self.net(x.contiguous(memory_format=torch.channels_last))
        return torch.cat([pooled[:, None], deltas], dim=1)

    def forward_maps_augmented(self, x: torch.Tensor) -> torch.Tensor:
        # average the un-pooled label probabilities and displacements, then pool once: pooling is a max, and
        # pooling the averaged maps is slightly better than averaging pooled ones (F1 integral 0.949 vs 0.948)
        def heads(v):
            labels, deltas = self.net.heads(v.contiguous(memory_format=torch.channels_last))
            return torch.cat([labels[:, None], deltas], dim=1)

        avg = self.average_views(x, heads)
        pooled = deformable_pool(avg[:, 0], avg[:, 1:], self.cfg.kernel_size, self.cfg.pooling)
        return torch.cat([pooled[:, None], avg[:, 1:]], dim=1)

    def tile_candidates(self, maps: np.ndarray, floor: float, min_distance: int = 1) -> TileCandidates:
        score = maps[0]
        peaks = local_maxima(score, floor, min_distance)
        r, c = peaks[:, 0], peaks[:, 1]
        coords = peaks + np.stack([maps[1][r, c], maps[2][r, c]], axis=1).astype(np.float64)
        return TileCandidates(coords.reshape(-1, 2), score[r, c].astype(np.float64), peaks)


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
