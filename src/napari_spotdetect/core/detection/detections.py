"""What a detection returns: :class:`Detections` (the spot table, and the compact candidates that make
re-thresholding and the contrast floor instant, without the network), and :class:`Progress` of long steps.

How the candidates are kept (planes: spots above the candidate floor; z-stacks: voxels above it) is told in
:mod:`.detect`, which makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..common.validate import check_contrast_floor, check_threshold
from ..errors import SpotDetectError


@dataclass
class Progress:
    """How far a long step is: ``done`` of ``total`` units (tiles, batches, epochs).

    Detection also says which plane the last tile belonged to: ``plane`` (0-based, in the order planes are
    detected: outer axes, then z), ``n_planes`` and ``where`` (the plane's index by axis name, e.g.
    ``{"t": 2, "z": 5}``), so a caller need not infer it from tile counts.
    """

    done: int
    total: int
    message: str = ""
    plane: int | None = None
    n_planes: int = 1
    where: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class Detections:
    """Spots found in an image, with what is needed to re-threshold without the network.

    ``spots`` is a DataFrame with one row per spot: the outer axes present (``t``, ``c``), ``z`` for stacks,
    ``y``, ``x`` (pixel centres at integers), ``score``, ``intensity`` (raw image value at the spot's
    pixel), ``source`` (``"predicted"``) and ``model``. ``candidates`` is what re-thresholding filters:
    spots above ``floor`` (planes) or voxels above ``floor`` with their offsets (stacks; see the module
    notes). ``maps`` holds the stitched model maps by name only when ``keep_maps`` asked for them, shaped
    like the image (axes ``axes``) without its channel axis when channels were fed together.

    One rule for the two live settings: ``rethreshold(t, contrast_floor=k)`` only asks (a new table; the
    detection is unchanged), ``set_threshold(t)`` and ``set_contrast_floor(k)`` change the detection
    (``spots`` and the provenance follow) and return the new table. Neither runs the network.
    """

    axes: str
    image_shape: tuple
    threshold: float
    floor: float
    model_name: str
    score_map: str
    provenance: dict
    maps: dict = field(default_factory=dict)
    candidates: pd.DataFrame | None = None
    stack: bool = False
    #: candidates below this fraction of their plane's elbow contrast are left out (0: none; planes only)
    contrast_floor: float = 0.0
    score_range: tuple = (0.0, float("inf"))  # the model's score scale, for checking thresholds
    #: the model's own facts, kept with its spots: a viewer showing layers of several models offers each
    #: layer its model's threshold range and tuned values, not those of the last model run
    threshold_range: tuple = (0.0, 1.0)
    default_threshold: float | None = None
    default_contrast_floor: float = 0.0
    _image: object = None  # the (canonical) image, for the rare stack spot whose centroid voxel was not kept
    _outer_axes: str = ""

    @property
    def spots(self) -> pd.DataFrame:
        return self.rethreshold(self.threshold)

    def set_threshold(self, threshold: float) -> pd.DataFrame:
        spots = self.rethreshold(threshold)  # checks it: a NaN threshold must not become the layer's
        self.threshold = float(threshold)
        self.provenance["threshold"] = self.threshold
        return spots

    @property
    def has_contrast(self) -> bool:
        """Whether the spots carry contrast features, so a contrast floor can act (2-D planes)."""
        return self.candidates is not None and "relative_contrast" in self.candidates

    def set_contrast_floor(self, contrast_floor: float) -> pd.DataFrame:
        """Keep only spots at least ``contrast_floor`` x their plane's elbow contrast (0: all); no network run.
        Needs the contrast features (detection with ``contrast=True`` or a floor above 0). Returns the spots."""
        k = self._checked_floor(contrast_floor)
        self.contrast_floor = k
        self.provenance["contrast_floor"] = k
        return self.spots

    def _checked_floor(self, contrast_floor) -> float:
        k = check_contrast_floor(contrast_floor)
        if k > 0 and not self.has_contrast:
            raise SpotDetectError("This detection has no contrast features, so a contrast floor cannot act.",
                                  "detect again with contrast=True (2-D planes; z-stacks have none).")
        return k

    def rethreshold(self, threshold: float, contrast_floor: float | None = None) -> pd.DataFrame:
        """The spots whose score is above ``threshold`` and that pass ``contrast_floor`` (None: the detection's
        own); the detection itself is unchanged, and the network is not run."""
        threshold = check_threshold(threshold, self.score_range)
        k = self.contrast_floor if contrast_floor is None else self._checked_floor(contrast_floor)
        if threshold < self.floor - 1e-12:
            raise SpotDetectError(
                f"Threshold {threshold} is below {self.floor}, the lowest one this detection kept.",
                f"run detection again with threshold <= {threshold}.")
        if not self.stack:
            out = self.candidates[self._above(threshold, k)].reset_index(drop=True)
        else:
            out = self._stack_spots(threshold)
        out["source"] = "predicted"
        out["model"] = self.model_name
        return out

    def count(self, threshold: float, contrast_floor: float | None = None) -> int:
        """How many spots ``rethreshold(threshold, contrast_floor)`` keeps; for planes a mask count, no table."""
        threshold = check_threshold(threshold, self.score_range)
        if self.stack:
            return len(self._stack_spots(threshold))
        k = self.contrast_floor if contrast_floor is None else self._checked_floor(contrast_floor)
        return int(self._above(threshold, k).sum())

    def passes_contrast_floor(self, contrast_floor: float | None = None) -> np.ndarray:
        """Which planar candidates are at or above the contrast floor (None: the detection's own; all of them
        without a floor)."""
        k = self.contrast_floor if contrast_floor is None else contrast_floor
        if k > 0 and self.has_contrast:
            return self.candidates["relative_contrast"].to_numpy() >= k
        return np.ones(len(self.candidates), dtype=bool)

    def _above(self, threshold: float, contrast_floor: float | None = None) -> np.ndarray:
        # strict, as peak finding at a threshold
        return (self.candidates["score"].to_numpy() > threshold) & self.passes_contrast_floor(contrast_floor)

    def _stack_spots(self, threshold: float) -> pd.DataFrame:
        """One spot per 26-connected component of voxels above ``threshold`` (piscis's rule for stacks).

        Its voxel is the component's centroid truncated to integers, moved by the offsets read there; its
        score the component's maximum.
        """
        from ..models.ops import voxel_components

        vox = self.candidates
        outer = list(self._outer_axes)
        nz, h, w = (self.image_shape[self.axes.index(a)] for a in "zyx")
        groups = vox.groupby(outer, sort=True) if outer else [((), vox)]
        frames = []
        for idx, g in groups:
            idx = idx if isinstance(idx, tuple) else (idx,)
            zrc = g[["z", "row", "col"]].to_numpy(np.int64)
            keys = np.ravel_multi_index(zrc.T, (nz, h, w))
            order = np.argsort(keys)
            keys = keys[order]
            score = g["score"].to_numpy()
            above = score > threshold
            lab, n = voxel_components(zrc[above], (nz, h, w))
            if n == 0:
                continue
            pts = zrc[above].astype(np.float64)
            counts = np.bincount(lab, minlength=n)
            cent = np.stack([np.bincount(lab, weights=pts[:, i], minlength=n) / counts for i in range(3)], 1)
            cvox = cent.astype(np.int64)  # truncation, as piscis casts the centroid
            peak = np.full(n, -np.inf, dtype=np.float32)
            np.maximum.at(peak, lab, score[above].astype(np.float32))
            pos = np.clip(np.searchsorted(keys, np.ravel_multi_index(cvox.T, (nz, h, w))), 0, len(keys) - 1)
            found = keys[pos] == np.ravel_multi_index(cvox.T, (nz, h, w))
            row = order[pos]
            dy = np.where(found, g["dy"].to_numpy()[row], 0.0).astype(np.float32).astype(np.float64)
            dx = np.where(found, g["dx"].to_numpy()[row], 0.0).astype(np.float32).astype(np.float64)
            y, x = cvox[:, 1] + dy, cvox[:, 2] + dx
            inten = np.where(found, g["intensity"].to_numpy()[row], np.nan)
            if not found.all():
                inten[~found] = self._pixel_values(idx, cvox[~found, 0], y[~found], x[~found])
            keep = (y > -0.5) & (y < h - 0.5) & (x > -0.5) & (x < w - 0.5)
            cols = {a: np.full(int(keep.sum()), i) for a, i in zip(outer, idx)}
            cols.update(z=cvox[keep, 0].astype(np.float64), y=y[keep], x=x[keep],
                        score=peak[keep].astype(np.float64), intensity=inten[keep])
            frames.append(pd.DataFrame(cols))
        return concat_spots(frames, outer + ["z"])

    def _pixel_values(self, idx, z, y, x) -> np.ndarray:
        if self._image is None:
            return np.full(len(z), np.nan)
        from ..io.image_sources import read

        h, w = self.image_shape[-2:]
        r = np.clip(np.rint(y).astype(np.int64), 0, h - 1)
        c = np.clip(np.rint(x).astype(np.int64), 0, w - 1)
        vol = self._image[tuple(idx)] if idx else self._image  # (Z, [C,] H, W)
        lead = (0,) if vol.ndim == 4 else ()
        return np.array([float(read(vol[(int(zz),) + lead + (int(rr), int(cc))])) for zz, rr, cc in zip(z, r, c)])


def concat_spots(frames, lead, extra=()):
    """One spot table from per-plane frames: ``lead`` axes, then y, x, score, intensity and ``extra``."""
    cols = lead + ["y", "x", "score", "intensity"] + list(extra)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in cols})
    return pd.concat(frames, ignore_index=True)[cols]


#: what the second stage leaves out as no spots (:mod:`.rescore`), by the key a detection counts it under: its
#: name, one and many
LEFT_OUT = {"hot_pixels": ("hot pixel", "hot pixels"), "psf_echoes": ("PSF echo", "PSF echoes"),
            "plateau_repeats": ("repeat call on a clipped spot", "repeat calls on clipped spots")}


def left_out_text(provenance: dict) -> str:
    """What a detection's second stage left out as no spots, as a sentence for a status line or a log ("" when
    nothing), from its provenance's ``left_out_as_no_spots``."""
    counts = provenance.get("left_out_as_no_spots") or {}
    parts = [f"{n:,} {LEFT_OUT[k][n != 1]}" for k, n in counts.items() if k in LEFT_OUT and n]
    return f"Left out as no spots: {', '.join(parts)}." if parts else ""
