"""``spotdetect``: the command line face of the engine (predict, evaluate, train, finetune, models)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from .core.errors import SpotDetectError
from .core.io.spots_io import coordinate_columns, is_sidecar, read_spots_csv

METRIC_KEYS = ("precision", "recall", "f1", "f1_integral")


def cmd_predict(args) -> int:
    from .cli_biology import biology_post, check_predict_inputs
    from .core.detection.batch import PredictOptions, check_output_names, prepare_output, run_batch
    from .core.io.image_sources import find_images

    files = find_images(args.images)
    check_output_names(files)  # before anything is written
    check_predict_inputs(args, files)  # before the model loads and any image runs
    prepare_output(args.out)
    if args.dask_scheduler and args.workers:
        raise SpotDetectError("--dask-scheduler and --workers were both given.",
                              "use --dask-scheduler to join a running cluster, or --workers N to start one here.")
    if args.workers is not None and args.workers < 1:
        raise SpotDetectError(f"--workers {args.workers} is not a number of workers.", "use --workers 1 or more.")
    from . import load_model
    from .core.detection.options import DetectOptions

    # settings are the same for every image: a bad one stops the run before any work (exit 2)
    detection = DetectOptions(threshold=args.threshold, axes=args.axes, tile_size=args.tile_size or None,
                              batch_size=args.batch_size, min_distance=args.min_distance, augment=args.augment,
                              speed=args.speed, contrast_floor=args.contrast_floor)
    options = PredictOptions(model=str(args.model), device=args.device, variant=args.variant, detection=detection,
                             post=biology_post(args))
    model = load_model(args.model, device=args.device, variant=args.variant)
    detection.check_for(model)
    client = cluster = None
    if args.dask_scheduler or args.workers:
        model = None  # each worker loads its own
        client, cluster = _dask_client(args.dask_scheduler, args.workers, args.threads)
        print(f"dask: {len(client.scheduler_info().get('workers', {}))} worker(s) at {client.scheduler.address}",
              file=sys.stderr)
    else:
        import torch

        cpu = str(model.device).startswith("cpu")
        where = f"{model.device}" + (f", {torch.get_num_threads()} thread(s)" if cpu else "")
        print(f"model: {model.info.name} ({model.info.arch} {model.info.variant}) on {where}", file=sys.stderr)
    bar = _Bar()
    try:
        rows = run_batch(files, args.out, options, overwrite=args.overwrite, client=client, model=model,
                         on_start=bar.start, on_result=bar.result, on_tiles=bar.tiles)
    finally:
        bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return _report(rows, Path(args.out))


def _dask_client(address, workers, threads_each=None):
    """A client of the cluster at ``address``, or of a new LocalCluster of ``workers`` processes."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise SpotDetectError("Running on Dask needs the distributed package.", "pip install distributed.") from err
    if address:
        try:
            return Client(address, timeout="20s"), None
        except (OSError, TimeoutError) as err:
            raise SpotDetectError(f"Cannot reach the Dask scheduler at {address}: {err}.",
                                  "check the address (e.g. tcp://host:8786) and that the scheduler runs.") from err

    import dask

    # torch in each worker uses --threads, else its share of the idle cores
    from .core.common.device import idle_cores

    threads = threads_each or max(1, idle_cores() // workers)
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc map and unmap every large
    # array: torch inference ran 2x slower per image here. Our workers start without it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return Client(cluster), cluster


class _Bar:
    """A tqdm progress bar over images (with a time estimate) in a terminal; one line per image otherwise."""

    def __init__(self):
        self.bar = None

    def start(self, n_todo, n_skipped):
        from tqdm import tqdm

        if n_skipped:
            print(f"{n_skipped} image(s) already done, skipped (--overwrite redoes them)", file=sys.stderr)
        self.bar = tqdm(total=n_todo, unit="image", file=sys.stderr, disable=None, dynamic_ncols=True)

    def tiles(self, image, p):
        if self.bar is not None and not self.bar.disable:
            self.bar.set_postfix_str(f"{Path(image).name}: tile {p.done}/{p.total}")

    def result(self, row):
        name = Path(row["image"]).name
        line = (f"{name}: {row['spots']} spots in {row['seconds']:.1f} s" if row["status"] == "done"
                else f"{name}: FAILED: {cli_syntax(row['error'])}")
        if row.get("axes_from_file") and len(row["axes_from_file"]) > 2:
            line += f"; axes {row['axes_from_file']} (from the file's metadata)"
        if row.get("left_out"):
            line += f"; {row['left_out'][0].lower()}{row['left_out'][1:]}"
        if self.bar is None or self.bar.disable:
            print(line, file=sys.stderr, flush=True)
        else:
            if row["status"] != "done":
                self.bar.write(line, file=sys.stderr)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _report(rows, out: Path) -> int:
    from .core.detection.batch import SUMMARY_NAME

    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    seconds = sum(r["seconds"] for r in done)
    print(f"{len(done)} image(s) done in {seconds:.1f} s, {len(rows) - len(done) - len(failed)} skipped, "
          f"{len(failed)} failed; summary in {out / SUMMARY_NAME}", file=sys.stderr)
    if failed:
        print("failed images:", file=sys.stderr)
        for r in failed:
            print(f"  {r['image']}: {cli_syntax(r['error'])}", file=sys.stderr)
        return 1
    return 0


def _coords(df, cols):
    return df[cols].to_numpy(dtype=np.float64)


def cmd_evaluate(args) -> int:
    from .core.groundtruth.metrics import evaluate

    pred_dir, truth_dir = Path(args.pred), Path(args.truth)
    for d in (pred_dir, truth_dir):
        if not d.is_dir():
            raise SpotDetectError(f"{d} is not a folder.", "pass folders of CSV files named after the images.")
    truths = sorted(p for p in truth_dir.glob("*.csv") if not is_sidecar(p))
    if not truths:
        raise SpotDetectError(f"No CSV files in {truth_dir}.", "put one ground-truth CSV per image there.")
    if args.radius is None or not np.isfinite(args.radius) or args.radius <= 0:
        raise SpotDetectError(f"Radius {args.radius} is not a distance.",
                              "pass a positive match radius in pixels, e.g. --radius 1.5.")
    matched = [t for t in truths if (pred_dir / t.name).exists()]
    if not matched:
        raise SpotDetectError(f"No prediction in {pred_dir} has the name of a truth file in {truth_dir} "
                              f"(e.g. {truths[0].name}).",
                              "name each prediction CSV like its truth CSV (predict writes <image stem>.csv).")
    rows = []
    for t in truths:
        truth = read_spots_csv(t)
        p = pred_dir / t.name
        if p.exists():
            pred = read_spots_csv(p)
        else:
            print(f"warning: no prediction {p} for {t.name}; counted as no spots", file=sys.stderr)
            pred = truth.iloc[0:0]
        cols = coordinate_columns(truth)
        if set(cols) != set(coordinate_columns(pred)):
            raise SpotDetectError(
                f"{t.name}: the truth has coordinates {','.join(cols)} but the prediction "
                f"{','.join(coordinate_columns(pred))}; dropping an axis would match spots from different planes.",
                "compare tables of the same image axes (predict a z-stack with --axes zyx for z,y,x truth).")
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
        from .core.io.spots_io import atomic_write_text

        doc = {"radius": args.radius, "images": rows, "mean": mean}
        atomic_write_text(Path(args.json), json.dumps(doc, indent=2))
    return 0


def cmd_demo(args) -> int:
    """Make a synthetic smFISH-like image with its true spots, detect, score, and say what to try next."""
    import tempfile

    import pandas as pd
    import tifffile

    from . import load_model
    from .core.detection.detect import detect
    from .core.groundtruth.metrics import evaluate
    from .core.io.spots_io import write_spots_csv
    from .core.training.synthetic import synthetic_image

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="spotdetect-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    image, truth = synthetic_image((512, 512), n_spots=150, seed=args.seed)
    tif = out / "demo_image.tif"
    tifffile.imwrite(tif, image, metadata={"axes": "YX"})
    truth_csv = write_spots_csv(pd.DataFrame(truth, columns=["y", "x"]), out / "truth" / "demo_image.csv")
    model = load_model(args.model, device=args.device)
    det = detect(image, model)
    pred_csv = write_spots_csv(det.spots.drop(columns=["model"]), out / "predicted" / "demo_image.csv",
                               provenance=det.provenance)
    res = evaluate(det.spots[["y", "x"]].to_numpy(), truth, 1.0)
    print(f"model {model.info.name}: {res['n_pred']} spots found, {res['n_true']} true; precision "
          f"{res['precision']:.3f}, recall {res['recall']:.3f}, F1 {res['f1']:.3f}, F1 integral "
          f"{res['f1_integral']:.3f}.")
    print(f"wrote {tif}, the true spots {truth_csv} and the detected spots {pred_csv}.")
    print("next, look at them in napari, then score them (or score your own predictions the same way):")
    q = shlex.quote
    print(f"  {runnable('napari', 'napari')} {q(str(tif))} {q(str(pred_csv))} {q(str(truth_csv))}")
    print(f"  {runnable('spotdetect', 'napari_spotdetect.cli')} evaluate --pred {q(str(pred_csv.parent))} "
          f"--truth {q(str(truth_csv.parent))}")
    return 0


def runnable(script: str, module: str) -> str:
    """How to start ``script`` of this installation from a shell where its environment is not activated.

    The bare name when the shell's PATH finds this installation's script, else the script's full path, else
    this Python with ``-m module``.
    """
    import os
    import shutil

    here = Path(sys.executable).parent
    mine = next((here / n for n in (script, f"{script}.exe") if (here / n).is_file()), None)
    found = shutil.which(script)
    if mine is not None:
        if found and Path(found).resolve() == mine.resolve():
            return script
        return shlex.quote(str(mine)) if os.name != "nt" else f'"{mine}"'
    return f"{shlex.quote(sys.executable)} -m {module}"


def cmd_models(args) -> int:
    from .core.common.device import available_devices
    from .core.models.model_card import card_lines
    from .core.models.zoo import BUNDLED, DOWNLOADABLE, bundled_path, load_model
    from .core.weights.deepspot_fetch import PACKAGE, VERSION, cache_dir, deepspot_folder, is_complete

    print("bundled (installed with the package):")
    for name in BUNDLED:
        p = bundled_path(name)
        print(f"  {name}: {p} ({'present' if p.exists() else 'missing'})")
        if p.exists():  # its card: training data and licences, normalisation, threshold, real-image scores
            for line in card_lines(load_model(name, device="cpu").info.card):
                print(f"      {line}")
    print("downloadable (fetched once from PyPI on first use, then cached):")
    for name in DOWNLOADABLE:
        folder = deepspot_folder()
        state = f"cached in {folder}" if is_complete(folder) else f"not downloaded yet; goes to {folder}"
        print(f"  {name}: DeepSpot MHybrid from the {PACKAGE}=={VERSION} wheel ({state})")
    print(f"cache folder: {cache_dir()} (set SPOTDETECT_CACHE to move it)")
    print("piscis models: not bundled; download a model file (.pt) from the piscis authors' Hugging Face "
          "repository wniu/Piscis (folder models/, or piscis's own cache ~/.piscis/models/) and pass its path "
          "with --model.")
    print("your own: any .pt written by 'spotdetect train' / 'finetune' or the Fine-tune panel, by path.")
    print("devices:", ", ".join(available_devices()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="spotdetect", description="Deep-learning spot detection (Piscis, DeepSpot, "
                                 "napari-spotdetect models).")
    ap.add_argument("--version", action="version", version=f"napari-spotdetect {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect spots in images and write one CSV per image",
                       description="Detect spots in images, folders of images or glob patterns. Each image gets "
                       "<name>.csv and <name>.provenance.json in --out, plus a summary table predict_summary.csv; "
                       "images already done are skipped, a failed image is reported and the others go on "
                       "(exit code 1 if any failed). Zarr, OME-Zarr, TIFF and .npy are read lazily, tile by tile.")
    p.add_argument("images", nargs="+", help="image files (tif, ome.tif, npy, png), zarr / ome.zarr stores, folders "
                   "of them, or glob patterns (quote them: 'data/*.tif')")
    p.add_argument("--model", default="default", help="'default', a piscis .pt file, a DeepSpot SavedModel folder "
                   "or a napari-spotdetect model file (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder for <image stem>.csv")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold, within the model's score range (default: the model's own tuned one)")
    p.add_argument("--axes", default=None,
                   help="axes of the images, one letter per dimension: yx, zyx (z-stack), cyx (channels), tyx "
                        "(time), tzyx, ... (default: from the TIFF's ImageJ/OME metadata; required for 3-D and "
                        "4-D images without it)")
    p.add_argument("--device", default=None, help="cuda, mps, cpu (default: best available)")
    p.add_argument("--variant", default=None, choices=["current", "legacy"],
                   help="piscis pooling variant (default: guessed from the file)")
    p.add_argument("--tile-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="tile size in pixels, multiples of 8, at least 32 (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass (default: 1 on CPU, 8 on a GPU)")
    p.add_argument("--min-distance", type=int, default=1,
                   help="smallest distance between two spots, in pixels (default: %(default)s)")
    p.add_argument("--augment", action="store_true",
                   help="average the network over the 8 flips/rotations of every tile (about 7x slower; on real images "
                        "no more accurate, its ranking a little better)")
    p.add_argument("--speed", default="exact", choices=["exact", "fast"],
                   help="exact: the model's own tiles in float32 (piscis's spots on piscis files); fast: "
                        "bfloat16/float16 where the hardware has it (and larger tiles without wasted overlap on "
                        "piscis files, which the package's own models use in both modes), 1.3-4x faster, as accurate "
                        "on annotated real images (default: %(default)s)")
    p.add_argument("--contrast-floor", type=float, default=None, metavar="K",
                   help="drop spots dimmer than K x where the image's spots stand out from its texture (the elbow of "
                        "its peaks' contrasts; 2-D planes), e.g. 0.35; 0 keeps all (default: the model's own, 0 for "
                        "the bundled model and for piscis and DeepSpot files)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose results are already in --out")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="send images to the workers of a running dask.distributed cluster (e.g. tcp://host:8786); "
                        "workers must see the images and --out")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="start a local Dask cluster of N worker processes (each loads the model once)")
    from .cli_biology import add_biology_parsers, add_predict_options

    add_predict_options(p)
    add_threads_option(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="precision, recall, F1 and F1 integral of predictions against ground truth")
    e.add_argument("--pred", required=True, help="folder of predicted CSVs")
    e.add_argument("--truth", required=True, help="folder of ground-truth CSVs with the same names")
    e.add_argument("--radius", type=float, default=1.0, help="match radius in pixels (default: %(default)s)")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="detect spots in a synthetic image and score them (checks an installation)")
    d.add_argument("--model", default="default", help="model to use (default: %(default)s)")
    d.add_argument("--out", default=None,
                   help="folder for the image, its true spots and the detected spots (default: a new temporary "
                        "folder, printed at the end)")
    d.add_argument("--device", default=None, help="cuda, mps, cpu (default: best available)")
    d.add_argument("--seed", type=int, default=1, help="seed of the synthetic image (default: %(default)s)")
    add_threads_option(d)
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("models", help="list the models this package knows (bundled, downloadable, cached), "
                                      "where piscis models come from, and the devices")
    m.set_defaults(func=cmd_models)
    add_biology_parsers(sub)

    try:
        from .cli_train import add_train_parsers
    except ImportError:
        pass
    else:
        add_train_parsers(sub)
    return ap


