"""What a source's annotations let any detector reach, measured on the images alone (no model).

Two properties of the labels bound every detector's score on them:

- **Where the annotators put the points.** :func:`centroid_oracle` places every annotated spot at its
  local intensity centre (:func:`~napari_spotdetect.core.groundtruth.refine.snap_points`) and scores that against the
  annotation: an oracle that finds exactly the annotated spots and nothing else. Its F1 integral is what
  position disagreement alone leaves (clicks quantised or scattered around the centre, mask centroids).
- **Which spots the annotators counted.** :func:`spot_contrast` gives each point's brightness over its local
  background in units of the image's noise (:mod:`.contrast`). Comparing the contrast of annotated spots with
  that of the local maxima nobody annotated (:func:`unannotated_contrast`) says how bright a spot had to be for a
  source's annotators to count it. :func:`count_window` turns that into the range of one contrast cut that
  would count within a tolerance of the annotation on that source, for a detector that finds every local
  maximum; sources whose ranges do not overlap ask for different definitions of a spot.

Only 2-D planes. The contrast is relative to the image's own noise, so it compares raw camera images well;
deconvolved and 8-bit-rendered images change the noise, and with it the scale.
"""

from __future__ import annotations

import numpy as np

from napari_spotdetect.core.detection.contrast import CUTS, contrast_features


def split_contrast(plane: np.ndarray, points: np.ndarray, radius: float = 3.0):
    """(contrast at each annotated (y, x) point, contrast of the plane's peaks farther than ``radius`` from
    every annotated point), from one pass over the plane. The second is what a detector finding every peak
    would add to the annotation at each contrast cut."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    at_points, peaks, contrast, _ = contrast_features(plane, pts)
    if len(pts) and len(peaks):
        d, _ = cKDTree(pts).query(peaks)
        contrast = contrast[d > radius]
    return at_points, contrast


def spot_contrast(plane: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Contrast over noise at each (y, x) point (its nearest pixel; :mod:`.contrast`)."""
    return split_contrast(plane, points)[0]


def unannotated_contrast(plane: np.ndarray, points: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Contrast of the plane's peaks farther than ``radius`` from every annotated point."""
    return split_contrast(plane, points, radius)[1]


def count_window(annotated: np.ndarray, unannotated: np.ndarray, n_annotated: int, tolerance: float = 0.2,
                 cuts=None):
    """(lowest, highest) contrast cut at which "every peak above the cut" counts within ``tolerance`` of
    ``n_annotated``, or None when no cut does. ``annotated`` / ``unannotated`` are contrasts pooled over a
    source's images (as from :func:`spot_contrast` / :func:`unannotated_contrast`)."""
    cuts = CUTS if cuts is None else np.asarray(cuts, dtype=np.float64)
    a, u = np.sort(np.asarray(annotated)), np.sort(np.asarray(unannotated))
    found = (len(a) - np.searchsorted(a, cuts)) + (len(u) - np.searchsorted(u, cuts))
    ok = np.abs(found / max(n_annotated, 1) - 1.0) <= tolerance
    return (float(cuts[ok].min()), float(cuts[ok].max())) if ok.any() else None


def centroid_oracle(plane: np.ndarray, points: np.ndarray) -> float:
    """F1 integral of the annotated spots moved to their intensity centres, against the annotation."""
    from napari_spotdetect.core.groundtruth.metrics import f1_integral
    from napari_spotdetect.core.groundtruth.refine import snap_points

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(pts):
        return float("nan")
    return f1_integral(snap_points(np.asarray(plane, dtype=np.float32), pts, radius=1.5), pts)
