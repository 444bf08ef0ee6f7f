"""Detecting spots in many images: resumable, carrying on past bad images, in one process or on Dask.

One image is one task: open it lazily, detect, write ``<name>.csv`` and ``<name>.provenance.json``
atomically. An image whose two files exist is finished and is skipped unless ``overwrite``; an image that
fails is reported and the others go on. With a ``dask.distributed`` client the same task runs on the
workers (which must see the images and the output folder), each worker loading the model once; Dask does the
scheduling, we keep none of our own.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import SpotDetectError
from ..io.image_sources import image_name, opened_image
from ..io.spots_io import atomic_write_text, provenance_path, write_spots_csv
from ..io.units import pixel_size_um
from .detections import left_out_text
from .options import DetectOptions

#: the summary table written beside the spot tables
SUMMARY_NAME = "predict_summary.csv"


@dataclass(frozen=True)
class PredictOptions:
    """Everything a worker needs to load the model and detect, as plain data (it travels to workers)."""

    model: str = "default"
    device: str | None = None
    variant: str | None = None
    #: the detection settings, checked when they were made (the image's own axes fill in ``axes`` when None)
    detection: DetectOptions = DetectOptions()
    #: after detection, ``post(path, image, spots, axes, pixel_size_um) -> (spots, provenance note)`` (a picklable
    #: callable: the CLI's fits, cell counts and exports), or None
    post: object = None


def output_csv(image_path, out_dir) -> Path:
    return Path(out_dir) / f"{image_name(image_path)}.csv"


def is_finished(image_path, out_dir) -> bool:
    """Both files of an image are written (each atomically, the provenance last)."""
    csv = output_csv(image_path, out_dir)
    return csv.is_file() and provenance_path(csv).is_file()


def check_output_names(files) -> None:
    """Two images with one output name would overwrite each other's spots."""
    seen: dict[str, Path] = {}
    for f in files:
        n = image_name(f)
        if n in seen:
            raise SpotDetectError(f"{seen[n]} and {f} would both be written to {n}.csv.",
                                  "rename one of them, or run them into different --out folders.")
        seen[n] = f


#: the options that change which spots an image gets (not where or how fast they are computed)
_RESULT_SETTINGS = ("model", "variant")
_DETECTION_SETTINGS = ("threshold", "axes", "min_distance", "augment", "speed", "contrast_floor", "percentiles")


def settings_record(options: PredictOptions) -> dict:
    """What ``options`` asked for, as recorded in each image's provenance: a resume compares it."""
    rec = {k: getattr(options, k) for k in _RESULT_SETTINGS}
    rec.update({k: getattr(options.detection, k, None) for k in _DETECTION_SETTINGS})
    rec["post"] = getattr(options.post, "settings", None) if options.post is not None else None
    return json.loads(json.dumps(rec, default=str))


