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
  autosave fail with an `error: ... Fix: ...` line (no traceback), and the files already there are intact;
- kill -9 of a multi-image `spotdetect predict` at a random moment, then the same command again: every
  image's table equals a clean run's, and no hidden temporary file is left in --out;
- a rerun with another threshold is refused (naming --overwrite) and keeps the old tables; --overwrite redoes;
- kill -9 of a process that writes spot tables (the batch writer, the annotation autosave) in a loop: the
  file on disk always reads, and the next `predict` into the folder removes the dead writer's temporary file;
- kill -9 of `spotdetect finetune`: `--resume` finishes it and the model loads;
- unwritable --out, unreadable inputs (truncated TIFF, empty .npy, not-an-image), and the zarr (pickle
  codec, one huge chunk, 5-D), labels (transposed, folder without every image), TrackMate (fuzzed files)
  and export (bad provenance, image size) surfaces: each a result or a clear error, never a traceback.
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
    delay, finished = _run_and_kill(_cli("train", "--out", out, *TRAIN), rng, 1.0, max_wait)
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


def _kill_writer(script: str, args: list, path: Path, rng: random.Random, lo: float, hi: float) -> None:
    """Start ``script`` (which prints once, then writes ``path`` in a loop) and kill -9 it at a random moment."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            start_new_session=True)
    proc.stdout.readline()
    t0 = time.time()
    while not path.exists() and time.time() - t0 < 60:
        time.sleep(0.05)
    time.sleep(rng.uniform(lo, hi))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_and_kill(cmd: list, rng: random.Random, lo: float, hi: float) -> tuple[float, bool]:
    """Run ``cmd`` and kill -9 its process group after a random delay; (delay, whether it finished first)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    delay = rng.uniform(lo, hi)
    try:
        proc.wait(timeout=delay)
        return delay, True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return delay, False


def kill_during_checkpoint_write(work: Path, rng: random.Random) -> dict:
    """kill -9 a process that rewrites a 24 MB checkpoint in a loop: the file on disk is always whole."""
    import torch

    path = work / "m_last.pt"
    _kill_writer(_WRITER, [path], path, rng, 0.05, 1.5)
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


# -- batch predict, writers, fine-tuning ---------------------------------------------------------------------
def _images(folder: Path, n: int, shape=(160, 160)) -> list[Path]:
    import numpy as np

    from napari_spotdetect.core.training.synthetic import synthetic_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img, _ = synthetic_image(shape, n_spots=25, seed=100 + i)
        np.save(folder / f"img{i}.npy", img.astype(np.float32))
        paths.append(folder / f"img{i}.npy")
    return paths


def _tables_equal(a: Path, b: Path) -> bool:
    import pandas as pd

    try:
        x, y = pd.read_csv(a), pd.read_csv(b)
    except Exception:
        return False
    return x.shape == y.shape and bool(((x[["y", "x"]] - y[["y", "x"]]).abs() < 1e-6).all().all())


def kill_during_batch_predict(work: Path, rng: random.Random, reference: Path, images: Path) -> dict:
    """kill -9 a 4-image predict at a random moment; the same command again must finish every image exactly."""
    out = work / "out"
    cmd = _cli("predict", images, "--out", out, "--threads", "1")
    delay, finished = _run_and_kill(cmd, rng, 3.0, 25.0)
    done_before = len(list(out.glob("img*.csv"))) if out.exists() else 0
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    same = all(_tables_equal(out / f"img{i}.csv", reference / f"img{i}.csv") for i in range(4))
    left = len(_tmp_files(out))
    ok = res.returncode == 0 and same and left == 0
    return {"delay_s": round(delay, 1), "finished_before_kill": finished, "tables_before_rerun": done_before,
            "rerun_exit": res.returncode, "same_as_clean_run": same, "tmp_left": left,
            "outcome": "ok" if ok else f"FAILED: {res.stderr.strip().splitlines()[-1:] if res.stderr else ''}"}


