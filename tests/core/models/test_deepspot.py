"""DeepSpot port: exact parity with TensorFlow on the shared fixture, loading, refusal, detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.errors import ModelFileError
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.models import deepspot_net as dn
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.deepspot import (
    DeepSpotModel,
    load_deepspot_net,
    load_deepspot_savedmodel,
    refine_peaks,
    savedmodel_layer_names,
)
from napari_spotdetect.core.models.zoo import load_model
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.weights import deepspot_fetch

from ...conftest import DEEPSPOT_FIX, need_shared, randomise_batchnorm
from ...tf_bundle_writer import write_bundle

FIXTURE = DEEPSPOT_FIX
CASES = ["synth_a", "synth_b", "synth_c_384x512", "repo_exp1", "repo_sim1"]


@pytest.fixture(scope="module")
def fixture_dir():
    return need_shared(FIXTURE)


@pytest.fixture(scope="module")
def exact_net(mhybrid):
    """The un-fused net (BatchNorm kept), for intermediate-layer checks."""
    net, _ = load_deepspot_net(mhybrid, fuse=False)
    return net


@pytest.fixture(scope="module")
def model(mhybrid):
    return load_model(mhybrid, device="cpu")


def _run(net, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None])[0, 0].numpy()


# -- architecture, without weights -----------------------------------------------------------------------
def test_architecture_matches_stored_layer_list():
    net = dn.DeepSpotNet()
    assert dn.count_parameters(net) == 4_037_249
    assert len(dn.KERAS_LAYERS) == 123 and len(set(dn.KERAS_LAYERS)) == 123
    modules = dict(net.named_modules())
    paths = [dn.keras_to_module(n) for n in dn.KERAS_LAYERS]
    assert len(set(paths)) == 123 and all(p in modules for p in paths)
    assert dn.KERAS_LAYERS[0] == "conv_maxpool1" and dn.KERAS_LAYERS[4] == "conv1"
    assert dn.keras_to_module("up_bn6b_branch1") == "up6b.bn1"
    assert dn.keras_to_module("bn3m_branch2c") == "res3m.bn2c"
    x = torch.zeros(1, 1, 48, 40)
    with torch.inference_mode():
        assert net.eval()(x).shape == (1, 1, 48, 40)


def test_tf_same_padding_rules():
    assert dn.same_pads(256, 3, 2) == (0, 1)  # asymmetric: all the padding after
    assert dn.same_pads(255, 3, 2) == (1, 1)
    assert dn.same_pads(64, 3, 1, 2) == (2, 2)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF 'same' 3x3/2 pooling of a 4x4 ramp: windows start at 0 and 2; the padded cell never wins
    assert dn.same_maxpool(-x).flatten().tolist() == [0.0, -2.0, -8.0, -10.0]
    ct = dn.SameConvT(1, 1, 3, stride=2)
    with torch.no_grad():
        ct.weight.zero_()
        ct.weight[0, 0, 0, 0] = 1.0
        ct.bias.zero_()
    y = ct(torch.ones(1, 1, 3, 3))
    assert y.shape == (1, 1, 6, 6)
    # no shift: the kept part is the start of the full output
    assert y[0, 0, 0, 0] == 1 and y[0, 0, 2, 2] == 1 and y[0, 0, 1, 1] == 0


def _keras_checkpoint(net: dn.DeepSpotNet) -> dict:
    """A net's weights under the checkpoint's keys and TF layouts (the inverse of the loader's mapping)."""
    attrs = {"weight": None, "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_variance"}
    state = net.state_dict()
    out = {}
    for n, layer in enumerate(dn.KERAS_LAYERS):
        path = dn.keras_to_module(layer)
        is_bn = isinstance(dict(net.named_modules())[path], torch.nn.BatchNorm2d)
        for p, attr in attrs.items():
            key = f"{path}.{p}"
            if key not in state:
                continue
            attr = attr or ("gamma" if is_bn else "kernel")
            if is_bn and attr == "bias":
                attr = "beta"
            v = state[key].numpy()
            key = f"layer_with_weights-{n}/{attr}/.ATTRIBUTES/VARIABLE_VALUE"
            out[key] = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v
    out["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"] = np.array(3, dtype=np.int64)
    return out


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return randomise_batchnorm(dn.DeepSpotNet().eval())


def test_own_checkpoint_loads_and_fused_net_agrees(tmp_path, random_net):
    write_bundle(tmp_path / "mine" / "variables" / "variables", _keras_checkpoint(random_net))
    model = load_model(tmp_path / "mine", device="cpu")
    assert isinstance(model, DeepSpotModel) and model.info.arch == "deepspot" and model.info.name == "mine"
    assert len(model.info.sha256) == 64 and model.net.fused
    x = np.random.default_rng(1).random((64, 72), dtype=np.float32)
    ref = _run(random_net, x)
    np.testing.assert_allclose(_run(model.net, x), ref, atol=1e-5, rtol=0)
    unfused = load_deepspot_savedmodel(tmp_path / "mine", fuse=False)
    for k, v in random_net.state_dict().items():  # the mapping is exact, weight by weight
        assert torch.equal(unfused.net.state_dict()[k], v), k
    np.testing.assert_allclose(_run(unfused.net, x), ref, atol=1e-5, rtol=0)


def test_refuses_checkpoint_with_wrong_variables(tmp_path, random_net):
    ckpt = _keras_checkpoint(random_net)
    ckpt.pop("layer_with_weights-122/bias/.ATTRIBUTES/VARIABLE_VALUE")  # missing
    ckpt["layer_with_weights-123/kernel/.ATTRIBUTES/VARIABLE_VALUE"] = np.zeros((1, 1, 1, 1), np.float32)
    key = "layer_with_weights-19/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    ckpt[key] = ckpt[key].transpose(0, 1, 3, 2).copy()  # (1, 1, 128, 384): a transposed 1x1 kernel
    write_bundle(tmp_path / "bad" / "variables" / "variables", ckpt)
    with pytest.raises(ModelFileError) as info:
        load_model(tmp_path / "bad")
    msg = str(info.value)
    assert "head.bias" in msg and "missing" in msg
    assert "layer_with_weights-123" in msg and "unexpected" in msg
    assert "res3a_branch2a" in msg and "shape" in msg


def test_refuses_other_checkpoint(tmp_path):
    write_bundle(tmp_path / "other" / "variables" / "variables",
                 {"model/dense/kernel": np.zeros((3, 4), np.float32)})
    with pytest.raises(ModelFileError, match="not the DeepSpot"):
        load_model(tmp_path / "other")


def _saved_model_pb(names: list[str]) -> bytes:
    """A minimal saved_model.pb whose object graph names ``layer_with_weights-N`` like Keras does."""
    import json

    from ...tf_bundle_writer import enc_field as _enc_field

    def child(node_id, local):
        return _enc_field(1, _enc_field(1, node_id, 0) + _enc_field(2, local.encode(), 2), 2)

    root = b"".join(child(i + 1, f"layer_with_weights-{i}") for i in range(len(names)))
    nodes = [root] + [_enc_field(4, _enc_field(3, json.dumps({"name": n}).encode(), 2), 2) for n in names]
    graph = b"".join(_enc_field(1, n, 2) for n in nodes)
    return _enc_field(2, _enc_field(7, graph, 2), 2)


def test_layer_names_in_saved_model_are_checked(tmp_path, random_net):
    ckpt = _keras_checkpoint(random_net)
    write_bundle(tmp_path / "ok" / "variables" / "variables", ckpt)
    (tmp_path / "ok" / "saved_model.pb").write_bytes(_saved_model_pb(dn.KERAS_LAYERS))
    assert savedmodel_layer_names(tmp_path / "ok") == dict(enumerate(dn.KERAS_LAYERS))
    load_model(tmp_path / "ok", device="cpu")
    swapped = list(dn.KERAS_LAYERS)
    swapped[0], swapped[1] = swapped[1], swapped[0]  # same shapes: only the names can tell
    write_bundle(tmp_path / "swap" / "variables" / "variables", ckpt)
    (tmp_path / "swap" / "saved_model.pb").write_bytes(_saved_model_pb(swapped))
    with pytest.raises(ModelFileError, match="conv_atrou1 \\(expected conv_maxpool1\\)"):
        load_model(tmp_path / "swap")


def test_published_saved_model_names_match_table(mhybrid):
    assert savedmodel_layer_names(mhybrid) == dict(enumerate(dn.KERAS_LAYERS))


def test_prepare_image_divides_by_plane_max(random_net):
    model = DeepSpotModel(random_net, ModelInfo(name="r", arch="deepspot"), device="cpu")
    img = np.array([[[0, 50], [100, 200]]], dtype=np.uint16)
    out = model.prepare_image(img)
    assert out.dtype == np.float32 and out.max() == 1.0 and out[0, 0, 1] == np.float32(0.25)
    assert not model.prepare_image(np.zeros((1, 4, 4))).any()  # no division by zero


def test_refine_peaks_moves_toward_brighter_side():
    s = np.zeros((7, 7))
    s[3, 2:5] = [0.5, 1.0, 0.9]
    s[2:5, 3] = [0.8, 1.0, 0.8]
    (y, x), = refine_peaks(s, np.array([[3, 3]]))
    assert y == pytest.approx(3.0) and 3.0 < x < 3.5
    s[3, 2:5] = [0.5, 1.0, 1.0]  # a saturated plateau: half-way, but never exactly on the pixel border
    (_, x), = refine_peaks(s, np.array([[3, 3]]))
    assert 3.4 < x < 3.5
    edge = np.zeros((5, 5))
    edge[0, 2], edge[1, 2] = 1.0, 0.6  # a peak on the map's edge is not pushed outward
    (y, x), = refine_peaks(edge, np.array([[0, 2]]))
    assert y == 0.0 and x == 2.0


# -- parity with TensorFlow -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_output_matches_tensorflow(case, fixture_dir, exact_net, model):
    x = np.load(fixture_dir / f"{case}_input.npy")
    ref = np.load(fixture_dir / f"{case}_output.npy")
    assert np.abs(_run(exact_net, x) - ref).max() <= 1e-5
    # the loaded model (BatchNorm folded, channels-last) through the whole pipeline from the raw image:
    # max-normalisation, tiling and stitching
    raw = np.load(fixture_dir / f"{case}_raw.npy")
    det = detect(raw, model, keep_maps=True)
    assert np.abs(det.maps["enhanced"] - ref).max() <= 1e-5


def test_intermediate_layers_match_tensorflow(fixture_dir, exact_net):
    acts = {}
    layers = {"conv1": exact_net.caso.conv1, "concatenate": exact_net.caso, "add": exact_net.res3a,
              "add_12": exact_net.res3m, "activation_50": exact_net.up6a}  # Keras name -> our module
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: acts.__setitem__(name, o))
             for name, m in layers.items()]
    try:
        _run(exact_net, np.load(fixture_dir / "synth_a_input.npy"))
    finally:
        for h in hooks:
            h.remove()
    for name, act in acts.items():
        ref = np.load(fixture_dir / f"synth_a_layer_{name}.npy")  # (H, W, C), maybe the first channels only
        got = act[0].permute(1, 2, 0).numpy()[..., : ref.shape[-1]]
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), name


