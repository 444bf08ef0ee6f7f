"""Adapting to a lab's convention from a region through the command line: calibrate, fine-tune on regions."""

from __future__ import annotations

import pytest

from napari_spotdetect import detect, load_model
from napari_spotdetect.cli import main
from napari_spotdetect.core.groundtruth.regions import inside

from .adapt_scenes import LEFT, RIGHT, f1_in, faint_spots_scene, write_image_and_spots


def _spots(image, model):
    return detect(image, model, keep_maps=False).spots[["y", "x"]].to_numpy()


def test_calibrate_from_one_region_carries_over_to_the_unseen_part(tmp_path, capsys):
    img, truth = faint_spots_scene()
    mine = truth[inside(truth, LEFT)]  # every spot in the left square, nothing marked outside it
    assert 20 <= len(mine) <= 60  # a few dozen clicks
    write_image_and_spots(tmp_path / "imgs", "cells", img, mine)
    regions = tmp_path / "regions.csv"
    regions.write_text("image,y0,x0,y1,x1\ncells.npy,0,0,128,128\n")
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--images", str(tmp_path / "imgs"), "--regions", str(regions), "--out", str(out),
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "F1 in the 1 region(s)" in err

    start, calibrated = load_model("default", device="cpu"), load_model(out, device="cpu")
    assert calibrated.default_threshold < start.default_threshold  # this lab counts the faint spots too
    assert calibrated.info.card["calibration"]["n_spots"] == len(mine)
    before, after = f1_in(_spots(img, start), truth, RIGHT), f1_in(_spots(img, calibrated), truth, RIGHT)
    assert after >= before + 0.04, (before, after)

    # without the region, every detection in the unmarked right half counts as a false one: outside a region
    # is unknown, not "no spot"
    whole = tmp_path / "whole.pt"
    assert main(["calibrate", "--images", str(tmp_path / "imgs"), "--out", str(whole), "--threads", "1"]) == 0
    f1_whole = load_model(whole, device="cpu").info.card["calibration"]["f1_in_regions"]
    assert f1_whole < calibrated.info.card["calibration"]["f1_in_regions"] - 0.2


def test_regions_saved_by_napari_as_csv_are_read(tmp_path):
    img, truth = faint_spots_scene()
    write_image_and_spots(tmp_path / "imgs", "cells", img, truth[inside(truth, LEFT)])
    shapes = tmp_path / "shapes.csv"  # what napari's "Save selected layer" writes for a Shapes layer
    shapes.write_text("index,shape-type,vertex-index,axis-0,axis-1\n0,rectangle,0,0.0,0.0\n"
                      "0,rectangle,1,0.0,127.0\n0,rectangle,2,127.0,127.0\n0,rectangle,3,127.0,0.0\n")
    out = tmp_path / "c.pt"
    assert main(["calibrate", "--images", str(tmp_path / "imgs"), "--regions", str(shapes), "--out", str(out),
                 "--threads", "1"]) == 0
    assert load_model(out, device="cpu").info.card["calibration"]["n_regions"] == 1


@pytest.mark.parametrize("text, words", [("a,b\n1,2\n", "not regions"), ("y0,x0,y1,x1\n1,2,three,4\n", "not a region"),
                                         ("image,y0,x0,y1,x1\nother.npy,0,0,50,50\n", "names an image")])
def test_bad_regions_files_are_refused_with_the_fix(tmp_path, capsys, text, words):
    img, truth = faint_spots_scene()
    write_image_and_spots(tmp_path / "imgs", "cells", img, truth)
    (tmp_path / "r.csv").write_text(text)
    assert main(["calibrate", "--images", str(tmp_path / "imgs"), "--regions", str(tmp_path / "r.csv"),
                 "--out", str(tmp_path / "c.pt")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.slow
def test_a_crop_that_collapses_a_naive_finetune_ends_no_worse_as_a_region(tmp_path, capsys):
    """The issue's collapse: a small crop, away from the image's bright part, fed as an image of its own (its own
    percentiles) and judged on its own training pixels, teaches a spot brightness the image lacks; the same
    clicks as a region of the whole image end at or above the start on the rest of it. Since the bright part no
    longer sets the image's scale (core/models/bright_regions.py), even the naive way no longer collapses here."""
    from napari_spotdetect.core.training.finetuning import finetune_config
    from napari_spotdetect.core.training.train import Trainer

    from .adapt_scenes import CROP, RIGHT_HALF, bright_corner_scene

    img, truth = bright_corner_scene()
    mine = truth[inside(truth, CROP)]
    start = load_model("default", device="cpu")
    y0, x0, y1, x1 = CROP

    def naive_way(model):  # the crop as an image of its own, best epoch and threshold judged on its training pixels
        return Trainer(model, [(img[y0:y1, x0:x1], mine - [y0, x0])], None,
                       finetune_config(epochs=3, steps_per_epoch=8)).fit().model

    rule_off = start.with_bright_region_rule(False)  # the whole-image scale set by the bright corner, as before
    old_before = f1_in(_spots(img, rule_off), truth, RIGHT_HALF)
    trained_off = naive_way(rule_off)
    assert not trained_off.ignore_bright_regions  # a fine-tune keeps the normalisation it started from
    collapsed = f1_in(_spots(img, trained_off), truth, RIGHT_HALF)
    assert collapsed < old_before - 0.2, (old_before, collapsed)
    before = f1_in(_spots(img, start), truth, RIGHT_HALF)
    assert before >= old_before and f1_in(_spots(img, naive_way(start)), truth, RIGHT_HALF) >= before - 0.05

    write_image_and_spots(tmp_path / "imgs", "tissue", img, mine)
    (tmp_path / "regions.csv").write_text("y0,x0,y1,x1\n" + ",".join(str(v) for v in CROP) + "\n")
    out = tmp_path / "tuned.pt"
    capsys.readouterr()
    assert main(["finetune", "--images", str(tmp_path / "imgs"), "--regions", str(tmp_path / "regions.csv"),
                 "--fast", "--out", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "validation F1" in err and "the starting model at its own threshold" in err
    tuned = load_model(out, device="cpu")
    card = tuned.info.card
    assert card["train_config"]["freeze_encoder"] and card["training_data"]["regions"].endswith("regions.csv")
    assert card["n_train_images"] == 1 and card["validation_data"] == "given"  # a strip of the region held out
    after = f1_in(_spots(img, tuned), truth, RIGHT_HALF)
    assert after >= before - 1e-9, (before, after)  # never worse on the unseen half (here: much better)
