"""The contrast floor: candidates far dimmer than where their image's spots begin are dropped, live."""

import numpy as np
import pytest

from napari_spotdetect import load_model
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.groundtruth.metrics import match_spots
from napari_spotdetect.core.training.synthetic import spots_in_texture
from napari_spotdetect.core.weights.native import save_model

#: a floor that drops dim texture (what the insta_rca crowd did not count; see the README)
FLOOR = 0.35


@pytest.fixture(scope="module")
def scene():
    return spots_in_texture()


@pytest.fixture(scope="module")
def bundled():
    return load_model("default")


def test_a_floor_keeps_the_bright_spots_and_drops_the_texture(scene, bundled):
    img, bright = scene
    off = detect(img, bundled, contrast_floor=0.0).spots
    on = detect(img, bundled, contrast_floor=FLOOR).spots
    m_on = match_spots(on[["y", "x"]].to_numpy(), bright, 2.0)
    assert m_on.recall >= 0.95  # every bright spot survives the floor
    assert len(off) > 1.5 * len(bright)  # without a floor, much of the texture is called
    assert m_on.precision > match_spots(off[["y", "x"]].to_numpy(), bright, 2.0).precision + 0.3
    assert {"contrast", "relative_contrast"} <= set(on.columns)
    assert on["relative_contrast"].min() >= FLOOR


def test_the_bundled_model_carries_the_floor_its_rule_chose(bundled):
    entry = bundled.info.card["contrast_floor"]  # chosen on real train + synthetic images, never on val
    table = {float(k): v for k, v in entry["f1_integral_by_floor"].items()}
    assert bundled.default_contrast_floor == entry["value"] == max(table, key=table.get)
    assert "train split only" in entry["chosen_on"]


def test_moving_the_floor_is_detecting_with_it(scene, bundled):
    img, _ = scene
    det = detect(img, bundled, contrast_floor=0.0, contrast=True)
    for k in (0.2, 0.5, 0.0):
        det.set_contrast_floor(k)
        fresh = detect(img, bundled, contrast_floor=k).spots
        live = det.spots
        assert len(live) == len(fresh) == det.count(det.threshold)
        np.testing.assert_allclose(live[["y", "x"]].to_numpy(), fresh[["y", "x"]].to_numpy())
        assert det.provenance["contrast_floor"] == k


def test_piscis_and_deepspot_style_models_keep_every_candidate(tiny_piscis, scene):
    img, _ = scene
    assert tiny_piscis.default_contrast_floor == 0.0  # reference behaviour (parity) unless asked
    det = detect(img, tiny_piscis)
    assert det.contrast_floor == 0.0 and det.provenance["contrast_floor"] == 0.0


def test_the_floor_travels_in_the_model_file(tmp_path, bundled):
    path = save_model(bundled, tmp_path / "m.pt")
    assert load_model(path).default_contrast_floor == bundled.default_contrast_floor


def test_contrast_is_only_computed_when_a_floor_needs_it_or_it_is_asked_for(scene, bundled, tiny_piscis):
    img, _ = scene
    plain = detect(img, tiny_piscis)  # floor 0: no second pass over the plane
    assert not plain.has_contrast and "contrast" not in plain.spots.columns
    with pytest.raises(SpotDetectError, match="no contrast features") as err:
        plain.set_contrast_floor(0.3)
    assert "contrast=True" in err.value.fix
    plain.set_contrast_floor(0.0)  # nothing to filter: fine
    assert detect(img, tiny_piscis, contrast=True).has_contrast
    with pytest.raises(SpotDetectError, match="needs the contrast features"):
        detect(img, bundled, contrast_floor=0.3, contrast=False)


def test_z_stacks_say_the_floor_does_not_apply(scene, bundled):
    img, _ = scene
    det = detect(np.stack([img, img]), bundled, axes="zyx")
    assert not det.has_contrast and det.contrast_floor == 0.0
    assert "not applied" in det.provenance["contrast_floor"]


@pytest.mark.parametrize("bad", [-0.1, 3.0, float("nan"), "high"])
def test_a_bad_floor_is_explained(scene, bundled, bad):
    with pytest.raises(SpotDetectError, match="Contrast floor") as err:
        detect(scene[0], bundled, contrast_floor=bad)
    assert "0.35" in err.value.fix or "0 for none" in str(err.value)
