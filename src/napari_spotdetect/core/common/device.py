"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import torch

from ..errors import SpotDetectError


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


#: bytes of activations per input pixel of a forward pass of the Piscis network in float32 (measured peak
#: on a 256^2 tile, rounded up); reduced precision halves it
ACTIVATION_BYTES_PER_PIXEL = 6000
#: never more tiles per pass than this (beyond it a GPU is already saturated)
MAX_BATCH = 64


#: on a CPU, the most pixels of tiles in one batch (they run side by side, one thread each)
CPU_BATCH_PIXELS = 2 * 1024 * 1024


def default_batch_size(device: torch.device, tile=None, half_precision: bool = False) -> int:
    """Tiles per forward pass: on CPU one per torch thread (models run them side by side, one thread each,
    up to :data:`CPU_BATCH_PIXELS`), on a CUDA GPU as many as half its free memory holds, else 8."""
    if device.type == "cpu":
        cap = CPU_BATCH_PIXELS // (int(tile[0]) * int(tile[1])) if tile is not None else 1
        return int(max(1, min(torch.get_num_threads(), cap)))
    if device.type == "cuda" and tile is not None:
        free, _total = torch.cuda.mem_get_info(device)
        return batch_for_memory(free, tile, ACTIVATION_BYTES_PER_PIXEL // (2 if half_precision else 1))
    return 8


def batch_for_memory(free_bytes: int, tile, bytes_per_pixel: int = ACTIVATION_BYTES_PER_PIXEL) -> int:
    """The batch whose activations fill half of ``free_bytes`` (the rest for the allocator and the maps)."""
    per_tile = int(tile[0]) * int(tile[1]) * int(bytes_per_pixel)
    return int(max(1, min(MAX_BATCH, (free_bytes // 2) // max(per_tile, 1))))


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


def idle_cores() -> int:
    """Cores not busy with other work now: usable cores minus the 1-minute load average, at least 1.

    torch takes every core by default; on a machine where other work runs, its threads then wait on each other
    (a batch of 4 images took 125 s instead of 12 s with one thread, the same spots).
    """
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def default_threads() -> int:
    """torch CPU threads when the user names none: ``OMP_NUM_THREADS`` if set, else the idle cores (at most
    torch's own choice)."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(torch.get_num_threads(), idle_cores()))


def use_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads (``None``: :func:`default_threads`); returns the number now in use."""
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SpotDetectError(f"Threads {threads!r} is not a number of threads.",
                              "use threads=1 or more (one per idle core is fastest; 1 on a busy machine).")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
