"""Our own model file: one ``torch.save``'d dict that says what network it is and how to use it.

``{"format": "napari-spotdetect", "format_version": 1, "arch": "piscis", "config": {...},
"state_dict": {...}, "normalization": "standardize", "tile_size": [256, 256], "threshold": 0.43,
"card": {...}}``. Only tensors, dicts, lists, strings and numbers, so ``torch.load(weights_only=True)``
reads it without running any code from the file. Large weight tensors may be stored in half precision;
they come back as float32. Architectures register a pair of functions in :data:`ARCHS` so another network
(DeepSpot) plugs in without touching this module's readers.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.validate import check_contrast_floor
from ..errors import ModelFileError, SpotDetectError
from ..io.files import atomic_write
from ..models.base import ModelInfo, SpotModel

FORMAT = "napari-spotdetect"
FORMAT_VERSION = 1


@dataclass
class ArchSpec:
    """How to take a model of one architecture apart (``describe``) and build it again (``build``)."""

    model_type: type
    describe: Callable[[SpotModel], dict]  # -> {"config", "state_dict", "normalization", "tile_size"}
    build: Callable[[dict, ModelInfo, object], SpotModel]  # (file dict, info, device) -> model


ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, spec: ArchSpec) -> None:
    ARCHS[name] = spec


def _piscis_describe(model) -> dict:
    out = {"config": _plain(model.cfg.to_dict()), "state_dict": model.net.state_dict(),
           "normalization": model.adjustment, "tile_size": list(model.tile_size),
           "even_tiles": bool(model.even_tiles)}
    if model.rescorer is not None:
        out["rescore"] = _plain(model.rescorer.to_dict())
    return out


def _piscis_build(obj: dict, info: ModelInfo, device) -> SpotModel:
    from ..models.piscis import PiscisModel
    from ..models.piscis_net import PiscisConfig, PiscisNet

    net = PiscisNet(PiscisConfig.from_dict(obj["config"]))
    net.load_state_dict(obj["state_dict"], strict=True)
    rescorer = None
    if obj.get("rescore") is not None:  # optional: files without it load as before
        from ..models.rescorer import Rescorer

        rescorer = Rescorer.from_dict(obj["rescore"])
    model = PiscisModel(net, info, adjustment=obj.get("normalization", "standardize"),
                        tile_size=tuple(obj.get("tile_size", (256, 256))), default_threshold=obj.get("threshold"),
                        device=device, rescorer=rescorer)
    # a file without the key (the bundled model's, and files saved before it) is one of the package's own models
    even = obj.get("even_tiles", True)
    if not isinstance(even, bool):
        raise TypeError(f"its tile plan 'even_tiles' is {even!r}, not true or false")
    model.even_tiles = even
    return model


def _deepspot_describe(model) -> dict:
    return {"config": {"fused": bool(model.net.fused), "peak_radius": model.peak_radius},
            "state_dict": model.net.state_dict(), "normalization": "max", "tile_size": list(model.tile_size)}


def _deepspot_build(obj: dict, info: ModelInfo, device) -> SpotModel:
    from ..models.deepspot import PEAK_RADIUS, DeepSpotModel
    from ..models.deepspot_net import DeepSpotNet

    net = DeepSpotNet()
    if obj["config"].get("fused"):
        net.fuse_batchnorm()  # swaps the folded BatchNorms for identities, so the fused keys fit
    net.load_state_dict(obj["state_dict"], strict=True)
    net.eval().to(memory_format=torch.channels_last)
    return DeepSpotModel(net, info, tile_size=tuple(obj.get("tile_size", (1024, 1024))),
                         default_threshold=obj.get("threshold"),
                         peak_radius=obj["config"].get("peak_radius", PEAK_RADIUS),
                         device=device)


def _register_builtin() -> None:
    from ..models.deepspot import DeepSpotModel
    from ..models.piscis import PiscisModel

    register_arch("piscis", ArchSpec(PiscisModel, _piscis_describe, _piscis_build))
    register_arch("deepspot", ArchSpec(DeepSpotModel, _deepspot_describe, _deepspot_build))


_register_builtin()


def _plain(obj):
    """Card/config values as JSON types (tuples -> lists, numpy scalars -> numbers), safe for weights_only."""
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def arch_of(model: SpotModel) -> str:
    for cls in type(model).__mro__:  # the most specific registered class wins
        for name, spec in ARCHS.items():
            if spec.model_type is cls:
                return name
    raise SpotDetectError(f"Cannot save a {type(model).__name__}: no file format is registered for it.",
                          f"save one of: {', '.join(ARCHS)}.")


def model_to_state(model: SpotModel, card: dict | None = None, half: bool = False) -> dict:
    """The dict that :func:`save_model` writes. ``half`` stores conv/linear weights as float16."""
    arch = arch_of(model)
    d = ARCHS[arch].describe(model)
    state = {}
    for k, v in d["state_dict"].items():
        v = v.detach().cpu().clone()
        if half and v.is_floating_point() and v.ndim >= 2:
            v = v.half()
        state[k] = v
    card = {**(model.info.card or {}), **(card or {})}
    card.setdefault("saved", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "name": model.info.name,
            "config": d["config"], "state_dict": state, "normalization": d["normalization"],
            "tile_size": d["tile_size"], "threshold": float(model.default_threshold),
            "contrast_floor": float(model.default_contrast_floor), "card": _plain(card),
            **({"rescore": d["rescore"]} if "rescore" in d else {}),
            **({"even_tiles": d["even_tiles"]} if "even_tiles" in d else {})}


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` through a temporary file and a rename: readers never see a partial model."""
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def save_model(model: SpotModel, path, card: dict | None = None, half: bool = False, extra: dict | None = None) -> Path:
    """Save ``model`` (weights, config, normalisation, tile size, threshold, ``card``) atomically.

    ``extra`` adds top-level keys (the trainer keeps its resume state there); readers ignore them.
    """
    obj = model_to_state(model, card, half)
    if extra:
        obj.update(extra)
    return atomic_torch_save(obj, path)


