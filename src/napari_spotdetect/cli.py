"""``spotdetect``: the command line face of the engine (predict, evaluate, train, finetune, models)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .core.errors import SpotDetectError
from .core.spots_io import IMAGE_SUFFIXES, coordinate_columns, is_sidecar, read_spots_csv

METRIC_KEYS = ("precision", "recall", "f1", "f1_integral")


def _image_files(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise SpotDetectError(f"{p} does not exist.", "give image files or folders of images.")
    if not files:
        raise SpotDetectError(f"No images found in {paths}.", f"use files ending in {sorted(IMAGE_SUFFIXES)}.")
    return files


def cmd_predict(args) -> int:
    from . import load_model
    from .core.detect import detect
    from .cli_biology import after_predict
    from .core.spots_io import read_image, write_spots_csv

    files = _image_files(args.images)
    model = load_model(args.model, device=args.device, variant=args.variant)
    out = Path(args.out)
    print(f"model: {model.info.name} ({model.info.arch} {model.info.variant}) on {model.device}", file=sys.stderr)
    for f in files:
        image = read_image(f)

        def progress(p, name=f.name):
            print(f"\r{name}: {p.done}/{p.total} tiles", end="", file=sys.stderr, flush=True)

        det = detect(image, model, args.threshold, axes=args.axes, tile_size=args.tile_size,
                     batch_size=args.batch_size, min_distance=args.min_distance, keep_maps=False, progress=progress,
                     augment=args.augment)
        spots = det.spots.drop(columns=["model"])
        spots, note = after_predict(args, image, spots, f, out)
        prov = {**det.provenance, "image": str(f.resolve()), "n_spots": len(spots), **note}
        path = write_spots_csv(spots, out / f"{f.stem}.csv", provenance=prov)
        print(f"\r{f.name}: {len(spots)} spots -> {path}", file=sys.stderr)
    return 0


def _coords(df, cols):
    return df[cols].to_numpy(dtype=np.float64)


def cmd_evaluate(args) -> int:
    from .core.metrics import evaluate

    pred_dir, truth_dir = Path(args.pred), Path(args.truth)
    for d in (pred_dir, truth_dir):
        if not d.is_dir():
            raise SpotDetectError(f"{d} is not a folder.", "pass folders of CSV files named after the images.")
    truths = sorted(p for p in truth_dir.glob("*.csv") if not is_sidecar(p))
    if not truths:
        raise SpotDetectError(f"No CSV files in {truth_dir}.", "put one ground-truth CSV per image there.")
    rows = []
    for t in truths:
        truth = read_spots_csv(t)
        p = pred_dir / t.name
        if p.exists():
            pred = read_spots_csv(p)
        else:
            print(f"warning: no prediction {p} for {t.name}; counted as no spots", file=sys.stderr)
            pred = truth.iloc[0:0]
        cols = [c for c in coordinate_columns(truth) if c in pred.columns]
        res = evaluate(_coords(pred, cols), _coords(truth, cols), radius=args.radius)
        rows.append({"image": t.stem, **res})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}
    width = max(5, *(len(r["image"]) for r in rows))
    print(f"{'image':<{width}}  {'n_pred':>6} {'n_true':>6} {'precision':>9} {'recall':>7} {'f1':>6} {'f1_int':>7}")
    for r in rows:
        print(f"{r['image']:<{width}}  {r['n_pred']:>6} {r['n_true']:>6} {r['precision']:>9.4f} {r['recall']:>7.4f} "
              f"{r['f1']:>6.4f} {r['f1_integral']:>7.4f}")
    print(f"{'mean':<{width}}  {'':>6} {'':>6} {mean['precision']:>9.4f} {mean['recall']:>7.4f} {mean['f1']:>6.4f} "
          f"{mean['f1_integral']:>7.4f}   (radius {args.radius} px)")
    if args.json:
        from .core.spots_io import atomic_write_text

        doc = {"radius": args.radius, "images": rows, "mean": mean}
        atomic_write_text(Path(args.json), json.dumps(doc, indent=2))
    return 0


def cmd_demo(args) -> int:
    """Make a synthetic smFISH-like image, detect its spots, and score them against the truth."""
    from . import load_model
    from .core.detect import detect
    from .core.metrics import evaluate
    from .core.spots_io import write_spots_csv
    from .core.synthetic import synthetic_image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, truth = synthetic_image((512, 512), n_spots=150, seed=args.seed)
    np.save(out / "demo_image.npy", image)
    model = load_model(args.model, device=args.device)
    det = detect(image, model)
    write_spots_csv(det.spots.drop(columns=["model"]), out / "demo_image.csv", provenance=det.provenance)
    res = evaluate(det.spots[["y", "x"]].to_numpy(), truth, 1.0)
    print(f"model {model.info.name}: {res['n_pred']} spots found, {res['n_true']} true; precision "
          f"{res['precision']:.3f}, recall {res['recall']:.3f}, F1 {res['f1']:.3f}, F1 integral "
          f"{res['f1_integral']:.3f}. Files in {out}/")
    return 0


def cmd_models(args) -> int:
    from .core.device import available_devices
    from .core.models.zoo import BUNDLED, bundled_path

    for name in BUNDLED:
        p = bundled_path(name)
        print(f"{name}: {p} ({'present' if p.exists() else 'missing'})")
    print("devices:", ", ".join(available_devices()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="spotdetect", description="Deep-learning spot detection (Piscis, DeepSpot, "
                                 "napari-spotdetect models).")
    ap.add_argument("--version", action="version", version=f"napari-spotdetect {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect spots in images and write one CSV per image")
    p.add_argument("images", nargs="+", help="image files (tif, npy, png) or folders of them")
    p.add_argument("--model", default="default", help="'default', a piscis .pt file, a DeepSpot SavedModel folder "
                   "or a napari-spotdetect model file (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder for <image stem>.csv")
    p.add_argument("--threshold", type=float, default=None, help="score threshold (default: the model's own)")
    p.add_argument("--axes", default=None, help="axes of the images, e.g. yx, zyx, tyx, cyx (default by rank)")
    p.add_argument("--device", default=None, help="cuda, mps, cpu (default: best available)")
    p.add_argument("--variant", default=None, choices=["current", "legacy"], help="piscis pooling variant")
    p.add_argument("--tile-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--min-distance", type=int, default=1)
    p.add_argument("--augment", action="store_true",
                   help="average the network over the 8 flips/rotations of every tile (about 8x slower, a little "
                        "more accurate)")
    from .cli_biology import add_biology_parsers, add_predict_options

    add_predict_options(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="precision, recall, F1 and F1 integral of predictions against ground truth")
    e.add_argument("--pred", required=True, help="folder of predicted CSVs")
    e.add_argument("--truth", required=True, help="folder of ground-truth CSVs with the same names")
    e.add_argument("--radius", type=float, default=1.0, help="match radius in pixels (default: %(default)s)")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="detect spots in a synthetic image and score them (checks an installation)")
    d.add_argument("--model", default="default", help="model to use (default: %(default)s)")
    d.add_argument("--out", default="spotdetect-demo", help="folder for the image and spots (default: %(default)s)")
    d.add_argument("--device", default=None)
    d.add_argument("--seed", type=int, default=1)
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("models", help="list bundled models and devices")
    m.set_defaults(func=cmd_models)
    add_biology_parsers(sub)

    try:
        from .cli_train import add_train_parsers
    except ImportError:
        pass
    else:
        add_train_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpotDetectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; files written so far are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
