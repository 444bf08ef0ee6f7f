"""Clipped spots that merge: one call per spot, with and without parting merged plateaus into spots.

Where a camera clips bright spots a few pixels apart, their flat tops merge into one plateau that is not round.
:mod:`napari_spotdetect.core.detection.plateaus` parts such a plateau into the fewest spot-sized discs that
cover it and gives each one call; before, the plateau kept whatever calls the network and the LoG made on it.
This scores the bundled model both ways on images the rule was not set on (the 2-D sample, where it was set,
is in ``tests/core/detection/test_rescore.py``):

- ``planes``: 256² planes of 12 groups of one to three spots 4-7 px apart (amplitude 4,000-12,000 counts over
  200, clipped at 2,000, sigma 1.5-2.2 px);
- ``stretched``: the same with every spot 1.5x wider along one axis (a PSF no disc fits);
- ``stacks``: 7-plane stacks of such groups (axial sigma 1.5 planes, focus between planes 2.5 and 3.5);
- ``edges``: 256² planes of 16 spots centred 0-4 px inside the image's edge, half of them with a neighbour
  4-7 px away (a plateau cut by the edge, judged with its mirror image).

    python benchmarks/bench_clipped.py [--images 8] [--threads 2]

Prints F1, precision and recall at 3 px (spots against the true centres, in y and x) and writes
``results/clipped.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from result_file import write_result  # noqa: E402


def clusters(seed: int, stretch: float = 1.0, planes: int = 0, size: int = 256):
    """(image, true (y, x) centres) of clipped groups, one per cell of a 4 x 3 grid (3 x 3 for stacks), moved
    up to 5 px; ``planes`` > 0 makes a z-stack."""
    rng = np.random.default_rng(seed)
    nz = max(planes, 1)
    zz, yy, xx = np.mgrid[:nz, :size, :size]
    img, truth = np.full((nz, size, size), 200.0), []
    rows, cols = (3, 3) if planes else (3, 4)
    cells = [((i + 0.5) * size / rows, (j + 0.5) * size / cols) for i in range(rows) for j in range(cols)]
    for c in np.array(cells) + rng.uniform(-5, 5, (len(cells), 2)):
        for j in range(rng.choice([1, 2, 2, 3])):
            angle = rng.uniform(0, 2 * np.pi)
            p = c + (rng.uniform(4, 7) * np.array([np.cos(angle), np.sin(angle)]) if j else 0)
            truth.append(p)
            s = rng.uniform(1.5, 2.2)
            axial = -(zz - rng.uniform(2.5, 3.5)) ** 2 / (2 * 1.5 ** 2) if planes else 0.0
            img += rng.uniform(4000, 12000) * np.exp(-(yy - p[0]) ** 2 / (2 * s * s)
                                                     - (xx - p[1]) ** 2 / (2 * (s * stretch) ** 2) + axial)
    img = np.minimum(rng.poisson(img), 2000).astype(np.uint16)
    return (img if planes else img[0]), np.array(truth)


def at_edges(seed: int, size: int = 256):
    """(image, true (y, x) centres) of clipped spots cut by the plane's edge, four per side."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img, truth = np.full((size, size), 200.0), []
    for k in range(16):
        along, depth = (k // 4 + 0.5) * size / 4 + rng.uniform(-8, 8), rng.uniform(0.0, 4.0)
        first = np.array([(depth, along), (size - 1 - depth, along), (along, depth), (along, size - 1 - depth)][k % 4])
        spots = [first]
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            second = first + rng.uniform(4, 7) * np.array([np.cos(angle), np.sin(angle)])
            if (second >= 0).all() and (second <= size - 1).all():
                spots.append(second)
        for p in spots:
            truth.append(p)
            img += rng.uniform(4000, 12000) * np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2)
                                                     / (2 * rng.uniform(1.5, 2.2) ** 2))
    return np.minimum(rng.poisson(img), 2000).astype(np.uint16), np.array(truth)


def without_parts():
    """Patch the rule back to whole round plateaus only (as before merged and edge-cut plateaus were parted);
    returns an undo."""
    from napari_spotdetect.core.detection import plateaus, rescore

    saved = rescore.clipped_spot_calls, rescore.clipped_spots
    rescore.clipped_spot_calls = lambda *a, **k: plateaus.clipped_spot_calls(*a, **{**k, "parted": False})
    rescore.clipped_spots = lambda *a, **k: plateaus.clipped_spots(*a, **{**k, "parted": False})

    def undo():
        rescore.clipped_spot_calls, rescore.clipped_spots = saved
    return undo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--images", type=int, default=8, help="images per set (stacks: half as many)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "clipped.json"))
    a = ap.parse_args(argv)
    import torch

    from napari_spotdetect import detect, load_model
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    sets = {"planes": [clusters(s) for s in range(a.images)],
            "stretched": [clusters(s, stretch=1.5) for s in range(a.images)],
            "stacks": [clusters(s, planes=7, size=160) for s in range(max(1, a.images // 2))],
            "edges": [at_edges(s) for s in range(a.images)]}
    rows = []
    print(f"{'set':<10} {'rule':<22} {'spots':>6} {'true':>6} {'F1':>6} {'prec.':>6} {'recall':>6}")
    for name, images in sets.items():
        for rule in ("round plateaus only", "parted into spots"):
            undo = without_parts() if rule.startswith("round") else (lambda: None)
            try:
                tp = n = nt = 0
                for img, truth in images:
                    spots = detect(img, model, axes="zyx" if img.ndim == 3 else "yx", keep_maps=False).spots
                    m = match_spots(spots[["y", "x"]].to_numpy(), truth, 3.0)
                    tp, n, nt = tp + m.tp, n + len(spots), nt + len(truth)
            finally:
                undo()
            p, r = tp / max(n, 1), tp / max(nt, 1)
            f1 = 2 * tp / max(n + nt, 1)
            rows.append({"set": name, "rule": rule, "images": len(images), "spots": n, "true": nt, "tp": tp,
                         "f1": f1, "precision": p, "recall": r})
            print(f"{name:<10} {rule:<22} {n:>6} {nt:>6} {f1:>6.3f} {p:>6.3f} {r:>6.3f}")
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.processor() or platform.machine(),
           "model": a.model, "radius_px": 3.0, "rows": rows}
    write_result(a.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
