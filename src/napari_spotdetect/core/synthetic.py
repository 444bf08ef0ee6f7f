"""Synthetic smFISH-like images with known spot positions (for tests, sample data and training).

This first version draws Gaussian spots on a smooth background with Poisson and read noise. The training
issue extends it (clusters, autofluorescent blobs, out-of-focus spots, varied sizes); keep the signature.
"""

from __future__ import annotations

import numpy as np


def synthetic_image(shape=(256, 256), n_spots: int = 60, seed: int | None = 0, *, sigma=(1.0, 1.6),
                    amplitude=(300.0, 1000.0), background: float = 100.0, read_noise: float = 10.0,
                    min_distance: float = 4.0, border: float = 3.0):
    """Return (image float32 of ``shape``, true coordinates (N, 2) float64 in (y, x) pixel centres)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    pts = []
    tries = 0
    while len(pts) < n_spots and tries < n_spots * 200:
        tries += 1
        p = rng.uniform([border, border], [h - 1 - border, w - 1 - border])
        if all(np.hypot(*(p - q)) >= min_distance for q in pts):
            pts.append(p)
    coords = np.array(pts, dtype=np.float64).reshape(-1, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    tilt = 0.3 * background * (yy / h + xx / w)
    img = background + tilt
    sig = rng.uniform(*sigma, size=len(coords))
    amp = rng.uniform(*amplitude, size=len(coords))
    for (cy, cx), s, a in zip(coords, sig, amp):
        r0, r1 = max(0, int(cy - 4 * s)), min(h, int(cy + 4 * s) + 2)
        c0, c1 = max(0, int(cx - 4 * s)), min(w, int(cx + 4 * s) + 2)
        img[r0:r1, c0:c1] += a * np.exp(-((yy[r0:r1, c0:c1] - cy) ** 2 + (xx[r0:r1, c0:c1] - cx) ** 2) / (2 * s * s))
    img = rng.poisson(np.clip(img, 0, None)).astype(np.float64) + rng.normal(0, read_noise, size=img.shape)
    return img.astype(np.float32), coords
