"""Real-data plumbing: whole-image percentile normalisation, realistic synthetic images, the annotated-folder
reader, and per-source scoring."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from benchmarks.real_data import AnnotatedImage, load_annotated, matched_by_score, score_sources, separation

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.errors import ModelFileError, SpotDetectError
from napari_spotdetect.core.models.piscis import PiscisModel, percentile_normalize
from napari_spotdetect.core.training.synthetic import EXTRAS, INGREDIENTS, realistic_dataset, realistic_image

from .conftest import SHARED, need_shared

REAL = SHARED / "data" / "real"


def test_percentile_normalize_maps_percentiles_to_0_and_1_per_channel():
    rng = np.random.default_rng(0)
    img = np.stack([rng.normal(100, 10, (64, 64)), rng.normal(5000, 300, (64, 64))]).astype(np.float32)
    out = percentile_normalize(img)
    for ch in out:
        lo, hi = np.percentile(ch, (1, 99.8))
        assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)
    flat = percentile_normalize(np.full((32, 32), 7, np.uint16))
    assert np.isfinite(flat).all() and (flat == 0).all()
    sparse = np.zeros((64, 64), np.float32)
    sparse[10, 10] = 50.0  # 99.8 % of pixels equal: fall back to min-max rather than divide by zero
    assert percentile_normalize(sparse).max() == pytest.approx(1.0)


def _percentile_model(tiny_piscis):
    m = copy.copy(tiny_piscis)
    m.adjustment = "percentile"
    return m


def test_percentile_model_finds_the_same_spots_whatever_the_gain_and_offset(tiny_piscis):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    model = _percentile_model(tiny_piscis)
    img, _ = synthetic_image((96, 128), n_spots=20, seed=1)
    a = detect(img, model, threshold=0.05, keep_maps=False).spots
    b = detect(img * 7.0 + 300.0, model, threshold=0.05, keep_maps=False).spots
    assert len(a) > 0
    np.testing.assert_allclose(a[["y", "x", "score"]].to_numpy(), b[["y", "x", "score"]].to_numpy(), atol=1e-4)
    # and per-tile standardisation is not the same input: the normalisations differ
    tile = img[None, None, :64, :64]
    assert not np.allclose(model.normalize_tiles(tile, model.plane_statistics(img[None])),
                           tiny_piscis.normalize_tiles(tile))


def test_percentile_model_reads_a_lazy_plane_tile_by_tile_with_the_same_spots(tiny_piscis, monkeypatch):
    import dask.array as da

    from napari_spotdetect.core.models import piscis as piscis_mod
    from napari_spotdetect.core.training.synthetic import synthetic_image

    model = _percentile_model(tiny_piscis)
    monkeypatch.setattr(piscis_mod, "PERCENTILE_SAMPLE", 2000)  # force the strided subsample on a small image
    img, _ = synthetic_image((160, 192), n_spots=25, seed=2)
    a = detect(img, model, threshold=0.05).spots
    lazy = da.from_array(img, chunks=(40, 192))
    b = detect(lazy, model, threshold=0.05).spots
    np.testing.assert_allclose(a[["y", "x", "score"]].to_numpy(), b[["y", "x", "score"]].to_numpy(), atol=1e-5)


def test_unknown_normalisation_is_refused(tiny_piscis):
    with pytest.raises(ModelFileError, match="normalisation"):
        PiscisModel(tiny_piscis.net, copy.copy(tiny_piscis.info), adjustment="bogus")


def test_percentile_normalisation_survives_save_and_load(tiny_piscis, tmp_path):
    from napari_spotdetect import load_model
    from napari_spotdetect.core.weights.native import save_model

    path = save_model(_percentile_model(tiny_piscis), tmp_path / "m.pt")
    assert load_model(path).adjustment == "percentile"


def test_trainer_switches_a_model_to_percentile_inputs(tiny_piscis):
    from napari_spotdetect.core.training.train import TrainConfig, Trainer

    pairs = realistic_dataset(3, seed=4, shape=(64, 64))
    cfg = TrainConfig.finetune(epochs=1, steps_per_epoch=2, crop=32, batch_size=2, normalization="percentile",
                               bn_batches=0)
    tr = Trainer(tiny_piscis, pairs[:2], pairs[2:], cfg)
    prepared = tr.train[0][0]
    np.testing.assert_allclose(prepared, percentile_normalize(pairs[0][0]), atol=1e-6)
    assert tr.recipe.intensity_range == (0.7, 1.4)  # the input scale means something now
    res = tr.fit()
    assert res.model.adjustment == "percentile"
    assert tiny_piscis.adjustment == "standardize"  # the model passed in is never changed
    with pytest.raises(SpotDetectError, match="normalisation"):
        Trainer(tiny_piscis, pairs[:2], pairs[2:], TrainConfig.finetune(normalization="max"))


def test_realistic_images_are_reproducible_and_their_spots_lie_inside():
    a, pa = realistic_image((96, 128), seed=3)
    b, pb = realistic_image((96, 128), seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    assert a.dtype == np.float32 and a.shape == (96, 128) and np.isfinite(a).all()
    for img, pts in realistic_dataset(12, seed=5, shape=(64, 64)):
        assert ((pts >= 0) & (pts <= np.array(img.shape) - 1)).all()
    with pytest.raises(SpotDetectError, match="ingredient"):
        realistic_image(without=("glitter",))


def test_ingredients_can_be_left_out():
    def rendered(without):  # 8-bit renders: whole numbers from 0 to 255
        return sum(bool(np.all(img == np.round(img)) and img.max() <= 255)
                   for img, _ in realistic_dataset(24, seed=7, shape=(48, 48), without=without))

    assert rendered(()) >= 3
    assert rendered(("render8",)) == 0
    # without negatives and clusters, spot-free images have no hot pixels: nothing far above the background
    hot = [img.max() / np.median(img) for img, pts in realistic_dataset(30, seed=9, shape=(48, 48),
                                                                          without=INGREDIENTS) if len(pts) == 0]
    assert all(h < 3 for h in hot)


def test_extras_add_saturated_spots_and_bright_tissue_without_changing_the_other_images():
    plain = realistic_dataset(16, seed=11, shape=(96, 96))
    extra = realistic_dataset(16, seed=11, shape=(96, 96), extras=EXTRAS)
    same = [np.array_equal(a, b) and np.array_equal(pa, pb) for (a, pa), (b, pb) in zip(plain, extra)]
    assert 2 <= sum(same) <= 10  # about a quarter draw neither extra, and those are the images without extras
    flat_tops = tissue = 0
    for (a, pa), (b, pb) in zip(plain, extra):
        if len(pb) == 0 or np.array_equal(a, b):
            continue
        r = np.rint(pb).astype(int)
        flat_tops += int(np.sum(b[r[:, 0], r[:, 1]] >= b.max()))  # spot centres at the full well
        tissue += len(pb) > len(pa)  # spots added on the tissue
        assert ((pb >= 0) & (pb <= np.array(b.shape) - 1)).all()
    assert flat_tops >= 3 and tissue >= 2
    with pytest.raises(SpotDetectError, match="extra"):
        realistic_image(extras=("glitter",))


def test_score_sources_perfect_and_poor_detectors():
    rng = np.random.default_rng(0)
    ims = []
    for src in ("a", "a", "b"):
        pts = rng.uniform(5, 60, (20, 2))
        ims.append(AnnotatedImage(src, f"{src}{len(ims)}", "val", np.zeros((64, 64)), pts))
    perfect = [(im.spots, np.full(len(im.spots), 0.9)) for im in ims]
    res = score_sources(perfect, ims, 0.5)
    assert res["mean"]["f1"] == 1.0 and res["a"]["count_ratio"] == 1.0 and res["a"]["images"] == 2
    assert res["mean"]["f1_integral"] > 0.95
    # true spots at 0.9 plus as many false ones at 0.3: the default threshold 0.1 keeps both; 0.5 would not
    noisy = [(np.concatenate([im.spots, im.spots + 20]), np.r_[np.full(20, 0.9), np.full(20, 0.3)]) for im in ims]
    res = score_sources(noisy, ims, 0.1)
    assert res["a"]["count_ratio"] == 2.0 and res["a"]["precision"] < 0.6
    assert 0.3 <= res["a"]["best_threshold"] < 0.9 and res["a"]["f1_at_best"] == 1.0
    assert res["a"]["separation"] == 1.0


def test_separation_by_score_lets_the_stronger_of_two_near_candidates_take_the_spot():
    """By distance alone, a weak candidate 0.3 px from an annotation takes it from a strong one 1.5 px away, and
    both count against the ranking; matched strongest first, the strong one is the true one."""
    spots = np.array([[10.0, 10.0], [30.0, 30.0], [50.0, 20.0]])
    im = AnnotatedImage("a", "a0", "val", np.zeros((64, 64)), spots)
    coords = np.concatenate([spots + [1.5, 0.0], spots + [0.0, 0.3], [[40.0, 50.0]]])
    scores = np.r_[0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.5]
    cands = [(coords, scores)]
    assert separation(cands, [im]) < 0.3
    assert separation(cands, [im], by_score=True) == 1.0
    assert matched_by_score(coords, scores, spots, 3.0).tolist() == [True] * 3 + [False] * 4
    assert score_sources(cands, [im], 0.5)["a"]["separation_by_score"] == 1.0


def test_real_folder_reader_matches_the_data_readme():
    root = need_shared(REAL)
    train, val = load_annotated(root, split="train"), load_annotated(root, split="val")
    assert (len(train), sum(len(im.spots) for im in train)) == (82, 9488)
    assert (len(val), sum(len(im.spots) for im in val)) == (27, 3145)
    vol = [im for im in val if im.image.ndim == 3]
    assert len(vol) == 1 and vol[0].axes == "zyx" and vol[0].spots.shape[1] == 3
    assert {im.licence for im in train} == {"MIT"}
    for im in val[:5]:
        assert ((im.spots >= -0.5) & (im.spots <= np.array(im.image.shape) - 0.5)).all()


def test_real_folder_reader_caps_images_per_source():
    root = need_shared(REAL)
    ims = load_annotated(root, split="val", per_source=1)
    assert sorted(im.source for im in ims) == sorted({im.source for im in load_annotated(root, split="val")})


def test_localisation_ceiling_is_what_position_errors_alone_cost():
    from benchmarks.real_data import localisation_ceiling

    from napari_spotdetect.core.groundtruth.metrics import f1_integral

    rng = np.random.default_rng(1)
    truth = rng.uniform(5, 200, (200, 2))
    exact = localisation_ceiling(truth.copy(), truth)
    assert exact == pytest.approx(1.0)
    # half the spots found 0.86 px off, the other half missed: the ceiling is that of all 200 found 0.86 px off,
    # far above the F1 integral of what was actually found
    found = truth[:100] + np.array([0.5, 0.7])
    ceiling = localisation_ceiling(found, truth)
    assert ceiling == pytest.approx(f1_integral(truth + np.array([0.5, 0.7]), truth), abs=0.01)
    assert ceiling > f1_integral(found, truth) + 0.2
