"""Shared test fixtures: the reference material in ../shared and small models."""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPOTDETECT_SHARED", ROOT.parent / "shared"))
PISCIS_FIX = SHARED / "fixtures" / "piscis"
DEEPSPOT_FIX = SHARED / "fixtures" / "deepspot"

# widget settings (last model, device...) of a test run never touch the user's own file
os.environ.setdefault("NAPARI_SPOTDETECT_SETTINGS", str(ROOT / ".pytest_cache" / "settings.json"))
# downloaded models (DeepSpot, ~90 MB) go to a cache of the test run, never the user's ~/.cache; kept between runs
# so the download happens once. Set SPOTDETECT_CACHE to reuse a cache you already have.
os.environ.setdefault("SPOTDETECT_CACHE", str(ROOT / ".pytest_cache" / "model-cache"))


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference material not found at {path} (it ships beside the project in CI; a fresh clone "
                    "without ../shared skips these tests)")
    return path


def separated_points(n: int, shape, margin: int, min_distance: float, seed: int = 0):
    """``n`` random (y, x) points at least ``margin`` px inside ``shape`` and more than ``min_distance`` apart."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(margin, np.array(shape) - margin - 1)
        if all(np.hypot(*(p - q)) > min_distance for q in pts):
            pts.append(p)
    return np.array(pts)


def gaussian_spots(shape, centres, amplitudes, sigmas=1.2, background=0.0):
    """``background`` (a number or an array of ``shape``) plus a Gaussian spot of each amplitude and sigma (one or
    one per spot) at each (y, x) of ``centres``, added one after another."""
    import numpy as np

    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape) + background
    n = len(centres)
    for (y, x), a, s in zip(centres, np.broadcast_to(amplitudes, (n,)), np.broadcast_to(sigmas, (n,)), strict=True):
        img += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s ** 2))
    return img


def randomise_batchnorm(net):
    """Give every BatchNorm of ``net`` non-trivial statistics and affine weights (so folding them shows)."""
    import torch

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


@pytest.fixture(scope="module")
def default_model():
    """The bundled default model on the CPU (one per test module: some tests change its settings)."""
    from napari_spotdetect.core.models.zoo import bundled_path, load_model

    if not bundled_path("default").exists():
        pytest.skip("the bundled default model is not in this checkout")
    return load_model("default", device="cpu")


@pytest.fixture(scope="session")
def mhybrid() -> Path:
    """The published DeepSpot SavedModel folder (downloaded once from PyPI into the cache)."""
    from napari_spotdetect.core.errors import SpotDetectError
    from napari_spotdetect.core.weights import deepspot_fetch

    try:
        return deepspot_fetch.fetch_deepspot_weights()
    except SpotDetectError as err:
        pytest.skip(f"the published DeepSpot weights could not be downloaded from PyPI: {err}")


@pytest.fixture(scope="session")
def piscis_fixture_file(tmp_path_factory) -> Path:
    """The real piscis 1.1.0 model file, decompressed once per session."""
    src = need_shared(PISCIS_FIX / "piscis_fixture.pt.xz")
    out = tmp_path_factory.mktemp("piscis") / "piscis_fixture.pt"
    out.write_bytes(lzma.open(src).read())
    return out


@pytest.fixture(scope="session")
def piscis_model(piscis_fixture_file):
    from napari_spotdetect import load_model

    return load_model(piscis_fixture_file, device="cpu")


@pytest.fixture(scope="session")
def tiny_piscis():
    """A randomly initialised, small Piscis-architecture model: fast, for plumbing tests."""
    import torch

    from napari_spotdetect.core.models.base import ModelInfo
    from napari_spotdetect.core.models.piscis import PiscisModel
    from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet

    torch.manual_seed(0)
    net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    return PiscisModel(net, ModelInfo(name="tiny", arch="piscis"), tile_size=(64, 64), device="cpu")
