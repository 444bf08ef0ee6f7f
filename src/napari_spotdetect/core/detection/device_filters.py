"""The second stage's whole-band filters on a GPU: the same maps as scipy's, as torch convolutions.

Why: the second stage's proposals (:mod:`.proposals`) take whole-plane filters (a high-pass, five LoG scales,
a local noise window). With scipy they run on the host's CPU whatever the model's device, at about 2 megapixels
per second on two cores, which would bound a GPU's end-to-end rate far below what its network reaches. Here
they are separable convolutions and pooling in float64 on the model's CUDA device, with scipy's kernels (read
off its own impulse responses) and 'reflect' edges, so the maps agree with scipy's to rounding (about 1e-15
relative; checked on the CPU by ``tests/core/detection/test_device_filters.py``). Peaks (a neighbour test at
the pixels above a cut, :func:`.proposals.peaks_above`) and features stay in numpy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..io.image_sources import mirror_index
from .fft_filters import SMOOTH_SIGMA, kernel_1d


def _weights(sigma: float, order: int) -> torch.Tensor:
    """scipy's own 1-D Gaussian (order 0) or second-derivative (order 2) kernel, from its impulse response."""
    return torch.from_numpy(kernel_1d(sigma, order).copy())


def _pad_reflect(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """scipy's 'reflect' edges (numpy's 'symmetric': the edge pixel repeated), any pad length."""
    n = x.shape[dim]
    idx = torch.from_numpy(mirror_index(np.arange(-r, n + r), n)).to(x.device)
    return x.index_select(dim, idx)


def _correlate(x: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """1-D correlation of a (N, H, W) batch along ``dim`` (1: rows, 2: columns), 'reflect' edges."""
    r = (len(w) - 1) // 2
    xp = _pad_reflect(x, r, dim)
    if dim == 1:
        return F.conv2d(xp[:, None], w.to(x)[None, None, :, None])[:, 0]
    return F.conv2d(xp[:, None], w.to(x)[None, None, None, :])[:, 0]


def _gaussian(x: torch.Tensor, sigma: float, orders=(0, 0)) -> torch.Tensor:
    """scipy's gaussian_filter (axis 0 first, then axis 1) with the given derivative order per axis."""
    for dim, order in zip((1, 2), orders):
        x = _correlate(x, _weights(sigma, order), dim)
    return x


def band_maps(x: np.ndarray, noise: float, sigmas, local_window: int, device: torch.device) -> dict:
    """A band's maps, as :func:`.proposals._band_pass` computes them with scipy: ``hp`` (minus its sigma-2 blur),
    ``stack`` (scale-normalised LoG per sigma, on the band over ``noise``), ``resp`` (its max over the scales)
    ``local`` (the local high-pass RMS over ``local_window``) and ``smooth`` (the band blurred by
    :data:`.fft_filters.SMOOTH_SIGMA`). numpy float64 out."""
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(device)[None]
        hp = t - _gaussian(t, 2.0)
        z = t / noise
        stack = torch.cat([-(_gaussian(z, s, (2, 0)) + _gaussian(z, s, (0, 2))) * (s * s) for s in sigmas])
        r = (local_window - 1) // 2
        sq = _pad_reflect(_pad_reflect(hp * hp, r, 1), r, 2)
        local = torch.sqrt(torch.clamp(F.avg_pool2d(sq[:, None], local_window, stride=1)[:, 0], min=0))
        out = {"hp": hp[0], "stack": stack, "resp": stack.max(0).values, "local": local[0],
               "smooth": _gaussian(t, SMOOTH_SIGMA)[0]}
        return {k: v.cpu().numpy() for k, v in out.items()}


__all__ = ["band_maps"]
