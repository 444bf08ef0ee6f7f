"""``load_model``: a name, file or folder in, a ready :class:`SpotModel` out.

Sniffing order: an already-built model; a bundled name (``"default"``); a folder (a TensorFlow SavedModel
of DeepSpot); a file (torch: a piscis model, a piscis checkpoint, or a model file of our own). Anything else
gets an error that says what was found and what we expected.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..common.device import select_device
from ..errors import ModelFileError, SpotDetectError
from ..io.files import file_sha256
from .base import SpotModel

#: model names shipped inside the package: name -> file in napari_spotdetect/data
BUNDLED = {"default": "default_model.pt"}
#: published models fetched once into the user cache (needs internet the first time)
DOWNLOADABLE = ("deepspot",)

_ZIP_MAGIC = b"PK\x03\x04"
#: no spot model comes near this (ours: a few MB, DeepSpot: 95 MB); a bigger file or unpacked content is refused
#: before it is read, so a small crafted file cannot make us allocate gigabytes
MAX_MODEL_BYTES = 1 << 30


def bundled_path(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("napari_spotdetect").joinpath("data", BUNDLED[name])))


def load_model(source, device=None, variant: str | None = None) -> SpotModel:
    """Load a spot-detection model.

    Args:
        source: a :class:`SpotModel`; ``"default"`` (our bundled model); ``"deepspot"`` (the published
            MHybrid weights, downloaded once from PyPI into the user cache); a piscis ``.pt`` file or training
            checkpoint; a DeepSpot TensorFlow SavedModel folder; or a model file written by this package.
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None``/``"auto"`` for the best available.
        variant: piscis only: ``"current"`` (max pooling, threshold 0.5) or ``"legacy"`` (sum pooling,
            threshold 1.0); by default guessed from the file.
    """
    if isinstance(source, SpotModel):
        return source.to(device) if device is not None else source
    select_device(device)  # a device problem is reported as such, before any file is read
    if isinstance(source, str) and source.lower() in DOWNLOADABLE:
        from ..weights.deepspot_fetch import fetch_deepspot_weights

        try:
            folder = fetch_deepspot_weights()
        except Exception as err:
            raise ModelFileError(
                f"Could not download the DeepSpot MHybrid weights ({type(err).__name__}: {str(err)[:200]}).",
                "connect to the internet once (PyPI), or pass the path of a DeepSpot SavedModel folder.") from err
        return _load_folder(folder, device)
    if isinstance(source, str) and source in BUNDLED:
        path = bundled_path(source)
        if not path.exists():
            raise ModelFileError(f"The bundled model {source!r} is missing from this installation ({path}).",
                                 "reinstall napari-spotdetect, or pass the path of a model file.")
        return _load_file(path, device, variant)
    known = ", ".join(repr(k) for k in BUNDLED)
    if not isinstance(source, (str, os.PathLike)):
        raise ModelFileError(f"{str(source)[:80]!r} ({type(source).__name__}) is not a model or a path to one.",
                             f"pass a path (text or pathlib.Path) to a .pt file or a DeepSpot SavedModel folder, "
                             f"or one of {known}.")
    try:
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelFileError(f"No model at {str(path)!r}: the path does not exist.",
                                 f"pass an existing .pt file, a DeepSpot SavedModel folder, or one of {known}.")
        if path.is_dir():
            return _load_folder(path, device)
        if not path.is_file():
            raise ModelFileError(f"{path} is not a regular file (a device, pipe or socket?).",
                                 "pass a model file (.pt) or a DeepSpot SavedModel folder.")
        return _load_file(path, device, variant)
    except (OSError, RuntimeError, TypeError, ValueError) as err:  # a name too long, an unreadable disk, ~nobody
        if isinstance(err, SpotDetectError):
            raise
        raise ModelFileError(f"Cannot read the model at {str(source)[:200]!r} ({type(err).__name__}: "
                             f"{str(err)[:160]}).", "check the path and that the file can be read (permissions, "
                             "disk); then pass a .pt file or a DeepSpot SavedModel folder.") from err


def _load_folder(path: Path, device) -> SpotModel:
    if (path / "variables" / "variables.index").exists() or (path / "saved_model.pb").exists():
        from .deepspot import load_deepspot_savedmodel

        return load_deepspot_savedmodel(path, device=device)
    raise ModelFileError(
        f"{path} is a folder but not a TensorFlow SavedModel (no variables/variables.index inside).",
        "point at a DeepSpot model folder such as .../MHybrid, or at a .pt model file.",
    )


def _looks_like_msgpack_map(head: bytes) -> bool:
    """A msgpack map with a string key (not a pickle, which starts 0x80 then a protocol byte 2-5)."""
    if len(head) < 2:
        return False
    if 0x80 <= head[0] <= 0x8F and 0xA0 <= head[1] <= 0xBF:
        return True
    return head[0] in (0xDE, 0xDF)


def _load_file(path: Path, device, variant) -> SpotModel:
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) == 0:
        raise ModelFileError(f"{path} is empty (0 bytes).", "download or copy the model file again.")
    if path.suffix.lower() in (".index",) or path.name.startswith("variables.data"):
        raise ModelFileError(f"{path} is one file of a TensorFlow SavedModel.",
                             "pass the SavedModel folder (the one that holds saved_model.pb and variables/).")
    if _looks_like_msgpack_map(head):
        # msgpack maps: the legacy Flax files of piscis <= 0.2 (no extension)
        raise ModelFileError(
            f"{path} looks like a legacy piscis (JAX/Flax, msgpack) model file.",
            "convert it once with piscis's converter (piscis >= 1.0 does it when it loads the model) and pass "
            "the resulting .pt file.",
        )
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path} is {size / 2**30:.1f} GB, larger than any spot-detection model "
                             f"({MAX_MODEL_BYTES >> 30} GB at most).", "check that this is the model file you meant.")
    if not head.startswith(_ZIP_MAGIC):
        raise ModelFileError(f"{path} is not a model file torch can read (not a torch zip archive).",
                             "pass a piscis .pt file, a model file saved by napari-spotdetect, or a DeepSpot "
                             "SavedModel folder.")
    _check_zip_sizes(path)
    sha = file_sha256(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise ModelFileError(
                f"{path} holds Python code that would run when it is loaded, not just weights: it may be "
                "malicious, and it was not loaded.",
                "use model files from a source you trust; ask whoever made it for a file of plain weights "
                "(a state dict or a file saved by napari-spotdetect).") from None
        raise _unreadable(path, err) from err
    except Exception as err:
        raise _unreadable(path, err) from err
    try:
        return _model_from_object(obj, path, sha, device, variant)
    except ModelFileError:
        raise
    except SpotDetectError:  # e.g. the device
        raise
    except Exception as err:
        raise ModelFileError(f"{path} holds a malformed model ({type(err).__name__}: {str(err)[:200]}).",
                             "download or save the model file again.") from err


def _model_from_object(obj, path: Path, sha: str, device, variant) -> SpotModel:
    from ..weights.piscis_pt import is_piscis_state, piscis_from_state

    if isinstance(obj, dict) and obj.get("format") == "napari-spotdetect":
        from ..weights.native import native_from_state

        return native_from_state(obj, path=path, sha256=sha, device=device)
    if is_piscis_state(obj):
        return piscis_from_state(obj, path=path, sha256=sha, variant=variant, device=device)
    keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
    raise ModelFileError(
        f"{path} is a torch file but not a model we know (found {keys}).",
        "pass a piscis model file (.pt with fpn.* keys and metadata), a napari-spotdetect model file, or a "
        "DeepSpot SavedModel folder.",
    )


def _unreadable(path: Path, err: BaseException) -> ModelFileError:
    return ModelFileError(f"{path} is a torch file but cannot be read ({type(err).__name__}: {str(err)[:200]}).",
                          "it may be truncated or corrupt: download it again and compare its size with the original.")


def _check_zip_sizes(path: Path) -> None:
    """Refuse a torch archive whose members would unpack to more than :data:`MAX_MODEL_BYTES`.

    torch allocates each stored tensor at the size the archive declares, so a few MB of compressed zeros
    could otherwise cost gigabytes before anything is checked.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise _unreadable(path, err) from err
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:  # torch.save never compresses: a compressed member costs its unpacked size, whatever the file's
        raise ModelFileError(f"{path} holds compressed parts ({', '.join(packed[:3])}), which torch never writes: "
                             "unpacking them could cost far more memory than the file's size.",
                             "use the model file as torch.save wrote it (not re-zipped); it may be crafted.")
    total = sum(i.file_size for i in infos)
    if len(infos) > 100_000 or total > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path} would unpack to {total / 2**30:.1f} GB in {len(infos)} parts, more than any "
                             "spot-detection model.", "check that this is the model file you meant; it may be "
                             "damaged or crafted.")
