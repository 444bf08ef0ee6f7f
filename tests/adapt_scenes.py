"""Images for the adaptation tests: a lab convention a model does not know, and a bright region that
makes a small crop's statistics unlike its image's."""

from __future__ import annotations

import numpy as np

from napari_spotdetect.core.groundtruth.metrics import match_spots
from napari_spotdetect.core.groundtruth.regions import inside
from napari_spotdetect.core.training.synthetic import synthetic_image

#: the left square is annotated, the right one is the unseen part scored after adapting
LEFT, RIGHT = (0, 0, 128, 128), (0, 128, 128, 256)


def faint_spots_scene(seed: int = 5):
    """Bright spots and faint ones (amplitude 70-95 over noise 10) that this lab counts too: the bundled
    model gives the faint ones scores from 0.001 to 0.99, so its threshold of 0.05 misses many of them."""
    bright, pb = synthetic_image((128, 256), n_spots=40, amplitude=(900, 1500), seed=seed)
    faint, pf = synthetic_image((128, 256), n_spots=40, amplitude=(70, 95), seed=seed + 100, background=0,
                                read_noise=0)
    return (bright + faint).astype(np.float32), np.concatenate([pb, pf])


def f1_in(spots, truth, box, radius: float = 3.0) -> float:
    """F1 of the spots against the truth, both restricted to ``box``."""
    spots = np.asarray(spots, dtype=np.float64).reshape(-1, 2)
    return match_spots(spots[inside(spots, box)], truth[inside(truth, box)], radius).f1


def write_image_and_spots(folder, name: str, image, spots) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", image)
    (folder / f"{name}.csv").write_text("y,x\n" + "\n".join(f"{y:.2f},{x:.2f}" for y, x in spots) + "\n")


def bright_corner_scene(seed: int = 3):
    """Moderate spots over a 256 x 256 plane and one very bright blob in a corner, which sets the whole image's
    top percentile: a crop away from it, normalised on its own, shows spots far brighter than the image does.
    The crop (rows 150-246, columns 10-106) holds about 15 spots; the right half is the unseen part."""
    img, pts = synthetic_image((256, 256), n_spots=90, amplitude=(150, 500), seed=seed)
    yy, xx = np.mgrid[0:256, 0:256]
    img = img + 8000 * np.exp(-((yy - 40) ** 2 + (xx - 215) ** 2) / (2 * 12.0 ** 2))
    return img.astype(np.float32), pts


CROP, RIGHT_HALF = (150, 10, 246, 106), (0, 128, 256, 256)
