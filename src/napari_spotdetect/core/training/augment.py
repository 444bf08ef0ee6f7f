"""Random geometric and intensity augmentation that moves the spot coordinates with the image.

Follows the Piscis recipe (paper 4.3.1, piscis 1.1.0 ``RandomAugment``): with probability 1/2 a random
affine (scale 0.75-1.25, any rotation, random shift within the scaled image), otherwise a random multiple
of 90 degrees; random flips; with probability 1/2 ``x -> shift + s * x`` with s log-uniform in [0.2, 5].
The image is resampled into an ``out_shape`` canvas centred on the output (bilinear, 0 outside); spots
that end up outside the canvas are dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def affine_matrix(scale: float, angle: float) -> np.ndarray:
    """2x2 forward map in (y, x): rotate by ``angle`` radians, then scale."""
    c, s = np.cos(angle), np.sin(angle)
    return scale * np.array([[c, -s], [s, c]])


def warp(image: np.ndarray, coords: np.ndarray, out_shape, a: np.ndarray, shift=(0.0, 0.0), snap: bool = False):
    """Apply ``out = a (p - c_in) + c_out + shift`` to the image (bilinear) and to the (N, 2) coords.

    ``snap`` rounds the translation so that pixels land exactly on pixels (quarter turns: no blur).
    """
    image = np.asarray(image, dtype=np.float32)
    c_in = (np.array(image.shape[-2:], dtype=np.float64) - 1) / 2
    c_out = (np.array(out_shape, dtype=np.float64) - 1) / 2 + np.asarray(shift, dtype=np.float64)
    inv = np.linalg.inv(a)
    offset = c_in - inv @ c_out  # input position = inv @ output position + offset
    if snap:
        offset = np.round(offset)
    out = ndimage.affine_transform(image, inv, offset=offset, output_shape=tuple(out_shape), order=1,
                                   mode="constant", cval=0.0)
    new = (np.asarray(coords, dtype=np.float64).reshape(-1, 2) - offset) @ a.T
    return out.astype(np.float32), new


def keep_inside(coords: np.ndarray, shape) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    ok = (c[:, 0] > -0.5) & (c[:, 0] < shape[0] - 0.5) & (c[:, 1] > -0.5) & (c[:, 1] < shape[1] - 0.5)
    return c[ok]


def random_augment(image, coords, out_shape, rng: np.random.Generator, *, affine_p: float = 0.5,
                   scale=(0.75, 1.25), flip: bool = True, intensity_p: float = 0.5, intensity=(0.2, 5.0),
                   offset=(-0.1, 0.1)):
    """One random augmentation of a (standardised) image and its spots -> (image out_shape, coords)."""
    h, w = image.shape[-2:]
    out_shape = tuple(int(v) for v in out_shape)
    quarter = rng.random() >= affine_p
    if not quarter:
        s = rng.uniform(*scale)
        a = affine_matrix(s, rng.uniform(0, 2 * np.pi))
        room = np.maximum(0.0, np.array([h, w]) * s - np.array(out_shape)) / 2
        shift = rng.uniform(-room, room)
    else:
        a = affine_matrix(1.0, rng.integers(4) * np.pi / 2)
        a = np.round(a)  # exact quarter turns
        room = np.maximum(0.0, np.array([h, w]) - np.array(out_shape)) / 2
        shift = rng.uniform(-room, room)  # a random crop, snapped to whole pixels: no resampling blur
    img, c = warp(image, coords, out_shape, a, shift, snap=quarter)
    if flip and rng.random() < 0.5:
        img = img[::-1]
        c[:, 0] = out_shape[0] - 1 - c[:, 0]
    if flip and rng.random() < 0.5:
        img = img[:, ::-1]
        c[:, 1] = out_shape[1] - 1 - c[:, 1]
    if rng.random() < intensity_p:
        f = np.exp(rng.uniform(np.log(intensity[0]), np.log(intensity[1])))
        img = rng.uniform(*offset) + f * img
    return np.ascontiguousarray(img, dtype=np.float32), keep_inside(c, out_shape)
