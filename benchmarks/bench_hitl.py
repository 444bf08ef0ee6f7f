"""Human-in-the-loop gain: correct one image of an unseen kind, fine-tune briefly, detect better on the rest.

The starting model is the bundled default (or, when this installation has none, the piscis fixture model
from ../shared, which the table says). The images are a synthetic kind it was not trained on
(``--kind``, default ``large_spots``: wider spots, brighter uneven background). One image is "corrected"
(its true spots stand in for the user's corrections); the model is fine-tuned on it exactly as the widget
does (:func:`core.training.finetuning.iter_finetune`, validation on that image), stopped after ``--minutes``
at most; then F1 (match radius 1 px) and the F1 integral are measured on the other images, before and after. "before,
re-thresholded" uses the threshold that is best on the corrected image, to show how much of the gain a
threshold change alone would give.

    python benchmarks/bench_hitl.py [--minutes 5] [--kind large_spots] [--test-images 6] [--threads 1]
    python benchmarks/bench_hitl.py --model deepspot --kind dense_textured --lr 1e-4 \
        --out benchmarks/results/hitl_deepspot.json
    python benchmarks/bench_hitl.py --real [--per-source 2] [--minutes 5]
    python benchmarks/bench_hitl.py --real --clicks [--per-source 1] [--threads 1] [--sources a,b] [--at 100,half]
    python benchmarks/bench_hitl.py --real --clicks --split train [--ft epochs=8] --out /tmp/hitl_train.json

``--real --clicks``: on each 2-D real ``val`` image, a square region of the first half grown around a random
annotated spot until it holds about 5, 10, 20, 50, 100 spots (or the whole half) stands in for the user's clicks;
the model is calibrated (threshold only) and fine-tuned (the fast preset) on that region, and the other half is
scored (F1 integral): adaptation curves with the CPU seconds of each. Writes benchmarks/results/hitl_clicks.json.
``--split train`` runs the same protocol on the ``train`` images the bundled network held out from its training
(its model card lists them): where a fine-tuning rule or setting is judged before ``val`` is looked at;
``--ft KEY=VALUE`` overrides a setting of the fast preset (e.g. ``--ft epochs=8``).

``--real``: on each 2-D real ``val`` image of ../shared/data/real, the annotation of one half (the left or top
half, along the longer side) stands in for the user's corrections; the model is fine-tuned on that half for at
most ``--minutes`` and the other half is scored before and after (F1 within 3 px, F1 integral), per image and
per source. Writes benchmarks/results/hitl_real.json.

Prints a table and writes benchmarks/results/hitl.json.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "piscis" / "piscis_fixture.pt.xz"


def _start_model(tmp: Path, path: str | None):
    from napari_spotdetect import load_model
    from napari_spotdetect.core.models.zoo import bundled_path

    if path:
        return load_model(path, device="cpu"), f"{path} model" if path == "deepspot" else f"file {path}"
    if bundled_path("default").exists():
        return load_model("default", device="cpu"), "bundled default model"
    if not FIXTURE.exists():
        raise SystemExit(f"No bundled default model and no piscis fixture at {FIXTURE}; pass --model PATH.")
    out = tmp / "piscis_fixture.pt"
    with lzma.open(FIXTURE) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return load_model(out, device="cpu"), "piscis fixture model (the bundled default model is absent here)"


def _scores(model, pairs, threshold=None) -> dict:
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import evaluate

    per = [evaluate(detect(img, model, threshold=threshold, keep_maps=False).spots[["y", "x"]].to_numpy(), gt)
           for img, gt in pairs]
    return {k: float(np.mean([m[k] for m in per])) for k in ("f1", "f1_integral", "precision", "recall")} | {
        "per_image_f1": [round(float(m["f1"]), 4) for m in per]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="fine-tuning time limit (default: %(default)s)")
    ap.add_argument("--kind", default="large_spots", help="synthetic kind the model has not seen")
    ap.add_argument("--test-images", type=int, default=6)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10, help="steps per epoch")
    ap.add_argument("--model", default=None, help="model to start from: a file, or 'deepspot' (default: bundled, "
                    "else fixture)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the fine-tuning default; "
                    "1e-4 suits DeepSpot)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=None, help="JSON output (default: results/hitl.json, or hitl_real.json)")
    ap.add_argument("--real", action="store_true", help="real val images, half corrected, half scored")
    ap.add_argument("--per-source", type=int, default=None, help="with --real: at most this many images per source")
    ap.add_argument("--clicks", action="store_true",
                    help="with --real: adaptation curves from a region of 5, 10, 20, 50, 100 annotated spots or a half "
                         "image, calibration and fast fine-tuning, scored on the unseen half")
    ap.add_argument("--sources", default=None, help="with --real --clicks: only these sources (comma-separated)")
    ap.add_argument("--split", default="val", choices=("val", "train"),
                    help="with --real --clicks: 'train' takes the train images the bundled network held out from its "
                    "training (its model card lists them), to judge a fine-tuning setting without looking at val")
    ap.add_argument("--ft", action="append", default=[], metavar="KEY=VALUE",
                    help="with --real --clicks: override a setting of the fast fine-tuning preset (e.g. epochs=10); "
                    "repeatable")
    ap.add_argument("--at", default=None, help="with --real --clicks: only these click counts (comma-separated, "
                    "e.g. 100,half), to re-run a few points of the curve")
    args = ap.parse_args()
    if args.real and args.clicks:
        return main_clicks(args)
    if args.real:
        return main_real(args)
    args.out = args.out or str(HERE / "results" / "hitl.json")

    import torch

    from napari_spotdetect.core.common.steps import run_steps
    from napari_spotdetect.core.training.finetuning import iter_finetune
    from napari_spotdetect.core.training.synthetic import synthetic_dataset
    from napari_spotdetect.core.training.train import TrainConfig

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp())
    try:
        model, model_note = _start_model(tmp, args.model)
        data = synthetic_dataset(args.test_images + 1, args.kind, seed=args.seed, shape=(args.size, args.size))
        corrected, test = data[:1], data[1:]
        print(f"start: {model_note}; kind {args.kind!r}; 1 corrected + {len(test)} test images of "
              f"{args.size}x{args.size}; load average {load_start[0]:.1f} on {os.cpu_count()} cores", flush=True)

        t0 = time.perf_counter()
        before = _scores(model, test)
        eval_s = time.perf_counter() - t0
        from napari_spotdetect.core.groundtruth.calibration import calibrate

        # the product's threshold-only path (the Calibrate button, `spotdetect calibrate`), at the test radius: a
        # trainer's validation would score the network without the model's second stage, on another scale
        thr_before = calibrate(model, corrected, radius=1.0).threshold
        before_rethr = _scores(model, test, thr_before)

        lr = {} if args.lr is None else {"lr": args.lr}
        cfg = TrainConfig.finetune(epochs=args.epochs, steps_per_epoch=args.steps, seed=args.seed, **lr)
        deadline = time.perf_counter() + 60 * args.minutes
        gen = iter_finetune(model, corrected, None, cfg, out=tmp / "models" / "hitl.pt",
                            stop=lambda: time.perf_counter() > deadline)
        t_train = time.perf_counter()
        steps = 0

        def on_event(ev):
            nonlocal steps
            if ev.kind == "step":
                steps += 1
            elif ev.kind == "epoch":
                print(f"  {ev.message} ({time.perf_counter() - t_train:.0f} s)", flush=True)

        res = run_steps(gen, on_event)
        train_s = time.perf_counter() - t_train
        if res.model is None:
            raise SystemExit("The time limit ended before the first epoch; raise --minutes or lower --steps.")
        after = _scores(res.model, test)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [("before (model's own threshold)", before, model.default_threshold),
            ("before, threshold re-tuned on the corrected image", before_rethr, thr_before),
            ("after fine-tuning (its tuned threshold)", after, res.model.default_threshold)]
    print(f"\n{'':52s} {'thr':>5s} {'F1':>6s} {'F1 int':>7s} {'prec':>6s} {'recall':>6s}")
    for name, s, thr in rows:
        print(f"{name:52s} {thr:5.2f} {s['f1']:6.3f} {s['f1_integral']:7.3f} {s['precision']:6.3f} {s['recall']:6.3f}")
    print(f"\nfine-tuning: {steps} steps, {len(res.history)} epochs in {train_s:.0f} s"
          f"{' (stopped at the time limit)' if res.stopped else ''}; best epoch {res.model.info.card.get('epoch')}; "
          f"one evaluation pass over the test images took {eval_s:.1f} s")
    out = {"start_model": model_note, "kind": args.kind, "image_size": args.size, "n_test_images": len(test),
           "match_radius_px": 1.0, "minutes_limit": args.minutes,
           "before": before | {"threshold": model.default_threshold},
           "before_rethresholded": before_rethr | {"threshold": thr_before},
           "after": after | {"threshold": res.model.default_threshold},
           "finetune": {"steps": steps, "epochs_done": len(res.history), "seconds": round(train_s, 1),
                        "stopped_at_limit": res.stopped, "best_epoch": res.model.info.card.get("epoch"),
                        "config": {"epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch, "lr": cfg.lr,
                                   "batch_size": cfg.batch_size, "crop": cfg.crop, "loss": cfg.loss}},
           "machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads, "python": platform.python_version(),
                       "torch": torch.__version__, "load_average_start": [round(v, 2) for v in load_start],
                       "load_average_end": [round(v, 2) for v in os.getloadavg()],
                       "note": "shared machine; other jobs ran at the same time"}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


REAL = HERE.parent.parent / "shared" / "data" / "real"


def halves(image, spots):
    """((first half image, its spots), (second half, its spots)) split across the longer side."""
    ax = 0 if image.shape[0] >= image.shape[1] else 1
    cut = image.shape[ax] // 2
    first = spots[:, ax] < cut - 0.5
    a = image[:cut] if ax == 0 else image[:, :cut]
    b = image[cut:] if ax == 0 else image[:, cut:]
    sb = spots[~first].copy()
    sb[:, ax] -= cut
    return (a, spots[first]), (b, sb)


def main_real(args) -> int:
    import torch
    from real_data import REAL_RADIUS, load_annotated

    from napari_spotdetect.core.common.steps import run_steps
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import evaluate, f1_integral
    from napari_spotdetect.core.training.finetuning import iter_finetune
    from napari_spotdetect.core.training.train import TrainConfig

    torch.set_num_threads(args.threads)
    if not REAL.exists():
        raise SystemExit(f"No real data at {REAL}.")
    ims = load_annotated(REAL, split="val", ndim=2, per_source=args.per_source or None)

    def score(model, pair, thr=None):
        sp = detect(pair[0], model, threshold=thr, keep_maps=False).spots[["y", "x"]].to_numpy()
        e = evaluate(sp, pair[1], REAL_RADIUS)
        return {"f1": e["f1"], "precision": e["precision"], "recall": e["recall"],
                "f1_integral": f1_integral(sp, pair[1]), "found": len(sp), "annotated": len(pair[1])}

    rows = []
    tmp = Path(tempfile.mkdtemp())
    try:
        model, model_note = _start_model(tmp, args.model)
        print(f"start: {model_note}; {len(ims)} real val images, {args.minutes} min of fine-tuning each", flush=True)
        for im in ims:
            corrected, test = halves(im.image.astype(np.float32), im.spots)
            if len(corrected[1]) == 0 or len(test[1]) == 0:
                print(f"  {im.source}/{im.stem}: a half has no annotated spot; skipped", flush=True)
                continue
            before = score(model, test)
            lr = {} if args.lr is None else {"lr": args.lr}
            cfg = TrainConfig.finetune(epochs=args.epochs, steps_per_epoch=args.steps, seed=args.seed,
                                       val_radius=REAL_RADIUS, **lr)
            deadline = time.perf_counter() + 60 * args.minutes
            t0 = time.perf_counter()
            gen = iter_finetune(model, [corrected], None, cfg, out=tmp / im.stem / "hitl.pt",
                                stop=lambda deadline=deadline: time.perf_counter() > deadline)
            steps = 0

            def on_event(ev):
                nonlocal steps
                steps += ev.kind == "step"

            res = run_steps(gen, on_event)
            after = score(res.model, test) if res.model is not None else None
            row = {"source": im.source, "stem": im.stem, "before": before, "after": after, "steps": steps,
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(f"  {im.source}/{im.stem[:40]}: F1 integral {before['f1_integral']:.3f} -> "
                  f"{after['f1_integral'] if after else float('nan'):.3f} ({steps} steps, {row['seconds']} s)",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_src: dict[str, dict] = {}
    for r in rows:
        if r["after"] is None:
            continue
        d = per_src.setdefault(r["source"], {"images": 0, "before_f1_integral": [], "after_f1_integral": [],
                                              "before_f1": [], "after_f1": []})
        d["images"] += 1
        for when in ("before", "after"):
            d[f"{when}_f1_integral"].append(r[when]["f1_integral"])
            d[f"{when}_f1"].append(r[when]["f1"])
    print("\n| source | images | F1 before | F1 after | F1 integral before | F1 integral after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for src, d in per_src.items():
        for k in ("before_f1_integral", "after_f1_integral", "before_f1", "after_f1"):
            d[k] = float(np.mean(d[k]))
        print(f"| {src} | {d['images']} | {d['before_f1']:.3f} | {d['after_f1']:.3f} | "
              f"{d['before_f1_integral']:.3f} | {d['after_f1_integral']:.3f} |")
    if per_src:
        mb = np.mean([d["before_f1_integral"] for d in per_src.values()])
        ma = np.mean([d["after_f1_integral"] for d in per_src.values()])
        print(f"| **mean over sources** | | | | **{mb:.3f}** | **{ma:.3f}** |")
    out = Path(args.out or HERE / "results" / "hitl_real.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"start_model": model_note, "minutes_limit": args.minutes, "radius_px": REAL_RADIUS,
                               "per_source_cap": args.per_source, "threads": args.threads,
                               "sources": per_src, "images": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


CLICKS = (5, 10, 20, 50, 100, "half")


def grow_region(half, spots, n, rng):
    """A square around a random annotated spot of ``half`` (a box), grown until it holds ``n`` spots."""
    from napari_spotdetect.core.groundtruth.regions import inside

    mine = spots[inside(spots, half)]
    if n == "half" or len(mine) <= n:
        return tuple(half)
    cy, cx = mine[rng.integers(len(mine))]
    y0, x0, y1, x1 = half
    for r in range(4, max(y1 - y0, x1 - x0), 2):
        box = (max(y0, int(cy) - r), max(x0, int(cx) - r), min(y1, int(cy) + r + 1), min(x1, int(cx) + r + 1))
        if inside(spots, box).sum() >= n:
            return box
    return tuple(half)


def main_clicks(args) -> int:
    """Adaptation curves: F1 integral on the unseen half against the spots annotated in a region of the other."""
    import torch
    from real_data import REAL_RADIUS, SWEEP, held_out, load_annotated

    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.calibration import GRID, calibrate
    from napari_spotdetect.core.groundtruth.metrics import f1_integral
    from napari_spotdetect.core.groundtruth.regions import inside
    from napari_spotdetect.core.training.finetuning import finetune, finetune_config

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    model, model_note = _start_model(tmp, args.model)
    sources = args.sources.split(",") if args.sources else None
    if args.split == "train":  # only what the network never trained on, every such image
        held = held_out(model)
        ims = [im for im in load_annotated(REAL, split="train", ndim=2, sources=sources)
               if f"{im.source}/{im.stem}" in held]
        if args.per_source:
            ims = [im for i, im in enumerate(ims) if sum(j.source == im.source for j in ims[:i]) < args.per_source]
    else:
        ims = load_annotated(REAL, split="val", ndim=2, per_source=args.per_source or 1, sources=sources)
    overrides = {k: _number(v) for k, v in (kv.split("=", 1) for kv in args.ft)}
    wanted = {str(v).strip() for v in args.at.split(",")} if args.at else None
    rows = []
    print(f"start: {model_note}; {len(ims)} real val images; {args.threads} thread(s)", flush=True)

    def f1i(det, thr, truth, box):
        c = det.candidates
        yx = c[["y", "x"]].to_numpy()[(c["score"].to_numpy() > thr) & det.passes_contrast_floor()]
        return f1_integral(yx[inside(yx, box)], truth[inside(truth, box)])

    try:
        for im in ims:
            img = im.image.astype(np.float32)
            h, w = img.shape
            ax = 0 if h >= w else 1
            cut = img.shape[ax] // 2
            a = (0, 0, cut, w) if ax == 0 else (0, 0, h, cut)  # adapted on
            b = (cut, 0, h, w) if ax == 0 else (0, cut, h, w)  # scored on
            det = detect(img, model, threshold=float(GRID.min()), keep_maps=False)
            start = f1i(det, model.default_threshold, im.spots, b)
            oracle = max(f1i(det, t, im.spots, b) for t in np.union1d(SWEEP, GRID))
            row = {"source": im.source, "stem": im.stem, "spots_in_adapted_half": int(inside(im.spots, a).sum()),
                   "start": start, "hindsight_threshold": oracle, "curve": []}
            rng = np.random.default_rng(args.seed)
            for n in CLICKS:
                # 5 clicks draw from a generator of their own: the other points keep the regions of earlier runs
                box = grow_region(a, im.spots, n, np.random.default_rng(args.seed + 5) if n == 5 else rng)
                mine = im.spots[inside(im.spots, box)]
                if n != "half" and len(mine) < n:
                    continue  # the half holds fewer spots: only the half-image point
                if wanted is not None and str(n) not in wanted:
                    continue  # (the region is still drawn: the same regions as in a full run)
                ex = [(img, mine, box)]
                t0 = time.process_time()
                cal = calibrate(model, ex, radius=REAL_RADIUS, detections=[det])
                cal_s = time.process_time() - t0
                t0, w0 = time.process_time(), time.perf_counter()
                cfg = finetune_config(fast=True, val_radius=REAL_RADIUS, seed=args.seed, **overrides)
                res = finetune(model, ex, None, cfg, out=tmp / im.stem / f"{n}.pt")
                ft_s, ft_wall = time.process_time() - t0, time.perf_counter() - w0
                tuned = detect(img, res.model, keep_maps=False)
                point = {"clicks": n, "annotated": int(len(mine)), "box": list(box),
                         "calibrated": f1i(det, cal.threshold, im.spots, b), "threshold": cal.threshold,
                         "calibrate_cpu_s": round(cal_s, 3),
                         "finetuned": f1_integral(*(p[inside(p, b)] for p in (
                             tuned.spots[["y", "x"]].to_numpy(), im.spots))),
                         "finetune_kept_start": res.kept_start, "finetune_threshold": res.model.default_threshold,
                         "finetune_best_epoch": res.model.info.card.get("epoch"),
                         "finetune_second_stage": getattr(res.model, "rescorer", None) is not None,
                         "finetune_cpu_s": round(ft_s, 1),
                         "finetune_wall_s": round(ft_wall, 1)}
                row["curve"].append(point)
                print(f"  {im.source}/{im.stem[:30]} {n!s:>4} ({len(mine)} spots): start {start:.3f}, calibrated "
                      f"{point['calibrated']:.3f} ({cal_s:.2f} s), fine-tuned {point['finetuned']:.3f} "
                      f"({ft_s:.0f} CPU s{', kept the start' if res.kept_start else ''}, threshold "
                      f"{res.model.default_threshold:.3g}); hindsight {oracle:.3f}",
                      flush=True)
            rows.append(row)
            _write_clicks(args, model_note, rows, REAL_RADIUS)  # after each image: a cut-short run keeps its part
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| source | start | clicks | calibrated | fine-tuned (fast) | CPU s (calibrate / fine-tune) | "
          "best threshold in hindsight |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for p in r["curve"]:
            print(f"| {r['source']} | {r['start']:.3f} | {p['clicks']} ({p['annotated']}) | {p['calibrated']:.3f} | "
                  f"{p['finetuned']:.3f} | {p['calibrate_cpu_s']:.2f} / {p['finetune_cpu_s']:.0f} | "
                  f"{r['hindsight_threshold']:.3f} |")
    summary = _write_clicks(args, model_note, rows, REAL_RADIUS)
    print("\n| clicks | sources | start | calibrated | fine-tuned (fast) | fine-tune CPU s |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for n, d in summary.items():
        print(f"| {n} | {d['sources']} | {d['start']:.3f} | {d['calibrated']:.3f} | {d['finetuned']:.3f} | "
              f"{d['finetune_cpu_s']:.0f} |")
    return 0


def _number(text: str):
    """A --ft value as the number (or boolean) it spells, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _write_clicks(args, model_note, rows, radius) -> dict:
    summary = {}
    for n in CLICKS:
        pts = [(r, p) for r in rows for p in r["curve"] if p["clicks"] == n]
        if pts:
            summary[str(n)] = {k: float(np.mean([p[k] for _, p in pts]))
                               for k in ("calibrated", "finetuned", "finetune_cpu_s")}
            summary[str(n)].update(start=float(np.mean([r["start"] for r, _ in pts])), sources=len(pts))
    out = Path(args.out or HERE / "results" / "hitl_clicks.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"start_model": model_note, "radius_px": radius, "threads": args.threads,
                               "seed": args.seed, "split": args.split,
                               "finetune_overrides": {k: v for k, v in (kv.split("=", 1) for kv in args.ft)},
                               "machine": platform.processor() or platform.machine(),
                               "note": "shared 2-core machine, other jobs running; CPU seconds from process_time",
                               "summary": summary, "images": rows}, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
