"""Speed modes of detection: ``"exact"`` (the model's own tiles, full precision) or ``"fast"``.

``exact`` on a file piscis saved reproduces piscis's tiling and per-tile normalisation, so its spots are piscis's
(float noise only); the package's own models plan the even tiles below in exact mode too
(:attr:`..models.base.SpotModel.even_tiles`), so for them fast mode differs by precision alone. ``fast`` trades
bit-parity for throughput, with each choice measured by ``benchmarks/compare_piscis.py``:

- a tile plan without waste: the fewest equal tiles of up to :data:`FAST_TILE_FACTOR` times the model's
  tile that cover the image with the model's overlap (in pixels) as shared context, none sticking out of the
  image (piscis's 256-pixel tiles with a padded last tile compute 1.3-1.6x the image's pixels). Much larger
  tiles are not used: per-tile normalisation and Piscis's style vector then see other statistics than in
  training (a test model trained on small crops found 20 % false spots with 1024-pixel tiles);
- batches of about :data:`FAST_BATCH_PIXELS` pixels (one 512^2 tile or four 256^2 ones);
- reduced precision where the hardware does it natively: bfloat16 on CPUs with AVX-512 BF16 or AMX (via
  oneDNN), bfloat16 or float16 on CUDA GPUs, float16 on Apple GPUs. Elsewhere float32.

Other tiles change the statistics that per-tile normalisation and Piscis's style vector see, so on a piscis file
fast mode's spots can differ slightly from exact mode's; the tests require F1 >= 0.99 against it on synthetic
images. With the same plan (the package's own models) only precision differs: F1 0.99 on the real pia_spots
frames whose candidates crowd the threshold, 0.94 when the plans differed (``benchmarks/fast_agreement.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SpotDetectError

SPEEDS = ("exact", "fast")
#: the fast plan's largest tile, in model tiles per side
FAST_TILE_FACTOR = 2
#: pixels per forward pass in fast mode on a CPU
FAST_BATCH_PIXELS = 512 * 512


@dataclass(frozen=True)
class SpeedSettings:
    """What a speed mode means on one device."""

    name: str
    dtype: torch.dtype | None  # autocast dtype, None for float32

    def describe(self) -> dict:
        return {"speed": self.name, "precision": str(self.dtype).replace("torch.", "") if self.dtype else "float32"}


def check_speed(speed) -> str:
    name = "exact" if speed is None else str(speed).lower()
    if name not in SPEEDS:
        raise SpotDetectError(f"Unknown speed {speed!r}.", f"use one of {', '.join(SPEEDS)}.")
    return name


def speed_settings(speed, device: torch.device) -> SpeedSettings:
    name = check_speed(speed)
    return SpeedSettings(name, fast_dtype(device) if name == "fast" else None)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bfloat16 convolutions in hardware (AVX-512 BF16 or AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision fast mode uses on ``device``, or None (float32) where it would be slower."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels were dispatched to (e.g. ``"AVX512"``, ``"AVX2"``)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:
        return "unknown"
