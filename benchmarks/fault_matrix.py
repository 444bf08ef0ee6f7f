"""Faults that need real processes and real disks: kill -9 during training and checkpoint writes, a full disk,
a read-only folder. Prints a table (case, outcome) and writes benchmarks/results/fault_matrix.json.

    PYTHONPATH=src python benchmarks/fault_matrix.py [--kills 5] [--write-kills 10] [--seed 0]

The fast bad-input cases are tests (tests/test_faults.py); these take minutes and, for the disk cases, a
small tmpfs (mounting one needs root; without it those cases report "skipped").

What each case checks:
- kill -9 of `spotdetect train` at a random moment: the last checkpoint loads, `--resume` finishes the run,
  and the hidden temporary files of interrupted saves are gone afterwards;
- kill -9 of a process that writes checkpoints in a loop: the file on disk always loads (never half a file),
  and the next Trainer on that folder removes the left-over temporary files;
- a full disk (1 MB tmpfs) and a read-only folder: `spotdetect train`, `predict` and the annotation
  autosave fail with an `error: ... Fix: ...` line (no traceback), and the files already there are intact.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}
TRAIN = ["--synthetic", "6", "--epochs", "3", "--steps-per-epoch", "3", "--batch-size", "2", "--crop", "32",
         "--widths", "8", "16", "32", "64", "--depths", "1", "1", "1", "1", "--lr", "0.01", "--threads", "1"]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "napari_spotdetect.cli", *map(str, args)]


def _loads(path: Path) -> bool:
    from napari_spotdetect import load_model

    try:
        load_model(path, device="cpu")
        return True
    except Exception:
        return False


def _tmp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp")) if folder.exists() else []


def kill_during_training(work: Path, rng: random.Random, max_wait: float) -> dict:
    """Start a short training run, kill -9 it after a random delay, check the checkpoint, resume to the end."""
    out = work / "m.pt"
    ckpt = work / "m_checkpoints"
    proc = subprocess.Popen(_cli("train", "--out", out, *TRAIN), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    delay = rng.uniform(1.0, max_wait)
    try:
        proc.wait(timeout=delay)
        finished = True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = False
    last = ckpt / "m_last.pt"
    row = {"delay_s": round(delay, 2), "finished_before_kill": finished, "last_exists": last.exists(),
           "tmp_left_by_kill": len(_tmp_files(ckpt))}
    row["last_loads"] = _loads(last) if last.exists() else None
    res = subprocess.run(_cli("train", "--out", out, "--resume", *TRAIN), env=ENV, capture_output=True, text=True)
    row["resume_exit"] = res.returncode
    row["final_loads"] = _loads(out)
    row["tmp_after_resume"] = len(_tmp_files(ckpt))
    ok = (row["last_loads"] is not False and res.returncode == 0 and row["final_loads"]
          and row["tmp_after_resume"] == 0)
    row["outcome"] = "ok" if ok else f"FAILED: {res.stderr.strip().splitlines()[-1:] if res.stderr else ''}"
    return row


_WRITER = """
import sys, torch
from napari_spotdetect.core.weights.native import atomic_torch_save
path = sys.argv[1]
state = {"format": "napari-spotdetect", "w": torch.randn(6_000_000)}
print("ready", flush=True)
i = 0
while True:
    state["i"] = i
    atomic_torch_save(state, path)
    i += 1
