"""DeepSpot (MHybrid) side by side, in one run: TensorFlow itself against our PyTorch port.

TensorFlow is not a project dependency; ``tensorflow-cpu`` is installed into its own virtual environment,
``~/.cache/spotdetect-bench/tf-venv``. The SavedModel is the one in the napari-DeepSpot 0.0.7 wheel
(fetched into our cache by ``core/weights/deepspot_fetch.py``). Current TensorFlow cannot rebuild that
SavedModel's Keras objects (its optimizer slots fail to load), so the worker loads the graph with the v1
loader and runs the ``serving_default`` signature in a session, which is the saved inference graph itself.
The signature is fixed at 256 x 256, so a 2048^2 image is fed to both as its 64 tiles of 256^2 (batches of
8): the same pixels through both networks, the outputs compared element by element (must agree within
1e-5). Our ``detect()`` on the whole image (exact and fast) is timed beside it.

Both sides run in worker processes (peak RSS is each one's own) and take turns, ``--repeats`` rounds.

    python benchmarks/compare_deepspot.py [--repeats 5] [--threads 2] [--size 2048]

Prints a table and writes benchmarks/results/compare_deepspot.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_piscis import Worker, _peak_rss_mb, _venv_python, cpu_facts, matmul_rates  # noqa: E402

TF_WORKER = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
threads, folder, tiles_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tf.compat.v1.disable_eager_execution()
cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
sess = tf.compat.v1.Session(config=cfg)
sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], folder).signature_def["serving_default"]
inp, out = sig.inputs["input_1"].name, sig.outputs["conv2d"].name
tiles = np.load(tiles_path)[..., None].astype(np.float32)  # (N, 256, 256, 1), NHWC
sess.run(out, {inp: tiles[:1]})
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
print(json.dumps({"ready": True, "tensorflow": tf.__version__}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "tile":
        t0 = time.perf_counter(); sess.run(out, {inp: tiles[:1]}); sec = time.perf_counter() - t0
    elif cmd["op"] == "image":
        t0 = time.perf_counter()
        ys = [sess.run(out, {inp: tiles[i:i + 8]}) for i in range(0, len(tiles), 8)]
        sec = time.perf_counter() - t0
        np.save(cmd["out"], np.concatenate(ys)[..., 0])
    else:
        break
    print(json.dumps({"seconds": sec, "peak_rss_mb": peak()}), flush=True)
"""


