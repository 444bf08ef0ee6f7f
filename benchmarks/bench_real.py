"""Accuracy on real images: our models against a classical and a deep-learning peer, per source.

Every method is run on the ``val`` images of ``../shared/data/real`` (``--split``) and gives candidate spots
with a score; the score is cut at the method's own default threshold, and also at the threshold that would
have been best for each source in hindsight (to show how well the default is calibrated):

- our models (``--model default``, a model file, ``deepspot``; several ``--model`` allowed; ``--augment``);
- ``blob_log``: scikit-image's Laplacian-of-Gaussian detector with ONE parameter set (sigma range and
  threshold on images scaled to their 0.1-99.9 percentiles) tuned on the ``train`` split, as a careful user
  would set it up;
- ``ufish``: U-FISH's pretrained default model (PyPI ``ufish`` 0.1.1, its ONNX weights, ONNX Runtime),
  installed into its own virtual environment under ``~/.cache/spotdetect-bench`` on first use, never as a
  dependency of this project, run with its own defaults (local maxima of the Laplacian of its enhanced
  image above 0.5);
- ``spotiflow``: a Spotiflow model (PyPI ``spotiflow`` 0.6.5) trained from scratch on our training data with
  its own defaults by ``spotiflow_peer.py``, which also writes its predictions; scored here when they exist
  (``--spotiflow WORK``, default ``runs/spotiflow``), at its own (validation-fitted) threshold.

Scores: precision, recall and F1 with matches within 3 px (one-to-one), the F1 integral (0-3 px), spots found
against annotated, the hindsight-best threshold, and ``separation``: the chance that a true spot scores above
a false one among all candidates (1.0: a threshold can separate them perfectly; 0.5: scores say nothing), and
the F1 integral ``ceiling``: what the method would reach with every annotated spot found and no false one, at
its own localisation errors (clicks and mask centroids sit ~0.5-1 px from the spot centres, so even perfect
detection loses F1 integral on those sources), and ``candidate recall``: the annotated spots within 3 px of a
candidate at the method's lowest threshold (what no threshold can bring back is missing there).
Per-source numbers are means over that source's images; "mean" is the mean over sources.

Our models run at their own contrast floor (:mod:`napari_spotdetect.core.detection.contrast`); ``--contrast-floor K``
scores them again at another (``0``: without one).

    python benchmarks/bench_real.py [--model default] [--model runs/x.pt] [--augment] [--contrast-floor 0]
                                    [--speed exact fast] [--no-ufish] [--spotiflow runs/spotiflow] [--threads 2]

Prints a table and writes benchmarks/results/real.json (``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
SPOTIFLOW_WORK = HERE.parent / "runs" / "spotiflow"
UFISH_HOME = Path(os.environ.get("SPOTDETECT_BENCH_CACHE", Path.home() / ".cache" / "spotdetect-bench"))


# -- candidates of each method: (coords (N, ndim), scores (N,)) per image -------------------------------
def _scaled(img, dtype=np.float32):
    """``img`` with its 0.1 and 99.9th percentiles at 0 and 1, clipped: what ``blob_log`` is run on."""
    lo, hi = np.percentile(img, (0.1, 99.9))
    return np.clip((img.astype(dtype) - lo) / max(hi - lo, 1e-9), 0, 1)


def log_cube(img, sigmas):
    from scipy import ndimage

    return np.stack([-ndimage.gaussian_laplace(img, s) * s ** 2 for s in sigmas], axis=-1)


def blob_candidates(images, params, floor=None):
    """blob_log at ``floor`` (default: the tuned threshold); score = the scale-normalised LoG at the blob."""
    from skimage.feature import blob_log

    out = []
    for im in images:
        img = _scaled(im.image)
        sig = np.linspace(params["min_sigma"], params["max_sigma"], params["num_sigma"])
        thr = params["threshold"] if floor is None else floor
        blobs = blob_log(img, min_sigma=params["min_sigma"], max_sigma=params["max_sigma"],
                         num_sigma=params["num_sigma"], threshold=thr, exclude_border=False)
        nd = img.ndim
        pos = blobs[:, :nd]
        cube = log_cube(img, sig)
        k = np.abs(blobs[:, nd:nd + 1] - sig[None]).argmin(1)
        idx = tuple(np.clip(np.rint(pos[:, d]).astype(int), 0, img.shape[d] - 1) for d in range(nd))
        out.append((pos, cube[idx + (k,)] if len(pos) else np.zeros(0)))
    return out


def tune_blob_log(train) -> dict:
    """The one parameter set, by mean F1 (3 px) over the training images."""
    from real_data import REAL_RADIUS

    from napari_spotdetect.core.groundtruth.metrics import match_spots

    best = None
    for lo, hi in ((0.8, 2.0), (1.0, 3.0), (1.5, 4.0)):
        params = dict(min_sigma=lo, max_sigma=hi, num_sigma=5, threshold=0.005)
        cands = blob_candidates(train, params)
        for thr in np.geomspace(0.005, 0.4, 30):
            f1 = np.mean([match_spots(c[s > thr], im.spots, REAL_RADIUS).f1 for (c, s), im in zip(cands, train)])
            if best is None or f1 > best[0]:
                best = (f1, dict(params, threshold=float(thr)))
    print(f"blob_log tuned on {len(train)} train images: {best[1]} (train F1 {best[0]:.3f})", flush=True)
    return best[1]


def _ufish_python() -> Path:
    venv = UFISH_HOME / "ufish-venv"
    py = venv / "bin" / "python"
    if not (py.exists() and subprocess.run([py, "-c", "import ufish.api, onnxruntime"],
                                           capture_output=True).returncode == 0):
        print(f"installing ufish 0.1.1 into {venv} (its own environment) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "numpy", "scipy", "pandas", "scikit-image",
                        "onnxruntime", "onnx", "loguru"], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "ufish==0.1.1"], check=True)
    return py


UFISH_SCRIPT = r"""
import sys, json, numpy as np
from pathlib import Path
from skimage.filters import laplace
from skimage.morphology import local_maxima
from ufish.api import UFish, STATC_STORE_PATH, DEFAULT_WEIGHTS_FILE
uf = UFish(cuda=False)
uf.load_weights_from_path(str(Path(STATC_STORE_PATH) / DEFAULT_WEIGHTS_FILE))
out = []
for f in sys.argv[2:]:
    img = np.load(f)
    axes = "zyx" if img.ndim == 3 else "yx"
    df, enh = uf.predict(img, axes=axes)  # U-FISH's own defaults: local maxima of laplace(enhanced) > 0.5
    lap = laplace(enh)
    mask = local_maxima(lap, connectivity=2) & (lap > 0.05)
    pts = np.argwhere(mask)
    out.append({"coords": pts.tolist(), "scores": lap[mask].tolist(), "n_default": int(len(df))})
