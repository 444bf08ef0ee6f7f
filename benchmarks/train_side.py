"""The ``train``-side measure that chooses between models, source by source: where a candidate gains or loses.

``scripts/fit_rescorer.py`` reports one number per model, the mean F1 within 3 px over its fitting sources (the
real ``train`` images the network held out, 24 synthetic and 24 realistic synthetic images, seeds 51 and 52).
That mean hid where a network falls behind: this script runs each model end to end (``detect()`` at its own
defaults, second stage included) on exactly those images and prints, per source, F1 within 3 px, the F1
integral and the separation, with ``--network-only`` also the network alone (no second stage, at
the network's own default threshold of 0.05, its peaks above the second stage's floor). Never ``val``.

    python benchmarks/train_side.py --model default --model runs/x_rs.pt [--network-only] [--threads 2]

Prints a table and writes ``results/train_side.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
sys.path.insert(0, str(HERE.parent / "scripts"))
# the held-out images and the fitting images as fit_rescorer.py chooses them; the network's own default threshold
from fit_rescorer import NET_DEFAULT, REALISTIC_SEED, SYN_SEED, fitting_images, held_out  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None, help="a model name or file (repeatable)")
    ap.add_argument("--network-only", action="store_true", help="also each model without its second stage")
    ap.add_argument("--images", type=int, default=24, help="synthetic and realistic images each")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "train_side.json"))
    a = ap.parse_args(argv)
    import torch
    from real_data import model_candidates, score_sources

    from napari_spotdetect import load_model

    torch.set_num_threads(a.threads)
    models = {spec: load_model(spec, device="cpu") for spec in a.model or ["default"]}
    helds = {spec: held_out(m) for spec, m in models.items()}
    first = next(iter(helds.values()))
    if any(h != first for h in helds.values()):
        raise SystemExit("the models held out different real train images; their train-side numbers would not "
                         "compare (train them with the same --real-val / --hold-out-from)")
    if not first:
        raise SystemExit("the first model's card lists no held-out real train images: nothing honest to score")
    images = fitting_images(a.data, first, a.images)
    results = {}
    for spec, model in models.items():
        saved = (model.rescorer, model.default_threshold, model.threshold_range)
        variants = [(spec, saved)]
        if a.network_only and model.rescorer is not None:  # as before its second stage was fitted
            variants.append((f"{spec} (network only)", (None, NET_DEFAULT, (model.rescorer.net_floor, 1.0))))
        for label, setting in variants:
            model.rescorer, model.default_threshold, model.threshold_range = setting
            t0 = time.time()
            threshold = float(model.default_threshold)
            rows = score_sources(model_candidates(model, images), images, threshold)
            results[label] = {"threshold": threshold, "seconds": round(time.time() - t0, 1), "sources": rows}
        model.rescorer, model.default_threshold, model.threshold_range = saved
    sources = [s for s in next(iter(results.values()))["sources"] if s != "mean"]
    print(f"{'model':<44} " + " ".join(f"{s[:13]:>21}" for s in sources) + f" {'mean F1':>8}")
    print(f"{'':<44} " + " ".join(f"{'F1 / F1i / sep':>21}" for _ in sources))
    for label, r in results.items():
        cells = [f"{r['sources'][s]['f1']:.3f} / {r['sources'][s]['f1_integral']:.3f} / "
                 f"{r['sources'][s]['separation']:.3f}" for s in sources]
        mean_f1 = float(np.mean([r["sources"][s]["f1"] for s in sources]))
        r["mean_f1"] = mean_f1
        print(f"{label[-44:]:<44} " + " ".join(f"{c:>21}" for c in cells) + f" {mean_f1:8.3f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": platform.processor() or platform.machine(), "threads": a.threads,
                               "held_out_real": sorted(first), "synthetic_images": a.images,
                               "seeds": [SYN_SEED, REALISTIC_SEED], "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
