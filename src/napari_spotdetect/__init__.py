"""napari-spotdetect: deep-learning spot detection for napari.

The public API lives in :mod:`napari_spotdetect.core`; the most used names are re-exported here so that
``import napari_spotdetect as sd; sd.detect(image, sd.load_model("default"))`` works without napari.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-spotdetect")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from .core import Detections, SpotDetectError, detect, detect_iter, load_model, read_image_with_info  # noqa: E402

__all__ = ["Detections", "SpotDetectError", "__version__", "detect", "detect_iter", "load_model",
           "read_image_with_info"]