def rerun_with_other_settings(work: Path, reference: Path, images: Path) -> dict:
    out = work / "out"
    shutil.copytree(reference, out)
    before = (out / "img0.csv").read_bytes()
    res = subprocess.run(_cli("predict", images, "--out", out, "--threshold", "0.9", "--threads", "1"), env=ENV,
                         capture_output=True, text=True)
    kept = (out / "img0.csv").read_bytes() == before
    again = subprocess.run(_cli("predict", images, "--out", out, "--threshold", "0.9", "--overwrite",
                                "--threads", "1"), env=ENV, capture_output=True, text=True)
    prov = _json_of(out / "img0.provenance.json")
    redone = again.returncode == 0 and prov.get("settings", {}).get("threshold") == 0.9 == prov.get("threshold")
    ok = _clear(res).startswith("clear") and "--overwrite" in res.stderr and kept and redone
    return {"outcome": ("ok: " if ok else "FAILED: ") + _clear(res)[:110] + ("; old tables kept" if kept else
                                                                                "; OLD TABLES CHANGED")
            + ("; --overwrite redid them" if redone else "; --overwrite DID NOT REDO")}


def _json_of(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


_TABLE_WRITER = """
import sys, numpy as np, pandas as pd
from napari_spotdetect.core.groundtruth.annotations import save_annotations
from napari_spotdetect.core.io.spots_io import write_spots_csv
path, kind = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
print("ready", flush=True)
i = 0
while True:
    df = pd.DataFrame({"y": rng.uniform(0, 1000, 200_000), "x": rng.uniform(0, 1000, 200_000), "i": i})
    if kind == "autosave":
        save_annotations(df, df.iloc[:10], path, path.replace(".csv", ".rejected.csv"), {"i": i})
    else:
        write_spots_csv(df, path, provenance={"i": i})
    i += 1
"""


def kill_during_table_write(work: Path, rng: random.Random, kind: str) -> dict:
    """kill -9 a loop of spot-table writes (batch writer or annotation autosave): the table always reads whole."""
    import pandas as pd

    out = work / "out"
    out.mkdir(parents=True)
    path = out / "img0.csv"
    _kill_writer(_TABLE_WRITER, [path, kind], path, rng, 0.1, 2.0)
    try:
        whole = len(pd.read_csv(path)) == 200_000
    except Exception:
        whole = False
    left = len(_tmp_files(out))
    from napari_spotdetect.core.detection.batch import prepare_output

    prepare_output(out)  # what the next `spotdetect predict` into this folder does first
    cleaned = len(_tmp_files(out)) == 0
    return {"file_reads_whole": whole, "tmp_left_by_kill": left, "tmp_removed_by_next_predict": cleaned,
            "outcome": "ok" if whole and cleaned else "FAILED"}


def _annotated(folder: Path) -> None:
    import pandas as pd

    from napari_spotdetect.core.training.synthetic import synthetic_image

    (folder / "spots").mkdir(parents=True)
    import numpy as np

    for i in range(3):
        img, pts = synthetic_image((128, 128), n_spots=20, seed=200 + i)
        np.save(folder / f"a{i}.npy", img.astype(np.float32))
        pd.DataFrame(pts, columns=["y", "x"]).to_csv(folder / "spots" / f"a{i}.csv", index=False)


def kill_during_finetune(work: Path, rng: random.Random) -> dict:
    _annotated(work / "data")
    out = work / "tuned.pt"
    args = ["finetune", "--model", "default", "--images", work / "data", "--spots", work / "data" / "spots",
            "--out", out, "--epochs", "3", "--steps-per-epoch", "3", "--crop", "64", "--threads", "1"]
    delay, finished = _run_and_kill(_cli(*args), rng, 8.0, 40.0)
    res = subprocess.run(_cli(*args, "--resume"), env=ENV, capture_output=True, text=True)
    loads = _loads(out)
    ckpt = work / "tuned_checkpoints"
    left = len(_tmp_files(ckpt))
    ok = res.returncode == 0 and loads and left == 0
    return {"delay_s": round(delay, 1), "finished_before_kill": finished, "resume_exit": res.returncode,
            "model_loads": loads, "tmp_after_resume": left,
            "outcome": "ok" if ok else f"FAILED: {res.stderr.strip().splitlines()[-1:] if res.stderr else ''}"}


# -- bad inputs and the file surfaces ------------------------------------------------------------------------
def _expect(res, want: str = "clear", words: str = "") -> str:
    """'ok: ...' when the run ended as wanted ('clear': exit 2 or a FAILED image with a Fix; 'done': exit 0)."""
    err = res.stderr.strip()
    if want == "done":
        good = res.returncode == 0 and "Traceback" not in err
        return ("ok: " if good else f"FAILED (exit {res.returncode}): ") + (err.splitlines()[-1][:120] if err else "")
    line = next((ln for ln in err.splitlines() if "Fix:" in ln), "")
    good = res.returncode in (1, 2) and bool(line) and "Traceback" not in err and words in err
    return ("ok: clear error: " if good else f"UNCLEAR (exit {res.returncode}): ") + (line or err[-160:])[:150]


def surface_cases(work: Path) -> list[dict]:
    import json as _json
    import pickle

    import numpy as np
    import zarr

    rows = []
    d = work / "surf"
    d.mkdir()
    img = _images(d / "imgs", 2, (96, 96))[0]

    def run(case, *args, want="clear", words=""):
        res = subprocess.run(_cli(*args), env=ENV, capture_output=True, text=True)
        rows.append({"case": case, "outcome": _expect(res, want, words)})
        print(f"{case:<45} {rows[-1]['outcome']}", flush=True)
        return res

    (d / "afile").write_text("x")
    run("predict, --out under a file (unwritable)", "predict", img, "--out", d / "afile" / "o", words="Cannot write")
    (d / "trunc.tif").write_bytes(b"II*\x00" + b"\x00" * 100)
    run("predict, truncated TIFF", "predict", d / "trunc.tif", "--out", d / "o1")
    (d / "empty.npy").write_bytes(b"")
    run("predict, empty .npy", "predict", d / "empty.npy", "--out", d / "o2")
    (d / "dir.tif").mkdir()
    run("predict, a folder named .tif", "predict", d / "dir.tif", "--out", d / "o3")
    # zarr
    evil = d / "evil.zarr"
    evil.mkdir()
    (evil / ".zarray").write_text(_json.dumps({"zarr_format": 2, "shape": [64, 64], "chunks": [64, 64],
                                               "dtype": "<f4", "compressor": {"id": "pickle"}, "fill_value": 0,
                                               "order": "C", "filters": None}))
    marker = d / "code_ran"
    (evil / "0.0").write_bytes(pickle.dumps(_Touch(str(marker))))
    res = run("zarr store with a pickle codec", "predict", evil, "--out", d / "o4", words="not safe")
    if marker.exists():
        rows[-1]["outcome"] = "FAILED: THE STORE RAN CODE; " + rows[-1]["outcome"]
    zarr.create_array(str(d / "huge.zarr"), shape=(40000, 40000), chunks=(40000, 40000), dtype="float32")
    run("zarr store in one 40000^2 chunk", "predict", d / "huge.zarr", "--out", d / "o5", words="smaller chunks")
    g = zarr.open_group(str(d / "tczyx.ome.zarr"), mode="w")
    g.create_array("0", shape=(1, 2, 3, 64, 64), chunks=(1, 1, 1, 64, 64), dtype="float32")[:] = \
        np.random.default_rng(0).normal(100, 5, (1, 2, 3, 64, 64))
    g.attrs["multiscales"] = [{"axes": [{"name": a} for a in "tczyx"], "datasets": [{"path": "0"}]}]
    run("5-D OME-Zarr (t, c, z, y, x)", "predict", d / "tczyx.ome.zarr", "--out", d / "o6", want="done")
    # labels
    np.save(d / "cells_t.npy", np.ones((96, 97), np.uint16).T)
    run("predict --labels transposed", "predict", img, "--out", d / "o7", "--labels", d / "cells_t.npy",
        words="(97, 96)")
    (d / "labels").mkdir()
    np.save(d / "labels" / "img0.npy", np.ones((96, 96), np.uint16))
    run("predict --labels folder without img1", "predict", d / "imgs", "--out", d / "o8", "--labels", d / "labels",
        words="1 of 2")
    run("predict --pixel-size 0", "predict", d / "imgs", "--out", d / "o9", "--pixel-size", "0", words="Pixel size")
    # export and TrackMate
    subprocess.run(_cli("predict", img, "--out", d / "p", "--threads", "1"), env=ENV, capture_output=True)
    (d / "p" / "img0.provenance.json").write_text("{broken")
    run("export with a damaged provenance", "export", d / "p" / "img0.csv", "--to", "trackmate", "--out",
        d / "x.xml", words="provenance")
    subprocess.run(_cli("predict", img, "--out", d / "q", "--threads", "1"), env=ENV, capture_output=True)
    res = run("export --to trackmate: the image's size", "export", d / "q" / "img0.csv", "--to", "trackmate",
              "--out", d / "q.xml", "--image", img, want="done")
    if res.returncode == 0 and 'width="96"' not in (d / "q.xml").read_text():
        rows[-1]["outcome"] = "FAILED: wrong ImageData size"
    rows.append({"case": "TrackMate reader, 300 fuzzed files", "outcome": _fuzz_trackmate(d, 300)})
    print(f"{rows[-1]['case']:<45} {rows[-1]['outcome']}", flush=True)
    return rows


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _fuzz_trackmate(d: Path, n: int) -> str:
    import re

    import pandas as pd

    from napari_spotdetect._reader import get_trackmate_reader
    from napari_spotdetect.core.errors import SpotDetectError
    from napari_spotdetect.core.io.exports import read_trackmate_xml, write_trackmate_xml

    text = write_trackmate_xml(pd.DataFrame({"y": [3.0, 9.0], "x": [4.0, 8.0], "score": [0.9, 0.5], "snr": [4, 6]}),
                               d / "base.xml", pixel_size=0.2).read_text()
    rng = random.Random(1)
    values = ["nan", "inf", "-inf", "1e400", "", "abc", "-1", "1.5", "9" * 40, "None"]
    counts = {"read": 0, "clear error": 0, "other exception": 0, "napari reader raised": 0}
    for i in range(n):
        t = text
        for _ in range(rng.randint(1, 4)):
            attrs = list(re.finditer(r'(\w+)="([^"]*)"', t))
            m = rng.choice(attrs)
            name = m.group(1) if rng.random() < 0.8 else rng.choice(["X", "T", "Z", "score"])
            t = t[:m.start()] + f'{name}="{rng.choice(values)}"' + t[m.end():]
        p = d / f"fz{i}.xml"
        p.write_text(t)
        try:
            read_trackmate_xml(p)
            counts["read"] += 1
        except SpotDetectError:
            counts["clear error"] += 1
        except Exception:
            counts["other exception"] += 1
        try:
            get_trackmate_reader(str(p))
        except Exception:
            counts["napari reader raised"] += 1
    bad = counts["other exception"] + counts["napari reader raised"]
    return ("ok: " if not bad else "FAILED: ") + ", ".join(f"{v} {k}" for k, v in counts.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="kill -9 runs of spotdetect train")
    ap.add_argument("--write-kills", type=int, default=10, help="kill -9 runs during checkpoint writes")
    ap.add_argument("--max-wait", type=float, default=25.0, help="latest kill, seconds after the start")
    ap.add_argument("--no-disk", action="store_true", help="skip the full-disk and read-only cases")
    ap.add_argument("--batch-kills", type=int, default=3, help="kill -9 runs of a 4-image spotdetect predict")
    ap.add_argument("--table-kills", type=int, default=3, help="kill -9 runs of each spot-table writer")
    ap.add_argument("--finetune-kills", type=int, default=2, help="kill -9 runs of spotdetect finetune")
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
        images = tmp / "batch_images"
        _images(images, 4)
        reference = tmp / "batch_reference"
        subprocess.run(_cli("predict", images, "--out", reference, "--threads", "1"), env=ENV, check=True,
                       capture_output=True)
        for i in range(a.batch_kills):
            r = kill_during_batch_predict(tmp / f"batch{i}", rng, reference, images)
            rows.append({"case": f"kill -9 predict (4 images) #{i + 1} at {r['delay_s']} s", **r})
            print(f"{rows[-1]['case']:<45} {r['outcome']}", flush=True)
        rows.append({"case": "predict again with another threshold", **rerun_with_other_settings(tmp / "rerun",
                                                                                                   reference, images)})
        print(f"{rows[-1]['case']:<45} {rows[-1]['outcome']}", flush=True)
        for kind in ("predict", "autosave"):
            for i in range(a.table_kills):
                r = kill_during_table_write(tmp / f"table_{kind}{i}", rng, kind)
                rows.append({"case": f"kill -9 {kind} table write #{i + 1}", **r})
                print(f"{rows[-1]['case']:<45} {r['outcome']}", flush=True)
        for i in range(a.finetune_kills):
            r = kill_during_finetune(tmp / f"finetune{i}", rng)
            rows.append({"case": f"kill -9 finetune #{i + 1} at {r['delay_s']} s", **r})
            print(f"{rows[-1]['case']:<45} {r['outcome']}", flush=True)
        rows += surface_cases(tmp)
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
