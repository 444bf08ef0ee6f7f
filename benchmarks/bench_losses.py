"""Train the same small Piscis network with each loss the paper compares, for the same budget, and score it.

    PYTHONPATH=src python benchmarks/bench_losses.py [--steps 150] [--threads 1]

Same architecture, data (synthetic kind "train"), seed, optimiser and number of steps for SmoothF1, Dice,
weighted cross entropy and weighted focal (each + 0.25 x masked L2, paper 4.2.7-4.2.10). Each model's
threshold is tuned on the validation images by the Trainer; F1 (1 px) and the F1 integral are then
measured on held-out test images. Prints a table; writes benchmarks/results/losses.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.io.spots_io import atomic_write_text
from napari_spotdetect.core.models.piscis_net import PiscisConfig
from napari_spotdetect.core.training.synthetic import synthetic_dataset
from napari_spotdetect.core.training.train import TrainConfig, Trainer

LOSSES = ("smoothf1", "dice", "ce", "focal")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps per loss")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "losses.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    arch = PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    train = synthetic_dataset(60, "train", seed=101)
    val = synthetic_dataset(4, "train", seed=102, shape=(256, 256))
    test = synthetic_dataset(10, "train", seed=103, shape=(256, 256))
    epochs = 5
    rows = []
    for loss in LOSSES:
        cfg = TrainConfig(epochs=epochs, steps_per_epoch=max(1, a.steps // epochs), batch_size=4, crop=96, loss=loss,
                          optimizer="adam", lr=2e-3, weight_decay=0.0, warmup_fraction=0.05, decay_fraction=0.4,
                          decay_steps=2, seed=a.seed)
        t0 = time.perf_counter()
        res = Trainer(arch, train, val, cfg).fit()
        secs = time.perf_counter() - t0
        per = [evaluate(detect(img, res.model, keep_maps=False).spots[["y", "x"]].to_numpy(), gt) for img, gt in test]
        row = {"loss": loss, "train_seconds": round(secs, 1), "threshold": res.model.default_threshold,
               **{k: float(np.mean([m[k] for m in per])) for k in ("precision", "recall", "f1", "f1_integral")}}
        rows.append(row)
        print(f"{loss:9s} F1 {row['f1']:.3f}  F1-integral {row['f1_integral']:.3f}  P {row['precision']:.3f}  "
              f"R {row['recall']:.3f}  thr {row['threshold']:.2f}  ({secs:.0f} s)", flush=True)
    best = max(rows, key=lambda r: r["f1"])["loss"]
    print(f"best: {best}  (paper's claim: SmoothF1 > Dice > CE/focal; "
          f"{'reproduced' if best == 'smoothf1' else 'not reproduced'} at this budget)")
    result = {"benchmark": "losses", "steps_per_loss": (a.steps // epochs) * epochs, "batch_size": 4, "crop": 96,
              "architecture": arch.to_dict(), "optimizer": "adam lr 2e-3", "l2_weight": 0.25,
              "data": {"train": "60 synthetic 'train' images, seed 101", "val": "4 x 256^2, seed 102",
                       "test": "10 x 256^2, seed 103"}, "radius_px": 1.0, "threads": a.threads,
              "machine": platform.platform(), "torch": torch.__version__, "results": rows, "best": best}
    atomic_write_text(Path(a.out), json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
