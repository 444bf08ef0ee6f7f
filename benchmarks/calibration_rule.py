"""How often calibration from a region moves the threshold the wrong way: the rule's margins, judged on ``train``.

Calibration (``core/groundtruth/calibration.py``) replaces the model's threshold only when a move gains enough,
strip by strip, on at least ``MIN_BAND`` candidates. How strict to be is a trade: a loose rule follows luck in a
handful of clicks and ends below the start on the rest of the image; a strict one never moves. This simulates
``bench_hitl.py --real --clicks``'s protocol on the real ``train`` images (never ``val``): on each image, a square
of one half grown around a random annotated spot until it holds 10, 20 or 50 spots (several draws), the other
half scored (F1 integral, 3 px), for each variant of the rule's margins. The bundled network trained on most of
these images (its scores there are better than on new ones), so the images it held out are reported apart.

    python benchmarks/calibration_rule.py [--draws 4] [--threads 1]

Prints, per variant: the runs that moved, the mean gain on the unseen half, the runs that ended below the start
(by more than 0.001) and the worst loss; writes ``results/calibration_rule.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
CLICKS = (5, 10, 20, 50)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=4, help="random regions per image, half and click count")
    ap.add_argument("--se", type=float, nargs="*", default=[1.0])
    ap.add_argument("--min-band", type=int, nargs="*", default=[5, 8])
    ap.add_argument("--guard", choices=("on", "off"), nargs="*", default=["off", "on"],
                    help="the whole-image check (calibration.carries_over) off and/or on")
    ap.add_argument("--images", nargs="*", default=None, help="only images whose name holds one of these")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "calibration_rule.json"))
    a = ap.parse_args(argv)
    import torch
    from bench_hitl import grow_region
    from real_data import REAL_RADIUS, held_out, load_annotated

    import napari_spotdetect.core.groundtruth.calibration as cal
    from napari_spotdetect import load_model
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import f1_integral
    from napari_spotdetect.core.groundtruth.regions import inside

    torch.set_num_threads(a.threads)
    model = load_model("default", device="cpu")
    held = held_out(model)
    variants = list(itertools.product(a.se, a.min_band, a.guard))
    guard = cal.carries_over
    runs = []
    t0 = time.time()
    for im in load_annotated(REAL, split="train", ndim=2):
        if a.images and not any(k in im.stem for k in a.images):
            continue
        img = im.image.astype(np.float32)
        det = detect(img, model, threshold=float(cal.GRID.min()), keep_maps=False)
        c = det.candidates
        yx_all = c[["y", "x"]].to_numpy()[det.passes_contrast_floor()]
        s_all = c["score"].to_numpy()[det.passes_contrast_floor()]
        h, w = img.shape
        ax = 0 if h >= w else 1
        cut = img.shape[ax] // 2
        halves = [(0, 0, cut, w), (cut, 0, h, w)] if ax == 0 else [(0, 0, h, cut), (0, cut, h, w)]

        def f1i(thr, box, yx_all=yx_all, s_all=s_all, truth=im.spots):
            yx = yx_all[s_all > thr]
            return f1_integral(yx[inside(yx, box)], truth[inside(truth, box)])

        rng = np.random.default_rng(a.seed)
        for adapt, score in (halves, halves[::-1]):
            start = f1i(model.default_threshold, score)
            for n, _ in itertools.product(CLICKS, range(a.draws)):
                box = grow_region(adapt, im.spots, n, rng)
                mine = im.spots[inside(im.spots, box)]
                if len(mine) < n or tuple(box) == tuple(adapt):
                    continue
                row = {"image": f"{im.source}/{im.stem}", "held_out": f"{im.source}/{im.stem}" in held,
                       "clicks": n, "box": [int(v) for v in box], "start": start, "by_variant": {}}
                for se, band, on in variants:
                    cal.SE_MULTIPLE, cal.MIN_BAND = se, band
                    cal.carries_over = guard if on == "on" else (lambda *_: True)
                    thr = cal.calibrate(model, [(img, mine, box)], radius=REAL_RADIUS, detections=[det]).threshold
                    same = thr == model.default_threshold
                    row["by_variant"][f"se{se:g}_band{band}_guard_{on}"] = {
                        "threshold": thr, "f1i": start if same else f1i(thr, score)}
                runs.append(row)
        print(f"  {im.source}/{im.stem[:30]}: {len(runs)} runs so far ({time.time() - t0:.0f} s)", flush=True)
    cal.SE_MULTIPLE, cal.MIN_BAND, cal.carries_over = 1.0, 5, guard
    summary = {}
    for group, keep in (("all", lambda r: True), ("held_out", lambda r: r["held_out"]),
                        ("trained_on", lambda r: not r["held_out"])):
        rs = [r for r in runs if keep(r)]
        if not rs:
            continue
        summary[group] = {}
        for name in rs[0]["by_variant"]:
            gains = np.array([r["by_variant"][name]["f1i"] - r["start"] for r in rs])
            moved = np.array([r["by_variant"][name]["threshold"] != model.default_threshold for r in rs])
            summary[group][name] = {"runs": len(rs), "moved": int(moved.sum()), "mean_gain": float(gains.mean()),
                                    "mean_gain_when_moved": float(gains[moved].mean()) if moved.any() else 0.0,
                                    "below_start": int((gains < -0.001).sum()), "worst": float(gains.min())}
    for group, d in summary.items():
        print(f"\n{group} ({next(iter(d.values()))['runs']} runs)\n\n| rule | moved | mean gain | gain when moved | "
              "below the start | worst |\n| --- | --- | --- | --- | --- | --- |")
        for name, v in d.items():
            print(f"| {name} | {v['moved']} | {v['mean_gain']:+.4f} | {v['mean_gain_when_moved']:+.4f} | "
                  f"{v['below_start']} | {v['worst']:+.3f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"draws": a.draws, "seed": a.seed, "clicks": list(CLICKS), "summary": summary,
                               "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
