"""CPU speed of our DeepSpot (MHybrid) port, next to TensorFlow's numbers on this machine kind.

TensorFlow is not installed in the project, so its column is what the spec measured on this machine kind
(shared/specs/deepspot-mhybrid.md section 11: TF 2.15.1, 2 cores, warm calls, 0.13-0.25 s per 256x256 image).
Rows: the bare network per 256x256 tile (batch 1 and 4), per 512x512 tile, one 2048x2048 image run as a
single forward pass, and detect() on that image with the model's default tiling. The machine is shared,
so the load average is recorded before and after.

    python benchmarks/bench_deepspot.py [--weights DIR] [--threads 1 2] [--repeats 5] [--big 2048] [--no-big]

On a busy machine, one thread is the steadier number: two threads stall whenever either core is taken.

Prints a table and writes benchmarks/results/deepspot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TF_SECONDS_PER_256 = (0.13, 0.25)  # spec section 11, tf.function / model.predict warm medians
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "deepspot"


def _time(fn, repeats: int, warm: bool = True) -> list[float]:
    if warm:
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _parity(model) -> float | None:
    """Max |ours - TF| over the fixture outputs (the optimised net must stay exact)."""
    if not FIXTURE.is_dir():
        return None
    err = 0.0
    with torch.inference_mode():
        for case in ("synth_a", "synth_b", "synth_c_384x512", "repo_exp1", "repo_sim1"):
            x = torch.from_numpy(np.load(FIXTURE / f"{case}_input.npy"))[None, None]
            y = model.forward_maps(x)[0, 0].numpy()
            err = max(err, float(np.abs(y - np.load(FIXTURE / f"{case}_output.npy")).max()))
    return err


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="MHybrid SavedModel folder (default: fetch into the cache)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts for the tile rows; the large-image rows use the last one")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big", type=int, default=2048)
    ap.add_argument("--no-big", action="store_true", help="skip the large-image rows")
    ap.add_argument("--out", default=str(HERE / "results" / "deepspot.json"))
    args = ap.parse_args(argv)

    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.models.zoo import load_model
    from napari_spotdetect.core.training.synthetic import synthetic_image
    from napari_spotdetect.core.weights.deepspot_fetch import fetch_deepspot_weights

    load_before = os.getloadavg()
    weights = Path(args.weights) if args.weights else fetch_deepspot_weights()
    t0 = time.perf_counter()
    model = load_model(weights, device="cpu")
    load_s = time.perf_counter() - t0
    rows = [{"what": "load_model (read + CRC-check + fold BN)", "seconds": load_s}]

    def net_row(what, batch, size, per):
        x = torch.rand(batch, 1, size, size)
        with torch.inference_mode():
            ts = _time(lambda: model.forward_maps(x), args.repeats)
        med = float(np.median(ts))
        rows.append({"what": what, "seconds": med, "min": float(min(ts)), "per_256": med / per, "runs": ts})

    for t in args.threads:
        torch.set_num_threads(t)
        net_row(f"net 1 x 256x256, {t} thread(s)", 1, 256, 1)
        net_row(f"net 4 x 256x256, {t} thread(s)", 4, 256, 4)
        net_row(f"net 1 x 512x512, {t} thread(s)", 1, 512, 4)
    if not args.no_big:
        n = args.big
        img, _ = synthetic_image((n, n), n * n // 1000, seed=0)
        equiv = (n / 256) ** 2
        x = torch.from_numpy(model.prepare_image(img[None]))[None]
        with torch.inference_mode():  # the net is warm from the rows above
            ts = _time(lambda: model.forward_maps(x), max(1, args.repeats // 3), warm=False)
        rows.append({"what": f"net whole {n}x{n} (one pass), {args.threads[-1]} thread(s)",
                     "seconds": float(np.median(ts)),
                     "min": float(min(ts)), "per_256": float(np.median(ts)) / equiv, "runs": ts})
        dets = []
        ts = _time(lambda: dets.append(detect(img, model, keep_maps=False)), max(1, args.repeats // 3),
                   warm=False)
        det = dets[-1]
        rows.append({"what": f"detect {n}x{n} ({det.provenance['tiling']['n_tiles']} tiles of "
                             f"{model.tile_size[0]}, overlap {model.tile_overlap})",
                     "seconds": float(np.median(ts)), "min": float(min(ts)),
                     "per_256": float(np.median(ts)) / equiv, "runs": ts, "spots": len(det.spots)})
    parity = _parity(model)
    result = {
        "model": str(weights), "threads": args.threads, "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "processor": platform.processor(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "tf_seconds_per_256_spec": TF_SECONDS_PER_256, "parity_max_abs_err": parity, "rows": rows,
    }
    print(f"DeepSpot MHybrid on CPU, torch {torch.__version__}; "
          f"load average before {load_before[0]:.1f}, after {result['loadavg_after'][0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"{'what':58s} {'median s':>9s} {'min s':>8s} {'s/256^2':>8s}")
    for r in rows:
        print(f"{r['what']:58s} {r['seconds']:9.3f} {r.get('min', r['seconds']):8.3f} "
              f"{r.get('per_256', float('nan')):8.3f}")
    lo, hi = TF_SECONDS_PER_256
    print(f"TensorFlow 2.15 (spec, same machine kind, 2 cores): {lo}-{hi} s per 256^2")
    if parity is not None:
        print(f"parity with TF after optimisation: max |err| = {parity:.2e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
