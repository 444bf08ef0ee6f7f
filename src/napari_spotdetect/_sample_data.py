"""Sample data: synthetic smFISH-like images with their true spots, so a new user can try the plugin at once.

Synthetic, not real, data: the truth is exact, the files are tiny (made on the fly) and nothing is
downloaded. Each sample returns the image and a Points layer "true spots" to compare detections with.
"""

from __future__ import annotations

import numpy as np

_TRUTH_STYLE = dict(size=9, face_color="transparent", border_color="#40e0d0", border_width=0.1,
                    symbol="square", visible=False)


#: the realistic generator's seed for the 2-D sample: a raw-camera-like plane with vignetting, spots from
#: bright to near the noise floor, close pairs, specks and out-of-focus blobs that are not spots
SAMPLE_2D_SEED = 14


def smfish_2d():
    """A 512 x 512 smFISH-like plane with 190 spots, drawn as real images look (see ``realistic_image``).

    Dim spots, specks and haze make the threshold matter here, as it does on real images: on a plane of only
    bright, isolated spots every score saturates and the slider would seem to do nothing.
    """
    from .core.training.synthetic import realistic_image

    img, coords = realistic_image((512, 512), seed=SAMPLE_2D_SEED)
    truth = {"name": "true spots", "features": {"source": np.full(len(coords), "truth")}, **_TRUTH_STYLE}
    return [(img, {"name": "smFISH (synthetic)", "colormap": "gray"}, "image"), (coords, truth, "points")]


def smfish_stack(shape=(9, 256, 256), n_spots: int = 150, seed: int = 3):
    """A small z-stack: spots are 3-D Gaussians that fade over about two planes above and below."""
    rng = np.random.default_rng(seed)
    nz, h, w = shape
    zyx = np.column_stack([rng.uniform(1, nz - 2, n_spots), rng.uniform(4, h - 5, n_spots),
                           rng.uniform(4, w - 5, n_spots)])
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(h), np.arange(w), indexing="ij", sparse=True)
    img = np.full(shape, 100.0) + 30.0 * (yy / h + xx / w)
    sig_xy, sig_z = rng.uniform(1.0, 1.5, n_spots), 1.2
    amp = rng.uniform(300, 1000, n_spots)
    for (cz, cy, cx), s, a in zip(zyx, sig_xy, amp):
        y0, y1, x0, x1 = int(cy) - 6, int(cy) + 7, int(cx) - 6, int(cx) + 7
        blob = np.exp(-((zz - cz) ** 2 / (2 * sig_z**2))
                      - ((yy[:, y0:y1] - cy) ** 2 + (xx[:, :, x0:x1] - cx) ** 2) / (2 * s * s))
        img[:, y0:y1, x0:x1] += a * blob
    img = rng.poisson(img).astype(np.float64) + rng.normal(0, 10, size=shape)
    truth = {"name": "true spots", "features": {"source": np.full(n_spots, "truth")}, **_TRUTH_STYLE}
    labels = ("z", "y", "x")  # so napari's slider says "z" and the widget reads the axes from the layer
    return [(img.astype(np.float32), {"name": "smFISH stack (synthetic)", "colormap": "gray",
                                      "axis_labels": labels}, "image"),
            (zyx, {**truth, "axis_labels": labels}, "points")]
