"""Where a detection's full-size maps go (nowhere, memory or a zarr store), and refusing, before any pixel is
read, what would not fit in this machine's memory."""

from __future__ import annotations

import os

import numpy as np

from ..errors import SpotDetectError
from .options import IN_MEMORY_MAPS


def in_memory(keep_maps) -> bool:
    """Whether ``keep_maps`` asks for numpy maps (True, "float32", "float16") rather than none or a store."""
    return keep_maps is True or (isinstance(keep_maps, str) and keep_maps in IN_MEMORY_MAPS)


def machine_memory() -> int:
    """Bytes of physical memory, or 0 where the platform does not say (then nothing is refused)."""
    try:
        return max(0, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_plane_memory(plane) -> None:
    """Refuse, before reading it, a plane that would not fit in memory with its normalised copy."""
    n = float(np.prod(plane.shape, dtype=np.float64))
    need = n * (np.dtype(plane.dtype).itemsize + 4 + 1)  # the pixels, a float32 copy, a mask
    total = machine_memory()
    if total and need > total / 2:
        raise SpotDetectError(f"An image plane of shape {tuple(plane.shape)} would take {need / 2**30:.1f} GB to "
                              f"process in memory, more than half of this machine's {total / 2**30:.1f} GB.",
                              "pass it as a dask or zarr array (e.g. dask.array.from_array(image) or a zarr "
                              "store), which is read and detected tile by tile, or detect a crop.")


def check_map_memory(map_shape: tuple, n_maps: int, stack: bool) -> None:
    """Refuse, before allocating, stitched maps that would take more than half of the machine's memory."""
    need = 4 * n_maps * float(np.prod(map_shape, dtype=np.float64))
    total = machine_memory()
    if total and need > total / 2:
        fix = ("detect fewer planes at a time (a crop or a sub-stack)" if stack else
               "pass keep_maps=False (the spots are the same; only the maps are not kept), or detect a crop")
        raise SpotDetectError(f"The model's maps for an image of shape {map_shape} would take {need / 2**30:.1f} GB, "
                              f"more than half of this machine's {total / 2**30:.1f} GB of memory.", f"{fix}.")


def map_sink(keep_maps, names, shape, tile) -> dict:
    """Where stitched maps go: nowhere (False), numpy float32 (True / "float32") or float16, or a zarr store.

    A zarr store is a path (``maps.zarr``), a zarr group or a store; each map becomes an array in it,
    chunked by tiles, so maps larger than memory can be kept.
    """
    if keep_maps is None or keep_maps is False:
        return {}
    if in_memory(keep_maps):
        dtype = np.float16 if keep_maps == "float16" else np.float32
        return {n: np.zeros(shape, dtype=dtype) for n in names}
    try:
        import zarr
    except ImportError as err:
        raise SpotDetectError("Keeping maps in a zarr store needs the zarr package.",
                              "pip install zarr, or pass keep_maps=True / 'float16'.") from err
    group = keep_maps if isinstance(keep_maps, zarr.Group) else zarr.open_group(keep_maps, mode="w")
    chunks = (1,) * (len(shape) - 2) + tuple(int(v) for v in tile)
    return {n: group.create_array(n, shape=shape, chunks=chunks, dtype="float32", fill_value=0.0, overwrite=True)
            for n in names}
