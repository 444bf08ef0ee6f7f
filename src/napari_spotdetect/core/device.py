"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import torch

from .errors import SpotDetectError


def available_devices() -> list[str]:
    """Device names usable on this machine, best first (what a device picker should offer)."""
    names = []
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve ``None``/``"auto"`` to the best available device and check that a named one exists."""
    if device is None or (isinstance(device, str) and device.lower() in ("", "auto")):
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise SpotDetectError(
            f"Unknown device {device!r}.", f"use one of {available_devices()} or 'auto'."
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpotDetectError("CUDA was requested but no CUDA GPU is available.", "use device='cpu' or 'auto'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpotDetectError("MPS was requested but is not available here.", "use device='cpu' or 'auto'.")
    return dev


def default_batch_size(device: torch.device) -> int:
    """Tiles per forward pass: 1 on CPU (measured faster than 4 for this size), more on accelerators."""
    return 1 if device.type == "cpu" else 8


def is_out_of_memory(err: BaseException) -> bool:
    """True for the allocation failures that a smaller batch can avoid (CUDA, MPS or CPU)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
