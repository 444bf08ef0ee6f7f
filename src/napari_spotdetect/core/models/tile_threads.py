"""Tile-parallel inference on a CPU: several tiles at once, one thread each, instead of one tile on all threads.

Why: torch splits every operation of a forward pass across its OpenMP threads, and the threads meet at a barrier
after each one. On a machine whose cores are shared with other work, a thread that loses its core holds the
others at every barrier, and the waiting threads spin, taking CPU time the late one needs: on a 2-core machine
under a load average of 7, eight 256^2 DeepSpot tiles took 11-27 s on 2 threads (6.5-11 s of CPU time for 2.2 s
of work) and 3.8-5.7 s as two single-threaded streams of tiles. Streams of whole tiles never wait for each
other, and each tile's result is what a single-threaded pass gives (batches do not change a tile's output).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _one_thread() -> None:
    torch.set_num_threads(1)  # this worker's own OpenMP/MKL thread count (the global count is restored after)


def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool of ``workers`` single-threaded workers, kept (and remade when torch's thread count changes)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="spotdetect-tile", initializer=_one_thread)
        return _pool


def parallel_tiles_possible(x: torch.Tensor) -> bool:
    """True where :func:`run_tiles` would spread ``x``'s tiles over threads."""
    return (x.device.type == "cpu" and len(x) > 1 and torch.get_num_threads() > 1
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"))


def run_tiles(fn, x: torch.Tensor, tiles_per_call: int = 1) -> torch.Tensor:
    """``fn`` over the batch ``x`` in pieces of ``tiles_per_call`` tiles, results concatenated in order.

    On a CPU with several torch threads (and no autograd or autocast, whose state is per thread) the pieces
    run on as many single-threaded workers, each taking the next piece when it is free; otherwise one after
    the other on the calling thread.
    """
    step = max(1, int(tiles_per_call))
    pieces = [x[i:i + step] for i in range(0, len(x), step)]
    if len(pieces) == 1:
        return fn(x)
    if not parallel_tiles_possible(x):
        return torch.cat([fn(p) for p in pieces])
    threads = torch.get_num_threads()
    inference = torch.is_inference_mode_enabled()

    def work(piece):
        with torch.inference_mode(inference), torch.no_grad():
            return fn(piece)

    try:
        outs = list(_executor(threads).map(work, pieces))
    finally:
        if torch.get_num_threads() != threads:  # the workers' set_num_threads(1) also set torch's global count
            torch.set_num_threads(threads)
    return torch.cat(outs)
