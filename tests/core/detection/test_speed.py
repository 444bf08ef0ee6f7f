"""Speed modes: the fast tile plan, the precision chosen per device, and fast against exact on the default model."""

import numpy as np
import pytest
import torch

from napari_spotdetect import detect, load_model
from napari_spotdetect.core.detection.speed import check_speed, cpu_has_native_bf16, fast_dtype, speed_settings
from napari_spotdetect.core.detection.tiling import plan_axis_even, plan_tiles, plan_tiles_even
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.groundtruth.metrics import match_spots
from napari_spotdetect.core.training.synthetic import synthetic_image


@pytest.mark.parametrize("length", [100, 256, 300, 777, 1024, 2048, 4096, 5000])
@pytest.mark.parametrize("max_tile,margin", [(512, 26), (256, 26), (1024, 48)])
def test_even_axis_plan_covers_without_waste(length, max_tile, margin):
    plan, tile = plan_axis_even(length, max_tile, margin, 8)
    assert tile % 8 == 0 and tile <= max(max_tile, -(-length // 8) * 8)
    assert plan.starts[0] == 0 and plan.stops[-1] == length
    assert all(b - a == tile for a, b in zip(plan.starts, plan.stops)) or len(plan.starts) == 1
    shared = [plan.stops[k - 1] - plan.starts[k] for k in range(1, len(plan.starts))]
    assert all(s >= margin for s in shared)  # every neighbour pair shares the context asked for
    assert all(s < margin + 2 * 8 + len(plan.starts) for s in shared)  # and not much more
    # ownership: every position owned once, and each tile owns only what it sees
    b = plan.borders
    assert b[0] == 0 and b[-1] == length and all(x < y for x, y in zip(b, b[1:]))
    assert all(plan.starts[k] <= b[k] and b[k + 1] <= plan.stops[k] for k in range(len(plan.starts)))


@pytest.mark.parametrize("size", [1024, 2048, 4096])
def test_fast_plan_computes_fewer_pixels_than_piscis(size):
    exact = plan_tiles((size, size), (256, 256), 0.1)
    fast = plan_tiles_even((size, size), (512, 512), 26)
    px = lambda p: len(p) * p.tile[0] * p.tile[1]  # noqa: E731
    assert px(fast) < px(exact) / 1.1
    assert px(fast) < 1.25 * size * size


def test_unknown_speed_is_refused_with_the_choices():
    with pytest.raises(SpotDetectError, match="exact, fast"):
        check_speed("ludicrous")
    assert check_speed(None) == "exact" and check_speed("FAST") == "fast"


def test_fast_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert speed_settings("exact", cpu).dtype is None
    assert fast_dtype(cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)


def test_piscis_heads_stay_float32_under_autocast(tiny_piscis):
    """bfloat16 label maps would round peaks of 0.99997 to 1.0 and split spots into tied maxima."""
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        pooled, deltas = tiny_piscis.net(x)
    assert pooled.dtype == torch.float32 and deltas.dtype == torch.float32


def test_fast_mode_agrees_with_exact_on_the_default_model():
    model = load_model("default", device="cpu")
    image, truth = synthetic_image((600, 560), n_spots=220, seed=3, amplitude=(400, 1000))
    exact = detect(image, model, speed="exact")
    fast = detect(image, model, speed="fast")
    # the package's own model plans the same even tiles in both modes: they differ by precision alone
    assert fast.provenance["tiling"]["tile"] == exact.provenance["tiling"]["tile"]
    assert fast.provenance["tiling"]["n_tiles"] == exact.provenance["tiling"]["n_tiles"] == 4
    assert fast.provenance["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    f1 = match_spots(fast.spots[["y", "x"]].to_numpy(), exact.spots[["y", "x"]].to_numpy(), 1.0).f1
    assert f1 >= 0.99
    assert np.isfinite(fast.spots["score"]).all()


def test_gpu_batch_follows_free_memory():
    from napari_spotdetect.core.common.device import MAX_BATCH, batch_for_memory

    assert batch_for_memory(0, (256, 256)) == 1  # never zero
    small, big = batch_for_memory(2 << 30, (256, 256)), batch_for_memory(8 << 30, (256, 256))
    assert 1 < small < big <= MAX_BATCH
    assert batch_for_memory(8 << 30, (512, 512)) == max(1, big // 4)
    assert batch_for_memory(8 << 30, (256, 256), 3000) >= big  # half precision: more tiles


def test_fast_mode_on_a_bf16_cpu_runs_a_bfloat16_copy_that_follows_weight_changes():
    """Where the CPU has native bfloat16, fast mode feeds bfloat16 tiles to a bfloat16 copy of the network (no
    autocast casts; its head stays float32), made once and made again when the weights change."""
    model = load_model("default", device="cpu")
    if not model.runs_in(torch.bfloat16):
        pytest.skip("this CPU has no native bfloat16: fast mode runs float32 here")
    x = torch.rand(1, 1, 64, 64, dtype=torch.bfloat16)
    low = model._net_for(x)
    assert low is not model.net and low is model._net_for(x)
    assert next(low.fpn.encoder.parameters()).dtype == torch.bfloat16
    assert low.fpn.output.conv[2].weight.dtype == torch.float32
    assert model._net_for(x.float()) not in (model.net, low)  # exact mode: its own float32 (folded) copy
    with torch.inference_mode():
        maps = model.forward_maps(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model.forward_maps(x.float())
    assert maps.dtype == torch.float32 and torch.allclose(maps[:, 0], auto[:, 0], atol=0.1)
    with torch.no_grad():
        next(model.net.parameters()).mul_(1.01)  # weights changed in place: a new copy
    assert model._net_for(x) is not low


def test_a_piscis_file_keeps_piscis_tiles_in_exact_mode_and_fast_mode_plans_fewer(piscis_model):
    image, _ = synthetic_image((600, 560), n_spots=50, seed=3)
    exact = detect(image, piscis_model, speed="exact")
    fast = detect(image, piscis_model, speed="fast")
    assert exact.provenance["tiling"]["tile"] == [256, 256] and exact.provenance["tiling"]["n_tiles"] == 9
    assert fast.provenance["tiling"]["n_tiles"] < exact.provenance["tiling"]["n_tiles"]
