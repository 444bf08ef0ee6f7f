"""``benchmarks/train_side.py``: it scores only the images a model's network held out, and refuses to compare
models that held out different ones."""

from __future__ import annotations

import sys

import pytest

from .conftest import ROOT, SHARED, need_shared

sys.path.insert(0, str(ROOT / "benchmarks"))

import train_side


def _with_held_out(model, held: list):
    card = dict(model.info.card or {})
    card["training_data"] = {**(card.get("training_data") or {}), "real": {"held_out_for_validation": held}}
    model.info.card = card
    return model


def test_models_that_held_out_different_images_are_not_compared(tmp_path):
    from napari_spotdetect import load_model
    from napari_spotdetect.core.weights.native import save_model

    a = _with_held_out(load_model("default"), ["pia_spots/a", "piscis_panels/b"])
    b = _with_held_out(load_model("default"), ["pia_spots/a"])
    pa, pb = save_model(a, tmp_path / "a.pt", card=a.info.card), save_model(b, tmp_path / "b.pt", card=b.info.card)
    assert train_side.held_out(load_model(pa)) == {"pia_spots/a", "piscis_panels/b"}
    with pytest.raises(SystemExit, match="held out different real train images"):
        train_side.main(["--model", str(pa), "--model", str(pb), "--out", str(tmp_path / "o.json")])
    none = _with_held_out(load_model("default"), [])
    pn = save_model(none, tmp_path / "n.pt", card=none.info.card)
    with pytest.raises(SystemExit, match="lists no held-out"):
        train_side.main(["--model", str(pn), "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


def test_the_fitting_images_are_the_held_out_train_images_and_the_synthetic_ones():
    real = need_shared(SHARED / "data" / "real")
    from napari_spotdetect import load_model

    held = train_side.held_out(load_model("default"))
    assert held, "the bundled model's card lists the real train images it held out"
    images = train_side.fitting_images(real, held, 2)
    by_source = {}
    for im in images:
        by_source.setdefault(im.source, []).append(im)
    assert {f"{im.source}/{im.stem}" for s in ("pia_spots", "piscis_panels") for im in by_source.get(s, [])} == held
    assert len(by_source["synthetic"]) == len(by_source["realistic"]) == 2
    assert sum(len(v) for v in by_source.values()) == len(held) + 4