# -- detection ---------------------------------------------------------------------------------------------
def test_detect_returns_spots_and_enhanced_map(fixture_dir, model):
    import pandas as pd

    raw = np.load(fixture_dir / "synth_a_raw.npy")
    det = detect(raw, model, keep_maps=True)
    spots = det.spots
    assert det.maps["enhanced"].shape == raw.shape and det.score_map == "enhanced"
    assert set(spots.columns) >= {"y", "x", "score", "intensity", "source", "model"}
    assert (spots["score"] > model.default_threshold).all() and (spots["model"] == "MHybrid").all()
    truth = pd.read_csv(fixture_dir / "synth_a_spots.csv")[["y_row", "x_col"]].to_numpy()
    ev = evaluate(spots[["y", "x"]].to_numpy(), truth, radius=1.0)
    assert ev["precision"] >= 0.95 and ev["recall"] >= 0.9
    assert len(det.rethreshold(0.9)) < len(spots) < len(det.rethreshold(0.3))


@pytest.mark.slow
def test_tiled_equals_untiled(model):
    """Tiles overlapping by 256 px reproduce whole-image inference (the network sees ~100 px away)."""
    # two 1024-px tiles along x, the last one ending at the image edge
    img, _ = synthetic_image((256, 1792), 150, seed=4)
    whole = _run(model.net, model.prepare_image(img[None])[0])
    det = detect(img, model, keep_maps=True)
    assert det.provenance["tiling"]["grid"] == [1, 2]
    assert np.abs(det.maps["enhanced"] - whole).max() <= 1e-5


