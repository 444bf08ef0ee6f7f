"""Piscis model files (``*.pt`` as saved by the piscis package, 1.1.0 and converted 2023 models).

A piscis file is ``torch.save`` of a flat state dict plus ``metadata`` (adjustment, input_size,
dilation_iterations, channels). The pooling type is not stored: piscis chooses it by class (``Piscis`` =
max, threshold 0.5; ``PiscisLegacy`` = sum, threshold 1.0). We guess it from the file: state dicts converted
from the 2023 Flax model carry no ``num_batches_tracked`` buffers, and that model is the legacy one; the
user can always override with ``variant=``. piscis training checkpoints (``*_best.pt``/``*_last.pt``,
with ``model_state_dict``) load too, with default metadata.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..models.base import ModelInfo
from ..models.piscis import VARIANTS, PiscisModel
from ..models.piscis_net import PiscisConfig, PiscisNet
from .native import NORMALIZATIONS, check_state_dict

STEM_KEY = "fpn.encoder.stem.conv.0.weight"
DEFAULT_METADATA = {"adjustment": "standardize", "input_size": (256, 256), "dilation_iterations": 1, "channels": 1}


def is_piscis_state(obj) -> bool:
    if not isinstance(obj, dict):
        return False
    return STEM_KEY in obj or (isinstance(obj.get("model_state_dict"), dict) and STEM_KEY in obj["model_state_dict"])


def guess_variant(state: dict, path: Path | None) -> str:
    if path is not None and path.stem == "20230905":
        return "legacy"
    return "current" if any(k.endswith("num_batches_tracked") for k in state) else "legacy"


def piscis_from_state(obj: dict, *, path: Path | None = None, sha256: str = "", variant: str | None = None,
                      device=None) -> PiscisModel:
    """Build a :class:`PiscisModel` from a loaded piscis file (or training checkpoint)."""
    if "model_state_dict" in obj:
        state = dict(obj["model_state_dict"])
        meta = dict(DEFAULT_METADATA)
        warnings.warn("This is a piscis training checkpoint without metadata; assuming piscis's defaults "
                      f"{DEFAULT_METADATA}.", stacklevel=3)
    else:
        state = dict(obj)
        file_meta = state.pop("metadata", None) or {}
        if not isinstance(file_meta, dict):
            raise ModelFileError(f"The piscis metadata in {path} is a {type(file_meta).__name__}, not a mapping.",
                                 "re-save the model with piscis, or pass a file saved by piscis >= 1.0.")
        meta = {**DEFAULT_METADATA, **file_meta}
    if meta.get("adjustment") not in NORMALIZATIONS:
        raise ModelFileError(f"The piscis metadata in {path} names an unknown adjustment {meta.get('adjustment')!r}.",
                             f"piscis knows {sorted(map(str, NORMALIZATIONS))}; re-save the model with piscis.")
    check_state_dict(state, str(path) if path else "the piscis file")
    if variant is None:
        variant = guess_variant(state, path)
    if variant not in VARIANTS:
        raise ModelFileError(f"Unknown piscis variant {variant!r}.", f"use one of {sorted(VARIANTS)}.")
    try:
        dil = int(meta["dilation_iterations"])
        channels = int(meta["channels"])
        tile = tuple(int(v) for v in meta["input_size"])
        if not (0 <= dil <= 16 and 1 <= channels <= 64 and len(tile) == 2 and all(8 <= t <= 8192 for t in tile)):
            raise ValueError("values out of range")
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise ModelFileError(f"The piscis metadata in {path} is malformed: {meta!r}.",
                             "re-save the model with piscis, or pass a file saved by piscis >= 1.0.") from err
    cfg = PiscisConfig(in_channels=channels, kernel_size=2 * dil + 1, pooling=VARIANTS[variant][0])
    net = PiscisNet(cfg)
    _load_tolerant(net, state, path)
    info = ModelInfo(name=path.stem if path else "piscis", arch="piscis", source=str(path or ""), sha256=sha256,
                     variant=variant)
    return PiscisModel(net, info, adjustment=meta.get("adjustment", "standardize"), tile_size=tile, device=device)


def _load_tolerant(net: torch.nn.Module, state: dict, path) -> None:
    """Strict load, except that missing ``num_batches_tracked`` buffers (Flax-converted files) are fine."""
    own = net.state_dict()
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:2]})")
        raise ModelFileError(
            f"{path} looks like a piscis model but does not fit the Piscis architecture: " + "; ".join(parts) + ".",
            "check that the file is a piscis SpotsModel saved by piscis >= 1.0 with the default architecture.",
        )
    net.load_state_dict(state, strict=True)