"""


def kill_during_checkpoint_write(work: Path, rng: random.Random) -> dict:
    """kill -9 a process that rewrites a 24 MB checkpoint in a loop: the file on disk is always whole."""
    import torch

    path = work / "m_last.pt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=ENV, stdout=subprocess.PIPE,
                            start_new_session=True)
    proc.stdout.readline()
    t0 = time.time()
    while not path.exists() and time.time() - t0 < 60:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.05, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        torch.load(path, weights_only=True)
        whole = True
    except Exception:
        whole = False
    left = len(_tmp_files(work))
    from napari_spotdetect.core.models.piscis_net import PiscisConfig
    from napari_spotdetect.core.training.synthetic import synthetic_image
    from napari_spotdetect.core.training.train import TrainConfig, Trainer

    data = [synthetic_image((64, 64), n_spots=6, seed=i) for i in range(2)]
    Trainer(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)), data, None,
            TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, crop=32), out_dir=work, name="m")
    cleaned = len(_tmp_files(work)) == 0
    return {"file_loads": whole, "tmp_left_by_kill": left, "tmp_cleaned_by_next_run": cleaned,
            "outcome": "ok" if whole and cleaned else "FAILED"}


@contextmanager
def small_tmpfs(size: str = "1m", read_only: bool = False):
    """A tmpfs mounted on a temporary folder (root only); yields None when it cannot be mounted."""
    d = Path(tempfile.mkdtemp(prefix="spotdetect-fault-"))
    mounted = False
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True)
        mounted = r.returncode == 0
        if not mounted:
            yield None
            return
        yield d
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def _remount_ro(d: Path) -> bool:
    return subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True).returncode == 0


def _clear(res) -> str:
    err = res.stderr.strip()
    if res.returncode == 2 and "error:" in err and "Fix:" in err and "Traceback" not in err:
        return "clear error: " + err.splitlines()[-1][:140]
    return f"UNCLEAR (exit {res.returncode}): " + (err.splitlines()[-1][:140] if err else "")


def disk_cases(work: Path) -> list[dict]:
    import numpy as np

    rows = []
    img = work / "img.npy"
    from napari_spotdetect.core.training.synthetic import synthetic_image

    np.save(img, synthetic_image((256, 256), n_spots=30, seed=1)[0])
    # full disk: training checks the space before any work
    with small_tmpfs("1m") as d:
        if d is None:
            return [{"case": "full disk / read-only", "outcome": "skipped (cannot mount a tmpfs: needs root)"}]
        res = subprocess.run(_cli("train", "--out", d / "m.pt", *TRAIN), env=ENV, capture_output=True, text=True)
        rows.append({"case": "train, 1 MB disk", "outcome": _clear(res)})
    # full disk while predict writes: the earlier CSV stays whole
    with small_tmpfs("1m") as d:
        (d / "out").mkdir()
        first = subprocess.run(_cli("predict", img, "--out", d / "out"), env=ENV, capture_output=True, text=True)
        before = (d / "out" / "img.csv").read_bytes() if first.returncode == 0 else b""
        with open(d / "filler", "wb") as f:  # fill the disk
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        res = subprocess.run(_cli("predict", img, "--out", d / "out"), env=ENV, capture_output=True, text=True)
        intact = (d / "out" / "img.csv").read_bytes() == before and len(before) > 0
        rows.append({"case": "predict, disk full", "outcome": _clear(res) + ("; previous CSV intact" if intact
                                                                               else "; PREVIOUS CSV CHANGED")})
    # read-only folder
    with small_tmpfs("4m") as d:
        (d / "out").mkdir()
        subprocess.run(_cli("predict", img, "--out", d / "out"), env=ENV, capture_output=True)
        before = (d / "out" / "img.csv").read_bytes()
        if not _remount_ro(d):
            rows.append({"case": "read-only folder", "outcome": "skipped (cannot remount read-only)"})
        else:
            res = subprocess.run(_cli("predict", img, "--out", d / "out"), env=ENV, capture_output=True, text=True)
            intact = (d / "out" / "img.csv").read_bytes() == before
            rows.append({"case": "predict, read-only folder",
                         "outcome": _clear(res) + ("; previous CSV intact" if intact else "; PREVIOUS CSV CHANGED")})
            res = subprocess.run(_cli("train", "--out", d / "m.pt", *TRAIN), env=ENV, capture_output=True, text=True)
            rows.append({"case": "train, read-only folder", "outcome": _clear(res)})
            rows.append({"case": "annotation autosave, read-only folder", "outcome": _autosave_read_only(d)})
    return rows


def _autosave_read_only(d: Path) -> str:
    """The Correct panel's save (truth, rejected, provenance) into a read-only folder: an error, files intact."""
    import pandas as pd

    from napari_spotdetect.core.errors import SpotDetectError
    from napari_spotdetect.core.groundtruth.annotations import save_annotations

    before = (d / "out" / "img.csv").read_bytes()
    try:
        save_annotations(pd.DataFrame({"y": [1.0], "x": [2.0]}), pd.DataFrame({"y": [3.0], "x": [4.0]}),
                         d / "out" / "img.csv", d / "out" / "img.rejected.csv", {"note": "fault matrix"})
    except (OSError, SpotDetectError) as err:
        intact = (d / "out" / "img.csv").read_bytes() == before
        return (f"{type(err).__name__} ({getattr(err, 'strerror', None) or err}), shown by the panel as 'Ground "
                f"truth NOT saved'; {'files intact' if intact else 'FILE CHANGED'}")
    return "UNEXPECTED: the write succeeded"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="kill -9 runs of spotdetect train")
    ap.add_argument("--write-kills", type=int, default=10, help="kill -9 runs during checkpoint writes")
    ap.add_argument("--max-wait", type=float, default=25.0, help="latest kill, seconds after the start")
    ap.add_argument("--no-disk", action="store_true", help="skip the full-disk and read-only cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fault_matrix.json"))
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spotdetect-faults-") as tmp:
        tmp = Path(tmp)
        for i in range(a.kills):
            r = kill_during_training(tmp / f"train{i}", rng, a.max_wait)
            rows.append({"case": f"kill -9 train #{i + 1} at {r['delay_s']} s", **r})
            print(f"{rows[-1]['case']:<45} {r['outcome']}", flush=True)
        for i in range(a.write_kills):
            (tmp / f"write{i}").mkdir()
            r = kill_during_checkpoint_write(tmp / f"write{i}", rng)
            rows.append({"case": f"kill -9 checkpoint write #{i + 1}", **r})
            print(f"{rows[-1]['case']:<45} {r['outcome']}", flush=True)
        if not a.no_disk:
            for r in disk_cases(tmp):
                rows.append(r)
                print(f"{r['case']:<45} {r['outcome']}", flush=True)
    print()
    print(f"{'case':<45} outcome")
    for r in rows:
        print(f"{r['case']:<45} {r['outcome']}")
    from napari_spotdetect.core.io.files import atomic_write_text

    atomic_write_text(Path(a.out), json.dumps({"platform": platform.platform(), "python": sys.version.split()[0],
                                               "args": vars(a), "rows": rows}, indent=2, default=str))
    return 0 if all(not str(r["outcome"]).startswith(("FAILED", "UNCLEAR", "UNEXPECTED")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
