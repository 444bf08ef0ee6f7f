"""One value carries a detection's settings from every face: checked once when made, the same spots however given."""

import dataclasses
import inspect

import numpy as np
import pytest

from napari_spotdetect import detect, detect_iter
from napari_spotdetect.core.detection.options import OPTION_NAMES, DetectOptions
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.training.synthetic import synthetic_image


@pytest.mark.parametrize("bad, message", [
    ({"threshold": "high"}, "not a number"),
    ({"tile_size": 100.5}, "whole number of pixels"),
    ({"overlap": 0.6}, "out of range"),
    ({"batch_size": 0}, "Batch size 0"),
    ({"min_distance": -2}, "Min distance"),
    ({"speed": "warp"}, "Unknown speed"),
    ({"contrast_floor": 5}, "outside 0 to 2"),
    ({"contrast": False, "contrast_floor": 0.3}, "needs the contrast features"),
    ({"axes": "yxq"}, "not valid"),
    ({"percentiles": (99, 1)}, "low < high"),
])
def test_bad_settings_are_refused_when_the_options_are_made(bad, message):
    with pytest.raises(SpotDetectError, match=message) as err:
        DetectOptions(**bad)
    assert "Fix:" in str(err.value)


def test_options_are_frozen_and_normalised():
    opts = DetectOptions(tile_size=128, axes=" ZYX ", percentiles=[2, 99], speed="FAST")
    assert opts.tile_size == (128, 128) and opts.axes == "zyx" and opts.percentiles == (2.0, 99.0)
    assert opts.speed == "fast"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.threshold = 0.3
    assert opts.replace(min_distance=3, threshold=None).min_distance == 3  # None keeps the value
    assert DetectOptions(tile_size=0).tile_size is None  # 0: the model's own, as the panel shows it


def test_detect_and_detect_iter_take_every_option_as_a_named_keyword():
    """A real signature (no **kwargs), in step with the dataclass: a new option cannot be forgotten in one."""
    for fn in (detect, detect_iter):
        params = inspect.signature(fn).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert set(OPTION_NAMES) <= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def test_options_keywords_and_a_positional_threshold_give_the_same_spots(tiny_piscis):
    img = synthetic_image((96, 112), n_spots=20, seed=4)[0]
    by_keywords = detect(img, tiny_piscis, threshold=0.05, min_distance=2).spots
    by_options = detect(img, tiny_piscis, DetectOptions(threshold=0.05, min_distance=2)).spots
    positional = detect(img, tiny_piscis, 0.05, min_distance=2).spots  # the third argument, as before
    overridden = detect(img, tiny_piscis, DetectOptions(threshold=0.9, min_distance=2), threshold=0.05).spots
    for other in (by_options, positional, overridden):
        np.testing.assert_array_equal(by_keywords[["y", "x", "score"]].to_numpy(),
                                      other[["y", "x", "score"]].to_numpy())
    assert len(by_keywords)


def test_what_depends_on_the_model_is_checked_against_it(tiny_piscis):
    with pytest.raises(SpotDetectError, match="score range"):
        DetectOptions(threshold=50.0).check_for(tiny_piscis)
    with pytest.raises(SpotDetectError, match="does not fit this model"):
        DetectOptions(tile_size=33).check_for(tiny_piscis)
    with pytest.raises(SpotDetectError, match="not detection options"):
        detect(np.zeros((64, 64), np.float32), tiny_piscis, {"threshold": 0.5})
