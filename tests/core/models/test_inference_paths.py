"""Faster inference paths give the same numbers as the plain ones: DeepSpot's stride-2 transposed convolutions as
four phase convolutions, TF 'same' pooling without a padded copy, and tiles run side by side on CPU threads."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_spotdetect.core.common.device import CPU_BATCH_PIXELS, default_batch_size
from napari_spotdetect.core.models import deepspot_net as dn
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.deepspot import DeepSpotModel
from napari_spotdetect.core.models.tile_threads import run_tiles

from ...conftest import randomise_batchnorm


def _transposed_path(net, x):
    """The net with its ConvTranspose2d layers (training-mode branch) but BatchNorm and dropout in eval."""
    net.train()
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout2d)):
            m.eval()
    try:
        with torch.no_grad():
            return net(x)
    finally:
        net.eval()


@pytest.mark.parametrize("h,w", [(9, 6), (1, 1), (5, 8), (16, 16)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_stride2_phases_equal_the_transposed_convs(h, w, fmt):
    torch.manual_seed(h * 31 + w)
    a, b = dn.SameConvT(5, 7, 3, stride=2), dn.SameConvT(5, 3, 3, stride=2)
    x = torch.randn(2, 5, h, w).contiguous(memory_format=fmt)
    with torch.no_grad():
        pa, pb = dn.stride2_as_phases(x, (a, b))
        ra, rb = a(x), b(x)
        relu_a, _ = dn.stride2_as_phases(x, (a, b), relu_first=True)
    assert pa.shape == ra.shape == (2, 7, 2 * h, 2 * w) and pb.shape == rb.shape == (2, 3, 2 * h, 2 * w)
    assert (pa - ra).abs().max() <= 1e-5 and (pb - rb).abs().max() <= 1e-5
    assert (relu_a - ra.clamp_min(0)).abs().max() <= 1e-5


def test_each_output_phase_takes_its_own_taps():
    """One tap at a time: its value lands only on the output phase that tap reaches, at the right offset."""
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0  # one input pixel: the full transposed output is the kernel placed at (2, 2)
    for ky in range(3):
        for kx in range(3):
            ct = dn.SameConvT(1, 1, 3, stride=2)
            with torch.no_grad():
                ct.weight.zero_()
                ct.bias.zero_()
                ct.weight[0, 0, ky, kx] = 1.0
                (y,) = dn.stride2_as_phases(x, (ct,))
            want = torch.zeros(6, 6)
            want[2 + ky, 2 + kx] = 1.0  # stride 2: input 1 -> output 2, plus the tap offset (no crop at the start)
            assert torch.equal(y[0, 0], want), (ky, kx)


@pytest.mark.parametrize("fuse", [False, True])
def test_deepspot_net_inference_equals_the_transposed_conv_path(fuse):
    torch.manual_seed(3)
    net = randomise_batchnorm(dn.DeepSpotNet()).eval()
    x = torch.rand(2, 1, 40, 48)
    ref = _transposed_path(net, x)
    if fuse:
        net.fuse_batchnorm()
    net = net.to(memory_format=torch.channels_last)
    with torch.no_grad():
        got = net(x.contiguous(memory_format=torch.channels_last))
    assert (got - ref).abs().max() <= 1e-5


def test_phase_kernels_follow_new_weights():
    """The phase kernels are cached per block; loading other weights must not reuse the old ones."""
    torch.manual_seed(4)
    net = dn.DeepSpotNet().eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        net(x)  # fills the caches
    other = randomise_batchnorm(dn.DeepSpotNet())
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        got = net(x)
    assert (got - _transposed_path(other.eval(), x)).abs().max() <= 1e-5


def test_same_maxpool_equals_pooling_a_padded_copy():
    torch.manual_seed(5)
    for h in range(1, 20):
        for w in (1, 2, 3, 8, 9):
            x = torch.randn(1, 2, h, w)
            t, b = dn.same_pads(h, 3, 2)
            left, right = dn.same_pads(w, 3, 2)
            ref = F.max_pool2d(F.pad(x, (left, right, t, b), value=float("-inf")), 3, 2)
            assert torch.equal(dn.same_maxpool(x), ref), (h, w)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_tiles_side_by_side_equal_one_by_one(two_threads):
    torch.manual_seed(6)
    net = randomise_batchnorm(dn.DeepSpotNet()).eval()
    model = DeepSpotModel(net, ModelInfo(name="t", arch="deepspot", source="test"), device="cpu")
    x = torch.rand(5, 1, 32, 40)
    with torch.inference_mode():
        together = model.forward_maps(x)
        assert torch.get_num_threads() == 2  # the workers' own setting does not leak
        torch.set_num_threads(1)
        alone = torch.cat([model.forward_maps(x[i:i + 1]) for i in range(len(x))])
    assert together.shape == (5, 1, 32, 40)
    assert torch.equal(together, alone)  # each tile single-threaded either way: bit for bit, in order


def test_run_tiles_keeps_autograd_on_the_calling_thread(two_threads):
    w = torch.ones(1, requires_grad=True)
    x = torch.arange(6.0).view(6, 1)
    y = run_tiles(lambda t: t * w, x)  # grad enabled: no workers (autograd state is per thread)
    y.sum().backward()
    assert w.grad.item() == 15.0


def test_piscis_tiles_side_by_side_equal_the_batch(tiny_piscis, two_threads):
    x = torch.randn(3, 1, 64, 64)
    with torch.inference_mode():
        together = tiny_piscis.forward_maps(x)
        torch.set_num_threads(1)
        alone = torch.cat([tiny_piscis.forward_maps(x[i:i + 1]) for i in range(len(x))])
    assert torch.equal(together, alone)


def test_cpu_batch_is_one_tile_per_thread_within_a_pixel_budget(two_threads):
    cpu = torch.device("cpu")
    assert default_batch_size(cpu, (256, 256)) == 2
    assert default_batch_size(cpu, (4096, 4096)) == 1  # above the budget: still one tile
    torch.set_num_threads(64)
    assert default_batch_size(cpu, (1024, 1024)) == CPU_BATCH_PIXELS // (1024 * 1024)


def test_package_asks_openmp_to_wait_passively_unless_told_otherwise():
    code = "import os, napari_spotdetect, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_exact_detect_on_two_threads_gives_the_single_thread_spots(tiny_piscis, two_threads):
    from napari_spotdetect.core.detection.detect import detect

    img = np.random.default_rng(7).random((300, 420)).astype(np.float32)
    many = detect(img, tiny_piscis, threshold=0.1)
    assert many.provenance["tiling"]["batch_size"] == 2
    torch.set_num_threads(1)
    one = detect(img, tiny_piscis, threshold=0.1)
    assert one.provenance["tiling"]["batch_size"] == 1
    np.testing.assert_array_equal(many.spots[["y", "x"]].to_numpy(), one.spots[["y", "x"]].to_numpy())
