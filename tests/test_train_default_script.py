"""The bundled model's training script, end to end in a tiny configuration: it trains on real and synthetic
images, writes a model file, and that file loads with its card (data, licences, normalisation, threshold,
real validation scores)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT, SHARED, need_shared


@pytest.mark.slow
def test_training_script_tiny_run_writes_a_loadable_model_with_its_card(tmp_path):
    real = need_shared(SHARED / "data" / "real")
    out = tmp_path / "tiny.pt"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_default_model.py"), "--tiny", "--threads", "1",
           "--init", "default", "--real", str(real), "--n-realistic", "4", "--extras", "saturated", "bright_tissue",
           "--normalization", "percentile",
           "--real-report", str(real), "--work", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]

    from napari_spotdetect import load_model
    from napari_spotdetect.core.models.model_card import card_lines

    model = load_model(out, device="cpu")
    card = model.info.card
    assert model.adjustment == "percentile"
    real_data = card["training_data"]["real"]
    assert set(real_data["sources"]) == {"pia_spots", "piscis_panels"}
    assert card["training_data"]["realistic_synthetic"]["extras"] == ["saturated", "bright_tissue"]
    assert all(d["licence"] == "MIT" for d in real_data["sources"].values())
    assert card["threshold_calibration"]["threshold"] == pytest.approx(model.default_threshold)
    floor = card["contrast_floor"]  # chosen on real train images, stored for detection to use
    assert model.default_contrast_floor == pytest.approx(floor["value"])
    assert f"{floor['value']:.2f}" in floor["f1_integral_by_floor"]
    assert "train split only" in floor["chosen_on"] and "synthetic" in floor["chosen_on"]
    rv = card["real_val"]["sources"]
    assert {"pia_spots", "insta_rca", "airlocalize", "piscis_panels", "spotmax_yeast", "mean"} <= set(rv)
    assert 0.0 <= rv["mean"]["f1_integral"] <= 1.0
    assert len(card["stages"]) == len(load_model("default").info.card["stages"]) + 1
    text = "\n".join(card_lines(card))
    assert "pia_spots" in text and "MIT" in text and "percentile" in text and "contrast floor" in text.lower()
