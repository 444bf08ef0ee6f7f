"""Bad input gets an error that names the problem and the fix, never a traceback from deep in torch."""

import numpy as np
import pytest
import torch

from napari_spotdetect import SpotDetectError, detect, load_model
from napari_spotdetect.core.errors import ModelFileError


def _assert_helpful(err, *words):
    msg = str(err.value)
    assert "Fix:" in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg


@pytest.mark.parametrize("image,words", [
    (np.zeros(10, np.float32), ["dimensions"]),
    (np.zeros((2,) * 6, np.float32), ["dimensions"]),
    (np.zeros((64, 64, 3), np.uint8), ["RGB"]),
    (np.zeros((64, 64), np.complex64), ["complex"]),
    (np.zeros((64, 64), bool), ["boolean"]),
    (np.zeros((0, 64), np.float32), ["empty"]),
    (np.zeros((1, 1), np.float32), ["1 x 1"]),
    (np.array([["a", "b"], ["c", "d"]]), ["dtype"]),
    (None, ["no image"]),
])
def test_bad_images(tiny_piscis, image, words):
    with pytest.raises(SpotDetectError) as err:
        detect(image, tiny_piscis)
    _assert_helpful(err, *words)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels(tiny_piscis, bad):
    img = np.ones((40, 40), np.float32)
    img[3, 4] = bad
    with pytest.raises(SpotDetectError) as err:
        detect(img, tiny_piscis)
    _assert_helpful(err, "1 NaN or infinite")


def test_non_finite_pixels_name_the_plane(tiny_piscis):
    img = np.ones((3, 40, 40), np.float32)
    img[2, 0, 0] = np.nan
    with pytest.raises(SpotDetectError) as err:
        detect(img, tiny_piscis, axes="tyx")
    _assert_helpful(err, "'t': 2")


@pytest.mark.parametrize("kwargs,words", [
    ({"axes": "zyx"}, ["3 dimensions"]),
    ({"axes": "yq"}, ["not valid"]),
    ({"tile_size": (60, 64)}, ["multiple of 8"]),
    ({"threshold": float("nan")}, ["not a number"]),
    ({"overlap": 0.7}, ["overlap"]),
    ({"device": "tpu"}, ["device"]),
])
def test_bad_settings(tiny_piscis, kwargs, words):
    with pytest.raises(SpotDetectError) as err:
        detect(np.ones((40, 40), np.float32), tiny_piscis, **kwargs)
    _assert_helpful(err, *words)


def test_rethreshold_below_floor_is_explained(tiny_piscis):
    det = detect(np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32), tiny_piscis, threshold=0.5)
    with pytest.raises(SpotDetectError) as err:
        det.rethreshold(0.001)
    _assert_helpful(err, "run detection again")


def test_missing_path():
    with pytest.raises(ModelFileError) as err:
        load_model("/nonexistent/model.pt")
    _assert_helpful(err, "does not exist")


def test_empty_file(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "m.pt")
    _assert_helpful(err, "empty")


def test_text_file_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, I am not a model\n" * 10)
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "notes.txt")
    _assert_helpful(err, "not a model file")


def test_truncated_model_file(tmp_path, piscis_fixture_file):
    data = piscis_fixture_file.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "cut.pt")
    _assert_helpful(err, "truncated or corrupt")


def test_unknown_torch_content(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "other.pt")
    _assert_helpful(err, "not a model we know")


class Evil:
    """Stands for any pickled object: weights_only loading must refuse to build it."""


def test_pickled_code_is_refused(tmp_path):
    torch.save({"obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "evil.pt")


def test_piscis_file_with_wrong_shapes(tmp_path, piscis_fixture_file):
    sd = torch.load(piscis_fixture_file, weights_only=True)
    sd["fpn.output.conv.2.weight"] = torch.zeros(5, 32, 1, 1)
    del sd["fpn.output.conv.2.bias"]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "bad.pt")
    _assert_helpful(err, "1 missing keys", "shape mismatches")


def test_flax_msgpack_file_is_recognised(tmp_path):
    (tmp_path / "20230905").write_bytes(bytes([0x84, 0xA9]) + b"variables" + bytes(40))
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "20230905")
    _assert_helpful(err, "legacy piscis")


def test_folder_that_is_not_a_savedmodel(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path)
    _assert_helpful(err, "SavedModel")


def test_converted_flax_state_without_bn_counters_loads_as_legacy(tmp_path, piscis_fixture_file):
    sd = torch.load(piscis_fixture_file, weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "converted.pt")
    m = load_model(tmp_path / "converted.pt")
    assert m.info.variant == "legacy" and m.default_threshold == 1.0
    assert load_model(tmp_path / "converted.pt", variant="current").default_threshold == 0.5
