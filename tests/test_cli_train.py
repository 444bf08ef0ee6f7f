import argparse

import numpy as np
import pytest

from napari_spotdetect.cli_train import add_train_parsers
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.models.zoo import load_model
from napari_spotdetect.core.training.synthetic import synthetic_image


def _parse(argv):
    ap = argparse.ArgumentParser()
    add_train_parsers(ap.add_subparsers(dest="command", required=True))
    return ap.parse_args(argv)


@pytest.mark.slow
def test_train_synthetic_then_finetune_from_folder(tmp_path):
    out = tmp_path / "m.pt"
    args = _parse(["train", "--synthetic", "3", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
                   "--batch-size", "2", "--crop", "32", "--widths", "8", "16", "32", "64", "--depths", "1", "1", "1",
                   "1", "--lr", "0.01", "--threads", "1"])
    assert args.func(args) == 0
    m = load_model(out, device="cpu")
    assert m.info.card["training_data"]["synthetic"]["n_images"] == 3
    assert (tmp_path / "m_checkpoints" / "m_last.pt").exists()

    img, pts = synthetic_image((64, 64), n_spots=6, seed=4)
    np.save(tmp_path / "one.npy", img)
    (tmp_path / "one.csv").write_text("y,x\n" + "\n".join(f"{y},{x}" for y, x in pts))
    ft = tmp_path / "ft.pt"
    args = _parse(["finetune", "--model", str(out), "--images", str(tmp_path), "--out", str(ft), "--epochs", "1",
                   "--steps-per-epoch", "1", "--batch-size", "1", "--crop", "32", "--half", "--ema", "0.9",
                   "--select", "f1_integral"])
    assert args.func(args) == 0
    m2 = load_model(ft, device="cpu")
    assert m2.info.card["mode"] == "finetune" and m2.info.card["base_model"] == "m"
    assert m2.info.card["train_config"]["ema"] == 0.9 and m2.info.card["train_config"]["select"] == "f1_integral"


def test_train_without_data_is_explained(tmp_path):
    args = _parse(["train", "--out", str(tmp_path / "m.pt")])
    with pytest.raises(SpotDetectError, match="--synthetic"):
        args.func(args)
