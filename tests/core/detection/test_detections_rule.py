"""One rule for a detection's two live settings (issue 23): ``rethreshold`` asks and leaves the detection as
it is, ``set_threshold`` and ``set_contrast_floor`` change it and return the new spots."""

import numpy as np

from napari_spotdetect import load_model
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.training.synthetic import spots_in_texture


def test_asking_never_changes_and_setting_always_returns():
    img, _ = spots_in_texture(shape=(128, 128), n_bright=10, n_dim=80)
    det = detect(img, load_model("default"), contrast_floor=0.0, contrast=True)
    t0, before = det.threshold, det.spots
    asked = det.rethreshold(t0, contrast_floor=0.5)
    assert len(asked) < len(before) and det.contrast_floor == 0.0 and len(det.spots) == len(before)
    assert det.count(t0, contrast_floor=0.5) == len(asked)
    got = det.set_contrast_floor(0.5)  # changes the detection and returns its spots, as set_threshold does
    np.testing.assert_array_equal(got[["y", "x"]].to_numpy(), det.spots[["y", "x"]].to_numpy())
    np.testing.assert_array_equal(got[["y", "x"]].to_numpy(), asked[["y", "x"]].to_numpy())
    got = det.set_threshold(0.8)
    assert len(got) == len(det.spots) <= len(asked) and det.provenance["threshold"] == 0.8
