"""The ablation table of the bundled model: what each training ingredient does on the real ``val`` split.

Each variant is a model file written by ``scripts/train_default_model.py --real-report ../shared/data/real``
(same start model, seed, steps and budget; only the ingredients differ), so its card already holds its real-val
scores; this script puts them side by side (F1 integral per source, mean, count ratio, synthetic benchmark).

    python benchmarks/ablation_real.py NAME=runs/abl/B.pt NAME=runs/abl/D.pt ... [--out results/ablation_real.json]

Models without real-val scores in their card (e.g. the earlier bundled model) are scored here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="NAME=MODEL (a model file or 'default')")
    ap.add_argument("--out", default=str(HERE / "results" / "ablation_real.json"))
    a = ap.parse_args(argv)

    from real_data import load_annotated, score_model

    from napari_spotdetect import load_model

    rows = {}
    images = None
    for spec in a.variants:
        name, _, path = spec.partition("=")
        model = load_model(path, device="cpu")
        card = model.info.card
        real = (card.get("real_val") or {}).get("sources")
        if real is None:
            images = images or load_annotated(REAL, split="val")
            real = score_model(model, images)
        bench = (card.get("benchmark") or {}).get("x1", {})
        rows[name] = {"model": path, "normalization": model.adjustment, "threshold": model.default_threshold,
                      "real_val": real, "synthetic_f1_integral": bench.get("f1_integral"),
                      "training_data": card.get("training_data")}
    sources = [s for s in next(iter(rows.values()))["real_val"] if s != "mean"]
    print("| variant | " + " | ".join(sources) + " | **mean** | found/annotated | synthetic |")
    print("| --- " * (len(sources) + 4) + "|")
    for name, r in rows.items():
        rv = r["real_val"]
        ratios = ", ".join(f"{rv[s]['count_ratio']:.2f}x" for s in sources)
        syn = f"{r['synthetic_f1_integral']:.3f}" if r["synthetic_f1_integral"] is not None else "-"
        print(f"| {name} | " + " | ".join(f"{rv[s]['f1_integral']:.3f}" for s in sources)
              + f" | **{rv['mean']['f1_integral']:.3f}** | {ratios} | {syn} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
