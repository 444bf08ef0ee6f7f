"""What the trainer needs to know about each trainable architecture, so one training loop serves both.

A :class:`Recipe` says how training images are normalised (as inference normalises them), what target a
crop's spots become, which loss the network's output is scored with, and how a trained network becomes a
:class:`SpotModel` again. Piscis trains on pooled labels + displacements with SmoothF1 (or a comparison
loss) + masked L2; DeepSpot trains its enhancement map with BCE + max-MSE against the 3x3-stamp target.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import SpotDetectError
from ..models.base import ModelInfo, SpotModel
from ..models.deepspot import DEFAULT_THRESHOLD as DEEPSPOT_THRESHOLD
from ..models.deepspot import DeepSpotModel
from ..models.deepspot_net import DeepSpotNet
from ..models.ops import deformable_pool
from ..models.piscis import PiscisModel, percentile_normalize
from ..models.piscis_net import PiscisConfig, PiscisNet
from .losses import PiscisLoss, deepspot_loss
from .targets import deepspot_target, voronoi_targets


def standardize(img: np.ndarray) -> np.ndarray:
    return ((img - img.mean()) / (img.std() + 1e-7)).astype(np.float32)


class Recipe:
    arch: str = ""
    #: random intensity scaling (x0.2-5) of crops; pointless where inference divides by the image maximum
    intensity_augment: bool = True
    #: range of that scaling (a factor drawn log-uniformly)
    intensity_range: tuple[float, float] = (0.2, 5.0)
    #: keep BatchNorm statistics as loaded (batches of a few crops cannot estimate them better)
    freeze_batchnorm: bool = False
    #: the largest learning rate known to fine-tune this network without harm (None: no advice)
    lr_hint: float | None = None

    def __init__(self, net: torch.nn.Module, adjustment: str | None):
        self.net, self.adjustment = net, adjustment

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A whole training image as the network sees it (before cropping and augmentation)."""
        raise NotImplementedError

    def targets(self, image: np.ndarray, coords: np.ndarray) -> dict[str, np.ndarray]:
        """The per-crop target arrays (stacked into a batch by the trainer)."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        """(scalar loss to minimise, {name: float} parts for the progress display)."""
        raise NotImplementedError

    def wrap(self, net: torch.nn.Module, info: ModelInfo, tile_size, threshold, device) -> SpotModel:
        raise NotImplementedError

    def fresh_net(self) -> torch.nn.Module:
        """An untrained network of the same shape (the trainer loads the best weights into it)."""
        return copy.deepcopy(self.net)


class PiscisRecipe(Recipe):
    arch = "piscis"

    def __init__(self, net: PiscisNet, adjustment: str | None, loss: str, l2_weight: float,
                 ignore_bright_regions: bool = True, even_tiles: bool = True):
        super().__init__(net, adjustment)
        #: the trained model's tile plan (:attr:`..models.base.SpotModel.even_tiles`): its base model's when
        #: fine-tuning, so its epoch 0 is the base model's own detection; even for a new network
        self.even_tiles = bool(even_tiles)
        self.criterion = PiscisLoss(loss, l2_weight)
        #: a :class:`.distill.Teacher` whose maps the network is also taught (None: the annotations alone)
        self.teacher = None
        # a percentile model trains on planes normalised as it detects, bright-region rule included
        self.ignore_bright_regions = bool(ignore_bright_regions)
        if adjustment == "percentile":
            # the input's scale is the image's own (1 = its 99.8th percentile) and carries meaning: a speck
            # at 0.3 is not a spot at 3; only mild rescaling, as other images' percentiles would give
            self.intensity_range = (0.7, 1.4)

    def prepare(self, image):
        # as inference sees it: whole-plane percentiles, or standardised (per tile at inference; the whole
        # image here, since crops are cut after this step)
        if self.adjustment == "percentile":
            return percentile_normalize(image, ignore_bright_regions=self.ignore_bright_regions)
        return standardize(image)

    def targets(self, image, coords):
        labels, deltas = voronoi_targets(coords, image.shape, self.criterion.dilation)
        return {"labels": labels, "deltas": deltas, "n_spots": np.int64(len(coords))}

    def loss(self, x, target):
        labels, deltas = self.net.heads(x)
        pooled = deformable_pool(labels, deltas, self.net.cfg.kernel_size, "max")
        total, parts = self.criterion(labels, pooled, deltas, target)
        if self.teacher is not None:
            extra, more = self.teacher.loss(x, pooled, deltas)
            total = total + extra
            parts = {**parts, **more, "loss": float(total.detach())}
        return total, parts

    def wrap(self, net, info, tile_size, threshold, device):
        model = PiscisModel(net, info, adjustment=self.adjustment, tile_size=tile_size, default_threshold=threshold,
                            device=device)
        model.even_tiles = self.even_tiles
        if self.adjustment == "percentile":
            model.ignore_bright_regions = self.ignore_bright_regions
        return model

    def fresh_net(self):
        return PiscisNet(self.net.cfg)


class DeepSpotRecipe(Recipe):
    """Fine-tuning the published enhancer (from scratch it would need the authors' data and weeks)."""

    arch = "deepspot"
    intensity_augment = False
    freeze_batchnorm = True  # the published statistics come from the authors' large datasets
    lr_hint = 1e-4  # on dense images 1e-4 gained 0.16 F1 in 150 steps; 2e-4 and 3e-4 lost F1

    def __init__(self, net: DeepSpotNet, range_: tuple[float, float], prepare_image):
        super().__init__(net, "max")
        self.threshold_range = range_
        self.prepare_image = prepare_image  # the model's own whole-plane normalisation (divide by the maximum)

    def prepare(self, image):
        return self.prepare_image(image[None])[0]

    def targets(self, image, coords):
        return {"enhanced": deepspot_target(image, coords)}

    def loss(self, x, target):
        pred = self.net(x)[:, 0]
        loss = deepspot_loss(pred, target["enhanced"])
        return loss, {"loss": float(loss.detach())}

    def wrap(self, net, info, tile_size, threshold, device):
        return DeepSpotModel(net, info, tile_size=tile_size,
                             default_threshold=DEEPSPOT_THRESHOLD if threshold is None else threshold,
                             threshold_range=self.threshold_range, device=device)


#: input normalisations the trainer can train a Piscis-architecture network with
TRAINABLE_NORMALIZATIONS = ("standardize", "percentile")


def recipe_for(model, loss: str = "smoothf1", l2_weight: float = 0.25,
               normalization: str | None = None) -> tuple[Recipe, str]:
    """(recipe around a private copy of the network, "scratch" or "finetune") for a config or a loaded model.

    ``normalization`` switches a Piscis-architecture network to another input normalisation (default: the
    model's own; "standardize" for a new network).
    """
    if normalization is not None and normalization not in TRAINABLE_NORMALIZATIONS:
        raise SpotDetectError(f"Cannot train with input normalisation {normalization!r}.",
                              f"use one of {', '.join(TRAINABLE_NORMALIZATIONS)}.")
    if isinstance(model, PiscisConfig):
        net, mode, adjustment = PiscisNet(model), "scratch", normalization or "standardize"
    elif isinstance(model, PiscisModel):
        adjustment = normalization or model.adjustment
        if adjustment not in TRAINABLE_NORMALIZATIONS:
            raise SpotDetectError(f"Fine-tuning expects a model that standardises its input or scales it by "
                                  f"percentiles, this one uses {model.adjustment!r}.",
                                  "fine-tune a Piscis-architecture model.")
        net, mode = copy.deepcopy(model.net).cpu(), "finetune"
    elif isinstance(model, DeepSpotModel):
        if normalization not in (None, "max"):
            raise SpotDetectError("DeepSpot keeps its own input normalisation (divide by the maximum).",
                                  "leave the normalisation at its default for DeepSpot models.")
        if loss != "smoothf1":
            raise SpotDetectError(f"DeepSpot trains with its own loss (BCE + max-MSE), not {loss!r}.",
                                  "leave the loss at its default for DeepSpot models.")
        net = copy.deepcopy(model.net).cpu().to(memory_format=torch.contiguous_format)
        return DeepSpotRecipe(net, tuple(model.threshold_range), model.prepare_image), "finetune"
    else:
        raise SpotDetectError(f"Cannot train a {type(model).__name__}.",
                              "pass a PiscisConfig (new model), or a loaded Piscis or DeepSpot model (fine-tuning).")
    if net.cfg.pooling != "max":
        net.cfg = PiscisConfig.from_dict({**net.cfg.to_dict(), "pooling": "max"})  # training pools by max
    if net.cfg.in_channels != 1:
        raise SpotDetectError("Training currently supports single-channel models.", "use in_channels=1.")
    rule = model.ignore_bright_regions if isinstance(model, PiscisModel) else True
    even = model.even_tiles if isinstance(model, PiscisModel) else True
    return PiscisRecipe(net, adjustment, loss, l2_weight, rule, even), mode
