"""What the first training data lacked: saturated spots and bright autofluorescent tissue, on held-out images.

Synthetic images from ``core.training.synthetic.realistic_image`` (seeds no training or fitting uses), in three
sets of the same images: plain, with the camera's full well clipping the brightest spots into flat tops
(``extras=("saturated",)``), and with bright textured tissue that spots also sit on (``("bright_tissue",)``).
Each model runs at its own defaults; the table gives F1 within 3 px, the F1 integral, the separation (the
chance that a true candidate outscores a false one), the candidate recall at the model's lowest threshold, and,
on the saturated set, the share of the clipped spots (centre pixel at the full well) found.
A ``train``-side measure: it may choose between models, as ``val`` may not.

    python benchmarks/bench_extras.py [--model default] [--model runs/x.pt] [--images 24] [--threads 2]

Prints a table and writes ``results/extras.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 97  # no training, fitting or other benchmark draws realistic images with it
SETS = {"plain": (), "saturated": ("saturated",), "bright_tissue": ("bright_tissue",)}


def clipped_spot_recall(coords_found, img: np.ndarray, truth: np.ndarray, radius: float) -> tuple[int, int]:
    """(found, all) of the true spots whose centre pixel sits at the image's maximum (the full well)."""
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    r = np.rint(truth).astype(int)
    clipped = img[r[:, 0], r[:, 1]] >= img.max()
    if not clipped.any():
        return 0, 0
    hit = np.zeros(len(truth), bool)
    m = match_spots(coords_found, truth, radius)
    hit[m.true_matched] = True
    return int(hit[clipped].sum()), int(clipped.sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None, help="a model name or file (repeatable)")
    ap.add_argument("--images", type=int, default=24, help="images per set (256 x 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "extras.json"))
    a = ap.parse_args(argv)
    import torch
    from real_data import REAL_RADIUS, candidates_at, model_candidates, score_sources, synthetic_source

    from napari_spotdetect import load_model
    from napari_spotdetect.core.training.synthetic import realistic_dataset

    torch.set_num_threads(a.threads)
    images = []
    for name, extras in SETS.items():
        images += synthetic_source(realistic_dataset(a.images, seed=SEED, shape=(256, 256), extras=extras,
                                                     extras_rate=1.0), name)
    results = {}
    for spec in a.model or ["default"]:
        model = load_model(spec)
        t0 = time.time()
        cands = model_candidates(model, images)
        rows = score_sources(cands, images, model.default_threshold)
        found = total = 0
        for cand, im in zip(cands, images):
            if im.source == "saturated":
                f, n = clipped_spot_recall(candidates_at(cand, model.default_threshold)[0], im.image, im.spots,
                                           REAL_RADIUS)
                found, total = found + f, total + n
        rows["saturated"]["clipped_spots_found"] = found / max(total, 1)
        rows["saturated"]["clipped_spots"] = total
        results[spec] = {"threshold": float(model.default_threshold), "seconds": round(time.time() - t0, 1),
                         "sets": rows}
    print(f"{'model':<40} {'set':<14} {'F1':>6} {'F1i':>6} {'sep':>6} {'cand.rec':>8} {'found/ann':>9} {'clipped':>8}")
    for spec, r in results.items():
        for name in SETS:
            s = r["sets"][name]
            clip = f"{s['clipped_spots_found']:.3f}" if name == "saturated" else "-"
            print(f"{spec[-40:]:<40} {name:<14} {s['f1']:6.3f} {s['f1_integral']:6.3f} {s['separation']:6.3f} "
                  f"{s['candidate_recall']:8.3f} {s['count_ratio']:8.2f}x {clip:>8}")
        print(f"{'':<40} {'mean':<14} {r['sets']['mean']['f1']:6.3f} {r['sets']['mean']['f1_integral']:6.3f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": platform.processor() or platform.machine(), "threads": a.threads,
                               "images_per_set": a.images, "seed": SEED, "radius_px": REAL_RADIUS,
                               "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
