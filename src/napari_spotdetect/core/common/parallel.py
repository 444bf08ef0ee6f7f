"""Independent pieces of CPU work (whole-plane scipy filters, bands of rows) on a few threads at once.

Why: scipy.ndimage's filters release the GIL, so the second stage's dozen whole-plane filters can share the
cores torch was given instead of running one after another on one of them. Each piece computes exactly what it
computed in turn, so the numbers do not depend on the thread count.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_PREFIX = "spotdetect-cpu"
#: one pool per worker count, kept (callers in several threads, e.g. a napari worker and a fine-tune, may ask
#: for different counts at once: a pool is never shut down under another caller)
_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def cpu_workers() -> int:
    """The threads this thread may use: torch's count for it where torch is loaded (the user's ``threads``
    setting, per thread), else 1."""
    torch = sys.modules.get("torch")
    return max(1, int(torch.get_num_threads())) if torch is not None else 1


def thread_map(fn, items, workers: int | None = None) -> list:
    """``[fn(item) for item in items]``, on up to ``workers`` threads (default :func:`cpu_workers`).

    In turn on the calling thread with one worker, one item, or when called from one of these threads (a piece
    waiting on pieces of the same pool could wait forever)."""
    items = list(items)
    workers = cpu_workers() if workers is None else int(workers)
    if workers <= 1 or len(items) <= 1 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(it) for it in items]
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix=_PREFIX)
    return list(pool.map(fn, items))


def run_together(*calls) -> list:
    """The results of several zero-argument callables, run side by side as :func:`thread_map` allows."""
    return thread_map(lambda f: f(), calls)


__all__ = ["cpu_workers", "run_together", "thread_map"]
