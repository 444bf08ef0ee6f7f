"""Which per-candidate measure ranks true spots above false ones, and does a blend of them carry to a new source?

The candidates are those the second stage is fitted on (``scripts/fit_rescorer.py``: the real ``train`` images the
network held out, 24 synthetic and 24 realistic synthetic images), plus one more measure beside the second stage's
ten features: a Laplacian of Gaussian of the plane scaled to its 0.1-99.9th percentiles, as scikit-image's
``blob_log`` sees an image (sigma 0.8-2 px in 5 steps, scale-normalised, its maximum over scales at the
candidate's pixel). For each source it prints every measure's separation (the chance that a true candidate
outscores a false one), then the separation of a logistic model fitted on the *other* sources (sources weighted
equally) on each real source, with and without that measure. ``train`` data only: it may guide a choice.

    python benchmarks/rank_features.py [--model default] [--threads 2]

Prints two tables and writes ``results/rank_features.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REAL = ROOT.parent / "shared" / "data" / "real"
BLOB_SIGMAS = np.linspace(0.8, 2.0, 5)


def percentile_log(img: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """The scale-normalised LoG response (bright spots positive) of ``img`` scaled to its 0.1-99.9th percentiles,
    as ``bench_real.py``'s ``blob_log`` baseline scales it (here in float64), its maximum over
    :data:`BLOB_SIGMAS`, at the pixels of ``yx``."""
    from bench_real import _scaled, log_cube

    im = _scaled(np.asarray(img), np.float64)
    r = np.clip(np.rint(yx).astype(int), 0, np.array(im.shape) - 1).reshape(-1, 2)
    return log_cube(im, BLOB_SIGMAS)[r[:, 0], r[:, 1]].max(-1)


def left_out_separation(feats, labels, src, left_out: str) -> float:
    """Separation on ``left_out`` of a logistic model fitted on every other source (each weighted equally)."""
    from napari_spotdetect.core.detection.rescore import auc, fit_logistic

    fit = src != left_out
    weight = np.zeros(fit.sum())
    others = sorted(set(src[fit]))
    for s in others:
        m = src[fit] == s
        weight[m] = fit.sum() / (len(others) * m.sum())
    w, b, mean, scale = fit_logistic(feats[fit], labels[fit], weight, 1e-3)
    z = ((feats[~fit] - mean) / scale) @ w + b
    lab = labels[~fit] > 0
    return auc(z[lab], z[~lab])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "rank_features.json"))
    a = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    import fit_rescorer
    from real_data import held_out, load_annotated, synthetic_source

    from napari_spotdetect import load_model
    from napari_spotdetect.core.detection.rescore import FEATURES, auc
    from napari_spotdetect.core.training.synthetic import realistic_dataset, synthetic_dataset

    torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    resc = model.rescorer
    if resc is None:
        raise SystemExit(f"{a.model} has no second stage to take its candidates from")
    held = held_out(model)
    real = [im for im in load_annotated(a.data, split="train", ndim=2) if f"{im.source}/{im.stem}" in held]
    images = (real + synthetic_source(synthetic_dataset(24, kind="train", seed=fit_rescorer.SYN_SEED), "synthetic")
              + synthetic_source(realistic_dataset(24, seed=fit_rescorer.REALISTIC_SEED), "realistic"))
    t0 = time.time()
    data = fit_rescorer.collect(model, images, resc.net_floor, resc.proposal_cut, resc.scale_cut, resc.merge_radius)
    plog = np.concatenate([percentile_log(im.image, d[3]) for im, d in zip(images, data)])
    feats = np.concatenate([d[1] for d in data])
    labels = np.concatenate([d[2] for d in data]).astype(np.float64)
    src = np.concatenate([[d[0]] * len(d[2]) for d in data])
    srcs = sorted(set(src))
    names = [*FEATURES, "percentile_log", "second_stage"]
    cols = np.column_stack([feats, plog, resc.probability(feats)])
    single = {n: {s: auc(cols[(src == s) & (labels > 0), j], cols[(src == s) & (labels == 0), j]) for s in srcs}
              for j, n in enumerate(names)}
    real_srcs = sorted({im.source for im in real})
    blends = {"ten features": feats, "ten features + percentile_log": np.column_stack([feats, plog]),
              "network score + percentile_log": np.column_stack([feats[:, 0], plog])}
    left_out = {k: {s: left_out_separation(f, labels, src, s) for s in real_srcs} for k, f in blends.items()}

    print("separation of each measure alone, per source (train-side candidates)\n")
    print("| measure | " + " | ".join(srcs) + " |\n|---" * 1 + "|---" * len(srcs) + "|")
    for n in names:
        print(f"| {n} | " + " | ".join(f"{single[n][s]:.3f}" for s in srcs) + " |")
    print("\nseparation on a real source left out of a logistic fit\n")
    print("| features | " + " | ".join(real_srcs) + " |\n|---" + "|---" * len(real_srcs) + "|")
    for k, row in left_out.items():
        print(f"| {k} | " + " | ".join(f"{row[s]:.3f}" for s in real_srcs) + " |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": a.model,
                               "candidates": {s: int((src == s).sum()) for s in srcs},
                               "true": {s: int(((src == s) & (labels > 0)).sum()) for s in srcs},
                               "single": single, "left_out": left_out, "seconds": round(time.time() - t0, 1)},
                              indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