def ours_worker(folder: str, threads: int, tiles_path: str, image_path: str) -> None:
    sd = __import__("napari_spotdetect")  # before torch, as the CLI and napari load it (its OpenMP wait policy)
    import torch

    torch.set_num_threads(threads)
    from napari_spotdetect.core.detection.speed import cpu_capability

    model = sd.load_model(folder, device="cpu")
    tiles = torch.from_numpy(np.load(tiles_path)[:, None].astype(np.float32))
    image = np.load(image_path)
    with torch.inference_mode():
        model.forward_maps(tiles[:1])
    print(json.dumps({"ready": True, "torch": torch.__version__, "cpu_capability": cpu_capability(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        t0 = time.perf_counter()
        extra = {}
        if cmd["op"] == "tile":
            with torch.inference_mode():
                model.forward_maps(tiles[:1])
        elif cmd["op"] == "image":
            with torch.inference_mode():
                ys = [model.forward_maps(tiles[i:i + 8])[:, 0] for i in range(0, len(tiles), 8)]
            sec = time.perf_counter() - t0
            np.save(cmd["out"], torch.cat(ys).numpy())
        elif cmd["op"] in ("detect-exact", "detect-fast"):
            det = sd.detect(image, model, speed=cmd["op"].split("-")[1])
            extra = {"n": len(det.spots), "tiling": det.provenance["tiling"], "precision": det.provenance["precision"]}
            np.save(cmd["out"].replace(".npy", f"_{cmd['op']}.npy"), det.spots[["y", "x"]].to_numpy(np.float64))
        else:
            break
        sec = time.perf_counter() - t0 if cmd["op"] != "image" else sec
        print(json.dumps({"seconds": sec, "peak_rss_mb": _peak_rss_mb(), **extra}), flush=True)


def tf_python() -> Path:
    return _venv_python("tf-venv", "import tensorflow", [["tensorflow-cpu"]])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--out", default=str(HERE / "results" / "compare_deepspot.json"))
    ap.add_argument("--_worker", nargs=4, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        folder, threads, tiles, image = a._worker
        ours_worker(folder, int(threads), tiles, image)
        return
    import torch

    from napari_spotdetect.core.detection.speed import cpu_capability
    from napari_spotdetect.core.training.synthetic import synthetic_image
    from napari_spotdetect.core.weights.deepspot_fetch import fetch_deepspot_weights

    folder = fetch_deepspot_weights()
    n = a.size - a.size % 256
    image, _ = synthetic_image((n, n), n * n // 1000, seed=0)
    plane = (image.astype(np.float64) / float(image.max())).astype(np.float32)  # DeepSpot's input: / image max
    tiles = plane.reshape(n // 256, 256, n // 256, 256).transpose(0, 2, 1, 3).reshape(-1, 256, 256).astype(np.float32)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": cpu_facts(),
           "cpu_capability": cpu_capability(), "torch": torch.__version__, "threads": a.threads,
           "repeats": a.repeats, "size": n, "n_tiles": len(tiles), "matmul_gflops": matmul_rates(a.threads),
           "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), TF_CPP_MIN_LOG_LEVEL="2")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "tiles.npy", tiles)
        np.save(tmp / "image.npy", image.astype(np.float32))
        workers = {"tensorflow": Worker("tensorflow", [tf_python(), "-c", TF_WORKER, a.threads, folder,
                                                       tmp / "tiles.npy"], env),
                   "ours": Worker("ours", [sys.executable, __file__, "--_worker", folder, a.threads, tmp / "tiles.npy",
                                           tmp / "image.npy"], env)}
        ops = [("tensorflow", "tile"), ("ours", "tile"), ("tensorflow", "image"), ("ours", "image"),
               ("ours", "detect-exact"), ("ours", "detect-fast")]
        runs = {o: [] for o in ops}
        try:
            for rep in range(a.repeats):
                k = rep % 2  # alternate who goes first
                order = ops if k == 0 else [ops[1], ops[0], ops[3], ops[2]] + ops[4:]
                for who, op in order:
                    load = os.getloadavg()[0]
                    w = workers[who]
                    w.proc.stdin.write(json.dumps({"op": op, "out": str(tmp / f"{who}.npy")}) + "\n")
                    w.proc.stdin.flush()
                    r = w._reply()
                    r["load_before"] = load
                    runs[(who, op)].append(r)
                    print(f"round {rep + 1}: {who:10s} {op:12s} {r['seconds']:.3f} s  load {load:.2f}", flush=True)
        finally:
            for w in workers.values():
                w.close()
        diff = float(np.abs(np.load(tmp / "tensorflow.npy") - np.load(tmp / "ours.npy")).max())
        from napari_spotdetect.core.groundtruth.metrics import match_spots

        fast_vs_exact = float(match_spots(np.load(tmp / "ours_detect-fast.npy"), np.load(tmp / "ours_detect-exact.npy"),
                                          1.0).f1)
    rows = []
    for (who, op), rs in runs.items():
        sec = float(np.median([r["seconds"] for r in rs]))
        per_256 = sec if op == "tile" else sec / len(tiles)
        row = {"engine": who, "what": op, "seconds": sec, "runs": [r["seconds"] for r in rs], "s_per_256": per_256,
               "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "load_before_runs": [r["load_before"] for r in rs]}
        for k in ("n", "tiling", "precision"):
            if k in rs[-1]:
                row[k] = rs[-1][k]
        rows.append(row)
    tf_of = {r["what"]: r["seconds"] for r in rows if r["engine"] == "tensorflow"}
    for r in rows:
        ref = tf_of.get(r["what"]) or (tf_of.get("image") if r["what"].startswith("detect") else None)
        r["speed_vs_tf"] = ref / r["seconds"] if ref else None
    loads = [v for r in rows for v in r["load_before_runs"]]
    res.update(rows=rows, max_abs_output_diff=diff, within_1e5=diff <= 1e-5, f1_fast_vs_exact=fast_vs_exact,
               load={"min": min(loads), "median": float(np.median(loads)), "max": max(loads)},
               versions={k: w.info for k, w in workers.items()},
               uptime_end=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"\n{res['date']}  {res['machine'].get('Model name')}; torch dispatch {res['cpu_capability']}; "
          f"{a.threads} threads; TensorFlow {workers['tensorflow'].info.get('tensorflow')}, torch {torch.__version__}; "
          f"load average {res['load']['min']:.2f}-{res['load']['max']:.2f}")
    print(f"max |ours - TF| over {len(tiles)} tiles: {diff:.2e} ({'within' if diff <= 1e-5 else 'NOT within'} 1e-5); "
          f"detect() fast against exact: F1 {fast_vs_exact:.4f} at 1 px\n")
    print("| what | engine | precision | s (median) | s per 256^2 | x TF | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        what = {"tile": "one 256^2 tile", "image": f"{n}^2 as {len(tiles)} tiles of 256^2 (batch 8)",
                "detect-exact": f"detect() {n}^2, exact", "detect-fast": f"detect() {n}^2, fast"}[r["what"]]
        x = f"{r['speed_vs_tf']:.2f}" if r["speed_vs_tf"] else "-"
        print(f"| {what} | {r['engine']} | {r.get('precision', 'float32')} | {r['seconds']:.3f} | {r['s_per_256']:.3f} "
              f"| {x} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
