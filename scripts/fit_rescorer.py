"""Fit the bundled model's second stage (:mod:`napari_spotdetect.core.detection.rescore`) into its model file.

The candidates are the network's peaks plus the LoG proposals (``--proposal-cut``, ``--scale-cut``,
``--merge-radius``; what they miss, and why, ``benchmarks/candidate_misses.py`` tells). The logistic model
(or, with ``--scorer trees``, boosted trees) is fitted on candidates of real ``train`` images of
../shared/data/real (never ``val``;
by default only the train images the network itself was not trained on, which its card lists as held out:
on the others its score would look better than it is on new images) and of synthetic images (the ``train``
kind and the realistic generator, seeds that no benchmark uses): each candidate is labelled true when it is
matched one-to-one to an annotated spot within 3 px. Sources weigh equally (5 pia_spots frames do not
outvote 2 piscis_panels images). The model's default threshold on the new score is the one with the best mean
F1 within 3 px over those sources; its lowest allowed threshold is
:data:`napari_spotdetect.core.detection.rescore.LOWEST_THRESHOLD`. Then it scores the held-out synthetic benchmark of
``scripts/train_default_model.py`` (20 images, seed 3) and writes the model file with the card updated.

    PYTHONPATH=src python scripts/fit_rescorer.py [--model src/napari_spotdetect/data/default_model.pt]
        [--out src/napari_spotdetect/data/default_model.pt] [--all-real] [--threads 1] [--cache /tmp/feats.npz]
        [--scorer logistic|trees] [--real-json benchmarks/results/real.json]

Prints the separation (AUC) per training source before (network score) and after (calibrated score), and the
candidate recall at the lowest threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # real_data lives with the benchmarks
from real_data import held_out  # noqa: E402  (here too: train_side.py and fast_agreement.py take it from here)

REAL = ROOT.parent / "shared" / "data" / "real"
SYN_SEED, REALISTIC_SEED = 51, 52
#: the lowest threshold a rescored model allows (its slider's minimum)
#: the network's own default threshold (before the second stage), which z-stacks keep
NET_DEFAULT = 0.05


def collect(model, images, net_floor: float, proposal_cut: float, scale_cut=None, merge_radius: float = 2.0):
    """Per image: (source, features, labels, coords, truth)."""
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.detection.rescore import candidate_features
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    rng = model.threshold_range
    model.threshold_range = (net_floor, rng[1])
    saved = getattr(model, "rescorer", None)
    model.rescorer = None
    out = []
    try:
        for im in images:
            det = detect(im.image, model, threshold=net_floor, axes="yx", keep_maps=False, contrast_floor=0.0)
            c = det.candidates
            yx, feats, _ = candidate_features(im.image, c[["y", "x"]].to_numpy(), c["score"].to_numpy(),
                                              proposal_cut, scale_cut, merge_radius)
            lab = match_spots(yx, im.spots, 3.0).pred_is_tp(len(yx))
            out.append((im.source, feats, lab, yx, im.spots))
    finally:
        model.threshold_range = rng
        model.rescorer = saved
    return out


def fitting_images(real_root, held: set, n_synthetic: int, extras=(), all_real: bool = False, every: int = 2):
    """The images the second stage is fitted on: the real ``train`` images in ``held`` (with ``all_real`` or
    none held, every one but only each ``every``-th pia_spots frame), then ``n_synthetic`` synthetic and
    realistic synthetic ones (seeds no benchmark uses). ``benchmarks/train_side.py`` scores models on them."""
    from real_data import load_annotated, synthetic_source

    from napari_spotdetect.core.training.synthetic import realistic_dataset, synthetic_dataset

    real = load_annotated(real_root, split="train", ndim=2)
    if held and not all_real:  # the network's scores on images it trained on would be too good
        real = [im for im in real if f"{im.source}/{im.stem}" in held]
    else:
        real = [im for i, im in enumerate(real) if im.source != "pia_spots" or i % every == 0]
    syn = synthetic_source(synthetic_dataset(n_synthetic, kind="train", seed=SYN_SEED), "synthetic")
    rea = synthetic_source(realistic_dataset(n_synthetic, seed=REALISTIC_SEED, extras=extras), "realistic")
    return real + syn + rea


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "src" / "napari_spotdetect" / "data" / "default_model.pt"))
    ap.add_argument("--out", default=None, help="model file to write (default: --model)")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--all-real", action="store_true",
                    help="fit on every real train image, also those the network was trained on (default: only "
                         "the train images its card lists as held out, where its scores are honest)")
    ap.add_argument("--every", type=int, default=2, help="with --all-real: every k-th pia_spots train frame")
    ap.add_argument("--n-synthetic", type=int, default=24)
    ap.add_argument("--net-floor", type=float, default=0.002)
    ap.add_argument("--proposal-cut", type=float, default=2.0)
    ap.add_argument("--scale-cut", type=float, default=2.0,
                    help="each single LoG scale's peaks above this are proposals too (negative: not)")
    ap.add_argument("--merge-radius", type=float, default=1.5,
                    help="no proposal within this distance (px) of a network candidate")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--scorer", choices=("trees", "logistic"), default="logistic",
                    help="what gives the score: the logistic model (default) or boosted trees (the logistic model "
                         "is kept too)")
    ap.add_argument("--trees", type=int, default=60)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--extras", nargs="*", default=[],
                    help="draw the realistic fitting images with these extras too (saturated, bright_tissue)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="npz of collected features to reuse / write")
    ap.add_argument("--no-benchmark", action="store_true", help="skip the synthetic held-out benchmark")
    ap.add_argument("--real-json", default=None,
                    help="a benchmarks/bench_real.py result of this model on val, copied into the card")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from napari_spotdetect import load_model
    from napari_spotdetect.core.detection.rescore import (
        FEATURES,
        LOWEST_THRESHOLD,
        Rescorer,
        auc,
        fit_boosted_trees,
        fit_logistic,
    )
    from napari_spotdetect.core.groundtruth.metrics import match_spots
    from napari_spotdetect.core.training.synthetic import synthetic_dataset
    from napari_spotdetect.core.weights.native import save_model

    model = load_model(a.model, device="cpu")
    scale_cut = a.scale_cut if a.scale_cut >= 0 else None
    t0 = time.time()
    if a.cache and Path(a.cache).exists():
        z = np.load(a.cache, allow_pickle=True)
        data = list(z["data"])
    else:
        images = fitting_images(a.data, held_out(model), a.n_synthetic, a.extras, a.all_real, a.every)
        data = collect(model, images, a.net_floor, a.proposal_cut, scale_cut, a.merge_radius)
        if a.cache:
            np.savez(a.cache, data=np.array(data, dtype=object))
    print(f"collected {sum(len(d[2]) for d in data)} candidates on {len(data)} images ({time.time() - t0:.0f} s)")
    srcs = sorted({d[0] for d in data})
    feats = np.concatenate([d[1] for d in data])
    labels = np.concatenate([d[2] for d in data]).astype(np.float64)
    src_of = np.concatenate([[d[0]] * len(d[2]) for d in data])
    weight = np.ones(len(labels))
    for s in srcs:
        weight[src_of == s] = len(labels) / (len(srcs) * (src_of == s).sum())
    w, b, mean, scale = fit_logistic(feats, labels, weight, a.l2)
    resc = Rescorer(w, b, mean, scale, a.net_floor, a.proposal_cut, scale_cut, a.merge_radius)
    print("weights:", {f: round(float(v), 3) for f, v in zip(FEATURES, w)}, "bias", round(b, 3))
    if a.scorer == "trees":
        resc.trees = fit_boosted_trees(feats, labels, weight, n_trees=a.trees, depth=a.depth)

    # threshold: best mean F1 (3 px) over the sources, on these training candidates
    sweep = np.round(np.arange(0.05, 0.96, 0.01), 2)
    per_src = {s: [] for s in srcs}
    for src, f, _lab, yx, truth in data:
        p = resc.probability(f)
        per_src[src].append([match_spots(yx[p > t], truth, 3.0).f1 for t in sweep])
    f1_by_t = np.mean([np.mean(v, axis=0) for v in per_src.values()], axis=0)
    thr = float(sweep[int(np.argmax(f1_by_t))])
    print(f"threshold {thr} (mean train F1 at 3 px {f1_by_t.max():.3f})")
    # z-stacks get no second stage: their voxel scores shift in logit so that the new default threshold keeps
    # the voxels the network's own default (NET_DEFAULT) kept
    resc.voxel_calibration = (1.0, float(np.log(thr / (1 - thr)) - np.log(NET_DEFAULT / (1 - NET_DEFAULT))))
    report = {}
    for s in srcs:
        m = src_of == s
        p = resc.probability(feats[m])
        lab = labels[m] > 0
        recall = np.mean([match_spots(d[3][resc.probability(d[1]) > LOWEST_THRESHOLD], d[4], 3.0).tp / max(len(d[4]), 1)
                          for d in data if d[0] == s])
        report[s] = {"candidates": int(m.sum()), "true": int(lab.sum()),
                     "separation_network": round(auc(feats[m][lab, 0], feats[m][~lab, 0]), 4),
                     "separation_rescored": round(auc(p[lab], p[~lab]), 4),
                     "candidate_recall_at_lowest": round(float(recall), 4)}
        print(s, report[s])
    resc.card = {"fitted_on": {s: {"images": sum(d[0] == s for d in data), **report[s]} for s in srcs},
                 "rule": (f"{a.trees} gradient-boosted trees of depth {a.depth} (rate 0.1, leaves of at least 100 mean "
                                  "sample weights)" if resc.trees is not None else
                                  f"logistic regression on standardised features, L2 {a.l2:g}") +
                                 "; sources weighted equally; a candidate is true when matched one-to-one to an "
                                 "annotated spot within 3 px; real images from the train split only",
                 "threshold_rule": "the best mean F1 within 3 px over the fitting sources",
                 "threshold_f1_by_source_mean": round(float(f1_by_t.max()), 4),
                 "script": "scripts/fit_rescorer.py", "date": time.strftime("%Y-%m-%d")}
    model.rescorer = resc
    model.threshold_range = (LOWEST_THRESHOLD, 1.0)
    model.default_threshold = thr
    out = a.out or a.model
    card = dict(model.info.card)
    what = "boosted trees" if resc.trees is not None else "a logistic model"
    card["rescore"] = {"what": "a second stage: LoG proposals (best-scale and single-scale peaks) join the network's "
                               f"candidates and {what} over per-candidate features gives the score "
                               "(core/detection/rescore.py)",
                       "proposals": {"cut": a.proposal_cut, "scale_cut": scale_cut, "merge_radius": a.merge_radius},
                       "realistic_extras": list(a.extras),
                       **resc.card}
    card["description"] = (card.get("description", "").split(" Then a second stage")[0] +
                           " Then a second stage (core/detection/rescore.py, scripts/fit_rescorer.py): LoG "
                           f"proposals join the network's candidates and {what} over per-candidate "
                           "features gives the score.")
    card["threshold_calibration"] = {"threshold": thr, "rule": resc.card["threshold_rule"], "radius_px": 3.0,
                                     "lowest": LOWEST_THRESHOLD}
    if not a.no_benchmark:  # the held-out synthetic benchmark of scripts/train_default_model.py
        from napari_spotdetect.core.detection.detect import detect
        from napari_spotdetect.core.groundtruth.metrics import evaluate

        test = synthetic_dataset(20, "train", seed=3, shape=(256, 256))
        bench = {}
        for k in (1.0, 0.2, 5.0):
            per = [evaluate(detect(img * k, model, keep_maps=False).spots[["y", "x"]].to_numpy(), gt)
                   for img, gt in test]
            bench[f"x{k:g}"] = {m: float(np.mean([p[m] for p in per]))
                                for m in ("precision", "recall", "f1", "f1_integral")}
        print("synthetic held-out:", {k: round(v["f1_integral"], 4) for k, v in bench.items()})
        card["benchmark"] = {"data": {"kind": "train", "n_images": 20, "shape": [256, 256], "seed": 3},
                             "threshold": thr, "radius_px": 1.0, **bench}
    if a.real_json:
        import json

        res = json.loads(Path(a.real_json).read_text())["results"]
        mine = next(v for v in res.values() if v.get("kind") == "model")
        card["real_val"] = {"data": "val split of the project's real data (never trained or tuned on)",
                            "radius_px": 3.0, "threshold": mine["threshold"], "sources": mine["sources"],
                            "by": "benchmarks/bench_real.py"}
    save_model(model, out, card=card, half=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
