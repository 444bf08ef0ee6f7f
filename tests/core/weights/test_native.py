import numpy as np
import pytest
import torch

from napari_spotdetect.core.errors import ModelFileError, SpotDetectError
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PiscisModel
from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet
from napari_spotdetect.core.models.zoo import load_model
from napari_spotdetect.core.weights import native


def _tiny(threshold=0.37):
    torch.manual_seed(0)
    net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    with torch.no_grad():  # non-trivial BN statistics, so a lost buffer would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return PiscisModel(net, ModelInfo(name="tiny", arch="piscis"), tile_size=(64, 64), default_threshold=threshold,
                       device="cpu")


@pytest.mark.parametrize("half", [False, True])
def test_roundtrip_through_load_model(tmp_path, half):
    m = _tiny()
    path = native.save_model(m, tmp_path / "m.pt", card={"epochs": 3, "metrics": {"f1": 0.9}}, half=half)
    obj = torch.load(path, map_location="cpu", weights_only=True)  # only safe types inside
    assert obj["format"] == "napari-spotdetect" and obj["format_version"] == 1 and obj["arch"] == "piscis"
    back = load_model(path, device="cpu")
    assert isinstance(back, PiscisModel)
    assert back.cfg == m.cfg and back.tile_size == (64, 64) and back.default_threshold == pytest.approx(0.37)
    assert back.info.card["metrics"]["f1"] == 0.9 and back.info.sha256
    assert all(v.dtype != torch.float16 for v in back.net.state_dict().values())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        a, b = m.net.eval()(x), back.net(x)
    scale = float(a[1].abs().max())  # an untrained net's displacements are large: compare relative to them
    np.testing.assert_allclose(a[1].numpy(), b[1].numpy(), atol=(5e-3 if half else 1e-6) * scale)


def test_half_precision_file_is_smaller(tmp_path):
    m = _tiny()
    full = native.save_model(m, tmp_path / "f.pt")
    half = native.save_model(m, tmp_path / "h.pt", half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    m = _tiny()
    path = native.save_model(m, tmp_path / "m.pt")
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(native.torch, "save", boom)
    with pytest.raises(OSError):
        native.save_model(_tiny(0.9), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_bad_files_are_explained(tmp_path):
    m = _tiny()
    obj = native.model_to_state(m)
    for change, match in [({"format_version": 99}, "version"), ({"arch": "nonet"}, "nonet"),
                          ({"config": {**obj["config"], "widths": [4, 8, 16, 32]}}, "does not fit")]:
        bad = {**obj, **change}
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ModelFileError, match=match):
            load_model(tmp_path / "bad.pt", device="cpu")


def test_unregistered_model_types_cannot_be_saved(tmp_path):
    class Other:
        info = ModelInfo(name="x", arch="x")

    with pytest.raises(SpotDetectError, match="registered"):
        native.save_model(Other(), tmp_path / "x.pt")


def test_another_architecture_plugs_in(tmp_path):
    """DeepSpot (or anything) registers describe/build and round-trips through load_model."""

    class Wrapped(PiscisModel):
        pass

    def describe(model):
        return {"config": {"scale": 2.0}, "state_dict": model.net.state_dict(), "normalization": None,
                "tile_size": [64, 64]}

    def build(obj, info, device):
        net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
        net.load_state_dict(obj["state_dict"])
        assert obj["config"] == {"scale": 2.0}
        return Wrapped(net, info, adjustment=None, tile_size=(64, 64), default_threshold=obj["threshold"])

    native.register_arch("wrapped", native.ArchSpec(Wrapped, describe, build))
    try:
        m = _tiny()
        w = Wrapped(m.net, ModelInfo(name="w", arch="wrapped"), tile_size=(64, 64), default_threshold=0.2)
        path = native.save_model(w, tmp_path / "w.pt")
        back = load_model(path, device="cpu")
        assert type(back) is Wrapped and back.info.arch == "wrapped" and back.default_threshold == pytest.approx(0.2)
    finally:
        native.ARCHS.pop("wrapped")


def test_a_model_files_tile_plan_survives_it_and_the_bundled_one_plans_even_tiles(tmp_path):
    """Exact mode's tiles are part of what a model gives: a model saved with piscis's fixed tiles loads with them,
    one with the even plan (the package's own) with that, and files without the key are the package's own."""
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.training.trainable import recipe_for

    img = np.random.default_rng(3).random((150, 150)).astype(np.float32)
    for even in (False, True):
        m = _tiny()
        m.even_tiles = even
        again = load_model(native.save_model(m, tmp_path / f"m{even}.pt"), device="cpu")
        assert again.even_tiles is even
        plans = [detect(img, x, threshold=0.2).provenance["tiling"] for x in (m, again)]
        assert plans[0] == plans[1]
        assert plans[0]["tile"] == ([64, 64] if not even else [80, 80])  # piscis's tile, or 2 x 2 even ones
        assert recipe_for(m)[0].even_tiles is even  # fine-tuning keeps its base model's plan
    obj = native.model_to_state(_tiny())
    del obj["even_tiles"]
    assert native.native_from_state(obj).even_tiles is True
    assert load_model("default").even_tiles is True


def test_a_tile_plan_that_is_no_yes_or_no_is_refused_with_the_file_named(tmp_path):
    obj = native.model_to_state(_tiny())
    obj["even_tiles"] = "sometimes"
    torch.save(obj, tmp_path / "odd.pt")
    with pytest.raises(ModelFileError, match="odd.pt.*even_tiles"):
        load_model(tmp_path / "odd.pt")
