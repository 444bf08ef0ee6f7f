"""A trained peer on the same data: Spotiflow (PyPI ``spotiflow`` 0.6.5), trained here from scratch.

Spotiflow ships no weights that this machine can reach, but its trainer is public. This script trains it with
its documented defaults on exactly the images the bundled model's last stages saw, then predicts on the real
``val`` images, so that ``bench_real.py`` can score it beside our models (``--spotiflow``):

- training data, read from the bundled model's card (``training_data``): the real ``train`` split of
  ``../shared/data/real`` (the images the card lists; the ones it held out for validation go to Spotiflow's
  validation set too), each real image listed ``repeat`` times as our trainer did, plus the same synthetic
  images, made by our own generators with the card's counts and seeds (``synthetic_dataset`` and
  ``realistic_dataset`` with its ``without``); validation: the held-out real images and the card's synthetic
  validation images. Nothing from ``val`` is trained or tuned on.
- the export: one folder per set (``train``, ``val``) of ``<name>.tif`` + ``<name>.csv`` (header ``y,x``,
  pixel centres at integers, as Spotiflow's ``get_data`` / ``read_coords_csv`` read them and as its heatmap
  and flow targets are drawn);
- training: ``Spotiflow(SpotiflowModelConfig())`` and ``fit`` with ``SpotiflowTrainingConfig``'s defaults
  (AdamW 3e-4, batch 4, crop 512 -> capped by Spotiflow at the smallest image, 128; BCE heatmap loss,
  pos_weight 10, smart crops, default augmentations, 200 epochs), seed 42 as its CLI, except three things:
  ``optimize_threshold=True`` (its documented option to fit the probability threshold on the validation
  set: our model calibrates its threshold on held-out training images too), ``num_train_samples=200``
  (epochs of 50 steps, as our trainer's, so that a short budget still sees several validations; its CLI's
  ``--train-samples``) and a wall-clock budget (``--minutes``): training stops after the last epoch that
  fits, keeping the epoch with the best validation loss (Spotiflow's own checkpoint rule);
- prediction: the best model on every ``val`` image at ``prob_thresh`` ``--floor`` (0.05, the lowest
  threshold of our models' slider), with Spotiflow's defaults otherwise (percentile normalisation,
  sub-pixel flow, ``min_distance=1``); the score is Spotiflow's probability. The 3-D stack is predicted
  plane by plane (a 2-D model) and detections in consecutive planes within 2 px are one spot, at its
  highest-scoring plane.

Spotiflow lives in its own virtual environment (``~/.cache/spotdetect-bench/spotiflow-venv``: ``torch==2.14.1
torchvision==0.29.1``, then ``spotiflow==0.6.5``), built on first use as ``compare_piscis.py`` builds piscis's;
everything Spotiflow runs in a subprocess of that environment. This project does not depend on it.

    python benchmarks/spotiflow_peer.py [--minutes 35] [--threads 2] [--work runs/spotiflow]
                                        [--steps export train predict]
    python benchmarks/bench_real.py --spotiflow runs/spotiflow

Writes ``<work>/data/{train,val}``, ``<work>/model`` (Spotiflow's own folder format), ``<work>/predictions``
(per val image ``<source>/<stem>.csv`` with ``y,x`` (or ``z,y,x``) and ``score``, and ``run.json``: settings,
epochs, seconds, its threshold).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REAL = REPO.parent / "shared" / "data" / "real"
SPOTIFLOW_PINS = (["torch==2.14.1", "torchvision==0.29.1"], ["spotiflow==0.6.5"])
#: lowest threshold at which candidates are kept (our models' slider minimum)
FLOOR = 0.05
#: detections of a 2-D model in neighbouring planes closer than this (px, y/x) are one spot
PLANE_MERGE_PX = 2.0


def spotiflow_python() -> Path:
    sys.path.insert(0, str(HERE))
    from compare_piscis import _venv_python

    return _venv_python("spotiflow-venv", "import spotiflow, torchvision", [list(p) for p in SPOTIFLOW_PINS])


# -- the training data, in Spotiflow's folder format -------------------------------------------------------
def write_spots_csv(path: Path, coords: np.ndarray, scores: np.ndarray | None = None) -> None:
    """``y,x`` (or ``z,y,x``) rows, pixel centres at integers; a ``score`` column when given."""
    import pandas as pd

    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    cols = ["z", "y", "x"][-coords.shape[1]:]
    df = pd.DataFrame(coords, columns=cols)
    if scores is not None:
        df["score"] = np.asarray(scores, dtype=np.float64)
    df.to_csv(path, index=False, float_format="%.4f")


def write_pair(folder: Path, name: str, image: np.ndarray, coords: np.ndarray) -> None:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{name}.tif", image)
    write_spots_csv(folder / f"{name}.csv", coords)


def bundled_training_data() -> dict:
    """The bundled model's card entry for the data of its last stage (counts, seeds, real images)."""
    from napari_spotdetect import load_model

    return load_model("default", device="cpu").info.card["training_data"]


