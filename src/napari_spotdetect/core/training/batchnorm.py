"""BatchNorm statistics during training: re-estimating them on inference-like tiles ("precise BN"), and
keeping them fixed while the rest of the network trains.

Running averages collected during training come from tiny batches of rotated, zero-padded, intensity-scaled
crops; inference sees whole tiles standardised one by one. With that mismatch the eval-mode network fired on
the background of some images (thousands of false peaks), so after each epoch the statistics are averaged
afresh over tiles cut and standardised as ``detect`` does.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import Cancelled


def _batchnorms(net: torch.nn.Module) -> list:
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def train_mode(net: torch.nn.Module, frozen_bn: bool) -> None:
    """``net.train()``, with every BatchNorm left in eval mode (its statistics as loaded) when ``frozen_bn``."""
    net.train()
    if frozen_bn:
        for m in _batchnorms(net):
            m.eval()


def recalibrate_batchnorm(net: torch.nn.Module, model, images, rng: np.random.Generator, n_batches: int,
                          batch_size: int, device, should_stop) -> None:
    """Average ``net``'s BatchNorm statistics afresh over ``n_batches`` batches of tiles of ``images``.

    ``model`` is the :class:`SpotModel` wrapping ``net`` (its tile size and normalisation); a stop asked for by
    ``should_stop`` raises :class:`Cancelled` within one batch, with the previous statistics put back.
    """
    bns = _batchnorms(net)
    momenta = [m.momentum for m in bns]
    kept = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    net.train()
    try:
        _recalibration_batches(net, model, images, rng, n_batches, batch_size, device, should_stop)
    except Cancelled:  # half-estimated statistics are worse than the old ones
        for m, saved in zip(bns, kept):
            m.running_mean.copy_(saved[0])
            m.running_var.copy_(saved[1])
        raise
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom


def _recalibration_batches(net, model, images, rng, n_batches, batch_size, device, should_stop) -> None:
    # a stop asked for here ends the run within one batch (a whole recalibration takes tens of seconds)
    th, tw = model.tile_size
    with torch.no_grad():
        for _ in range(n_batches):
            if should_stop():
                raise Cancelled("stopped during BatchNorm recalibration")
            tiles = []
            for _ in range(batch_size):
                img = images[rng.integers(len(images))][0]
                h, w = img.shape
                r0, c0 = rng.integers(max(1, h - th + 1)), rng.integers(max(1, w - tw + 1))
                plane = model.prepare_image(img[None])
                stats = model.plane_statistics(plane)
                t = plane[0][r0:r0 + th, c0:c0 + tw]
                t = np.pad(t, ((0, th - t.shape[0]), (0, tw - t.shape[1])), mode="symmetric")[None, None]
                norm = model.normalize_tiles
                tiles.append(norm(t) if stats is None else norm(t, stats))
            net(torch.from_numpy(np.concatenate(tiles)).to(device))
