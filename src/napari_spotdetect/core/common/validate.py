"""Checking images and axes before any work starts, with messages a biologist can act on."""

from __future__ import annotations

import numpy as np

from ..errors import SpotDetectError

#: the order axes are brought into: outer (time / position), channel, z, then the plane
CANONICAL = "tczyx"
#: the one rank-to-axes table: what an array of each rank is taken to hold when nothing names its axes (a
#: napari layer, a label image, a points layer); the engine takes only 2 and 5 for granted (:data:`DEFAULT_AXES`)
RANK_AXES = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}
#: ranks whose axes are taken as known without a name: a plane, and OME's five-dimensional order
DEFAULT_AXES = {n: RANK_AXES[n] for n in (2, 5)}


def axes_for_rank(ndim: int) -> str:
    """:data:`RANK_AXES` for ``ndim`` (the last ``ndim`` of ``"tczyx"`` beyond it)."""
    return RANK_AXES.get(ndim, CANONICAL[-ndim:])


#: what a 3-D or 4-D image may hold; its axes cannot be guessed from the shape alone
AXES_CHOICES = {3: {"zyx": "a z-stack", "cyx": "channels", "tyx": "a time series"},
                4: {"tzyx": "z-stacks over time", "czyx": "channels of a z-stack", "tcyx": "channels over time"}}


def check_axes(ndim: int, axes: str | None) -> str:
    if axes is None:
        if ndim in AXES_CHOICES:
            choices = ", ".join(f"axes='{a}' for {what}" for a, what in AXES_CHOICES[ndim].items())
            raise SpotDetectError(
                f"The image has {ndim} dimensions and nothing says what they are (z-stack, channels or time?).",
                f"name its axes, one letter per dimension from t, c, z, y, x: {choices}.")
        if ndim not in DEFAULT_AXES:
            raise SpotDetectError(f"The image has {ndim} dimensions; spots are found in 2-D planes.",
                                  "pass a 2-D to 5-D image and name its axes, e.g. axes='tczyx'.")
        return DEFAULT_AXES[ndim]
    axes = str(axes).strip().lower()
    bad = set(axes) - set(CANONICAL)
    if bad or len(set(axes)) != len(axes) or "y" not in axes or "x" not in axes:
        raise SpotDetectError(f"Axes {axes!r} are not valid.",
                              "use each of the letters t, c, z, y, x at most once, including y and x, e.g. 'zyx'.")
    if len(axes) != ndim:
        example = next(iter(AXES_CHOICES[ndim])) if ndim in AXES_CHOICES else DEFAULT_AXES.get(ndim, "tczyx")
        raise SpotDetectError(f"Axes {axes!r} name {len(axes)} dimensions but the image has {ndim}.",
                              f"give one letter per dimension, e.g. axes='{example}'.")
    if set(axes.rstrip("c")[-2:]) != {"y", "x"}:
        raise SpotDetectError(
            f"Axes {axes!r} do not end with the image plane (y and x), an order no microscope file uses: "
            "spots would be searched in the wrong planes.",
            "the last two letters are y and x (a channel axis c may follow them), e.g. 'zyx', 'tzyx' or 'yxc'.")
    return axes


def check_image(image, axes: str | None = None, min_size: int = 2):
    """Return (array in canonical axis order, canonical axes). Raises :class:`SpotDetectError`."""
    if image is None:
        raise SpotDetectError("No image was given.", "pass a numpy/dask array or choose an image layer.")
    image = _as_array(image)
    _check_dtype(np.dtype(image.dtype))
    shape = tuple(int(s) for s in image.shape)
    if axes is None and len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4:
        raise SpotDetectError(
            f"The image of shape {shape} looks like RGB(A) colour.",
            "spots are detected in one fluorescence channel: convert to grayscale or pick a channel, or say "
            "axes='yxc' to detect in each channel.",
        )
    axes = check_axes(len(shape), axes)
    if any(s == 0 for s in shape):
        raise SpotDetectError(f"The image is empty (shape {shape}).", "pass an image with pixels in it.")
    h, w = shape[axes.index("y")], shape[axes.index("x")]
    if h < min_size or w < min_size:
        raise SpotDetectError(f"The image plane is only {h} x {w} pixels.",
                              f"pass planes of at least {min_size} x {min_size} pixels (check the axes: {axes!r}).")
    order = [axes.index(a) for a in CANONICAL if a in axes]
    canon = "".join(a for a in CANONICAL if a in axes)
    if order != list(range(len(order))):
        image = image.transpose(order)
    return image, canon


