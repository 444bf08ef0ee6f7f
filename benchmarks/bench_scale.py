"""Scale: peak memory and time for a large numpy image, a larger zarr image, and a folder through the CLI.

Cases (each in a fresh process, so peak RSS belongs to it alone):

- ``numpy``: an N x N float32 image in memory (default 8192), ``detect(keep_maps=False)``; also the time to
  re-threshold that result (a table filter).
- ``zarr``: an M x M uint16 zarr store on disk (default 16384, chunks 1024^2), read lazily band by band.
- ``folder``: K images of S x S (default 8 of 2048^2, .npy) through ``spotdetect predict``: one process,
  then ``--workers 2`` (a LocalCluster of two worker processes). Peak RSS is sampled per process
  (psutil, every 0.2 s): the CLI process and each worker.

Images are synthetic spots (core.training.synthetic) tiled from 2048^2 blocks. Generated data is cached under
``--data`` (default /tmp/spotdetect_bench_scale).

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py
    python benchmarks/bench_scale.py --numpy-size 1024 --zarr-size 2048 --folder-size 512 --n-images 4  # smoke

Prints a table and writes benchmarks/results/scale.json.
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
BLOCK = 2048


def _blocks(n: int, size: int = BLOCK):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    return [synthetic_image((size, size), n_spots=size * size // 1500, seed=s)[0] for s in range(n)]


def _make_numpy(path: Path, side: int) -> None:
    import numpy as np

    b = min(BLOCK, side)
    blocks = _blocks(4, b)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(side, side))
    for i in range(0, side, b):
        for j in range(0, side, b):
            out[i:i + b, j:j + b] = blocks[(i // b + 2 * (j // b)) % 4][: side - i, : side - j]
    out.flush()


def _make_zarr(path: Path, side: int) -> None:
    import numpy as np
    import zarr

    b = min(BLOCK, side)
    blocks = [np.clip(x, 0, 65535).astype(np.uint16) for x in _blocks(4, b)]
    z = zarr.open_array(str(path), mode="w", shape=(side, side), chunks=(1024, 1024), dtype="uint16")
    for i in range(0, side, b):
        for j in range(0, side, b):
            z[i:i + b, j:j + b] = blocks[(i // b + 2 * (j // b)) % 4][: side - i, : side - j]


def _make_folder(folder: Path, n: int, side: int) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(_blocks(n, side)):
        np.save(folder / f"img{k:03d}.npy", img)


def _child(kind: str, path: str, model: str) -> dict:
    """Runs in its own process: open, detect, report time and peak RSS."""
    import numpy as np

    import napari_spotdetect as sd

    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    rss0 = rss()
    m = sd.load_model(model, device="cpu")
    rss_model = rss()
    if kind == "numpy":
        image = np.load(path)  # in memory, as a user's numpy array
    else:
        import zarr

        image = zarr.open_array(path, mode="r")
    rss_image = rss()
    t0 = time.perf_counter()
    det = sd.detect(image, m, keep_maps=False)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    for t in np.linspace(m.threshold_range[0], 0.95, 20):
        det.count(float(t))
    count_ms = (time.perf_counter() - t1) / 20 * 1e3
    t1 = time.perf_counter()
    for t in np.linspace(m.threshold_range[0], 0.95, 5):
        det.rethreshold(float(t))
    table_ms = (time.perf_counter() - t1) / 5 * 1e3
    side = int(image.shape[-1])
    return {"case": kind, "image": f"{image.shape[0]}x{side}", "dtype": str(image.dtype), "seconds": seconds,
            "megapixels_per_s": image.shape[0] * side / 1e6 / seconds, "n_tiles": det.provenance["tiling"]["n_tiles"],
            "n_spots": len(det.spots), "n_candidates": len(det.candidates), "count_ms": count_ms,
            "rethreshold_ms": table_ms, "peak_rss_mb": rss(), "rss_start_mb": rss0, "rss_after_model_mb": rss_model,
            "rss_after_image_mb": rss_image, "load_average": os.getloadavg()[0]}


def _run_cli(args: list[str]) -> dict:
    """Run ``spotdetect predict`` and sample the peak RSS of it and of every process it starts."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "napari_spotdetect", "predict", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peaks: dict[int, float] = {}
    names: dict[int, str] = {}
    while proc.poll() is None:
        try:
            for p in [ps] + ps.children(recursive=True):
                try:
                    mb = p.memory_info().rss / 2**20
                    cmd = " ".join(p.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                peaks[p.pid] = max(peaks.get(p.pid, 0.0), mb)
                names.setdefault(p.pid, cmd)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"spotdetect predict failed ({proc.returncode}):\n{err[-3000:]}")
    main_mb = peaks.pop(proc.pid, 0.0)
    # spawned workers run multiprocessing's spawn_main; the resource tracker and other helpers are small
    workers = [mb for pid, mb in peaks.items() if "spawn_main" in names[pid] and mb > 150]
    return {"seconds": seconds, "peak_rss_cli_mb": main_mb, "peak_rss_workers_mb": sorted(workers, reverse=True),
            "stderr_tail": err[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=["numpy", "zarr", "folder"])
    ap.add_argument("--numpy-size", type=int, default=8192)
    ap.add_argument("--zarr-size", type=int, default=16384)
    ap.add_argument("--folder-size", type=int, default=2048)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="/tmp/spotdetect_bench_scale")
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--_child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(_child(*args._child)))
        return
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    if "numpy" in args.cases:
        path = data / f"numpy{args.numpy_size}.npy"
        if not path.exists():
            _make_numpy(path, args.numpy_size)
        rows.append(_measure("numpy", path, args.model))
    if "zarr" in args.cases:
        path = data / f"img{args.zarr_size}.zarr"
        if not (path / "zarr.json").exists():
            _make_zarr(path, args.zarr_size)
        rows.append(_measure("zarr", path, args.model))
    if "folder" in args.cases:
        folder = data / f"folder{args.n_images}x{args.folder_size}"
        if len(list(folder.glob("*.npy"))) != args.n_images:
            _make_folder(folder, args.n_images, args.folder_size)
        for workers in (None, 2):
            out = data / f"out_{workers or 1}"
            extra = ["--workers", str(workers)] if workers else []
            r = _run_cli([str(folder), "--model", args.model, "--device", "cpu", "--out", str(out), "--overwrite",
                          *extra])
            r.update(case="folder", image=f"{args.n_images} x {args.folder_size}^2", workers=workers or 1,
                     images_per_minute=args.n_images / r["seconds"] * 60, load_average=os.getloadavg()[0])
            rows.append(r)
    _print(rows)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    doc = {"model": args.model, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
           "rows": rows}
    out.write_text(json.dumps(doc, indent=2))


