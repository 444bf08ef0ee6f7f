"""The second stage's whole-band filters on the CPU, through one FFT: scipy's maps to rounding, sooner.

Why: the second stage's proposals (:mod:`.proposals`) take a high-pass and five LoG scales of every plane. As
scipy's separable filters that is 22 passes over the plane, with kernels up to 33 taps, about a third of fast
detection's time on a 1024^2 image. Every one of them is a convolution of the same plane, so here the plane is
transformed once, each filter is a product with its transfer function (the outer product of scipy's own 1-D
kernels' transforms), and each map one inverse transform. The plane is padded with scipy's 'reflect' edges by at
least the widest kernel's reach on every side, so the circular convolution equals scipy's in the plane
(float64: about 1e-15 relative, ``tests/core/detection/test_fft_filters.py``). On a 1024^2 plane the whole
second stage took 0.27 s with these maps against 0.42-0.43 s with scipy's filters (README, *Performance*).
numpy and scipy only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..io.image_sources import mirror_index

#: scipy's default: a Gaussian's kernel reaches truncate * sigma pixels
TRUNCATE = 4.0
#: the high-pass is the plane minus its blur by this sigma
HIGHPASS_SIGMA = 2.0
#: the blur :mod:`.edges` compares a candidate's peak with its ring in (the ``smooth`` map)
SMOOTH_SIGMA = 1.0


def kernel_1d(sigma: float, order: int) -> np.ndarray:
    """scipy's own 1-D Gaussian (order 0) or second-derivative (order 2) kernel, read off its impulse response."""
    radius = _reach(sigma)
    delta = np.zeros(2 * radius + 1)
    delta[radius] = 1.0
    return ndimage.gaussian_filter1d(delta, sigma, order=order, mode="constant")


@lru_cache(maxsize=64)
def _transfer(sigma: float, order: int, n: int, half: bool) -> np.ndarray:
    """The transform (length ``n``; the rfft's half with ``half``) of a symmetric kernel centred on index 0."""
    k = kernel_1d(sigma, order)
    r = len(k) // 2
    buf = np.zeros(n)
    buf[:r + 1] = k[r:]
    buf[n - r:] = k[:r]
    out = (np.fft.rfft(buf) if half else np.fft.fft(buf)).real  # an even kernel's transform is real
    out.setflags(write=False)
    return out


def _separable(sigma: float, orders: tuple, shape: tuple) -> np.ndarray:
    """The 2-D transfer, on an rfft2 of ``shape``, of a Gaussian of derivative order ``orders[0]`` along the
    rows' axis (0) and ``orders[1]`` along the columns' (1)."""
    return _transfer(sigma, orders[0], shape[0], False)[:, None] * _transfer(sigma, orders[1], shape[1], True)[None]


def _spectrum(x: np.ndarray, reach: int, workers: int):
    """``x`` mirrored by at least ``reach`` px on every side and transformed: (its padded shape, a function that
    takes a transfer function to the filtered plane, cropped back to ``x``)."""
    h, w = x.shape
    shape = (sfft.next_fast_len(h + 2 * reach), sfft.next_fast_len(w + 2 * reach, real=True))
    rows, cols = (mirror_index(np.arange(-reach, n - reach), m) for n, m in zip(shape, (h, w)))
    spectrum = sfft.rfft2(x[np.ix_(rows, cols)], workers=workers)

    def back(transfer):
        return sfft.irfft2(spectrum * transfer, s=shape, workers=workers)[reach:reach + h, reach:reach + w]

    return shape, back


def _reach(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5)


def band_spectrum(x: np.ndarray, sigmas, workers: int = 1):
    """A band's transform, mirrored for the widest of ``sigmas`` and the high-pass: what :func:`band_maps` and
    :func:`highpass` filter, so a caller that needs both (the second stage's two passes) transforms once."""
    x = np.asarray(x, dtype=np.float64)
    return _spectrum(x, max(_reach(s) for s in (*sigmas, HIGHPASS_SIGMA)), workers)


def band_maps(x: np.ndarray, noise: float, sigmas, local_window: int, workers: int = 1,
              hp: np.ndarray | None = None, spectrum=None) -> dict:
    """A band's maps, as :func:`.proposals._band_pass` computed them with scipy: ``hp`` (minus its sigma-2 blur),
    ``stack`` (scale-normalised LoG per sigma, on the band over ``noise``), ``resp`` (its max over the scales)
    ``local`` (the local high-pass RMS over ``local_window``, scipy's uniform filter) and ``smooth`` (the band
    blurred by :data:`SMOOTH_SIGMA`, what :mod:`.edges` reads). float64. ``hp``,
    ``spectrum``: the band's high-pass and :func:`band_spectrum` where the caller has them already."""
    x = np.asarray(x, dtype=np.float64)
    shape, back = spectrum if spectrum is not None else band_spectrum(x, sigmas, workers)
    hp = x - back(_separable(HIGHPASS_SIGMA, (0, 0), shape)) if hp is None else hp
    stack = np.stack([back(_log_transfer(s, shape)) * (1.0 / noise) for s in sigmas])
    local = np.sqrt(np.maximum(ndimage.uniform_filter(hp * hp, local_window, mode="reflect"), 0))
    return {"hp": hp, "stack": stack, "resp": stack.max(0), "local": local,
            "smooth": back(_separable(SMOOTH_SIGMA, (0, 0), shape))}


def _log_transfer(sigma: float, shape: tuple) -> np.ndarray:
    """The scale-normalised, sign-flipped LoG's transfer (-sigma^2 times the sum of the two second
    derivatives). Not cached: a band's is megabytes, and building it costs nothing measurable beside the
    inverse transform."""
    return (_separable(sigma, (2, 0), shape) + _separable(sigma, (0, 2), shape)) * (-sigma * sigma)


def highpass(x: np.ndarray, workers: int = 1, spectrum=None) -> np.ndarray:
    """The plane minus its sigma-2 blur (scipy's ``gaussian_filter``, 'reflect' edges) through one FFT
    (``spectrum``: the band's :func:`band_spectrum`, where the caller has it)."""
    x = np.asarray(x, dtype=np.float64)
    shape, back = spectrum if spectrum is not None else _spectrum(x, _reach(HIGHPASS_SIGMA), workers)
    return x - back(_separable(HIGHPASS_SIGMA, (0, 0), shape))


__all__ = ["HIGHPASS_SIGMA", "SMOOTH_SIGMA", "TRUNCATE", "band_maps", "band_spectrum", "highpass", "kernel_1d"]
