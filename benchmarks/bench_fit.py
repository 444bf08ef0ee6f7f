"""How many spots per second the vectorised Gaussian fit measures on the CPU (2-D planes and 3-D stacks).

Draws pixel-integrated Gaussian spots (sigma 1.3 px lateral, 2 px axial, Poisson noise) on a grid, starts
every fit at the rounded true position, and times :func:`core.analysis.fit.fit_gaussians` (one thread by default).
Also reports the accuracy, so speed is never bought with wrong fits:
    python benchmarks/bench_fit.py [--n 100000] [--n3d 20000] [--threads 1]
Prints a table and writes benchmarks/results/fit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def make_plane(n: int, sigma=1.3, amp=1500.0, bg=100.0, spacing=12, seed=0):
    import numpy as np
    from scipy.special import ndtr

    side = int(np.ceil(np.sqrt(n)))
    size = side * spacing + spacing
    rng = np.random.default_rng(seed)
    centres = (np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n]
               * spacing + spacing) + rng.uniform(-0.5, 0.5, (n, 2))
    img = np.full((size, size), bg)
    r = np.arange(-5, 6)
    total = amp * 2 * np.pi * sigma**2
    for c in centres:  # drawing is setup, not timed
        y0, x0 = np.rint(c).astype(int)
        py = ndtr((y0 + r + 0.5 - c[0]) / sigma) - ndtr((y0 + r - 0.5 - c[0]) / sigma)
        px = ndtr((x0 + r + 0.5 - c[1]) / sigma) - ndtr((x0 + r - 0.5 - c[1]) / sigma)
        img[y0 - 5:y0 + 6, x0 - 5:x0 + 6] += total * np.outer(py, px)
    return rng.poisson(img).astype(np.float32), centres


def make_stack(n: int, sigma=1.3, sigma_z=2.0, amp=1500.0, bg=100.0, spacing=12, nz=13, seed=1):
    import numpy as np
    from scipy.special import ndtr

    side = int(np.ceil(np.sqrt(n)))
    size = side * spacing + spacing
    rng = np.random.default_rng(seed)
    yx = (np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n]
          * spacing + spacing) + rng.uniform(-0.5, 0.5, (n, 2))
    centres = np.column_stack([rng.uniform(nz / 2 - 1, nz / 2, n), yx])
    stack = np.full((nz, size, size), bg)
    r = np.arange(-5, 6)
    zz = np.arange(nz)
    total = amp * (2 * np.pi) ** 1.5 * sigma**2 * sigma_z

    def prof(u, c, s):
        return ndtr((u + 0.5 - c) / s) - ndtr((u - 0.5 - c) / s)

    for c in centres:  # drawing is setup, not timed
        y0, x0 = np.rint(c[1:]).astype(int)
        g = prof(zz, c[0], sigma_z)[:, None, None] * np.outer(prof(y0 + r, c[1], sigma), prof(x0 + r, c[2], sigma))
        stack[:, y0 - 5:y0 + 6, x0 - 5:x0 + 6] += total * g
    return rng.poisson(stack).astype(np.float32), centres


def run(n: int, dims: int) -> dict:
    import numpy as np

    from napari_spotdetect.core.analysis.fit import fit_gaussians

    if dims == 2:
        img, truth = make_plane(n)
        sigma = None
    else:
        img, truth = make_stack(n)
        sigma = (1.5, 1.2)
    start = np.rint(truth)
    fit_gaussians(img, start[:2000], sigma=sigma)  # warm-up (imports, allocator)
    t0 = time.perf_counter()
    df = fit_gaussians(img, start, sigma=sigma)
    dt = time.perf_counter() - t0
    cols = ["z_fit", "y_fit", "x_fit"] if dims == 3 else ["y_fit", "x_fit"]
    err = np.sqrt(((df[cols].to_numpy() - truth) ** 2).sum(axis=1))
    return {"dims": dims, "n_spots": n, "seconds": dt, "spots_per_s": n / dt,
            "fit_ok": float(df["fit_ok"].mean()), "median_centre_error_px": float(np.median(err)),
            "median_sigma": float(df["sigma"].median()), "true_sigma": 1.3,
            **({"median_sigma_z": float(df["sigma_z"].median()), "true_sigma_z": 2.0} if dims == 3 else {}),
            "median_amplitude": float(df["amplitude"].median()), "true_amplitude": 1500.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="spots in the 2-D run (default: %(default)s)")
    ap.add_argument("--n3d", type=int, default=20_000, help="spots in the 3-D run (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fit.json"))
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy is imported
    rows = [run(args.n, 2), run(args.n3d, 3)]
    print(f"{'dims':>4} {'spots':>8} {'seconds':>8} {'spots/s':>9} {'fit ok':>7} {'centre err':>10} "
          f"{'sigma':>6} {'amplitude':>9}")
    for r in rows:
        print(f"{r['dims']:>4} {r['n_spots']:>8} {r['seconds']:>8.2f} {r['spots_per_s']:>9.0f} {r['fit_ok']:>7.3f} "
              f"{r['median_centre_error_px']:>10.3f} {r['median_sigma']:>6.3f} {r['median_amplitude']:>9.1f}")
    doc = {"threads": args.threads, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "load_average_1min": os.getloadavg()[0],  # other work on the machine slows these numbers down
           "python": platform.python_version(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores) -> {args.out}")


if __name__ == "__main__":
    main()