_PY_ARG = re.compile(r"\b(axes|device|threads|threshold|tile_size|batch_size|min_distance|radius|lr|model)="
                     r"(?:'([^']*)'|([\w.+-]+))")


def cli_syntax(message: str) -> str:
    """Hints are written for Python (``axes='yxc'``); on the command line they read ``--axes yxc``."""
    return _PY_ARG.sub(lambda m: f"--{m.group(1).replace('_', '-')} "
                                 f"{m.group(2) if m.group(2) is not None else m.group(3)}",
                       message)


#: a progress line ("img: 3/9 tiles") is open on stderr; an error message starts on a line of its own
_open_line = [False]


def _end_progress_line() -> None:
    if _open_line[0]:
        print(file=sys.stderr)
        _open_line[0] = False


THREADS_HELP = ("CPU threads for the network (default: the cores idle when the command starts, or OMP_NUM_THREADS "
                "when set; torch alone would take every core, which is many times slower on a busy machine)")


def add_threads_option(p) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "threads"):  # every command that runs a network has --threads
            from .core.common.device import use_threads

            use_threads(args.threads)
        return int(args.func(args) or 0)
    except SpotDetectError as err:
        _end_progress_line()
        print(f"error: {cli_syntax(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        _end_progress_line()  # a full disk, a read-only or vanished folder: files already written are complete
        what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        print(f"error: could not read or write a file ({what}). Fix: check the path, its permissions and the free "
              "disk space; files written before this are complete.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; files written so far are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
