"""The folded body of the Piscis network (``PiscisConfig(body="folded")``): any tile size, the same maps as
the FPN body gives, exact and fast modes, a model file round trip, and a clear error for an unknown body."""

import copy

import numpy as np
import pytest
import torch

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PiscisModel
from napari_spotdetect.core.models.piscis_net import FoldedUNet, PiscisConfig, PiscisNet, fold_batchnorm
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.weights.native import save_model

from ...conftest import randomise_batchnorm

CFG = PiscisConfig(widths=(8, 16, 16, 32), body="folded", fold=2)


def _net(seed=1):
    torch.manual_seed(seed)
    return randomise_batchnorm(PiscisNet(CFG)).eval()


def test_any_tile_size_gives_full_size_maps_and_nothing_runs_at_full_size_but_the_fold():
    net = _net()
    assert isinstance(net.fpn, FoldedUNet)
    sizes = []
    hook = net.fpn.down[0].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    with torch.inference_mode():
        for h, w in ((64, 48), (72, 88), (37, 50)):
            pooled, deltas = net(torch.randn(2, 1, h, w))
            assert pooled.shape == (2, h, w) and deltas.shape == (2, 2, h, w)
    hook.remove()
    assert sizes[1] == (40, 48)  # its first level works at half of the size padded to a multiple of 16


def test_folding_its_batchnorms_keeps_its_maps():
    net = _net()
    x = torch.randn(2, 1, 72, 88)
    with torch.inference_mode():
        ref = net.fpn(x)
        got = fold_batchnorm(net).fpn(x.contiguous(memory_format=torch.channels_last))
    assert ref.std() > 1e-3 * ref.abs().max()
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_a_folded_model_detects_in_both_speed_modes_and_survives_its_file(tmp_path):
    model = PiscisModel(_net(), ModelInfo(name="folded", arch="piscis", source="test"), adjustment="percentile")
    img, _ = synthetic_image((96, 112), n_spots=12, seed=0)
    exact = detect(img, model, threshold=0.0, keep_maps=True, speed="exact")
    fast = detect(img, model, threshold=0.0, keep_maps=True, speed="fast")
    for det in (exact, fast):
        assert all(np.shape(m)[-2:] == img.shape for m in det.maps.values())
    path = save_model(model, tmp_path / "folded.pt")
    from napari_spotdetect import load_model

    again = load_model(path, device="cpu")
    assert again.net.cfg.body == "folded" and isinstance(again.net.fpn, FoldedUNet)
    again_maps = detect(img, again, threshold=0.0, keep_maps=True, speed="exact").maps
    for name, m in exact.maps.items():
        np.testing.assert_allclose(again_maps[name], m, atol=1e-6)


def test_an_unknown_body_is_refused_by_name():
    with pytest.raises(ValueError, match="body 'glass'"):
        PiscisNet(PiscisConfig(widths=(8, 16, 16, 32), body="glass"))


def _same_then_one_step(net, grown):
    """``grown`` (``net`` with a part added at zero) gives ``net``'s maps; then one SGD step on it."""
    x = torch.randn(2, 1, 72, 88)
    with torch.inference_mode():
        np.testing.assert_array_equal(grown.fpn(x).numpy(), net.fpn(x).numpy())
    grown.train()
    opt = torch.optim.SGD(grown.parameters(), lr=0.1)
    labels, deltas = grown.heads(x)
    ((labels - 1.0) ** 2).mean().add(deltas.pow(2).mean()).backward()
    opt.step()
    grown.eval()


def test_a_refinement_continues_a_network_unchanged_then_learns_and_is_kept_in_its_file(tmp_path):
    from napari_spotdetect.core.models.piscis_net import with_refinement

    net = _net()
    refined = with_refinement(net, 4).eval()
    assert refined.cfg.refine == 4 and refined.fpn.refine[0].in_channels == 1 + 4
    # the same maps at first; one step of training moves the refinement off zero, so its full-size maps differ
    _same_then_one_step(net, refined)
    with torch.inference_mode():
        assert refined.fpn.refine(torch.zeros(1, 5, 8, 8)).abs().max() > 0
    model = PiscisModel(refined, ModelInfo(name="refined", arch="piscis", source="test"), adjustment="percentile")
    img, _ = synthetic_image((96, 112), n_spots=12, seed=0)
    exact = detect(img, model, threshold=0.0, keep_maps=True, speed="exact")
    fast = detect(img, model, threshold=0.0, keep_maps=True, speed="fast")
    assert all(np.shape(m)[-2:] == img.shape for det in (exact, fast) for m in det.maps.values())
    from napari_spotdetect import load_model

    again = load_model(save_model(model, tmp_path / "refined.pt"), device="cpu")
    assert again.net.cfg.refine == 4
    np.testing.assert_allclose(detect(img, again, threshold=0.0, keep_maps=True).maps["labels"],
                               exact.maps["labels"], atol=1e-6)
    with pytest.raises(ValueError, match="folded body only"):
        with_refinement(PiscisNet(PiscisConfig(widths=(8, 16, 16, 32))), 4)


def test_style_biases_continue_a_network_unchanged_then_tell_tiles_apart_and_are_kept_in_its_file(tmp_path):
    from napari_spotdetect.core.models.piscis_net import with_style

    net = _net()
    styled = with_style(net).eval()
    assert styled.cfg.style and len(styled.fpn.style) == len(styled.cfg.widths) - 1
    _same_then_one_step(net, styled)
    # the bias now depends on the tile: two tiles' deepest features give two different biases
    with torch.inference_mode():
        first = styled.fpn.style[0](torch.nn.functional.normalize(torch.randn(1, 32), dim=1))
        second = styled.fpn.style[0](torch.nn.functional.normalize(torch.randn(1, 32), dim=1))
    assert (first - second).abs().max() > 0
    model = PiscisModel(styled, ModelInfo(name="styled", arch="piscis", source="test"), adjustment="percentile")
    img, _ = synthetic_image((96, 112), n_spots=12, seed=0)
    exact = detect(img, model, threshold=0.0, keep_maps=True, speed="exact")
    fast = detect(img, model, threshold=0.0, keep_maps=True, speed="fast")
    # fast mode (its own tiles, the bfloat16 copy) keeps the style: without it its maps change
    assert fast.maps["labels"].shape == exact.maps["labels"].shape
    plain = PiscisModel(copy.deepcopy(styled), ModelInfo(name="plain", arch="piscis", source="test"),
                        adjustment="percentile")
    plain.net.fpn.zero_refinement()
    unstyled = detect(img, plain, threshold=0.0, keep_maps=True, speed="fast").maps["labels"]
    assert np.abs(unstyled - fast.maps["labels"]).max() > 1e-3
    from napari_spotdetect import load_model

    again = load_model(save_model(model, tmp_path / "styled.pt"), device="cpu")
    assert again.net.cfg.style
    np.testing.assert_allclose(detect(img, again, threshold=0.0, keep_maps=True).maps["labels"],
                               exact.maps["labels"], atol=1e-6)
    with pytest.raises(ValueError, match="folded body only"):
        with_style(PiscisNet(PiscisConfig(widths=(8, 16, 16, 32))))
