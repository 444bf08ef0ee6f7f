"""CPU inference speed and peak memory of our Piscis port, next to piscis 1.1.0 on the same weights.

Each image size runs in a fresh subprocess so that peak RSS belongs to that run alone. piscis itself cannot
be installed beside our torch here (it needs torchvision, which needs another torch build), so its
column is the timing the spec recorded on this machine kind with the same model architecture
(shared/specs/piscis-1.1.md section 9: 9.02 s for 1024^2, 29.2 s for 2048^2, batch 1, 2 threads).

    python benchmarks/bench_inference.py [--sizes 1024 4096] [--model PATH] [--threads 2]
    python benchmarks/bench_inference.py --model default --sizes 1024 --augment \
        --out benchmarks/results/inference_default.json

Prints a table and writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PISCIS_SPEC_SECONDS = {1024: 9.02, 2048: 29.2}


def _one(size: int, model_path: str, threads: int, repeats: int, augment: bool = False) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import napari_spotdetect as sd
    from napari_spotdetect.core.training.synthetic import synthetic_image

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = sd.load_model(model_path, device="cpu")
    image, truth = synthetic_image((size, size), n_spots=size * size // 1500, seed=0)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        det = sd.detect(image, model, keep_maps=False, augment=augment)
        times.append(time.perf_counter() - t0)
    n_tiles = det.provenance["tiling"]["n_tiles"]
    t1 = time.perf_counter()
    det.rethreshold(0.7)
    rethr = time.perf_counter() - t1
    return {"size": size, "n_tiles": n_tiles, "seconds": float(np.median(times)), "runs": times,
            "megapixels_per_s": size * size / 1e6 / float(np.median(times)), "rethreshold_s": rethr,
            "n_spots": len(det.spots), "n_true": len(truth), "peak_rss_mb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_load_mb": rss_loaded, "rss_start_mb": rss0,
            "load_average": os.getloadavg()[0], "augment": augment}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--model", default=None, help="piscis .pt, or 'default' (default: the shared piscis fixture, "
                    "decompressed; only then is the piscis column filled)")
    ap.add_argument("--augment", action="store_true", help="also time test-time augmentation (8 views per tile)")
    ap.add_argument("--out", default=str(HERE / "results" / "inference.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child is not None:
        print(json.dumps(_one(args._child, args.model, args.threads, args.repeats, args.augment)))
        return
    model, reference = args.model, args.model is None
    if model is None:
        import lzma

        model = "/tmp/spotdetect_bench_piscis.pt"
        if not Path(model).exists():
            fixture = HERE.parent.parent / "shared/fixtures/piscis/piscis_fixture.pt.xz"
            Path(model).write_bytes(lzma.open(fixture).read())
    rows = []
    for size in args.sizes:
        for augment in (False, True) if args.augment else (False,):
            out = subprocess.run([sys.executable, __file__, "--_child", str(size), "--model", model, "--threads",
                                  str(args.threads), "--repeats", str(args.repeats)]
                                 + (["--augment"] if augment else []),
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        ref = PISCIS_SPEC_SECONDS.get(r["size"]) if reference and not r["augment"] else None
        r["piscis_spec_seconds"] = ref
        r["speed_ratio_vs_piscis"] = (ref / r["seconds"]) if ref else None
    print(f"model {model}, {args.threads} threads")
    print(f"{'image':>10} {'aug':>3} {'tiles':>5} {'seconds':>8} {'MP/s':>6} {'s/tile':>6} {'peak RSS MB':>11} "
          f"{'rethreshold ms':>14} {'piscis s (spec)':>15} {'load':>5}")
    for r in rows:
        ref = f"{r['piscis_spec_seconds']:.1f}" if r["piscis_spec_seconds"] else "-"
        print(f"{r['size']:>5}x{r['size']:<4} {'yes' if r['augment'] else 'no':>3} {r['n_tiles']:>5} "
              f"{r['seconds']:>8.1f} "
              f"{r['megapixels_per_s']:>6.3f} {r['seconds'] / r['n_tiles']:>6.3f} {r['peak_rss_mb']:>11.0f} "
              f"{r['rethreshold_s'] * 1e3:>14.1f} "
              f"{ref:>15} {r['load_average']:>5.1f}")
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": model, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
