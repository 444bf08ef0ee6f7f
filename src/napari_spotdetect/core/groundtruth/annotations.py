"""Ground-truth editing without a GUI: snapping, the spot table on disk, rejected predictions, undo, QC.

The correction and QC widgets only translate napari events into these calls, so everything that decides
what ends up in a training or evaluation file is tested here without Qt. Tables use the engine's column
names (``t, c, z, y, x`` then features); a hand-placed spot has ``source='manual'`` and no score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SpotDetectError
from ..io.spots_io import atomic_write_text, write_spots_csv
from .metrics import evaluate_matched
from .refine import snap_to_spot

MANUAL = "manual"
PREDICTED = "predicted"
QC_COLUMNS = ["image", "predictions", "truth", "radius", "n_pred", "n_true", "tp", "fp", "fn",
              "precision", "recall", "f1", "f1_integral"]


def snap_point(image: np.ndarray, point, axes: str, radius: float = 2.0) -> np.ndarray:
    """Move ``point`` (image pixel coordinates, one per axis) onto the centre of the spot under it.

    Only y and x move: the plane is the one the point was placed in (other coordinates rounded), because
    the user clicked in that plane. A point outside the image is returned unchanged.
    """
    image = np.asarray(image)
    point = np.asarray(point, dtype=np.float64).copy()
    if image.ndim != len(axes) or len(point) != len(axes) or "y" not in axes or "x" not in axes:
        raise SpotDetectError(f"Cannot snap a {len(point)}-D point on a {image.ndim}-D image with axes {axes!r}.",
                              "choose the image the spots were detected on.")
    iy, ix = axes.index("y"), axes.index("x")
    index = []
    for i, n in enumerate(image.shape):
        if i in (iy, ix):
            index.append(slice(None))
            continue
        k = int(round(point[i]))
        if not 0 <= k < n:
            return point
        index.append(k)
    plane = image[tuple(index)]
    if iy > ix:  # the plane must be (y, x) for snap_to_spot
        plane = plane.T
    if not (-0.5 <= point[iy] < plane.shape[0] - 0.5 and -0.5 <= point[ix] < plane.shape[1] - 0.5):
        return point
    point[iy], point[ix] = snap_to_spot(plane, (point[iy], point[ix]), radius=radius)
    return point


def spots_table(coords: np.ndarray, features: pd.DataFrame | None, axes: str) -> pd.DataFrame:
    """Coordinates (one column per axis letter) followed by the features, one row per spot."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(axes))
    df = pd.DataFrame({a: coords[:, i] for i, a in enumerate(axes)})
    if features is not None and len(features.columns):
        feats = pd.DataFrame(features).reset_index(drop=True)
        df = pd.concat([df, feats.drop(columns=[c for c in feats.columns if c in axes])], axis=1)
    return df


def manual_features(features: pd.DataFrame, rows) -> pd.DataFrame:
    """Mark ``rows`` as placed by hand: source 'manual', score NaN, intensity NaN, model empty.

    napari copies the selected spot's features onto a new point; a hand-placed point must not inherit a
    prediction's score, or training and the review list would trust it.
    """
    out = features.copy()
    rows = list(rows)
    if not rows:
        return out
    if "source" not in out.columns:
        out["source"] = PREDICTED
    out["source"] = out["source"].astype(object)
    out.loc[rows, "source"] = MANUAL
    for col in ("score", "intensity"):
        if col in out.columns:
            out[col] = out[col].astype(np.float64)
            out.loc[rows, col] = np.nan
    if "model" in out.columns:
        out["model"] = out["model"].astype(object)
        out.loc[rows, "model"] = ""
    return out


def rejected_rows(removed: pd.DataFrame) -> pd.DataFrame:
    """The deleted spots that are worth remembering as negatives: predictions, not hand-placed points."""
    if "source" not in removed.columns:
        return removed.reset_index(drop=True)
    return removed[removed["source"].astype(str) != MANUAL].reset_index(drop=True)


