"""Images that may not fit in memory: opening them lazily, finding them on disk, reading them by tiles.

Zarr arrays, OME-Zarr (the full-resolution level of a multiscale image), TIFF / OME-TIFF (through
tifffile's zarr interface, tile or strip at a time) and ``.npy`` (memory-mapped) open as lazy arrays;
PNG/JPEG are small and read whole. Lazy arrays become dask arrays, so axis reordering and slicing stay lazy
and only the pixels asked for are read.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from pathlib import Path

import numpy as np

from ..errors import SpotDetectError

#: image kinds the batch commands take; zarr stores are folders
FILE_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg", ".bmp")
STORE_SUFFIXES = (".ome.zarr", ".zarr")
#: rows per chunk for lazy arrays that have no chunks of their own
ROW_CHUNK = 256
_OME_AXES = {"t": "t", "time": "t", "c": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}


def image_name(path) -> str:
    """The file name without its image suffix (``a.ome.tif`` -> ``a``): the stem of the output files."""
    name = Path(path).name
    for suf in STORE_SUFFIXES + FILE_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem


def is_image_path(path) -> bool:
    p = Path(path)
    name = p.name.lower()
    if name.endswith(STORE_SUFFIXES):
        return p.is_dir()
    return p.is_file() and name.endswith(FILE_SUFFIXES)


def find_images(patterns) -> list[Path]:
    """Image paths from files, folders (their images, not sub-folders) and glob patterns, in order, once each.

    A ``.zarr`` folder is an image, not a folder of images.
    """
    found, missing = [], []
    for pat in map(str, patterns):
        p = Path(pat).expanduser()
        if p.exists() and (not p.is_dir() or p.name.lower().endswith(STORE_SUFFIXES)):
            found.append(p)
        elif p.is_dir():
            found += sorted(f for f in p.iterdir() if is_image_path(f))
        elif glob.has_magic(pat):
            hits = sorted(Path(h) for h in glob.glob(os.path.expanduser(pat)))
            found += [h for h in hits if is_image_path(h)]
            if not hits:
                missing.append(pat)
        else:
            missing.append(pat)
    if missing:
        raise SpotDetectError(f"Not found: {', '.join(missing)} does not exist.",
                              "give image files, folders of images or glob patterns such as 'data/*.tif'.")
    seen, out = set(), []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    if not out:
        raise SpotDetectError(f"No images found in {list(map(str, patterns))}.",
                              f"use files or stores ending in {', '.join(STORE_SUFFIXES + FILE_SUFFIXES)}.")
    return out


def open_image(path):
    """``(array, axes or None)``: a lazy (dask) array for zarr, OME-Zarr, TIFF and .npy, numpy otherwise.

    ``axes`` comes from OME-Zarr or TIFF (ImageJ, OME, tifffile) metadata; None where the file does not say.
    A TIFF stays open until the array is garbage-collected; :func:`opened_image` closes it at once.
    """
    arr, info, _ = _open(path)
    return arr, info.axes


@contextlib.contextmanager
def opened_image(path, with_info: bool = False):
    """:func:`open_image` as a context manager that closes the file (batches open thousands of them).

    Yields ``(array, axes)``, or ``(array, ImageInfo)`` with ``with_info`` (axes and, for TIFFs, pixel size).
    """
    arr, info, closer = _open(path)
    try:
        yield arr, (info if with_info else info.axes)
    finally:
        if closer is not None:
            closer()


def _open(path):
    """(array, ImageInfo, closer or None)."""
    from .image_files import ImageInfo, tiff_info

    path = Path(path)
    name = path.name.lower()
    plain = ImageInfo(path=str(path))
    try:
        if name.endswith(STORE_SUFFIXES):
            arr, axes = _open_zarr(path)
            return arr, ImageInfo(path=str(path), axes=axes), None
        if name.endswith((".tif", ".tiff")):
            arr, close = _open_tiff(path)
            return arr, tiff_info(path), close
        if name.endswith(".npy"):
            return as_lazy(np.load(path, mmap_mode="r", allow_pickle=False)), plain, None
        if name.endswith(FILE_SUFFIXES):
            from skimage.io import imread

            return imread(path), plain, None
    except SpotDetectError:
        raise
    except Exception as err:
        raise SpotDetectError(f"Cannot read the image {path}: {type(err).__name__}: {err}.",
                              "check that the file is complete and is an image.") from err
    raise SpotDetectError(f"{path.name}: unsupported image type.",
                          f"use one of {', '.join(STORE_SUFFIXES + FILE_SUFFIXES)}.")


def _open_tiff(path: Path):
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True)  # level 0 of a pyramid, series 0
    try:
        node = zarr.open(store, mode="r")
        if not hasattr(node, "shape"):  # a pyramid: the group's first array is full resolution
            node = node["0"]
    except Exception:
        store.close()
        raise
    return as_lazy(node), store.close


#: codecs that turn stored bytes into Python objects; pickle runs any code the file's author wrote
_OBJECT_CODECS = ("pickle", "json2", "msgpack2", "vlen-utf8", "vlen-bytes", "vlen-array", "categorize")
_ZARR_META = (".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json")


def _unsafe_in(meta, where: str, codec: bool = False) -> str | None:
    """What in a zarr metadata document would decode to Python objects (None when nothing does).

    Codec names are looked at only under ``compressor``/``filters``/``codecs`` (an OME image may be named
    anything); ``codec`` says that ``meta`` is under one of them.
    """
    if isinstance(meta, dict):
        for key, v in meta.items():
            if codec and key in ("id", "name") and isinstance(v, str) and any(c in v.lower() for c in _OBJECT_CODECS):
                return f"the codec {v!r} in {where}"
            if key in ("dtype", "data_type") and ("O" in str(v) or "object" in str(v).lower()):
                return f"the data type {v!r} (Python objects) in {where}"
            if key in ("object_codec", "object_codec_id") and v:
                return f"the object codec {v!r} in {where}"
            found = _unsafe_in(v, where, codec or key in ("compressor", "compressors", "filters", "codecs"))
            if found:
                return found
    elif isinstance(meta, list):
        for v in meta:
            found = _unsafe_in(v, where, codec)
            if found:
                return found
    return None


def check_zarr_store(path) -> None:
    """Refuse a zarr store whose metadata asks for object or pickle codecs, before zarr opens any of it.

    Images are numbers; a pickle codec runs code chosen by whoever wrote the store (zarr 2 with numcodecs
    decodes it). Groups are walked down to their arrays; chunk folders are never listed.
    """
    root = Path(path)
    todo, seen = [root], 0
    while todo and seen < 10_000:
        d = todo.pop()
        seen += 1
        is_array = False
        for name in _ZARR_META:
            f = d / name
            if not f.is_file() or f.stat().st_size > (64 << 20):
                continue
            try:
                meta = json.loads(f.read_bytes())
            except (ValueError, OSError):
                continue  # zarr itself reports a damaged document
            where = str(f.relative_to(root.parent))
            bad = _unsafe_in(meta, where)
            if bad:
                raise SpotDetectError(f"{root} is not safe to open: {bad} decodes stored bytes into Python objects "
                                      "(a pickle codec runs whatever code the store's author put in it).",
                                      "images are stored as numbers: rewrite the image with a numeric data type and "
                                      "a compressor such as Blosc or Zstd, and do not open stores from untrusted "
                                      "sources with zarr directly either.")
            if name == ".zarray" or (name == "zarr.json" and isinstance(meta, dict)
                                     and meta.get("node_type") == "array"):
                is_array = True
        if not is_array:
            try:
                todo += [s for s in d.iterdir() if s.is_dir()]
            except OSError:
                pass


def _open_zarr(path: Path):
    import zarr

    check_zarr_store(path)
    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return as_lazy(node), None
    attrs = dict(node.attrs)
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if ms:
        level = ms[0]["datasets"][0]["path"]  # datasets go from full resolution down
        axes = ms[0].get("axes")
        letters = None
        if axes:
            names = [(a["name"] if isinstance(a, dict) else str(a)).lower() for a in axes]
            if all(n in _OME_AXES for n in names):
                letters = "".join(_OME_AXES[n] for n in names)
        return as_lazy(node[level]), letters
    arrays = sorted(k for k, v in node.arrays())
    if len(arrays) == 1:
        return as_lazy(node[arrays[0]]), None
    raise SpotDetectError(f"{path} is a zarr group with {len(arrays)} arrays and no OME-Zarr multiscales metadata.",
                          "pass the path of one array inside it, e.g. " + f"{path / (arrays[0] if arrays else '0')}.")


def is_lazy(image) -> bool:
    """Anything array-like that is not numpy in memory (dask, zarr, a memory map)."""
    return not isinstance(image, np.ndarray) or isinstance(image, np.memmap)


#: the largest storage chunk read whole (a chunk is decompressed in one piece, with copies on the way)
MAX_CHUNK_BYTES = 2 << 30


def _free_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_chunk_size(image, chunks) -> None:
    """A store written as one huge chunk must be read whole: refuse it with a fix instead of a bare MemoryError."""
    if not (isinstance(chunks, tuple) and chunks and all(isinstance(c, (int, np.integer)) for c in chunks)):
        return
    itemsize = np.dtype(getattr(image, "dtype", np.uint8)).itemsize
    nbytes = int(np.prod([int(c) for c in chunks], dtype=np.float64)) * itemsize
    free = _free_memory()
    limit = min(MAX_CHUNK_BYTES, free // 4) if free else MAX_CHUNK_BYTES
    if nbytes > limit:
        raise SpotDetectError(
            f"The image is stored in chunks of {' x '.join(map(str, chunks))} pixels ({nbytes / 2**30:.1f} GiB "
            f"each); a chunk is read whole, and that is more than this reader allows ({limit / 2**30:.1f} GiB).",
            "rewrite the store with smaller chunks, e.g. in Python: zarr.open(new, mode='w', shape=a.shape, "
            "chunks=(1024, 1024), dtype=a.dtype)[:] = a, or save the TIFF tiled (tifffile.imwrite(..., tile=(512, "
            "512))).")


def as_lazy(image):
    """A dask array over ``image`` (zarr, memory map, ...), chunked like its storage; dask arrays as they are."""
    import dask.array as da

    if isinstance(image, da.Array):
        return image
    chunks = getattr(image, "chunks", None)
    check_chunk_size(image, chunks)
    if not (isinstance(chunks, tuple) and len(chunks) == len(image.shape)
            and all(isinstance(c, (int, np.integer)) for c in chunks)):
        # no storage chunks (a memory map, an HDF5 dataset without chunks): bands of whole rows, so a band of
        # tiles reads only its rows (dask reads whole chunks)
        chunks = (1,) * (len(image.shape) - 2) + (min(ROW_CHUNK, int(image.shape[-2])), int(image.shape[-1]))
    return da.from_array(image, chunks=chunks, asarray=True, lock=False, fancy=False)


def read(region) -> np.ndarray:
    """Materialise a region of a lazy array in this thread (no nested scheduler inside dask workers)."""
    if hasattr(region, "compute"):
        return np.asarray(region.compute(scheduler="synchronous"))
    return np.asarray(region)


class BandReader:
    """Tiles of one lazy (C, H, W) plane, read one band of rows (all columns) at a time.

    Tiles come in row-major order. The band grows to whole storage chunks and keeps the rows the next row of
    tiles shares with this one, so each chunk is read about once, and memory holds about one band (tile
    height plus two chunk heights, times the image width), never the plane.
    """

    def __init__(self, plane):
        self.plane = plane
        self.h, self.w = (int(v) for v in plane.shape[-2:])
        chunks = getattr(plane, "chunks", None)
        self._edges = np.cumsum((0,) + tuple(chunks[-2])) if chunks else None
        self._band = None
        self._rows = (0, 0)

    def band(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` (all columns) as numpy, from the cached band where it holds them."""
        a, b = self._rows
        if self._band is None or not (a <= r0 and r1 <= b):
            lo, hi = r0, r1
            if self._edges is not None:
                lo = int(self._edges[np.searchsorted(self._edges, r0, side="right") - 1])
                hi = int(self._edges[np.searchsorted(self._edges, r1, side="left")])
            if self._band is not None and a <= lo < b < hi:  # moving down: keep the shared rows
                self._band = np.concatenate([self._band[..., lo - a:, :], read(self.plane[..., b:hi, :])], -2)
            else:
                self._band = read(self.plane[..., lo:hi, :])
            self._rows = (lo, hi)
        a = self._rows[0]
        return self._band[..., r0 - a:r1 - a, :]

    def tile(self, tile, size, mode: str) -> np.ndarray:
        """The same pixels as :func:`.tiling.extract_tile` on the whole plane."""
        th, tw = size
        r0, c0 = tile.rows.start, tile.cols.start
        full = tile.rows.stop - r0 == th and tile.cols.stop - c0 == tw
        if full or mode != "symmetric":
            rows, cols = np.arange(r0, tile.rows.stop), np.arange(c0, tile.cols.stop)
        else:
            rows = mirror_index(np.arange(r0, r0 + th), self.h)
            cols = mirror_index(np.arange(c0, c0 + tw), self.w)
        lo = int(rows.min())
        band = self.band(lo, int(rows.max()) + 1)
        part = band[..., rows[:, None] - lo, cols[None, :]]
        if part.shape[-2:] == (th, tw):
            return part
        out = np.zeros(part.shape[:-2] + (th, tw), dtype=part.dtype)
        out[..., : part.shape[-2], : part.shape[-1]] = part
        return out

    def pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Raw values of the first channel at integer (row, col) pairs (a few scattered reads)."""
        return np.array([read(self.plane[(0,) * (self.plane.ndim - 2) + (int(r), int(c))])
                         for r, c in zip(rows, cols)], dtype=np.float64)


def mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """np.pad 'symmetric' indexing (edge repeated), valid for any pad length."""
    period = 2 * n
    m = np.mod(idx, period)
    return np.where(m < n, m, period - 1 - m)
