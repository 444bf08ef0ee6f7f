"""Reading an image file together with what the file says about it: its axes and its pixel size.

A z-stack or a DAPI + FISH file treated as a time series gives wrong spots without any warning, so the axes
come from the file's own metadata (ImageJ hyperstack, OME-XML, tifffile's shaped TIFFs) wherever it has
them. When it has none, :attr:`ImageInfo.axes` is None and the caller must ask the user rather than guess.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SpotDetectError

#: tifffile's axis letters that we understand; 'S' (samples, e.g. RGB) is a channel axis
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


@dataclass
class ImageInfo:
    """What a file says about its image. ``axes`` is None when the file does not say (plain TIFF, .npy).

    ``pixel_size`` maps axis letters (``"x"``, ``"y"``, ``"z"``) to the spacing in ``unit``; empty when unknown.
    """

    path: str = ""
    axes: str | None = None
    pixel_size: dict = field(default_factory=dict)
    unit: str | None = None


def read_image_with_info(path) -> tuple[np.ndarray, ImageInfo]:
    """The pixels of ``path`` and an :class:`ImageInfo`; raises :class:`SpotDetectError` for unreadable files."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    from .spots_io import read_image

    return read_image(path), ImageInfo(path=str(path))


def tiff_info(path) -> ImageInfo:
    """Axes and pixel size a TIFF's metadata gives, without reading its pixels (lazy readers use it).

    Unknown or unreadable metadata gives an empty :class:`ImageInfo`; reading the pixels reports damage.
    """
    import tifffile

    info = ImageInfo(path=str(path))
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            info.axes = _axes(series.axes, len(series.shape))
            info.pixel_size, info.unit = _pixel_size(tif, info.axes)
    except Exception:
        info.pixel_size, info.unit = {}, None
    return info


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageInfo]:
    import tifffile

    if not path.is_file():
        raise SpotDetectError(f"Cannot read the image {path}: it is not a file.", "give the path of an image file.")
    # tifffile logs damage (bad offsets, short reads) instead of raising; collect it for our message
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("the file holds no image")
            series = tif.series[0]
            data = series.asarray()
            info = ImageInfo(path=str(path), axes=_axes(series.axes, data.ndim))
            try:
                info.pixel_size, info.unit = _pixel_size(tif, info.axes)
            except Exception:
                info.pixel_size, info.unit = {}, None
    except SpotDetectError:
        raise
    except Exception as err:
        why = "; ".join(handler.messages[-2:] + [f"{type(err).__name__}: {err}"])
        raise SpotDetectError(f"Cannot read the image {path}: the TIFF file is damaged or truncated ({why[:300]}).",
                              "copy or export the file again and check its size against the original.") from err
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    if data.ndim < 2 or data.size == 0:
        why = "; ".join(handler.messages[-2:]) or f"it holds an array of shape {data.shape}"
        raise SpotDetectError(f"Cannot read the image {path}: the TIFF file is damaged or truncated ({why[:300]}).",
                              "copy or export the file again and check its size against the original.")
    return data, info


def _axes(tiff_axes: str, ndim: int) -> str | None:
    """Our axes letters from tifffile's, or None when any axis is unknown (tifffile's 'Q', 'I', ...)."""
    letters = [_TIFF_AXES.get(a) for a in tiff_axes.upper()]
    if len(letters) != ndim or any(a is None for a in letters) or len(set(letters)) != len(letters):
        return None
    return "".join(letters)


def _pixel_size(tif, axes: str | None) -> tuple[dict, str | None]:
    if tif.is_ome and tif.ome_metadata:
        return _ome_pixel_size(tif.ome_metadata)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = meta.get("unit")
        if isinstance(unit, str) and unit.lower() in ("micron", "\\u00b5m"):
            unit = "um"
        size = {}
        tags = tif.pages[0].tags
        for letter, tag in (("x", "XResolution"), ("y", "YResolution")):
            if tag in tags:
                num, den = tags[tag].value
                if num and den and (num, den) != (1, 1):
                    size[letter] = den / num  # the tag holds pixels per unit
        if "spacing" in meta and axes and "z" in axes:
            size["z"] = float(meta["spacing"])
        return (size, unit) if size else ({}, None)
    return {}, None


def _ome_pixel_size(xml: str) -> tuple[dict, str | None]:
    m = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", xml)
    if not m:
        return {}, None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    size = {a.lower(): float(attrs[f"PhysicalSize{a}"]) for a in "XYZ" if f"PhysicalSize{a}" in attrs}
    unit = attrs.get("PhysicalSizeXUnit", "µm" if size else None)
    return size, unit
