"""Screenshots of the bundled model on four things that are no spots, before and with the second stage's rules:
a camera's hot pixels, an aberrated PSF's echoes beside bright beads, the rim of a bright body, and the repeat
calls on the flat tops of clipped spots.

Four synthetic 256^2 scenes side by side (each detected on its own), detections as yellow dots, the true spots
as magenta rings. "Before" turns the four rules off for the picture only (it patches them out of
:mod:`napari_spotdetect.core.detection`). Needs a display:
    xvfb-run -a -s "-screen 0 1280x1024x24" python scripts/make_artifact_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
SIZE, GAP = 256, 16


def _gauss(centres, amp, sigma=1.2):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return sum(amp * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2)) for y, x in centres)


def scenes(seed: int = 0) -> list:
    """(image, true spots) of the four scenes."""
    rng = np.random.default_rng(seed)
    grid = np.array([(y, x) for y in range(28, SIZE - 20, 40) for x in range(28, SIZE - 20, 40)], dtype=float)
    grid += rng.uniform(-4, 4, grid.shape)
    hot = rng.poisson(1000 + _gauss(grid[::2], 900)).astype(np.float64)
    for y, x in grid[1::2]:  # the other grid points: single hot pixels
        hot[int(y), int(x)] += rng.uniform(800, 2500)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    beads = 500 + _gauss(grid, 3000) + _gauss(grid + (2.2, 2.2), 600, 1.3)  # a lobe of a fifth, 3.1 px away
    angles = np.linspace(0.2, 2 * np.pi, 10, endpoint=False)
    rim_spots = [(128 + 112 * np.sin(a), 128 + 112 * np.cos(a)) for a in angles]
    body = ndimage.gaussian_filter(500 + 2500.0 * (np.hypot(yy - 128, xx - 128) < 80), 1.5)
    flat = np.random.default_rng(seed + 1).poisson(200 + _gauss(grid, 8000, 2.0))  # clipped: flat tops
    clipped = np.minimum(flat, 1500).astype(np.float64)
    return [(hot, grid[::2]), (rng.poisson(beads).astype(np.float64), grid),
            (rng.poisson(body + _gauss(rim_spots, 600)).astype(np.float64), np.array(rim_spots)), (clipped, grid)]


@contextlib.contextmanager
def rules_off():
    from napari_spotdetect.core.detection import edges, proposals, rescore

    saved = proposals.hot_pixel_at, rescore.psf_echoes, edges.on_edge, rescore.clipped_spot_calls
    proposals.hot_pixel_at = lambda x, rc, noise: np.zeros(len(rc), dtype=bool)
    rescore.psf_echoes = lambda coords, contrast, eligible=None: np.zeros(len(coords), dtype=bool)
    edges.on_edge = lambda margin, saturated: np.zeros(len(margin), dtype=bool)
    rescore.clipped_spot_calls = lambda plane, coords, *a, **k: (coords, np.zeros(len(coords), dtype=bool),
                                                                 np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    try:
        yield
    finally:
        proposals.hot_pixel_at, rescore.psf_echoes, edges.on_edge, rescore.clipped_spot_calls = saved


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    import napari
    import torch
    from make_bright_region_screenshots import show_detected

    from napari_spotdetect import detect, load_model

    torch.set_num_threads(1)
    model = load_model("default", device="cpu")
    sc = scenes()
    shift = [np.array([0.0, k * (SIZE + GAP)]) for k in range(len(sc))]
    canvas = np.full((SIZE, len(sc) * (SIZE + GAP) - GAP), np.nan, dtype=np.float32)
    for (img, _), s in zip(sc, shift):
        lo, hi = np.percentile(img, [1, 99.8])
        canvas[:, int(s[1]):int(s[1]) + SIZE] = (img - lo) / (hi - lo)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 620)
    viewer.add_image(np.nan_to_num(canvas, nan=0.0), name="hot pixels | PSF echoes | bright rim | clipped spots",
                     colormap="gray",
                     contrast_limits=[0.0, 1.0])
    viewer.add_points(np.vstack([t + s for (_, t), s in zip(sc, shift)]), name="true spots", size=14,
                      face_color="transparent", border_color="magenta", border_width=0.1)
    for off, name in ((True, "artifacts_before.png"), (False, "artifacts_after.png")):
        with rules_off() if off else contextlib.nullcontext():
            found = [detect(img.astype(np.uint16), model, keep_maps=False).spots[["y", "x"]].to_numpy() + s
                     for (img, _), s in zip(sc, shift)]
        show_detected(viewer, np.vstack(found), Path(args.out) / name, size=5)
        print(f"{name}: spots per scene {[len(f) for f in found]}, true {[len(t) for _, t in sc]}")
    viewer.close()


if __name__ == "__main__":
    main()