#: the per-tile normalisations a Piscis-architecture model knows (None: the tiles as they are)
from ..models.piscis import ADJUSTMENTS as NORMALIZATIONS  # noqa: E402  (the one list of them)

#: no layer of a spot-detection network comes near this (DeepSpot's largest: about 10 million values)
MAX_TENSOR_ELEMENTS = 1 << 28


def check_state_dict(state, where: str) -> dict:
    """Weights as a dict of finite tensors: anything else means a damaged or foreign file."""
    if not isinstance(state, dict):
        raise ModelFileError(f"{where} holds weights of type {type(state).__name__}, not a state dict.",
                             "download or save the model file again.")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ModelFileError(f"{where} has a weight {str(k)[:80]!r} that is a {type(v).__name__}, not a tensor.",
                                 "download or save the model file again; it is damaged or not a model.")
        if v.numel() > MAX_TENSOR_ELEMENTS:  # e.g. a crafted zero-stride view of a tiny storage
            raise ModelFileError(f"{where} has a weight {str(k)[:80]!r} of {v.numel():,} values, more than any "
                                 "spot-detection model holds.", "download or save the model file again.")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelFileError(f"{where} has NaN or infinite values in the weight {str(k)[:80]!r}.",
                                 "the model is broken (a diverged training run?): train it again with a smaller "
                                 "learning rate, or use an earlier checkpoint.")
        _check_outliers(k, v, where)
    return state


#: a convolution's largest weight over its median magnitude; trained networks stay below 40 (piscis 4, ours 7,
#: DeepSpot 34), one flipped byte in a float's exponent makes it 500 to 5,000
MAX_WEIGHT_RATIO = 200.0


def _check_outliers(name, v: torch.Tensor, where: str) -> None:
    """Piscis files carry no checksum: a flipped byte inside a weight loads, and the model finds nothing.

    Such a byte makes one value hundreds of times larger than the rest of its layer: refuse it.
    """
    if not (v.is_floating_point() and v.ndim >= 2 and v.numel() >= 64 and str(name).endswith("weight")):
        return
    a = v.detach().abs().float().flatten()
    nz = a[a > 0]
    if nz.numel() < 16:
        return
    ratio = float(a.max() / nz.median())
    if ratio > MAX_WEIGHT_RATIO:
        raise ModelFileError(f"{where} has a value {ratio:.0f}x the typical size of the weight {str(name)[:80]!r} "
                             f"({float(a.max()):.3g} against {float(nz.median()):.3g}): the file is damaged "
                             "(flipped bytes), and such a model finds nothing.",
                             "download or copy the model file again and compare its checksum with the original.")


def _checked_file(obj: dict, where: str) -> dict:
    """The loaded file's dict with float32 weights, after checking every field that building the model uses."""
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{where} has format version {version!r}; this napari-spotdetect reads up to "
                             f"{FORMAT_VERSION}.", "update napari-spotdetect.")
    arch = obj.get("arch")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ModelFileError(f"{where} holds a {arch!r} network, which this installation cannot build.",
                             f"update napari-spotdetect (known architectures: {', '.join(ARCHS)}).")
    missing = [k for k in ("config", "state_dict") if not isinstance(obj.get(k), dict)]
    if missing:
        raise ModelFileError(f"{where} lacks {', '.join(missing)}.", "save the model again with save_model().")
    obj = dict(obj)
    obj["state_dict"] = {k: (v.float() if v.is_floating_point() else v)
                         for k, v in check_state_dict(obj["state_dict"], where).items()}
    if arch == "piscis" and obj.get("normalization", "standardize") not in NORMALIZATIONS:
        raise ModelFileError(f"{where} names an unknown normalisation {obj.get('normalization')!r}.",
                             f"use one of {sorted(map(str, NORMALIZATIONS))}; save the model again with save_model().")
    if not isinstance(obj.get("card") or {}, dict):
        raise ModelFileError(f"{where} has a model card that is not a mapping.",
                             "save the model again with save_model().")
    thr = obj.get("threshold")
    if thr is not None and not (isinstance(thr, (int, float)) and math.isfinite(thr)):
        raise ModelFileError(f"{where} has an invalid threshold {thr!r}.", "save the model again with save_model().")
    return obj


def native_from_state(obj: dict, *, path=None, sha256: str = "", device=None) -> SpotModel:
    """Build the model described by a loaded napari-spotdetect file."""
    where = str(path) if path else "the model file"
    obj = _checked_file(obj, where)
    arch = obj["arch"]
    card = dict(obj.get("card") or {})
    name = obj.get("name") or (Path(path).stem if path else arch)
    info = ModelInfo(name=str(name), arch=arch, source=str(path or ""), sha256=sha256, card=card)
    try:
        model = ARCHS[arch].build(obj, info, device)
        model.default_contrast_floor = check_contrast_floor(obj.get("contrast_floor") or 0.0)
        return model
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        raise ModelFileError(f"{where} does not fit the {arch} network it names: {str(err)[:300]}",
                             "the file may come from an incompatible version; train or export it again.") from err
