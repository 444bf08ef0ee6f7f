"""Engine behaviour: re-thresholding, axes, lazy input, progress and cancel, out-of-memory fallback."""

import dask.array as da
import numpy as np
import pytest

from napari_spotdetect import detect, detect_iter
from napari_spotdetect.core.errors import Cancelled, SpotDetectError
from napari_spotdetect.core.training.synthetic import synthetic_image


@pytest.fixture(scope="module")
def image():
    return synthetic_image((150, 170), n_spots=40, seed=2)[0]


@pytest.mark.slow
def test_rethreshold_is_detection_at_that_threshold(piscis_model):
    img = synthetic_image((300, 280), n_spots=80, seed=5, amplitude=(60, 900))[0]
    low = detect(img, piscis_model, threshold=0.1)
    for t in (0.1, 0.3, 0.5, 0.9):
        direct = detect(img, piscis_model, threshold=t).spots
        again = low.rethreshold(t)
        assert len(direct) == len(again)
        np.testing.assert_allclose(direct[["y", "x", "score"]].to_numpy(), again[["y", "x", "score"]].to_numpy())
    assert len(low.set_threshold(0.7)) == len(low.spots) and low.provenance["threshold"] == 0.7


def test_rethreshold_does_not_run_the_network(tiny_piscis, image, monkeypatch):
    det = detect(image, tiny_piscis, threshold=0.05)
    calls = []
    monkeypatch.setattr(tiny_piscis, "forward_maps", lambda x: calls.append(1))
    n = [len(det.rethreshold(t)) for t in (0.05, 0.2, 0.6)]
    assert not calls and n == sorted(n, reverse=True)


def test_intensity_is_the_raw_pixel_value(tiny_piscis, image):
    spots = detect(image * 7 + 3, tiny_piscis, threshold=0.05).spots
    assert len(spots)
    r = np.clip(np.rint(spots.y).astype(int), 0, image.shape[0] - 1)
    c = np.clip(np.rint(spots.x).astype(int), 0, image.shape[1] - 1)
    np.testing.assert_allclose(spots.intensity, image[r, c] * 7 + 3, rtol=1e-6)
    assert set(spots.source) == {"predicted"} and set(spots.model) == {"tiny"}


def test_time_and_channel_axes_are_looped(tiny_piscis, image):
    one = detect(image, tiny_piscis, threshold=0.05).spots
    tc = np.stack([np.stack([image, image[::-1]])] * 2)  # (t=2, c=2, y, x)
    spots = detect(tc, tiny_piscis, threshold=0.05, axes="tcyx").spots
    assert list(spots.columns[:4]) == ["t", "c", "y", "x"]
    first = spots[(spots.t == 1) & (spots.c == 0)]
    np.testing.assert_allclose(first[["y", "x"]].to_numpy(), one[["y", "x"]].to_numpy())
    flipped = spots[(spots.t == 0) & (spots.c == 1)]
    direct = detect(np.ascontiguousarray(image[::-1]), tiny_piscis, threshold=0.05).spots
    np.testing.assert_allclose(flipped[["y", "x"]].to_numpy(), direct[["y", "x"]].to_numpy())


def test_channel_last_axes(tiny_piscis, image):
    yxc = np.stack([image, image], axis=-1)
    spots = detect(yxc, tiny_piscis, threshold=0.05, axes="yxc").spots
    assert set(spots.c) == {0, 1}


def test_dask_input_gives_the_same_spots(tiny_piscis, image):
    a = detect(image, tiny_piscis, threshold=0.05).spots
    b = detect(da.from_array(image, chunks=(64, 64)), tiny_piscis, threshold=0.05).spots
    np.testing.assert_allclose(a[["y", "x", "score"]].to_numpy(), b[["y", "x", "score"]].to_numpy())


def test_integer_tile_size(tiny_piscis, image):
    det = detect(image, tiny_piscis, tile_size=64)
    assert det.provenance["tiling"]["tile"] == [64, 64]


def test_progress_reaches_total(tiny_piscis, image):
    seen = []
    det = detect(image, tiny_piscis, progress=seen.append, batch_size=2)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == det.provenance["tiling"]["n_tiles"]
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_generator_form_returns_detections(tiny_piscis, image):
    gen = detect_iter(image, tiny_piscis)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        det = stop.value
    assert events and det.spots is not None


