"""A bright region elsewhere in the image: does the model still find the ordinary spots?

On every 2-D ``val`` image of ../shared/data/real (or ``--split train``), a textured patch 3x the image's 99.8th
percentile is pasted into one corner (``core.training.synthetic.with_bright_patch``: like autofluorescent
tissue, a cell body or debris brighter than every spot), and the bundled model detects at its defaults on the
plain and the patched image, with the normalisation's bright-region rule (``core/models/bright_regions.py``) on
and off. Scored outside the patch only (F1 within 3 px against the annotation), so the patch's own false
spots do not count: what is measured is what the patch costs the rest of the image.

    python benchmarks/bench_bright_region.py [--split val] [--level 3] [--threads 1]

Prints a table and writes ``results/bright_region.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val", choices=("val", "train"))
    ap.add_argument("--level", type=float, default=3.0, help="the patch's core over the image's 99.8th percentile")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "bright_region.json"))
    a = ap.parse_args(argv)
    import torch
    from real_data import REAL_RADIUS, load_annotated

    from napari_spotdetect import load_model
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import match_spots
    from napari_spotdetect.core.training.synthetic import with_bright_patch

    torch.set_num_threads(a.threads)
    model = load_model("default", device="cpu")
    models = {rule: model.with_bright_region_rule(rule) for rule in (True, False)}

    def outside(yx, mask):
        rc = np.clip(np.round(yx).astype(int), 0, np.array(mask.shape) - 1)
        return yx[~mask[rc[:, 0], rc[:, 1]]]

    def f1(image, truth, mask, rule: bool) -> float:
        yx = detect(image, models[rule], keep_maps=False).spots[["y", "x"]].to_numpy()
        return match_spots(outside(yx, mask), outside(truth, mask), REAL_RADIUS).f1

    rows: dict = {}
    t0 = time.time()
    for im in load_annotated(REAL, split=a.split, ndim=2):
        img = im.image.astype(np.float32)
        patched, mask = with_bright_patch(img, level=a.level)
        r = {"plain": f1(img, im.spots, mask, True), "patched": f1(patched, im.spots, mask, True),
             "patched_rule_off": f1(patched, im.spots, mask, False)}
        rows.setdefault(im.source, []).append(r)
        print(f"  {im.source}/{im.stem[:30]}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    summary = {s: {k: float(np.mean([r[k] for r in v])) for k in v[0]} | {"images": len(v)} for s, v in rows.items()}
    print(f"\nF1 within {REAL_RADIUS:g} px outside the patch (bundled model, defaults; {a.split}; patch {a.level:g}x "
          "the 99.8th percentile)\n")
    print("| source | images | no patch | patch | patch, rule off (before) |\n| --- | --- | --- | --- | --- |")
    for s, d in summary.items():
        print(f"| {s} | {d['images']} | {d['plain']:.3f} | {d['patched']:.3f} | {d['patched_rule_off']:.3f} |")
    keys = ("plain", "patched", "patched_rule_off")
    mean = {k: float(np.mean([d[k] for d in summary.values()])) for k in keys}
    print(f"| **mean** | | {mean['plain']:.3f} | {mean['patched']:.3f} | {mean['patched_rule_off']:.3f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = platform.processor() or platform.machine()
    out.write_text(json.dumps({"split": a.split, "level": a.level, "radius_px": REAL_RADIUS, "threads": a.threads,
                               "machine": machine, "seconds": round(time.time() - t0), "summary": summary,
                               "mean": mean, "images": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
