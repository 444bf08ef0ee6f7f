"""The engine: models, tiled detection, training and metrics. No Qt or napari imports here."""

from .detect import Detections, Progress, detect, detect_iter
from .errors import Cancelled, ModelFileError, SpotDetectError
from .image_files import ImageInfo, read_image_with_info
from .models.base import ModelInfo, SpotModel
from .models.zoo import load_model

__all__ = [
    "Cancelled", "Detections", "ImageInfo", "ModelFileError", "ModelInfo", "Progress", "SpotDetectError",
    "SpotModel", "detect", "detect_iter", "load_model", "read_image_with_info",
]
