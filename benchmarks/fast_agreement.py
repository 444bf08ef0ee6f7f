"""How far fast mode's spots are from exact mode's, image by image, on the ``train``-side images.

Fast mode trades bit-parity for speed (:mod:`napari_spotdetect.core.detection.speed`); the tests hold it to F1 >= 0.99
against exact mode on synthetic images. Real frames whose candidates crowd the threshold show more: this runs
both modes on the real ``train`` images the bundled network held out (as ``scripts/fit_rescorer.py`` chooses
them) and a few synthetic and realistic synthetic ones, and prints, per image, the spots of each mode and the
F1 of fast mode's spots against exact mode's within 1 px, with both modes' tile plans. Never ``val``.

    python benchmarks/fast_agreement.py [--model default] [--images 6] [--threads 2]

Prints a table and writes ``results/fast_agreement.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
sys.path.insert(0, str(HERE.parent / "scripts"))
from fit_rescorer import fitting_images, held_out  # noqa: E402
from result_file import write_result  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--images", type=int, default=6, help="synthetic and realistic images each")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "fast_agreement.json"))
    a = ap.parse_args(argv)
    import torch

    from napari_spotdetect import detect, load_model
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    images = fitting_images(Path(a.data), held_out(model), a.images)
    rows = []
    print(f"{'source':<12} {'image':<28} {'exact':>6} {'fast':>6} {'F1 1px':>7}  plans (exact / fast)")
    for im in images:
        ex, fa = (detect(im.image, model, speed=s) for s in ("exact", "fast"))
        e, f = (d.spots[["y", "x"]].to_numpy() for d in (ex, fa))
        f1 = float(match_spots(f, e, 1.0).f1) if len(e) or len(f) else 1.0
        plans = [f"{d.provenance['tiling']['n_tiles']} x {d.provenance['tiling']['tile'][0]}" for d in (ex, fa)]
        rows.append({"source": im.source, "stem": im.stem, "exact": len(e), "fast": len(f), "f1": f1,
                     "precision_fast": fa.provenance["precision"], "plans": plans})
        print(f"{im.source:<12} {im.stem[:28]:<28} {len(e):>6} {len(f):>6} {f1:>7.4f}  {plans[0]} / {plans[1]}")
    by = {}
    for r in rows:
        by.setdefault(r["source"], []).append(r["f1"])
    summary = {k: {"mean_f1": float(np.mean(v)), "min_f1": float(np.min(v)), "images": len(v)} for k, v in by.items()}
    for k, v in summary.items():
        print(f"{k:<12} mean F1 {v['mean_f1']:.4f}  lowest {v['min_f1']:.4f}  ({v['images']} images)")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
           "model": a.model, "threads": a.threads, "radius_px": 1.0, "summary": summary, "images": rows}
    write_result(a.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
