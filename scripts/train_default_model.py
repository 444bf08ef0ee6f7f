"""Train the bundled default model: a small Piscis-architecture network, on synthetic and real images.

The bundled model is made in five stages, all from the repository root on CPU (stage 1 starts from nothing):

1. from scratch (about 26 minutes on 2 idle cores):

       PYTHONPATH=src python scripts/train_default_model.py --out runs/default_model/stage1.pt

2. continued from stage 1 on twice the images with a moving average of the weights, the best epoch chosen
   by the validation F1 integral (about 60 minutes on 1 core):

       PYTHONPATH=src python scripts/train_default_model.py --init runs/default_model/stage1.pt \
           --lr 5e-4 --ema 0.998 --select f1_integral --n-train 800 --epochs 80 --minutes 76 --seed 7 \
           --threads 1 --out runs/default_model/stage2.pt

3. the same again, gentler, on 1200 images (about 40 minutes on 1 core):

       PYTHONPATH=src python scripts/train_default_model.py --init runs/default_model/stage2.pt \
           --lr 2e-4 --ema 0.999 --select f1_integral --n-train 1200 --epochs 55 --minutes 52 --seed 8 \
           --threads 1

4. real images (7 x 50 steps, 25 minutes on one core of a busy machine): continued from stage 3 on the real ``train``
   split of ../shared/data/real (sources whose licence allows shipping: pia_spots and piscis_panels, MIT;
   the smallest acquisitions are held out for validation until 6 images are: that is the two piscis_panels
   train images and one 5-frame pia_spots acquisition, so 75 pia_spots images are trained on) listed 4 times,
   mixed with 200 stage-1
   synthetic images and 300 realistic synthetic ones (:func:`~napari_spotdetect.core.training.synthetic.realistic_image`
   without the ``negatives`` ingredient, which the ablation showed to hurt), the input normalised by
   whole-image percentiles; best epoch by the F1 integral, threshold by the F1 within 3 px, both on the
   held-out real images and synthetic ones:

       PYTHONPATH=src python scripts/train_default_model.py --init runs/default_model/stage3.pt \
           --lr 5e-4 --ema 0.998 --select f1_integral --epochs 7 --steps 50 --minutes 60 --threads 1 \
           --seed 31 --n-train 200 --n-val 8 --val-radius 3 --real ../shared/data/real --real-repeat 4 \
           --n-realistic 300 --without negatives --normalization percentile \
           --real-report ../shared/data/real --out runs/default_model/stage4.pt

5. the same data, continued from stage 4 at 3e-4 with a slower average (26 minutes on 2 cores):

       PYTHONPATH=src python scripts/train_default_model.py --init runs/default_model/stage4.pt \
           --lr 3e-4 --ema 0.999 --select f1_integral --epochs 26 --steps 50 --minutes 26 --threads 2 \
           --seed 41 --n-train 200 --n-val 8 --val-radius 3 --real ../shared/data/real --real-repeat 4 \
           --n-realistic 300 --without negatives --real-report ../shared/data/real

   The ablation behind stage 4's choices (``benchmarks/ablation_real.py``) is in the README.

   With ``--real``, the script ends by choosing the model's contrast floor
   (:mod:`napari_spotdetect.core.detection.contrast`)
   on the real ``train`` images and 12 synthetic validation images. The bundled stage-5 file predates that
   step and got its floor (0) from the same rule through ``scripts/set_contrast_floor.py ... --rescore``.
   ``--tiny`` runs any of these in a few steps on a few images (CI does, to check the script end to end).

Held-out synthetic F1 integral after stages 1-3: 0.945, 0.951, 0.953. Stage 1's validation F1 jumps by ~0.005 from
epoch to epoch; the weight average smooths that out. (A second stage weighting the displacement loss
more, ``--l2-weight 1.0 --lr 2e-4``, gave 0.9453: no gain.)

It trains with :class:`napari_spotdetect.core.training.train.Trainer` on ``synthetic_dataset(kind="train")`` (and,
with ``--real`` / ``--n-realistic``, real and realistic synthetic images), evaluates the best checkpoint on a
held-out synthetic benchmark (different seed) and on that benchmark
scaled by 0.2 and 5, and writes ``src/napari_spotdetect/data/default_model.pt`` (half precision) with a
model card recording all of it (with ``--real-report``, also the scores on the real ``val`` split).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from napari_spotdetect import load_model
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.models.piscis_net import PiscisConfig, with_refinement, with_style
from napari_spotdetect.core.training.synthetic import EXTRAS, INGREDIENTS, realistic_dataset, synthetic_dataset
from napari_spotdetect.core.training.train import TrainConfig, Trainer
from napari_spotdetect.core.weights.native import save_model

# the reader of the real benchmark folders lives with the benchmarks (it is not part of the package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from real_data import (
    choose_contrast_floor,
    contrast_floor_card,
    load_annotated,
    score_model,
    synthetic_source,
)

ARCH = PiscisConfig(widths=(16, 32, 64, 128), depths=(1, 2, 2, 2))
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 3
REAL_SEED, REAL_VAL_SEED = 21, 22
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
#: licences of real sources that a model we ship may be trained on
SHIPPABLE_LICENCES = ("MIT", "BSD-3-Clause")


def _source_repeat(items) -> dict:
    out = {}
    for item in items:
        name, sep, k = item.partition("=")
        if not sep or not k.isdigit() or int(k) < 1:
            raise SystemExit(f"error: --source-repeat {item!r} is not SOURCE=K. Fix: e.g. piscis_panels=8.")
        out[name] = int(k)
    return out


def real_split(root, n_val: int, repeat: int, hold_out_from=None, source_repeat=None):
    """Real ``train`` images of shippable sources -> (training pairs, held-out pairs, description for the card).

    The held-out images are whole acquisitions (so near-duplicate frames never straddle the split): the
    smallest acquisitions (of the ``hold_out_from`` sources, default all), in a fixed order, until at least
    ``n_val`` images are held out. ``source_repeat`` ({source: k}) lists a small source's images k times more.
    """
    source_repeat = source_repeat or {}
    ims = [im for im in load_annotated(root, split="train", ndim=2) if im.licence in SHIPPABLE_LICENCES]
    skipped = sorted({im.source for im in load_annotated(root, split="train")} - {im.source for im in ims})
    by_acq: dict[str, list] = {}
    for im in ims:
        by_acq.setdefault(f"{im.source}/{im.meta.get('acquisition', im.stem)}", []).append(im)
    held: list = []
    for acq in sorted(by_acq, key=lambda a: (len(by_acq[a]), a)):  # the smallest acquisitions cost least
        if hold_out_from and acq.split("/")[0] not in hold_out_from:
            continue
        if len(held) >= n_val or len(by_acq) == 1:
            break
        held += by_acq.pop(acq)
    train = [im for group in by_acq.values() for im in group]
    info = {"root": "data/real (../shared/data/real in the repository)", "split": "train",
            "sources": {}, "held_out_for_validation": sorted({f"{im.source}/{im.stem}" for im in held}),
            "not_used_licence": skipped, "repeat": repeat, "source_repeat": dict(source_repeat)}
    for im in train + held:
        d = info["sources"].setdefault(im.source, {"licence": im.licence, "images": 0, "spots": 0})
        d["images"] += 1
        d["spots"] += len(im.spots)
    pairs = [(im.image.astype(np.float32), im.spots) for im in train
             for _ in range(source_repeat.get(im.source, 1))] * max(1, repeat)
    return pairs, [(im.image.astype(np.float32), im.spots) for im in held], info


def benchmark(model, pairs, scale: float = 1.0) -> dict:
    per = [evaluate(detect(img * scale, model, keep_maps=False).spots[["y", "x"]].to_numpy(), gt)
           for img, gt in pairs]
    return {k: float(np.mean([m[k] for m in per])) for k in ("precision", "recall", "f1", "f1_integral")}


def _start(a):
    """The network to train: a new one of the asked architecture, or ``--init``'s with the asked parts added."""
    if not a.init:
        return PiscisConfig(**{**ARCH.to_dict(), "widths": tuple(a.widths), "body": a.body, "fold": a.fold,
                               "refine": a.refine, "style": a.style})
    start = load_model(a.init, device="cpu")
    if a.refine and start.net.cfg.refine != a.refine:
        start.net = with_refinement(start.net, a.refine)
    if a.style and not start.net.cfg.style:
        start.net = with_style(start.net)
    return start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=42.0, help="wall-clock budget for training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=16, help="validation images (best epoch and threshold)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--l2-weight", type=float, default=0.25, help="weight of the masked L2 (displacement) loss")
    ap.add_argument("--widths", type=int, nargs=4, default=list(ARCH.widths), help="channels per encoder stage")
    ap.add_argument("--body", default=ARCH.body, choices=("fpn", "folded"),
                    help="the network's body: piscis's FPN, or the faster U-Net on the image folded into channels")
    ap.add_argument("--fold", type=int, default=ARCH.fold, help="with --body folded: fold the image k x k")
    ap.add_argument("--refine", type=int, default=0, help="with --body folded (or an --init model with it): add "
                    "a full-size refinement of this many channels (it starts at zero)")
    ap.add_argument("--style", action="store_true", help="with --body folded (or an --init model with it): add "
                    "style biases, the tile's deepest features' mean into every decoder level (they start at zero)")
    ap.add_argument("--ema", type=float, default=None, help="average the weights with this decay (e.g. 0.998)")
    ap.add_argument("--select", default="f1", choices=("f1", "f1_integral"), help="metric that picks the best epoch")
    ap.add_argument("--seed", type=int, default=0, help="seed of the crop/augmentation stream")
    ap.add_argument("--init", default=None, help="continue from this model file (a second, polishing stage)")
    ap.add_argument("--real", default=None, help=f"train also on the real train split in this folder (e.g. {REAL})")
    ap.add_argument("--real-repeat", type=int, default=1, help="list each real training image this many times")
    ap.add_argument("--real-val", type=int, default=6, help="real training images held out for validation")
    ap.add_argument("--hold-out-from", nargs="*", default=None,
                    help="hold the validation images out of these sources only (default: any source)")
    ap.add_argument("--source-repeat", nargs="*", default=[], metavar="SOURCE=K",
                    help="list a small source's training images K times more (e.g. piscis_panels=8)")
    ap.add_argument("--n-realistic", type=int, default=0, help="realistic synthetic training images")
    ap.add_argument("--without", nargs="*", default=[], choices=INGREDIENTS,
                    help="leave these ingredients out of the realistic synthetic images (ablation)")
    ap.add_argument("--extras", nargs="*", default=[], choices=EXTRAS,
                    help="add these to about half the realistic synthetic images each (saturated spots, bright tissue)")
    ap.add_argument("--normalization", default=None, choices=("standardize", "percentile"),
                    help="input normalisation to train with (default: the start model's)")
    ap.add_argument("--val-radius", type=float, default=1.0, help="match radius of the validation F1 (threshold)")
    ap.add_argument("--real-report", default=None,
                    help="score the result on the real val split of this folder and put it in the card")
    ap.add_argument("--report-images", type=int, default=None, help="at most this many val images per source")
    ap.add_argument("--tiny", action="store_true", help="a few steps on a few images (CI's end-to-end check)")
    ap.add_argument("--teacher", default=None, help="also teach the network this model's maps (a model file or "
                    "'default'; core/training/distill.py)")
    ap.add_argument("--distill-weight", type=float, default=1.0, help="weight of the teacher's term")
    ap.add_argument("--work", default="runs/default_model")
    ap.add_argument("--out", default="src/napari_spotdetect/data/default_model.pt")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.tiny:
        a.n_train, a.n_val, a.n_realistic = min(a.n_train, 4), min(a.n_val, 2), min(a.n_realistic, 4)
        a.epochs, a.steps = 1, 2
        a.real_val, a.report_images = min(a.real_val, 1), 1
    train = synthetic_dataset(a.n_train, "train", seed=TRAIN_SEED)
    val = synthetic_dataset(a.n_val, "train", seed=VAL_SEED, shape=(256, 256))
    test = synthetic_dataset(3 if a.tiny else 20, "train", seed=TEST_SEED, shape=(256, 256))
    real_info = None
    if a.n_realistic:
        train += realistic_dataset(a.n_realistic, seed=REAL_SEED, without=a.without, extras=a.extras)
        val += realistic_dataset(max(2, a.n_val // 2), seed=REAL_VAL_SEED, shape=(256, 256), without=a.without,
                                 extras=a.extras)
    if a.real:
        real_train, real_val, real_info = real_split(a.real, a.real_val, a.real_repeat, a.hold_out_from,
                                                     _source_repeat(a.source_repeat))
        if a.tiny:
            real_train = real_train[:2]
        train += real_train
        val += real_val
    cfg = TrainConfig(epochs=a.epochs, steps_per_epoch=a.steps, batch_size=4, crop=128, optimizer="adam", lr=a.lr,
                      l2_weight=a.l2_weight,
                      weight_decay=0.0, warmup_fraction=0.02, decay_fraction=0.5, decay_steps=5, decay_factor=0.5,
                      seed=a.seed, ema=a.ema, select=a.select, normalization=a.normalization,
                      val_radius=a.val_radius, teacher=a.teacher, distill_weight=a.distill_weight)
    deadline = t0 + a.minutes * 60
    data_info = {"source": "napari_spotdetect.core.training.synthetic.synthetic_dataset", "kind": "train",
                 "n_images": a.n_train, "seed": TRAIN_SEED, "validation": {"n_images": a.n_val, "seed": VAL_SEED}}
    if a.n_realistic:
        data_info["realistic_synthetic"] = {"source": "napari_spotdetect.core.training.synthetic.realistic_dataset",
                                            "n_images": a.n_realistic, "seed": REAL_SEED, "without": a.without,
                                            "extras": a.extras,
                                            "validation": {"n_images": max(2, a.n_val // 2), "seed": REAL_VAL_SEED}}
    if real_info:
        data_info["real"] = real_info
    start = _start(a)
    prev = start.info.card if a.init else {}
    stages = [dict(st) for st in prev.get("stages") or ([{"train_config": prev.get("train_config"),
                                                           "training_seconds": prev.get("training_seconds")}]
                                                         if a.init else [])]
    if stages:
        stages[0].setdefault("from", "scratch")  # the first stage always starts from nothing
    tr = Trainer(start, train, val, cfg, out_dir=a.work, name="default", stop=lambda: time.time() > deadline,
                 data_info=data_info)

    def log(ev):
        if ev.kind != "step" or ev.step % 10 == 0:
            print(f"[{time.time() - t0:7.1f}s] {ev.kind} e{ev.epoch} s{ev.step} lr={ev.lr:.2e} "
                  f"{ {k: round(v, 4) for k, v in ev.losses.items()} } {ev.val or ''} {ev.message}", flush=True)

    res = tr.fit(log)
    train_s = time.time() - t0
    stages = stages + [{"from": a.init or "scratch", "train_config": asdict(cfg),
                        "training_seconds": round(train_s, 1)}]
    model = res.model
    scores = {f"x{s:g}": benchmark(model, test, s) for s in (1.0, 0.2, 5.0)}
    print(json.dumps(scores, indent=1), flush=True)
    floor_entry = None
    if a.real:  # what counts as a spot, chosen on train like the threshold, before anything is scored on val
        floor_images = load_annotated(a.real, split="train", ndim=2, per_source=1 if a.tiny else None)
        floor_images += synthetic_source(synthetic_dataset(2 if a.tiny else 12, "train", seed=VAL_SEED,
                                                           shape=(256, 256)))
        floor, table = choose_contrast_floor(model, floor_images)
        model.default_contrast_floor = floor
        floor_entry = contrast_floor_card(floor, table, floor_images)
        print(f"contrast floor {floor:.2f} (mean F1 integral on real train + synthetic: {table[floor]:.4f})",
              flush=True)
    real_scores = None
    if a.real_report:
        ims = load_annotated(a.real_report, split="val", per_source=a.report_images or None)
        real_scores = score_model(model, ims)
        print(json.dumps({k: {m: round(v, 3) for m, v in r.items() if isinstance(v, float)}
                          for k, r in real_scores.items()}, indent=1), flush=True)
    what = ("real images (the train split of the project's real data) mixed with synthetic ones"
            if real_info else "napari-spotdetect synthetic smFISH images")
    card = {**model.info.card, "description": f"Small Piscis-architecture model trained on {what} by "
            "scripts/train_default_model.py"
            + (f", in {len(stages)} stages (see 'stages')." if len(stages) > 1 else "."),
            "normalization": {"percentile": "each plane's 1st-99.8th percentiles mapped to 0-1",
                              "standardize": "each tile standardised (mean 0, sd 1)"}[model.adjustment],
            "threshold_calibration": {"threshold": model.default_threshold, "rule": "the threshold (0.05-0.99) "
                                      "with the best mean F1 on the validation images of the best epoch",
                                      "radius_px": a.val_radius,
                                      "validation_images": len(val)},
            "architecture": model.net.cfg.to_dict(), "parameters": sum(p.numel() for p in model.net.parameters()),
            "training_seconds": round(train_s, 1),
            "total_training_seconds": round(sum(st.get("training_seconds") or 0 for st in stages), 1),
            "stopped_by_time_budget": res.stopped,
            "torch_threads": a.threads, "stages": stages,
            "benchmark": {"data": {"kind": "train", "n_images": 20, "shape": [256, 256], "seed": TEST_SEED},
                          "threshold": model.default_threshold, "radius_px": 1.0, **scores}}
    if floor_entry is not None:
        card["contrast_floor"] = floor_entry
    if real_scores is not None:
        card["real_val"] = {"data": "val split of the project's real data (never trained or tuned on)",
                            "radius_px": 3.0, "threshold": model.default_threshold,
                            "images_per_source_cap": a.report_images, "sources": real_scores}
    model.info.name = "default"
    out = save_model(model, a.out, card=card, half=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) after {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