def _measure(kind: str, path: Path, model: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_child", kind, str(path), model], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print(rows) -> None:
    print(f"{'case':<8} {'image':>18} {'workers':>7} {'seconds':>8} {'MP/s or img/min':>15} {'peak RSS MB':>22} "
          f"{'count ms':>8} {'table ms':>8} {'load':>5}")
    for r in rows:
        if r["case"] == "folder":
            rss = f"cli {r['peak_rss_cli_mb']:.0f}" + (
                f", workers {'/'.join(f'{v:.0f}' for v in r['peak_rss_workers_mb'])}"
                if r["peak_rss_workers_mb"] else "")
            print(f"{r['case']:<8} {r['image']:>18} {r['workers']:>7} {r['seconds']:>8.1f} "
                  f"{r['images_per_minute']:>15.2f} {rss:>22} {'':>8} {'':>8} {r['load_average']:>5.1f}")
        else:
            print(f"{r['case']:<8} {r['image']:>18} {1:>7} {r['seconds']:>8.1f} {r['megapixels_per_s']:>15.3f} "
                  f"{r['peak_rss_mb']:>22.0f} {r['count_ms']:>8.2f} {r['rethreshold_ms']:>8.1f} "
                  f"{r['load_average']:>5.1f}")


if __name__ == "__main__":
    main()