@pytest.mark.slow
def test_fixed_parameters_on_synthetic_images(model):
    """The default threshold and peak finder, never tuned per image, on images unlike the fixture's."""
    f1 = []
    for seed, n, amp in [(11, 40, (150, 500)), (12, 120, (300, 1000)), (13, 200, (600, 2000))]:
        img, truth = synthetic_image((256, 256), n, seed=seed, amplitude=amp)
        spots = detect(img, model).spots
        f1.append(evaluate(spots[["y", "x"]].to_numpy(), truth, radius=1.0)["f1"])
    assert min(f1) >= 0.95, f1


# -- fetching ----------------------------------------------------------------------------------------------
def test_fetch_is_idempotent_and_honours_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTDETECT_CACHE", str(tmp_path))
    assert deepspot_fetch.cache_dir() == tmp_path
    folder = tmp_path / "deepspot" / f"{deepspot_fetch.PACKAGE}-{deepspot_fetch.VERSION}" / "MHybrid"
    for rel in deepspot_fetch.MHYBRID_SHA256:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    (folder / ".complete").write_text("done")

    def no_network(*a, **k):
        raise AssertionError("a complete cache must not download again")

    monkeypatch.setattr(deepspot_fetch, "_download_wheel", no_network)
    assert deepspot_fetch.fetch_deepspot_weights() == folder


def test_fetched_weights_have_published_hashes(mhybrid):
    assert deepspot_fetch._complete(mhybrid)
    assert deepspot_fetch.file_sha256(mhybrid / "variables" / "variables.index") == \
        deepspot_fetch.MHYBRID_SHA256["variables/variables.index"]
