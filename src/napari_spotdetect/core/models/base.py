"""The contract between a network and the detection engine.

``detect()`` knows nothing about Piscis or DeepSpot: it cuts the image into tiles, asks the model to
normalise them, run them, and list candidate spots in each tile's maps, then stitches. A new architecture is
a subclass of :class:`SpotModel` that fills in those steps.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
import torch

from ..common.device import select_device


@dataclass
class ModelInfo:
    """Where a model came from, for provenance and for the model picker."""

    name: str
    arch: str  # "piscis", "deepspot", ...
    source: str = ""  # path or bundled name
    sha256: str = ""  # of the weights file (or of the variables for a folder)
    variant: str = ""  # e.g. "current" / "legacy" for piscis
    card: dict = field(default_factory=dict)  # training data, date, metrics (our own models)


@dataclass
class TileCandidates:
    """Spots found in one tile's maps at the lowest useful threshold, in tile pixel coordinates."""

    coords: np.ndarray  # (K, 2) float64, sub-pixel (y, x)
    scores: np.ndarray  # (K,) float


class SpotModel(abc.ABC):
    """A network plus the pre- and post-processing that turn pixels into spots."""

    #: names of the maps ``forward_maps`` returns, channel by channel
    map_names: tuple[str, ...] = ()
    #: the map whose values are the spot scores (thresholded, shown as an Image layer)
    score_map: str = ""
    #: tiles and images must be multiples of this size
    size_multiple: int = 8
    #: fraction of a tile that neighbouring tiles share, on axes longer than a tile
    tile_overlap: float = 0.1
    #: shrink tiles to the image (rounded up to ``size_multiple``) and end the last tile at the image edge,
    #: instead of padding; for networks whose output depends on what lies far past a tile's edge
    fit_tiles_to_image: bool = False
    #: exact mode plans tiles as fast mode does (the fewest equal tiles of up to twice the model's tile, none
    #: sticking out of the image, :func:`..detection.tiling.plan_tiles_even`) instead of piscis's fixed tiles with
    #: a padded last one, so that fast mode differs from exact mode by its precision alone. Set by the package's
    #: own model files (kept in them, :mod:`..weights.native`) and the models it trains; a piscis file keeps
    #: piscis's tiles, so exact mode gives piscis's spots (README, *One tile plan for both speeds*)
    even_tiles: bool = False
    #: names of the (row, column) displacement maps, which turn with the image under test-time augmentation
    vector_maps: tuple[str, str] | None = None
    #: candidates dimmer than this fraction of their plane's elbow contrast are dropped (:mod:`..contrast`);
    #: 0 keeps every candidate (piscis and DeepSpot files: their reference behaviour); a model file may set it
    default_contrast_floor: float = 0.0
    #: an optional second stage that adds proposals and calibrates planar candidates' scores (:mod:`..rescore`)
    rescorer = None

    def __init__(self, net: torch.nn.Module, info: ModelInfo, *, tile_size=(256, 256), channels: int = 1,
                 default_threshold: float = 0.5, threshold_range=(0.0, 1.0), device=None):
        self.net = net.eval()
        self.info = info
        self.tile_size = tuple(int(v) for v in tile_size)
        self.channels = int(channels)
        self.default_threshold = float(default_threshold)
        self.threshold_range = tuple(float(v) for v in threshold_range)
        self.device = torch.device("cpu")
        self.to(device)

    # -- device ------------------------------------------------------------------------------------------
    def to(self, device=None) -> SpotModel:
        self.device = select_device(device)
        self.net.to(self.device)
        return self

    # -- the steps detect() calls -----------------------------------------------------------------------
    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """Whole-image pre-processing before tiling (identity unless the model normalises per image)."""
        return image

    def plane_statistics(self, plane):
        """Statistics of a whole (C, H, W) plane (numpy or lazy) that :meth:`normalize_tiles` needs, or None.

        Unlike :meth:`prepare_image`, this never needs the plane in memory, so lazy images stay tile by tile.
        """
        return None

    def normalization(self) -> dict:
        """How this model scales its input, for a result's provenance (models with choices say which)."""
        return {"kind": type(self).__name__}

    @abc.abstractmethod
    def normalize_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(B, C, h, w) raw tiles -> float32 network input (models with :meth:`plane_statistics` also take
        ``stats``)."""

    def runs_in(self, dtype: torch.dtype | None) -> bool:
        """Whether this model runs reduced precision ``dtype`` with weights of that type (fed input of that
        type), instead of under autocast; only where it measured faster (see :meth:`PiscisModel.runs_in`)."""
        return False

    @abc.abstractmethod
    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) input on ``self.device`` -> (B, len(map_names), h, w) maps."""

    def forward_maps_augmented(self, x: torch.Tensor) -> torch.Tensor:
        """Maps averaged over the 8 flips and transposes of each tile (4 flips for oblong tiles).

        Test-time augmentation: the network's orientation-dependent errors average out. About 8x the
        compute. Models whose maps end in a non-linear step may average before it (Piscis does).
        """
        return self.average_views(x, self.forward_maps)

    def average_views(self, x: torch.Tensor, fn) -> torch.Tensor:
        """Mean of ``fn`` (maps named like :attr:`map_names`) over the turned views of ``x``, each turned back.

        Displacement maps (:attr:`vector_maps`) change sign under a flip and swap under a transpose.
        """
        names = list(self.map_names)
        vec = [names.index(n) for n in self.vector_maps] if self.vector_maps else None
        views = [(t, fy, fx) for t in (False, True) for fy in (False, True) for fx in (False, True)
                 if not t or x.shape[-1] == x.shape[-2]]
        total = None
        for t, fy, fx in views:
            v = x.transpose(-1, -2) if t else x
            dims = [d for d, f in ((-2, fy), (-1, fx)) if f]
            v = v.flip(dims) if dims else v
            m = fn(v)
            m = m.flip(dims) if dims else m
            if vec is not None:
                sign = torch.ones(m.shape[1], dtype=m.dtype, device=m.device)
                sign[vec[0]] = -1.0 if fy else 1.0
                sign[vec[1]] = -1.0 if fx else 1.0
                m = m * sign.view(1, -1, 1, 1)
            if t:
                m = m.transpose(-1, -2)
                if vec is not None:
                    order = list(range(m.shape[1]))
                    order[vec[0]], order[vec[1]] = vec[1], vec[0]
                    m = m[:, order]
            total = m if total is None else total + m
        return total / len(views)

    @abc.abstractmethod
    def tile_candidates(self, maps: np.ndarray, floor: float, min_distance: int = 1) -> TileCandidates:
        """Spots in one tile's (M, h, w) maps whose score is above ``floor``."""

    def tile_pad_mode(self, image_shape) -> str:
        """numpy pad mode for tiles that stick out of the image (bottom and right)."""
        return "symmetric"

    # -- conveniences ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.name!r} ({self.info.arch} {self.info.variant}) on {self.device}>"