def export(out: Path, data_root=REAL, tiny: bool = False) -> dict:
    """Write the bundled model's training and validation images to ``out/train`` and ``out/val``; returns the
    manifest (also ``out/manifest.json``): which files are real, how often each real one is listed."""
    from real_data import load_annotated

    from napari_spotdetect.core.training.synthetic import realistic_dataset, synthetic_dataset

    card = bundled_training_data()
    real = card["real"]
    held = set(real["held_out_for_validation"])
    syn, rea = card, card["realistic_synthetic"]
    cap = (lambda n: min(n, 2)) if tiny else (lambda n: n)
    sets = {"train": [], "val": []}
    for src in real["sources"]:
        ims = load_annotated(data_root, split=real["split"], sources=[src], ndim=2)
        for im in ims[: 3 if tiny else None]:
            which = "val" if f"{im.source}/{im.stem}" in held else "train"
            sets[which].append((f"real_{im.source}_{im.stem}", im.image, im.spots))
    if tiny and not any(n.startswith("real_") for n, _, _ in sets["val"]):
        sets["val"].append(sets["train"].pop())
    for i, (img, pts) in enumerate(synthetic_dataset(cap(syn["n_images"]), syn["kind"], seed=syn["seed"])):
        sets["train"].append((f"synthetic_{i:04d}", img, pts))
    for i, (img, pts) in enumerate(realistic_dataset(cap(rea["n_images"]), seed=rea["seed"], without=rea["without"])):
        sets["train"].append((f"realistic_{i:04d}", img, pts))
    v, rv = syn["validation"], rea["validation"]
    for i, (img, pts) in enumerate(synthetic_dataset(cap(v["n_images"]), syn["kind"], seed=v["seed"],
                                                     shape=(256, 256))):
        sets["val"].append((f"synthetic_{i:04d}", img, pts))
    for i, (img, pts) in enumerate(realistic_dataset(cap(rv["n_images"]), seed=rv["seed"], shape=(256, 256),
                                                     without=rea["without"])):
        sets["val"].append((f"realistic_{i:04d}", img, pts))
    for which, items in sets.items():
        for name, img, pts in items:
            write_pair(out / which, name, img, pts)
    manifest = {"from_card": "src/napari_spotdetect/data/default_model.pt: training_data",
                "real_repeat": int(real.get("repeat", 1)),
                **{which: {"images": len(items), "real": sum(n.startswith("real_") for n, _, _ in items),
                           "spots": int(sum(len(p) for _, _, p in items))} for which, items in sets.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# -- what runs inside Spotiflow's environment --------------------------------------------------------------
TRAIN_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np, tifffile, torch
import lightning.pytorch as pl
from spotiflow.model import Spotiflow, SpotiflowModelConfig
from spotiflow.utils import normalize, read_coords_csv

data, out, minutes = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
threads, repeat, max_epochs, samples = (int(v) for v in sys.argv[4:8])
device, init = sys.argv[8], sys.argv[9]
torch.set_num_threads(threads)
t0 = time.time()

def load(folder, real_repeat=1):
    imgs, pts = [], []
    for f in sorted(folder.glob("*.tif")):
        img = normalize(tifffile.imread(f).astype(np.float32))  # what spotiflow.utils.get_data does
        p = read_coords_csv(f.with_suffix(".csv")).astype(np.float32)
        k = real_repeat if f.stem.startswith("real_") else 1
        imgs += [img] * k
        pts += [p.copy() for _ in range(k)]
    return imgs, pts

tr_x, tr_y = load(data / "train", repeat)
va_x, va_y = load(data / "val")
print(f"loaded {len(tr_x)} training / {len(va_x)} validation images in {time.time() - t0:.0f}s", flush=True)

class Budget(pl.Callback):
    # stop after the last epoch that fits in the budget (an epoch's length is known after the first)
    def __init__(self, seconds):
        self.seconds, self.start, self.epochs = seconds, None, []
    def on_train_epoch_start(self, trainer, module):
        self.t = time.time()
        self.start = self.start or self.t
    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or self.start is None:
            return
        self.epochs.append(time.time() - self.t)
        loss = float(trainer.logged_metrics.get("val_loss", float("nan")))
        print(f"[{time.time() - t0:6.0f}s] epoch {len(self.epochs)} took {self.epochs[-1]:.0f}s val_loss {loss:.4f}",
              flush=True)
        if time.time() - self.start + float(np.mean(self.epochs)) > self.seconds:
            trainer.should_stop = True

pl.seed_everything(43 if init else 42)  # spotiflow-train's default seed; another crop stream for a second stage
if init:  # continue a model of an earlier run, as spotiflow-train --finetune-from does
    model = Spotiflow.from_folder(init, inference_mode=False, map_location="cpu")
else:
    model = Spotiflow(SpotiflowModelConfig())
budget = Budget(minutes * 60)
cfg = {"optimize_threshold": True, "num_train_samples": samples or None, "finetuned_from": init or None}
if max_epochs:
    cfg["num_epochs"] = max_epochs
model.fit(tr_x, tr_y, va_x, va_y, save_dir=str(out), device=device, train_config=cfg, callbacks=[budget])
best = Spotiflow.from_folder(str(out), map_location="cpu")
info = {"epochs": len(budget.epochs), "epoch_seconds": [round(s, 1) for s in budget.epochs],
        "training_seconds": round(time.time() - budget.start, 1), "threads": threads,
        "train_images": len(tr_x), "val_images": len(va_x), "threshold": float(best._prob_thresh[0]), "device": device,
        "continued_from": init or None,
        "parameters": int(sum(p.numel() for p in best.parameters())),
        "torch": torch.__version__, "spotiflow": __import__("spotiflow").__version__}
(out / "run.json").write_text(json.dumps(info, indent=1))
print(json.dumps(info), flush=True)
"""

PREDICT_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd, tifffile, torch
from spotiflow.model import Spotiflow

model_dir, out, listing = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[5]
floor, threads = float(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = Spotiflow.from_folder(str(model_dir), map_location="cpu")
t0 = time.time()
for line in Path(listing).read_text().splitlines():
    src, stem, path = line.split("\t")
    img = tifffile.imread(path)
    planes = img[None] if img.ndim == 2 else img
    rows = []
    for z, plane in enumerate(planes):
        pts, det = model.predict(plane.astype(np.float32), prob_thresh=floor, verbose=False, device="cpu")
        for (y, x), p in zip(np.asarray(pts).reshape(-1, 2), det.prob):
            rows.append((z, y, x, p))
    df = pd.DataFrame(rows, columns=["z", "y", "x", "score"])
    if img.ndim == 2:
        df = df.drop(columns="z")
    (out / src).mkdir(parents=True, exist_ok=True)
    df.to_csv(out / src / f"{stem}.csv", index=False, float_format="%.6g")
    print(f"{src}/{stem}: {len(df)} candidates", flush=True)
info = {"threshold": float(model._prob_thresh[0]), "floor": floor, "predict_seconds": round(time.time() - t0, 1)}
(out / "predict.json").write_text(json.dumps(info, indent=1))
"""


def _run(script: str, args: list, threads: int, work: Path, name: str) -> None:
    py = spotiflow_python()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    f = work / f"{name}.py"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(script)
    subprocess.run([str(py), str(f), *map(str, args)], check=True, env=env)


def train(work: Path, minutes: float, threads: int, max_epochs: int = 0, samples: int = 200,
          device: str = "cpu", init: str = "") -> dict:
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    _run(TRAIN_SCRIPT, [work / "data", work / "model", minutes, threads, manifest["real_repeat"], max_epochs,
                        samples, device, init], threads, work, "spotiflow_train")
    return json.loads((work / "model" / "run.json").read_text())


def predict(work: Path, threads: int, data_root=REAL, split: str = "val", floor: float = FLOOR) -> None:
    from real_data import load_annotated

    out = work / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    # the paths only: the subprocess reads each image itself
    listing = out / "images.tsv"
    rows = [f"{im.source}\t{im.stem}\t{Path(data_root) / im.source / 'images' / f'{im.stem}.tif'}"
            for im in load_annotated(data_root, split=split)]
    listing.write_text("\n".join(rows) + "\n")
    _run(PREDICT_SCRIPT, [work / "model", out, floor, threads, listing], threads, work, "spotiflow_predict")


# -- reading the predictions back (bench_real.py) -----------------------------------------------------------
def merge_planes(coords: np.ndarray, scores: np.ndarray, radius: float = PLANE_MERGE_PX):
    """One spot per chain of per-plane detections: highest score first, a detection within ``radius`` px (y/x)
    of an earlier one (kept or merged) in the same or a neighbouring plane joins that one's spot, so a spot seen
    in several consecutive planes counts once, at its highest-scoring plane."""
    order = np.argsort(-scores, kind="stable")
    cells: dict[tuple, list[int]] = {}  # detections seen so far by (plane, y cell, x cell), cells of ``radius``
    kept: list[int] = []
    for i in order:
        z, y, x = coords[i]
        cz, cy, cx = int(round(z)), int(y // radius), int(x // radius)
        near = (k for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                for k in cells.get((cz + dz, cy + dy, cx + dx), ()))
        if not any(np.hypot(coords[k, 1] - y, coords[k, 2] - x) <= radius for k in near):
            kept.append(i)
        cells.setdefault((cz, cy, cx), []).append(i)
    kept = np.asarray(kept, dtype=int)
    return coords[kept], scores[kept]


def spotiflow_candidates(images, work) -> tuple[list, float, dict]:
    """(coords, scores) per image from ``<work>/predictions``, Spotiflow's own threshold and the run's info."""
    import pandas as pd

    pred = Path(work) / "predictions"
    if not (pred / "predict.json").exists():
        raise SystemExit(f"No Spotiflow predictions in {pred}. Fix: run python benchmarks/spotiflow_peer.py "
                         f"--work {work} first.")
    out = []
    for im in images:
        f = pred / im.source / f"{im.stem}.csv"
        if not f.exists():
            raise SystemExit(f"No Spotiflow prediction for {im.source}/{im.stem} in {pred}. Fix: rerun "
                             f"python benchmarks/spotiflow_peer.py --work {work} --steps predict.")
        df = pd.read_csv(f)
        cols = ["z", "y", "x"][-im.image.ndim:]
        c, s = df[cols].to_numpy(np.float64), df["score"].to_numpy(np.float64)
        out.append(merge_planes(c, s) if im.image.ndim == 3 else (c, s))
    info = json.loads((pred / "predict.json").read_text())
    run = Path(work) / "model" / "run.json"
    if run.exists():
        info["training"] = json.loads(run.read_text())
    return out, float(info["threshold"]), info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(REPO / "runs" / "spotiflow"))
    ap.add_argument("--minutes", type=float, default=35.0, help="wall-clock budget for training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=0, help="cap the epochs (0: Spotiflow's default, 200)")
    ap.add_argument("--samples-per-epoch", type=int, default=200,
                    help="Spotiflow's num_train_samples: crops per epoch (200: 50 steps, as our trainer's epochs)")
    ap.add_argument("--init", default="", help="continue the Spotiflow model in this folder (a second stage)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where Spotiflow trains")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--steps", nargs="*", default=["export", "train", "predict"],
                    choices=("export", "train", "predict"))
    ap.add_argument("--tiny", action="store_true", help="a few images (a check of the whole chain)")
    a = ap.parse_args(argv)
    work = Path(a.work)
    t0 = time.time()
    if "export" in a.steps:
        print(json.dumps(export(work / "data", a.data, tiny=a.tiny)), flush=True)
    if "train" in a.steps:
        run = train(work, a.minutes, a.threads, a.max_epochs, a.samples_per_epoch, a.device, a.init)
        print(json.dumps(run), flush=True)
    if "predict" in a.steps:
        predict(work, a.threads, a.data)
    print(f"done in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