def test_should_stop_cancels_between_batches(tiny_piscis, image, monkeypatch):
    calls = []
    original = tiny_piscis.forward_maps
    monkeypatch.setattr(tiny_piscis, "forward_maps", lambda x: (calls.append(len(x)), original(x))[1])
    with pytest.raises(Cancelled):
        detect(image, tiny_piscis, batch_size=1, should_stop=lambda: len(calls) >= 2)
    assert len(calls) == 2  # stopped right after the second batch, not at the end


def test_out_of_memory_halves_the_batch(tiny_piscis, image, monkeypatch):
    ref = detect(image, tiny_piscis, threshold=0.05, batch_size=1).spots
    original = tiny_piscis.forward_maps
    sizes = []

    def flaky(x):
        sizes.append(len(x))
        if len(x) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(x)

    monkeypatch.setattr(tiny_piscis, "forward_maps", flaky)
    spots = detect(image, tiny_piscis, threshold=0.05, batch_size=4).spots
    assert max(sizes) == 4 and 1 in sizes
    np.testing.assert_allclose(spots[["y", "x"]].to_numpy(), ref[["y", "x"]].to_numpy())


def test_out_of_memory_on_one_tile_is_explained(tiny_piscis, image, monkeypatch):
    def oom(x):
        raise RuntimeError("CUDA out of memory.")

    monkeypatch.setattr(tiny_piscis, "forward_maps", oom)
    with pytest.raises(SpotDetectError, match="smaller tile size"):
        detect(image, tiny_piscis, batch_size=1)


def test_other_runtime_errors_are_not_swallowed(tiny_piscis, image, monkeypatch):
    def boom(x):
        raise RuntimeError("something else")

    monkeypatch.setattr(tiny_piscis, "forward_maps", boom)
    with pytest.raises(RuntimeError, match="something else"):
        detect(image, tiny_piscis)


def test_stack_without_offset_maps(tiny_piscis, image, monkeypatch):
    monkeypatch.setattr(tiny_piscis, "map_names", ("labels", "u", "v"))  # a model with no dy/dx maps
    det = detect(np.stack([image, image]), tiny_piscis, axes="zyx", threshold=0.05)
    spots = det.rethreshold(0.05)
    assert len(spots)
    assert (spots.y == np.round(spots.y)).all()


def test_count_agrees_with_the_table(tiny_piscis, image):
    det = detect(image, tiny_piscis, threshold=0.05)
    for t in (0.05, 0.3, 0.8):
        assert det.count(t) == len(det.rethreshold(t))
    stack = detect(np.stack([image, image]), tiny_piscis, axes="zyx", threshold=0.05)
    assert stack.count(0.3) == len(stack.rethreshold(0.3))


def test_multichannel_model_on_a_stack_reads_intensity_from_the_spot_plane():
    import torch

    from napari_spotdetect.core.models.base import ModelInfo
    from napari_spotdetect.core.models.piscis import PiscisModel
    from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet

    torch.manual_seed(2)  # a random net whose map has a few dozen components on this noise
    net = PiscisNet(PiscisConfig(in_channels=2, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    model = PiscisModel(net, ModelInfo(name="two", arch="piscis"), tile_size=(64, 64), device="cpu")
    rng = np.random.default_rng(0)
    czyx = rng.normal(100, 5, size=(2, 3, 48, 48)).astype(np.float32)
    czyx[0] += np.arange(3)[:, None, None] * 1000  # each plane of channel 0 has its own level
    det = detect(czyx, model, threshold=0.05, axes="czyx")
    spots = det.rethreshold(0.5)
    assert len(spots)
    z = spots.z.to_numpy().astype(int)
    np.testing.assert_array_less(np.abs(spots.intensity.to_numpy() - (100 + 1000 * z)), 50)


def test_progress_names_the_plane_of_each_tile_batch(tiny_piscis):
    from napari_spotdetect import detect as _detect

    img = np.random.default_rng(0).normal(100, 10, (2, 3, 64, 96)).astype(np.float32)
    seen = []
    _detect(img, tiny_piscis, axes="tzyx", batch_size=8, progress=seen.append)
    planes = [(p.plane, p.where) for p in seen if p.plane is not None]
    assert planes == [(k, {"t": k // 3, "z": k % 3}) for k in range(6)]
    assert {p.n_planes for p in seen} == {6} and seen[-1].done == seen[-1].total
