"""Screenshots of the bundled model on a real image with a bright patch pasted in, with the normalisation's
bright-region rule off (before) and on (now), for the README.

The image is the spotmax_yeast 2-D ``val`` plane of ../shared/data/real with ``with_bright_patch`` (3x its
99.8th percentile); annotated spots are magenta rings, detections yellow dots. Needs a display:
    xvfb-run -a -s "-screen 0 1280x1024x24" python scripts/make_bright_region_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def show_detected(viewer, spots, path: Path, size: float) -> None:
    """Replace the viewer's ``detected`` points with ``spots`` (yellow dots) and save the canvas to ``path``."""
    if "detected" in viewer.layers:
        viewer.layers.remove("detected")
    viewer.add_points(spots, name="detected", size=size, face_color="yellow", border_width=0)
    viewer.reset_view()
    viewer.screenshot(str(path), canvas_only=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    import napari
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_data import load_annotated

    from napari_spotdetect import detect, load_model
    from napari_spotdetect.core.training.synthetic import with_bright_patch

    torch.set_num_threads(1)
    im = load_annotated(REAL, split="val", sources=["spotmax_yeast"], ndim=2)[0]
    img, _ = with_bright_patch(im.image.astype(np.float32))
    model = load_model("default", device="cpu")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1000, 1000)
    viewer.add_image(img, name="image + bright patch", colormap="gray",
                     contrast_limits=[float(np.percentile(img, 1)), float(np.percentile(im.image, 99.9))])
    viewer.add_points(im.spots, name="annotated", size=15, face_color="transparent", border_color="magenta",
                      border_width=0.1)
    for rule, name in ((False, "bright_region_before.png"), (True, "bright_region_after.png")):
        spots = detect(img, model.with_bright_region_rule(rule)).spots[["y", "x"]].to_numpy()
        show_detected(viewer, spots, Path(args.out) / name, size=6)
        print(f"{name}: {len(spots)} spots ({len(im.spots)} annotated)")
    viewer.close()


if __name__ == "__main__":
    main()