def review_order(features: pd.DataFrame) -> np.ndarray:
    """Row indices, least confident prediction first; spots without a score (hand-placed) come last."""
    if "score" not in features.columns or len(features) == 0:
        return np.arange(len(features))
    score = pd.to_numeric(features["score"], errors="coerce").to_numpy(dtype=np.float64)
    return np.argsort(np.where(np.isnan(score), np.inf, score), kind="stable")


def safe_stem(name: str) -> str:
    """A file-name stem from a layer name ('smFISH (synthetic)' -> 'smFISH_synthetic')."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return stem or "spots"


def annotation_paths(image_name: str, image_path=None, folder=None) -> tuple[Path, Path]:
    """(ground truth CSV, rejected CSV) for an image: ``<stem>.csv`` and ``<stem>.rejected.csv``.

    The truth file is named after the image so ``spotdetect evaluate`` pairs it with predictions of the
    same name. It goes to ``folder`` if given, else beside the image file; an image without a file
    (sample data, a computed layer) needs a folder.
    """
    if image_path:
        stem = Path(image_path).stem
        base = Path(folder) if folder else Path(image_path).parent
    elif folder:
        stem, base = safe_stem(image_name), Path(folder)
    else:
        raise SpotDetectError(f"The image {image_name!r} was not opened from a file, so there is no folder to "
                              "save its ground truth beside.", "choose a folder to save the ground truth in.")
    return base / f"{stem}.csv", base / f"{stem}.rejected.csv"


def save_annotations(table: pd.DataFrame, rejected: pd.DataFrame | None, truth_path, rejected_path,
                     provenance: dict | None = None) -> None:
    """Write the truth table and the rejected predictions, each atomically (complete or untouched)."""
    write_spots_csv(table, truth_path, provenance)
    if rejected is not None and len(rejected):
        write_spots_csv(rejected, rejected_path)
    else:  # every rejection was undone: an old file would still claim some
        Path(rejected_path).unlink(missing_ok=True)


@dataclass
class Snapshot:
    """Everything an edit can change: spot coordinates, their features and the rejected predictions."""

    data: np.ndarray
    features: pd.DataFrame
    rejected: pd.DataFrame

    @classmethod
    def take(cls, data, features, rejected) -> Snapshot:
        return cls(np.array(data, copy=True), pd.DataFrame(features).copy(), pd.DataFrame(rejected).copy())


@dataclass
class History:
    """Undo/redo over whole snapshots (napari 0.9's Points layer has no undo).

    Snapshots are small next to the image (a few thousand rows), and whole states cannot drift the way a
    replayed list of partial edits can.
    """

    limit: int = 200
    _undo: list = field(default_factory=list)
    _redo: list = field(default_factory=list)

    def push(self, before: Snapshot) -> None:
        self._undo.append(before)
        del self._undo[:-self.limit]
        self._redo.clear()

    def undo(self, current: Snapshot) -> Snapshot | None:
        if not self._undo:
            return None
        self._redo.append(current)
        return self._undo.pop()

    def redo(self, current: Snapshot) -> Snapshot | None:
        if not self._redo:
            return None
        self._undo.append(current)
        return self._redo.pop()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)


def qc_compare(pred: np.ndarray, truth: np.ndarray, radius: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """Scores (exactly :func:`metrics.evaluate`, as ``spotdetect evaluate`` prints), TP mask, found mask."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.size and truth.size and pred.shape[1] != truth.shape[1]:
        raise SpotDetectError(f"The predictions have {pred.shape[1]} coordinates per spot and the ground truth "
                              f"{truth.shape[1]}.", "compare layers made on the same image.")
    scores, m = evaluate_matched(pred, truth, radius)
    return scores, m.pred_is_tp(len(pred)), m.true_is_found(len(truth))


def write_qc_table(rows: list[dict], path) -> Path:
    """The per-image QC table as CSV (atomic), columns in :data:`QC_COLUMNS` order."""
    df = pd.DataFrame(rows, columns=QC_COLUMNS)
    atomic_write_text(Path(path), df.to_csv(index=False, float_format="%.6f"))
    return Path(path)