Path(sys.argv[1]).write_text(json.dumps(out))
"""


def ufish_candidates(images, threads: int):
    py = _ufish_python()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, im in enumerate(images):
            f = Path(tmp) / f"{i}.npy"
            np.save(f, im.image)
            files.append(str(f))
        script = Path(tmp) / "run_ufish.py"
        script.write_text(UFISH_SCRIPT)
        res = Path(tmp) / "out.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run([py, str(script), str(res), *files], check=True, env=env, capture_output=True)
        data = json.loads(res.read_text())
    out = []
    for d, im in zip(data, images):
        c = np.asarray(d["coords"], dtype=np.float64).reshape(-1, im.image.ndim)
        s = np.asarray(d["scores"], dtype=np.float64)
        assert int((s > 0.5).sum()) == d["n_default"], "U-FISH's own call and ours disagree"
        out.append((c, s))
    return out


def print_table(results: dict) -> None:
    from real_data import REAL_RADIUS as RADIUS

    srcs = [s for s in next(iter(results.values()))["sources"] if s != "mean"]
    print(f"\nreal `{ARGS.split}` images, F1 at {RADIUS:g} px; found/annotated at the default threshold; "
          "best threshold in hindsight\n")
    print("| method | source | precision | recall | F1 | F1 integral | found / annotated | threshold (best) "
          "| F1 at best | separation | candidate recall | F1 integral ceiling |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, res in results.items():
        for s in srcs + ["mean"]:
            r = res["sources"][s]
            if s == "mean":
                print(f"| **{name}** | **mean** | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                      f"**{r['f1_integral']:.3f}** | | | {r['f1_at_best']:.3f} | | {r['candidate_recall']:.3f} | "
                      f"{r['f1_integral_ceiling']:.3f} |")
            else:
                print(f"| {name} | {s} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                      f"{r['f1_integral']:.3f} | {r['found']} / {r['annotated']} ({r['count_ratio']:.2f}x) | "
                      f"{res['threshold']:.3g} ({r['best_threshold']:.3g}) | {r['f1_at_best']:.3f} | "
                      f"{r['separation']:.3f} | {r['candidate_recall']:.3f} | {r['f1_integral_ceiling']:.3f} |")


def main(argv=None) -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="'default' (bundled), 'deepspot', or a model file; repeat for several (default: default)")
    ap.add_argument("--augment", action="store_true", help="also run our models with test-time augmentation")
    ap.add_argument("--split", default="val", choices=("val", "train"))
    ap.add_argument("--sources", nargs="*", default=None, help="only these sources")
    ap.add_argument("--no-blob", action="store_true", help="skip the blob_log baseline")
    ap.add_argument("--no-ufish", action="store_true", help="skip U-FISH")
    ap.add_argument("--spotiflow", default=None, metavar="WORK",
                    help="score the Spotiflow predictions of spotiflow_peer.py --work WORK (default: runs/spotiflow "
                         "when its predictions exist)")
    ap.add_argument("--contrast-floor", type=float, action="append", default=None, metavar="K",
                    help="also score each model with this contrast floor (repeatable; e.g. 0 to see it without)")
    ap.add_argument("--speed", nargs="+", default=["exact"], choices=("exact", "fast"),
                    help="run our models in these speed modes (default exact; 'exact fast' scores both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--out", default=str(HERE / "results" / "real.json"))
    ARGS = a = ap.parse_args(argv)

    import torch
    from real_data import load_annotated, model_candidates, score_sources

    from napari_spotdetect import load_model

    torch.set_num_threads(a.threads)
    if not Path(a.data).exists():
        raise SystemExit(f"No real data at {a.data}: this benchmark needs ../shared/data/real.")
    images = load_annotated(a.data, split=a.split, sources=a.sources)
    results = {}
    for spec in a.model or ["default"]:
        model = load_model(spec, device="cpu")
        settings = [(aug, None) for aug in ([False, True] if a.augment else [False])]
        settings += [(False, k) for k in a.contrast_floor or [] if k != model.default_contrast_floor]
        for speed, (aug, floor) in itertools.product(a.speed, settings):
            t0 = time.time()
            cands = model_candidates(model, images, augment=aug, contrast_floor=floor, speed=speed)
            name = (f"{spec}{' +augment' if aug else ''}{f' (contrast floor {floor:g})' if floor is not None else ''}"
                    f"{' fast' if speed == 'fast' else ''}")
            results[name] = {"kind": "model", "model": spec, "augment": aug, "speed": speed,
                             "threshold": model.default_threshold,
                             "contrast_floor": model.default_contrast_floor if floor is None else floor,
                             "card_threshold": model.info.card.get("threshold_calibration"),
                             "seconds": round(time.time() - t0, 1),
                             "sources": score_sources(cands, images, model.default_threshold)}
            print(f"{name}: mean F1 integral {results[name]['sources']['mean']['f1_integral']:.3f} "
                  f"({results[name]['seconds']} s)", flush=True)
    if not a.no_blob:
        t0 = time.time()
        train = [im for im in load_annotated(a.data, split="train", ndim=2)]
        train = train[::4]  # every 4th training image: all sources, a few minutes of tuning
        params = tune_blob_log(train)
        cands = blob_candidates(images, params, floor=params["threshold"] / 4)
        results["blob_log"] = {"kind": "classical", "params": params, "threshold": params["threshold"],
                               "tuned_on": f"{len(train)} train images", "seconds": round(time.time() - t0, 1),
                               "sources": score_sources(cands, images, params["threshold"])}
        print(f"blob_log: mean F1 integral {results['blob_log']['sources']['mean']['f1_integral']:.3f}", flush=True)
    if not a.no_ufish:
        t0 = time.time()
        cands = ufish_candidates(images, a.threads)
        results["ufish"] = {"kind": "peer", "package": "ufish==0.1.1 (ONNX Runtime, CPU)", "threshold": 0.5,
                            "seconds": round(time.time() - t0, 1), "sources": score_sources(cands, images, 0.5)}
        print(f"ufish: mean F1 integral {results['ufish']['sources']['mean']['f1_integral']:.3f}", flush=True)
    sf = a.spotiflow or (SPOTIFLOW_WORK if (SPOTIFLOW_WORK / "predictions" / "predict.json").exists() else None)
    if sf:
        sys.path.insert(0, str(HERE))
        from spotiflow_peer import spotiflow_candidates

        cands, thr, info = spotiflow_candidates(images, sf)
        results["spotiflow"] = {"kind": "peer", "package": "spotiflow==0.6.5, trained by spotiflow_peer.py",
                                "threshold": thr, "lowest_threshold": info["floor"], "run": info,
                                "sources": score_sources(cands, images, thr)}
        print(f"spotiflow: mean F1 integral {results['spotiflow']['sources']['mean']['f1_integral']:.3f}", flush=True)
    print_table(results)
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "threads": a.threads, "split": a.split, "radius_px": 3.0,
           "images": [{"source": im.source, "stem": im.stem, "spots": len(im.spots)} for im in images],
           "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {a.out}")
    return 0


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