def settings_differences(image_path, out_dir, options: PredictOptions) -> dict:
    """``{setting: (recorded, asked)}`` between a finished image's provenance and ``options`` ({} when equal).

    Results written before settings were recorded compare equal (nothing to compare them with).
    """
    try:
        rec = json.loads(provenance_path(output_csv(image_path, out_dir)).read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        rec = None
    if not isinstance(rec, dict):
        return {}
    now = settings_record(options)
    return {k: (rec.get(k), v) for k, v in now.items() if rec.get(k) != v}


def check_resume(files, out_dir, options: PredictOptions) -> None:
    """A rerun into the same folder with other settings must not keep the old spots as if they were the new."""
    for f in files:
        if is_finished(f, out_dir) and (diff := settings_differences(f, out_dir, options)):
            said = ", ".join(f"{k} {a!r} then, {b!r} now" for k, (a, b) in list(diff.items())[:4])
            raise SpotDetectError(
                f"{output_csv(f, out_dir)} was made with other settings ({said}); resuming would keep those "
                "results as if they were made with these.",
                "add --overwrite to redo every image with the new settings, or write to another --out folder.")


def prepare_output(out_dir) -> Path:
    """Make ``out_dir``, check that files can be written there, and remove what killed runs left behind.

    Done before any image runs, so an unwritable folder fails at once, not after every image's detection.
    """
    import tempfile

    from ..io.files import remove_stale_temp_files

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        Path(probe).unlink()
    except OSError as err:
        raise SpotDetectError(f"Cannot write results to {out_dir}: {err.strerror or err}.",
                              "choose an --out folder you can write to (check its permissions and free space).") \
            from err
    for sub in (out_dir, out_dir / "cells"):
        remove_stale_temp_files(sub)
    return out_dir


def predict_image(path, model, options: PredictOptions, out_dir, progress=None) -> dict:
    """Detect spots in one image file and write its CSV and provenance; returns its summary row."""
    from .detect import detect

    t0 = time.perf_counter()
    path = Path(path)
    note: dict = {}
    with _read_errors_explained(path), opened_image(path, with_info=True) as (image, info):
        det = detect(image, model, options.detection, axes=options.detection.axes or info.axes, keep_maps=False,
                     progress=progress)
        spots = det.spots.drop(columns=["model"])
        if info.pixel_size:
            note["pixel_size"] = {**info.pixel_size, "unit": info.unit}
        if options.post is not None:
            spots, extra = options.post(path, image, spots, det.axes, pixel_size_um(info))
            note.update(extra)
    seconds = time.perf_counter() - t0
    prov = {**det.provenance, "image": str(path.resolve()), "n_spots": len(spots), "seconds": round(seconds, 3),
            **note, "settings": settings_record(options)}
    csv = write_spots_csv(spots, output_csv(path, out_dir), provenance=prov)
    return {"image": str(path), "spots": len(spots), "seconds": round(seconds, 3), "status": "done",
            "error": "", "csv": str(csv), "axes_from_file": info.axes if not options.detection.axes else None,
            "left_out": left_out_text(det.provenance)}


@contextlib.contextmanager
def _read_errors_explained(path):
    """Errors of the file readers (a damaged TIFF or store is read lazily, while tiles are detected) as ours."""
    try:
        yield
    except SpotDetectError:
        raise
    except MemoryError as err:
        raise SpotDetectError(f"Not enough memory to read {path} ({err or 'MemoryError'}).",
                              "store the image in smaller chunks (e.g. 1024 x 1024), or use a machine with more "
                              "memory.") from err
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("tifffile", "zarr", "numcodecs", "imagecodecs"):
            raise
        raise SpotDetectError(f"Cannot read the image {path}: the file is damaged or truncated "
                              f"({type(err).__name__}: {err}).",
                              "check that the file is complete (copy it again) and opens in Fiji.") from err


def failed_row(path, err: BaseException) -> dict:
    msg = str(err) if isinstance(err, SpotDetectError) else f"{type(err).__name__}: {err}"
    return {"image": str(path), "spots": None, "seconds": None, "status": "failed", "error": msg, "csv": ""}


def skipped_row(path, out_dir) -> dict:
    csv = output_csv(path, out_dir)
    try:
        n = json.loads(provenance_path(csv).read_text()).get("n_spots")
    except (OSError, ValueError):
        n = None
    return {"image": str(path), "spots": n, "seconds": None, "status": "skipped (finished before)", "error": "",
            "csv": str(csv)}


def worker_model(options: PredictOptions):
    """The model ``options`` names: on a Dask worker, loaded on the worker's first task and kept by the worker
    (one model per worker); elsewhere loaded now, for the caller to keep (``run_batch`` loads it once)."""
    from ..models.zoo import load_model

    try:
        from distributed import get_worker

        cache = get_worker().__dict__.setdefault("_spotdetect_models", {})
    except (ImportError, ValueError):  # not on a worker
        return load_model(options.model, device=options.device, variant=options.variant)
    key = (options.model, options.device, options.variant)
    if key not in cache:
        cache.clear()  # one model per worker
        cache[key] = load_model(options.model, device=options.device, variant=options.variant)
    return cache[key]


def _remote_predict(path: str, out_dir: str, options: PredictOptions) -> dict:
    """The task a Dask worker runs; failures come back as rows, so one bad image never stops the batch."""
    try:
        return predict_image(path, worker_model(options), options, out_dir)
    except Exception as err:
        return failed_row(path, err)


def _remote_model_check(options: PredictOptions) -> str:
    m = worker_model(options)
    return f"{m.info.name} ({m.info.arch} {m.info.variant}) on {m.device}"


def run_batch(files, out_dir, options: PredictOptions, *, overwrite: bool = False, client=None, model=None,
              on_start=None, on_result=None, on_tiles=None) -> list[dict]:
    """Detect spots in every image of ``files``; returns one summary row per image, in input order.

    ``client`` (a ``dask.distributed.Client``) sends one task per image to its workers; without it images
    run here, one after the other, with ``model`` (or the one ``options`` names). ``on_start(n_todo,
    n_skipped)`` is called once, ``on_result(row)`` after each image, ``on_tiles(image, Progress)`` during
    each image (this process only). The summary table is written to ``out_dir/predict_summary.csv``.
    """
    files = [Path(f) for f in files]
    out_dir = Path(out_dir)
    check_output_names(files)  # before anything is written
    prepare_output(out_dir)
    if not overwrite:
        check_resume(files, out_dir, options)
    rows: dict[int, dict] = {}
    todo = []
    for i, f in enumerate(files):
        if not overwrite and is_finished(f, out_dir):
            rows[i] = skipped_row(f, out_dir)
        else:
            todo.append(i)
    if on_start is not None:
        on_start(len(todo), len(files) - len(todo))
    try:
        if client is None:
            model = model if model is not None else worker_model(options)
            for i in todo:
                tiles = (lambda p, f=files[i]: on_tiles(f, p)) if on_tiles is not None else None
                try:
                    rows[i] = predict_image(files[i], model, options, out_dir, progress=tiles)
                except Exception as err:
                    rows[i] = failed_row(files[i], err)
                if on_result is not None:
                    on_result(rows[i])
        elif todo:
            from distributed import as_completed

            # a model that cannot load fails here once, not once per image
            client.submit(_remote_model_check, options, pure=False).result()
            futures = {client.submit(_remote_predict, str(files[i]), str(out_dir), options, pure=False): i
                       for i in todo}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    rows[i] = fut.result()
                except Exception as err:
                    rows[i] = failed_row(files[i], err)
                if on_result is not None:
                    on_result(rows[i])
    finally:
        write_summary([rows[i] for i in sorted(rows)], out_dir)
    return [rows[i] for i in range(len(files))]


def write_summary(rows, out_dir) -> Path:
    cols = ["image", "spots", "seconds", "status", "error"]
    df = pd.DataFrame(rows, columns=cols + ["csv"])[cols]
    path = Path(out_dir) / SUMMARY_NAME
    atomic_write_text(path, df.to_csv(index=False))
    return path
