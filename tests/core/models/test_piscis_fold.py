"""Exact mode's inference copy of a Piscis network: BatchNorms folded, same outputs, rebuilt on new weights."""

import pytest
import torch

from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PiscisModel
from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet, fold_batchnorm

from ...conftest import randomise_batchnorm

# depth 2: every encoder stage has a residual block; widths small to keep the test fast
CFG = PiscisConfig(widths=(8, 16, 32, 64), depths=(2, 2, 2, 2))


def _net(seed):
    torch.manual_seed(seed)
    return randomise_batchnorm(PiscisNet(CFG)).eval()


def _image(seed=0):
    torch.manual_seed(seed)
    return torch.randn(2, 1, 64, 48)


def test_folded_network_equals_the_network():
    net = _net(1)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is left as it was
    x = _image()
    with torch.enable_grad():  # the original network on the autograd path (no in-place sums)
        ref = net.fpn(x).detach()
    with torch.inference_mode():
        got = folded.fpn(x.contiguous(memory_format=torch.channels_last))
        same = net.fpn(x)  # the original without autograd: in-place sums
    scale = ref.abs().max()
    assert ref.std() > 1e-3 * scale  # not a degenerate network
    assert (got - ref).abs().max() <= 1e-5 * scale
    assert (same - ref).abs().max() <= 1e-6 * scale


def _reference_maps(net, x):
    with torch.enable_grad():
        pooled, deltas = net(x)
    return torch.cat([pooled[:, None], deltas], dim=1).detach()


def _close(a, b):
    # random initial weights give logits and displacements in the hundreds: float32 rounding relative to that
    return (a - b).abs().max() <= 1e-5 * b.abs().max()


@pytest.mark.parametrize("change", ["fine_tune", "load_state_dict"])
def test_exact_mode_follows_weight_changes(change):
    net = _net(2)
    model = PiscisModel(net, ModelInfo(name="t", arch="piscis", source="test"), tile_size=(64, 64), device="cpu")
    x = _image(3)
    with torch.inference_mode():
        before = model.forward_maps(x)
    first = model._net_for(x)
    assert first is not model.net and first is model._net_for(x)  # cached
    assert _close(before, _reference_maps(model.net, x))
    if change == "fine_tune":
        model.net.train()
        assert model._net_for(x) is model.net  # while it trains: the network itself
        opt = torch.optim.SGD(model.net.parameters(), lr=0.05)
        labels, deltas = model.net.heads(_image(4))
        (labels.mean() + deltas.pow(2).mean()).backward()  # also moves the BN running statistics
        opt.step()
        model.net.eval()
    else:
        model.net.load_state_dict(_net(5).state_dict())
    with torch.inference_mode():
        after = model.forward_maps(x)
    assert model._net_for(x) is not first
    want = _reference_maps(model.net, x)
    assert _close(after, want)
    assert (after - before).abs().max() > 1e-3  # the change shows


@pytest.mark.parametrize("batch", [1, 3])
def test_reduced_precision_affine_is_the_float32_one_rounded(batch):
    """Fast mode's folded BatchNorms run in bfloat16 through BatchNorm's own kernel (addcmul is several times
    slower there): the same per-channel affine, with each image's own style bias, to bfloat16 rounding."""
    from napari_spotdetect.core.models.piscis_net import ChannelAffine

    torch.manual_seed(7)
    bn = randomise_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(16)))[0].eval()
    aff = ChannelAffine(bn)
    x = torch.randn(batch, 16, 20, 24).contiguous(memory_format=torch.channels_last)
    style = torch.randn(batch, 16) * 3
    low = ChannelAffine(bn).to(torch.bfloat16)
    for shift in (None, style):
        want = aff(x.bfloat16().float(), shift)
        got = low(x.bfloat16(), None if shift is None else shift.bfloat16())
        assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
        err = (got.float() - want).abs()
        # bfloat16 scale/shift and output: a few units in the last place of the result
        assert (err <= 0.03 * want.abs() + 0.05).all()
        if shift is not None and batch > 1:  # each image its own bias: swapping the styles changes the maps
            other = low(x.bfloat16(), shift.flip(0).bfloat16())
            assert (other.float() - got.float()).abs().max() > 1.0


def test_fast_mode_copy_has_its_batchnorms_folded():
    """The bfloat16 copy is built from the folded network: no separate BatchNorm pass over any map."""
    net = _net(6)
    model = PiscisModel(net, ModelInfo(name="t", arch="piscis", source="test"), tile_size=(64, 64), device="cpu")
    if not model.runs_in(torch.bfloat16):
        pytest.skip("bfloat16 copies are made on a CPU only")
    x = _image(8).bfloat16()
    low = model._net_for(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in low.modules())
    with torch.inference_mode():
        got = model.forward_maps(x)
        exact = model.forward_maps(x.float())
    assert got.shape == exact.shape
    assert torch.allclose(got[:, 0], exact[:, 0], atol=0.1)  # pooled probabilities, to bfloat16's rounding
