"""Speed side by side, in one run: piscis 1.1.0 itself, our engine (exact and fast), our default model, U-FISH.

piscis is not a project dependency (it pins torchvision, which needs its own torch build), so it is installed
into its own virtual environment, ``~/.cache/spotdetect-bench/piscis-venv``: ``torch==2.13.0
torchvision==0.28.0`` from PyPI (the CUDA builds, run on the CPU here: PyPI's torchvision wheel needs PyPI's
torch, and pip is told to ignore a ``find-links`` folder of CPU wheels, with which torchvision fails to load),
then ``piscis==1.1.0``. U-FISH (PyPI ``ufish`` 0.1.1, ONNX Runtime) lives in ``ufish-venv`` beside it, as in
``bench_real.py``. Every engine runs in a worker process of its own per image size (so peak RSS is that
engine's), loads and warms up once, then the engines take turns on the same image, ``--repeats`` times, starting
with a different engine each round: on a shared machine the load changes from minute to minute, and taking turns
spreads it over all engines alike.

Reported per engine and size: seconds per image (median), megapixels per second, peak RSS, speed relative to
piscis, spots found, F1 at 1 px against the image's true spots, and for our engine on the piscis weights the
agreement with piscis (count and largest coordinate difference after matching; F1 against piscis). GFLOP/s
is the network's FLOPs (counted per tile with torch's FlopCounterMode, times the tiles the plan runs) over the
time, next to this CPU's measured float32 (and bfloat16) matmul rate. The CPU model, its vector flags, the
instruction set torch dispatched to, torch versions and the load average (sampled before every run) are
recorded.

    python benchmarks/compare_piscis.py [--sizes 1024 2048 4096] [--repeats 3] [--threads 2] [--default-model F]
        [--engines piscis exact fast default default-fast ufish] [--device cpu] [--out PATH]
        [--candidate F --engines default-fast candidate-fast ufish]   (a model file beside the bundled one)

Prints a table and writes benchmarks/results/compare_piscis.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import lzma
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "piscis" / "piscis_fixture.pt.xz"
BENCH_HOME = Path.home() / ".cache" / "spotdetect-bench"
PISCIS_PINS = (["torch==2.13.0", "torchvision==0.28.0"], ["piscis==1.1.0"])

#: name -> (kind, model, speed)
ENGINES = {
    "piscis": ("piscis", "fixture", None),
    "exact": ("ours", "fixture", "exact"),
    "fast": ("ours", "fixture", "fast"),
    "default": ("ours", "default", "exact"),
    "default-fast": ("ours", "default", "fast"),
    "candidate": ("ours", "candidate", "exact"),
    "candidate-fast": ("ours", "candidate", "fast"),
    "ufish": ("ufish", "ufish", None),
}

#: model files by engine model: ``"default"`` (``--default-model``, in place of the bundled one) and
#: ``"candidate"`` (``--candidate``, beside it); a name missing here is a zoo name (``"default"``: bundled)
MODEL_FILES: dict = {}

PEAK_RSS = r'''
def _peak_rss_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak across exec on Linux
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
'''

PISCIS_WORKER = PEAK_RSS + r"""
import json, os, resource, sys, time
import numpy as np, torch
threads, device, image = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(threads)
import piscis
pm = piscis.Piscis(model_name="piscis_fixture", batch_size=1, device=device)
img = np.load(image)
pm.predict(img[:256, :256])
version = getattr(piscis, "__version__", "1.1.0")
print(json.dumps({"ready": True, "torch": torch.__version__, "piscis": version,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "batch_size": 1}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] != "run":
        break
    t0 = time.perf_counter()
    coords = pm.predict(img)
    sec = time.perf_counter() - t0
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    np.save(cmd["out"], coords)
    print(json.dumps({"seconds": sec, "n": len(coords), "peak_rss_mb": _peak_rss_mb()}), flush=True)
"""

UFISH_WORKER = PEAK_RSS + r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np, onnxruntime
from ufish.api import UFish, STATC_STORE_PATH, DEFAULT_WEIGHTS_FILE
threads, image = int(sys.argv[1]), sys.argv[2]
uf = UFish(cuda=False)
path = str(Path(STATC_STORE_PATH) / DEFAULT_WEIGHTS_FILE)
uf.load_weights_from_path(path)
so = onnxruntime.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
uf.ort_session = onnxruntime.InferenceSession(path, so, providers=["CPUExecutionProvider"])
img = np.load(image)
uf.predict(img[:256, :256], axes="yx")


def conv_flops_per_pixel(side=256):
    # its network's convolution FLOPs per input pixel: every Conv's output size read from one run of the graph
    # with the Convs' outputs exposed (a U-Net's FLOPs grow with the pixels); None without the onnx package
    try:
        import onnx
        from onnx import helper
    except ImportError:
        return None
    m = onnx.load(path)
    dims = {i.name: list(i.dims) for i in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    if any(n.op_type in ("ConvTranspose", "Gemm") for n in m.graph.node) or not all(
            n.input[1] in dims for n in convs):
        return None  # a graph this count does not cover
    del m.graph.output[:]
    m.graph.output.extend(helper.make_empty_tensor_value_info(n.output[0]) for n in convs)
    outs = onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {m.graph.input[0].name: np.zeros((1, 1, side, side), np.float32)})
    return float(sum(2.0 * np.prod(dims[n.input[1]]) * o.shape[-2] * o.shape[-1] for n, o in zip(convs, outs))
                 / side / side)


print(json.dumps({"ready": True, "onnxruntime": onnxruntime.__version__,
                  "flops_per_pixel": conv_flops_per_pixel()}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] != "run":
        break
    t0 = time.perf_counter()
    df, _ = uf.predict(img, axes="yx")
    sec = time.perf_counter() - t0
    coords = df[["axis-0", "axis-1"]].to_numpy(np.float64) if len(df) else np.zeros((0, 2))
    np.save(cmd["out"], coords)
    print(json.dumps({"seconds": sec, "n": len(coords), "peak_rss_mb": _peak_rss_mb()}), flush=True)
"""


def ours_worker(model_path: str, speed: str, threads: int, device: str, image: str) -> None:
    """Our engine, same protocol as the other workers (runs in this interpreter with our package)."""
    sd = __import__("napari_spotdetect")  # before torch, as the CLI and napari load it (its OpenMP wait policy)
    import torch

    torch.set_num_threads(threads)
    from napari_spotdetect.core.detection.speed import cpu_capability, fast_dtype

    model = sd.load_model(model_path, device=device)
    img = np.load(image)
    sd.detect(img[:256, :256], model, speed=speed)
    det = None
    print(json.dumps({"ready": True, "torch": torch.__version__, "cpu_capability": cpu_capability(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "precision": str(fast_dtype(model.device)) if speed == "fast" else "torch.float32"}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] != "run":
            break
        t0 = time.perf_counter()
        det = sd.detect(img, model, speed=speed)
        sec = time.perf_counter() - t0
        spots = det.spots
        np.save(cmd["out"], spots[["y", "x"]].to_numpy(np.float64))
        til = det.provenance["tiling"]
        print(json.dumps({"seconds": sec, "n": len(spots), "tiling": til, "precision": det.provenance["precision"],
                          "peak_rss_mb": _peak_rss_mb()}), flush=True)


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak across exec on Linux
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _venv_python(name: str, check: str, installs: list[list[str]], pip_env: dict | None = None) -> Path:
    venv = BENCH_HOME / name
    py = venv / "bin" / "python"
    if not (py.exists() and subprocess.run([py, "-c", check], capture_output=True).returncode == 0):
        print(f"installing {' '.join(sum(installs, []))} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for pkgs in installs:
            subprocess.run([py, "-m", "pip", "install", "-q", *pkgs], check=True,
                           env=dict(os.environ, **(pip_env or {})))
    return py


def piscis_python() -> Path:
    # PyPI's torch, not a local CPU wheel: PyPI's torchvision is built against it (see the module notes)
    return _venv_python("piscis-venv", "import piscis, torchvision", [list(p) for p in PISCIS_PINS],
                        pip_env={"PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull})


def ufish_python() -> Path:
    py = BENCH_HOME / "ufish-venv" / "bin" / "python"
    if not py.exists():
        sys.path.insert(0, str(HERE))
        from bench_real import _ufish_python

        py = _ufish_python()
    if subprocess.run([py, "-c", "import onnx"], capture_output=True).returncode != 0:  # to count its FLOPs
        subprocess.run([py, "-m", "pip", "install", "-q", "onnx"], check=False)
    return py


def fixture_model() -> Path:
    """The shared piscis model file, decompressed once; also where piscis looks for it (HOME/.piscis/models)."""
    home = BENCH_HOME / "piscis-home"
    path = home / ".piscis" / "models" / "piscis_fixture.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.open(FIXTURE).read())
    return path


class Worker:
    def __init__(self, name: str, argv: list, env: dict | None = None):
        self.name = name
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.info = self._reply()

    def _reply(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} worker died:\n{self.proc.stderr.read()[-3000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, out: Path) -> dict:
        self.proc.stdin.write(json.dumps({"op": "run", "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def start_worker(name: str, image: Path, threads: int, device: str) -> Worker:
    kind, model, speed = ENGINES[name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if kind == "piscis":
        fixture_model()
        env["HOME"] = str(BENCH_HOME / "piscis-home")
        return Worker(name, [piscis_python(), "-c", PISCIS_WORKER, threads, device, image], env)
    if kind == "ufish":
        return Worker(name, [ufish_python(), "-c", UFISH_WORKER, threads, image], env)
    path = str(fixture_model()) if model == "fixture" else MODEL_FILES.get(model, model)
    return Worker(name, [sys.executable, __file__, "--_worker", path, speed, str(threads), device, str(image)], env)


# -- machine facts ----------------------------------------------------------------------------------------
def cpu_facts() -> dict:
    out = {"platform": platform.platform()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Vendor ID", "L3 cache"):
            out[key.strip()] = val.strip()
        if key.strip() == "Flags":
            flags = val.split()
            out["vector_flags"] = sorted(f for f in flags if f.startswith(("avx", "fma", "amx", "f16c", "sse4")))
    return out


def matmul_rates(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """Best-of GFLOP/s of an n x n matmul, float32 and bfloat16: the ceiling the networks' convs aim at."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        rates[name] = 2 * n ** 3 / best / 1e9
    return rates


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_pixel(model_path: str) -> float:
    """Network FLOPs per input pixel, counted on one tile of the model's size (multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import napari_spotdetect as sd

    model = sd.load_model(model_path, device="cpu")
    th, tw = model.tile_size
    x = torch.zeros((1, model.channels, th, tw))
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model.forward_maps(x)
    return fc.get_total_flops() / (th * tw)


def agreement(pred: np.ndarray, ref: np.ndarray) -> dict:
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    m = match_spots(pred, ref, 1.0)
    return {"n_ref": int(len(ref)), "f1": float(m.f1), "matched": int(m.tp),
            "max_coord_diff_px": float(m.distances.max()) if len(m.distances) else 0.0}


# -- the run ----------------------------------------------------------------------------------------------
def run_size(size: int, engines: list[str], repeats: int, threads: int, device: str, tmp: Path,
             fpp: dict) -> list[dict]:
    from napari_spotdetect.core.groundtruth.metrics import match_spots
    from napari_spotdetect.core.training.synthetic import synthetic_image

    image, truth = synthetic_image((size, size), n_spots=size * size // 1500, seed=0)
    path = tmp / f"img{size}.npy"
    np.save(path, image.astype(np.float32))
    workers = {}
    try:
        for name in engines:
            print(f"  {size}^2: starting {name} ...", flush=True)
            workers[name] = start_worker(name, path, threads, device)
        runs = {n: [] for n in engines}
        for rep in range(repeats):
            k = rep % len(engines)
            for name in engines[k:] + engines[:k]:
                load = os.getloadavg()[0]
                r = workers[name].run(tmp / f"{name}_{size}.npy")
                r["load_before"] = load
                runs[name].append(r)
                print(f"  {size}^2 round {rep + 1}: {name:12s} {r['seconds']:7.2f} s  {r['n']} spots  load {load:.2f}",
                      flush=True)
    finally:
        for w in workers.values():
            w.close()
    coords = {n: np.load(tmp / f"{n}_{size}.npy") for n in engines}
    rows = []
    for name in engines:
        rs = runs[name]
        sec = float(np.median([r["seconds"] for r in rs]))
        kind, model, speed = ENGINES[name]
        row = {"engine": name, "kind": kind, "model": model, "speed": speed, "size": size,
               "seconds": sec, "runs": [r["seconds"] for r in rs], "megapixels_per_s": size * size / 1e6 / sec,
               "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "n_spots": rs[-1]["n"],
               "f1_vs_truth": float(match_spots(coords[name], truth, 1.0).f1), "n_true": int(len(truth)),
               "load_before_runs": [r["load_before"] for r in rs], "worker": workers[name].info}
        til = rs[-1].get("tiling")
        if til is None and kind == "piscis":  # piscis's plan = our exact plan on the same image
            from napari_spotdetect.core.detection.tiling import plan_tiles

            p = plan_tiles((size, size), (256, 256), 0.1)
            til = {**p.describe(), "batch_size": 1}
        if til is not None:
            row["tiling"] = til
            px = til["n_tiles"] * til["tile"][0] * til["tile"][1]
            f = fpp.get(model)
            if f:
                row["gflop"] = f * px / 1e9
                row["gflop_per_s"] = row["gflop"] / sec
        fpp_peer = workers[name].info.get("flops_per_pixel") if til is None else None
        if fpp_peer:  # a peer that runs the whole image at once (U-FISH): its network's FLOPs on that image
            row["gflop"] = fpp_peer * size * size / 1e9
            row["gflop_per_s"] = row["gflop"] / sec
        if rs[-1].get("precision"):
            row["precision"] = rs[-1]["precision"]
        elif kind == "ufish":
            row["precision"] = "float32"  # ONNX Runtime on its float32 graph
        if model == "fixture" and "piscis" in coords and name != "piscis":
            row["vs_piscis"] = agreement(coords[name], coords["piscis"])
        rows.append(row)
    ref = next((r for r in rows if r["engine"] == "piscis"), None)
    for r in rows:
        r["speed_vs_piscis"] = ref["seconds"] / r["seconds"] if ref else None
    return rows


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"\n{res['date']}  {m.get('Model name')}  ({m.get('CPU(s)')} CPUs; torch dispatch "
          f"{res['cpu_capability']}; flags {' '.join(m.get('vector_flags', []))})")
    print(f"{res['threads']} threads; matmul ceiling float32 {res['matmul_gflops']['float32']:.0f} GFLOP/s, "
          f"bfloat16 {res['matmul_gflops']['bfloat16']:.0f} GFLOP/s; load average during the run "
          f"{res['load']['min']:.2f}-{res['load']['max']:.2f} (median {res['load']['median']:.2f})\n")
    print("| image | engine | precision | tiles | s/image | MP/s | x piscis | GFLOP/s | share of probe | peak RSS MB | "
          "spots | F1 vs truth | vs piscis: F1, max dx px |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in res["rows"]:
        til = r.get("tiling")
        tiles = f"{til['n_tiles']} x {til['tile'][0]}" if til else "-"
        vs = r.get("vs_piscis")
        vs = f"{vs['f1']:.4f}, {vs['max_coord_diff_px']:.1e}" if vs else "-"
        gf = f"{r['gflop_per_s']:.0f}" if r.get("gflop_per_s") else "-"
        x = f"{r['speed_vs_piscis']:.2f}" if r.get("speed_vs_piscis") else "-"
        prec = r.get("precision", "float32" if r["kind"] == "piscis" else "-").replace("torch.", "")
        share = probe_share(r, res["matmul_gflops"])
        share = f"{100 * share:.0f} % of {'bf16' if 'bfloat16' in prec else 'fp32'}" if share is not None else "-"
        print(f"| {r['size']}^2 | {r['engine']} | {prec} | {tiles} | {r['seconds']:.2f} | {r['megapixels_per_s']:.3f} "
              f"| {x} | {gf} | {share} | {r['peak_rss_mb']:.0f} | {r['n_spots']} | {r['f1_vs_truth']:.3f} | {vs} |")


def probe_share(row: dict, rates: dict):
    """The row's network GFLOP/s over the matmul probe's rate in its precision (None without a FLOP count)."""
    if not row.get("gflop_per_s"):
        return None
    prec = str(row.get("precision", "float32"))
    return row["gflop_per_s"] / rates["bfloat16" if "bfloat16" in prec else "float32"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--engines", nargs="+", default=[e for e in ENGINES if not e.startswith("candidate")],
                    choices=list(ENGINES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (piscis and ours; U-FISH stays on CPU)")
    ap.add_argument("--out", default=str(HERE / "results" / "compare_piscis.json"))
    ap.add_argument("--default-model", default=None, help="a model file to run as the 'default' engines instead of "
                    "the bundled model (a candidate replacement)")
    ap.add_argument("--candidate", default=None, help="a model file for the 'candidate' engines, which take turns "
                    "with the bundled model's and U-FISH in the same run")
    ap.add_argument("--_worker", nargs=5, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        path, speed, threads, device, image = a._worker
        ours_worker(path, speed, int(threads), device, image)
        return
    import torch

    from napari_spotdetect.core.detection.speed import cpu_capability, cpu_has_native_bf16

    torch.set_num_threads(a.threads)
    if a.default_model:
        MODEL_FILES["default"] = str(Path(a.default_model).resolve())
    if a.candidate:
        MODEL_FILES["candidate"] = str(Path(a.candidate).resolve())
    elif any(e.startswith("candidate") for e in a.engines):
        ap.error("the candidate engines need --candidate <model file>")
    fpp = {"fixture": flops_per_pixel(str(fixture_model())),
           "default": flops_per_pixel(MODEL_FILES.get("default", "default"))}
    if a.candidate:
        fpp["candidate"] = flops_per_pixel(MODEL_FILES["candidate"])
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": cpu_facts(),
           "cpu_capability": cpu_capability(), "cpu_native_bf16": cpu_has_native_bf16(),
           "torch_ours": torch.__version__, "threads": a.threads, "device": a.device, "repeats": a.repeats,
           "matmul_gflops": matmul_rates(a.threads),
           "gflop_per_256_tile": {k: v * 256 * 256 / 1e9 for k, v in fpp.items()},
           "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "default_model": MODEL_FILES.get("default", "bundled"), "candidate": MODEL_FILES.get("candidate"),
           "rows": []}
    print(json.dumps({k: res[k] for k in ("machine", "cpu_capability", "matmul_gflops", "gflop_per_256_tile")}),
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            res["rows"] += run_size(size, a.engines, a.repeats, a.threads, a.device, Path(tmp), fpp)
            _finish(res, a.out)  # a partial file survives an interruption
    print_table(res)


def _finish(res: dict, out: str) -> None:
    loads = [v for r in res["rows"] for v in r["load_before_runs"]]
    res["load"] = {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)}
    res["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    versions = {r["engine"]: r["worker"] for r in res["rows"]}
    res["peer_versions"] = versions
    Path(out).parent.mkdir(exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