def _as_array(image):
    """Arrays (numpy, dask, zarr...) as they are; anything else through ``np.asarray``."""
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        return image
    try:
        return np.asarray(image)
    except Exception as err:
        raise SpotDetectError(f"Cannot use a {type(image).__name__} as an image.",
                              "pass a numpy or dask array.") from err


def _check_dtype(dt: np.dtype) -> None:
    """Intensities: integers or floats, not a mask, complex values or objects."""
    if dt == np.bool_:
        raise SpotDetectError("The image is boolean (a mask?), not intensities.",
                              "pass the fluorescence image itself, not a binary mask or labels.")
    if dt.kind == "c":
        raise SpotDetectError("The image has complex values.", "pass real intensities, e.g. np.abs(image).")
    if dt.kind not in "uif":
        raise SpotDetectError(f"The image has dtype {dt}, not numbers.", "pass a numeric array (integers or floats).")


def check_finite(plane: np.ndarray, where: str = "") -> None:
    if plane.dtype.kind == "f":
        bad = ~np.isfinite(plane)
        n = int(bad.sum())
        if n:
            raise SpotDetectError(
                f"The image{where} has {n} NaN or infinite pixel(s).",
                "replace them before detection (e.g. np.nan_to_num(image, nan=np.nanmedian(image))) or crop them out.",
            )


def check_threshold(threshold, score_range=(0.0, float("inf"))) -> float:
    """A finite threshold on the model's score scale (scores run from 0 to the range's top)."""
    try:
        t = float(threshold)
    except (TypeError, ValueError) as err:
        raise SpotDetectError(f"Threshold {threshold!r} is not a number.", "pass a number, e.g. 0.5.") from err
    hi = float(score_range[1])
    if not np.isfinite(t):
        raise SpotDetectError(f"Threshold {t} is not a number.", f"pass a finite threshold between 0 and {hi:g}.")
    if t < 0 or t > hi:
        raise SpotDetectError(f"Threshold {t:g} is outside the model's score range 0 to {hi:g}: it would keep "
                              f"{'every pixel' if t < 0 else 'no spot'}.",
                              f"pass a threshold between 0 and {hi:g} (the model's tuned default is a good start).")
    return t


#: the highest contrast floor accepted: at 1.0 the floor already sits at the elbow, where spots begin
MAX_CONTRAST_FLOOR = 2.0


def check_contrast_floor(value) -> float:
    """A contrast floor (a fraction of the plane's elbow contrast, :mod:`.contrast`): 0 (off) to 2."""
    try:
        k = float(value)
    except (TypeError, ValueError) as err:
        raise SpotDetectError(f"Contrast floor {value!r} is not a number.",
                              "pass a fraction of the image's spot contrast, e.g. 0.35, or 0 for none.") from err
    if not np.isfinite(k) or not 0.0 <= k <= MAX_CONTRAST_FLOOR:
        raise SpotDetectError(f"Contrast floor {k:g} is outside 0 to {MAX_CONTRAST_FLOOR:g}.",
                              "pass a fraction of the image's spot contrast, e.g. 0.35, or 0 for none.")
    return k


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An integer setting (batch size, minimum distance) of at least ``minimum``."""
    try:
        v = int(value)
        ok = v == value and v >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise SpotDetectError(f"{name.replace('_', ' ').capitalize()} {value!r} is not valid.",
                              f"use a whole number of at least {minimum}, e.g. {name}={max(minimum, 1)}.")
    return v
