"""What the real sources' annotations let any detector reach (no model involved).

For every source of ``../shared/data/real`` (2-D images; ``--split``), from the images and their annotations
alone (:mod:`annotation_limits`):

- ``oracle F1i``: the F1 integral of the annotated spots moved to their intensity centres, scored against the
  annotation: a detector that finds exactly the annotated spots, placed where the light is, reaches this;
- ``contrast q10 / q50``: brightness over local background of the annotated spots, in units of the image's
  noise (10th percentile and median): how faint a spot this source's annotators still counted;
- ``brighter unannotated``: local maxima per image, farther than 3 px from any annotation, at least as bright
  as the annotated q10;
- ``count window``: the contrast cuts at which "every peak above the cut" counts within +-20 % of the
  annotation. If the windows of two sources do not overlap, no single detector setting that grows with a
  spot's contrast can count both within +-20 %;
- ``F1 at one cut``: F1 of that peak-finder (perfect positions: annotated spots above the cut are true, other
  peaks above it false) at the ONE cut that is best for the mean over sources, and at each source's own
  best cut.

    python benchmarks/label_limits.py [--split val] [--out benchmarks/results/label_limits.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from result_file import write_result  # noqa: E402

REAL = HERE.parent.parent / "shared" / "data" / "real"
#: contrast cuts tried (noise units)
CUTS = np.geomspace(1.0, 1000.0, 241)


def source_limits(images) -> dict:
    from annotation_limits import (
        centroid_oracle,
        count_window,
        split_contrast,
    )

    ann, una, oracle, n = [], [], [], 0
    for im in images:
        a, u = split_contrast(im.image, im.spots)
        ann.append(a)
        una.append(u)
        oracle.append(centroid_oracle(im.image, im.spots))
        n += len(im.spots)
    a, u = np.concatenate(ann), np.concatenate(una)
    q10, q50 = (float(v) for v in np.quantile(a, [0.1, 0.5]))
    window = count_window(a, u, n)
    tp = len(a) - np.searchsorted(np.sort(a), CUTS)
    fp = len(u) - np.searchsorted(np.sort(u), CUTS)
    f1 = 2 * tp / np.maximum(2 * tp + fp + (n - tp), 1)
    return {"f1_by_cut": f1.tolist(), "f1_own_best_cut": float(f1.max()), "own_best_cut": float(CUTS[f1.argmax()]),
            "images": len(images), "annotated": n, "oracle_f1_integral": float(np.nanmean(oracle)),
            "contrast_q10": q10, "contrast_q50": q50,
            "brighter_unannotated_per_image": float((u >= q10).sum() / len(images)),
            "count_window": list(window) if window else None}


def overlap(windows):
    """The contrast cuts inside every window, or None."""
    if any(w is None for w in windows):
        return None
    lo, hi = max(w[0] for w in windows), min(w[1] for w in windows)
    return [lo, hi] if lo <= hi else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REAL))
    ap.add_argument("--split", default="val")
    ap.add_argument("--out", default=str(HERE / "results" / "label_limits.json"))
    a = ap.parse_args(argv)
    from real_data import load_annotated

    if not Path(a.root).is_dir():
        print(f"no real data at {a.root}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    images = load_annotated(a.root, split=a.split, ndim=2)
    by: dict[str, list] = {}
    for im in images:
        by.setdefault(im.source, []).append(im)
    rows = {src: source_limits(ims) for src, ims in sorted(by.items())}
    mean_oracle = float(np.mean([r["oracle_f1_integral"] for r in rows.values()]))
    common = overlap([r["count_window"] for r in rows.values()])
    by_cut = {src: np.asarray(r.pop("f1_by_cut")) for src, r in rows.items()}
    mean_f1 = np.mean(list(by_cut.values()), axis=0)
    best = int(mean_f1.argmax())
    one_cut = {"cut": float(CUTS[best]), "mean_f1": float(mean_f1[best]),
               "f1": {src: float(f[best]) for src, f in by_cut.items()}}
    own = float(np.mean([r["f1_own_best_cut"] for r in rows.values()]))

    def win(w):
        return "none" if w is None else f"{w[0]:.1f}-{w[1]:.1f}"

    print(f"| source | images | annotated | oracle F1i | contrast q10 / q50 | brighter unannotated per image "
          f"| count window (+-20 %) | F1 at one cut ({one_cut['cut']:.1f}) / own best cut |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for src, r in rows.items():
        print(f"| {src} | {r['images']} | {r['annotated']} | {r['oracle_f1_integral']:.3f} | "
              f"{r['contrast_q10']:.1f} / {r['contrast_q50']:.1f} | {r['brighter_unannotated_per_image']:.1f} | "
              f"{win(r['count_window'])} | {one_cut['f1'][src]:.2f} / {r['f1_own_best_cut']:.2f} "
              f"({r['own_best_cut']:.1f}) |")
    print(f"\nmean oracle F1 integral over sources: {mean_oracle:.3f}; contrast cuts that count every source "
          f"within +-20 %: {win(common)}; peak-finder F1 at one cut, mean over sources: {one_cut['mean_f1']:.3f} "
          f"(each at its own best cut: {own:.3f})")
    out = {"date": time.strftime("%Y-%m-%d"), "split": a.split, "ndim": 2, "sources": rows,
           "mean_oracle_f1_integral": mean_oracle, "common_count_window": common,
           "one_cut": one_cut, "mean_f1_own_best_cut": own,
           "seconds": round(time.perf_counter() - t0, 1)}
    write_result(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
