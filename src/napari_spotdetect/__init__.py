"""napari-spotdetect: deep-learning spot detection for napari.

The public API lives in :mod:`napari_spotdetect.core`; the most used names are re-exported here so that
``import napari_spotdetect as sd; sd.detect(image, sd.load_model("default"))`` works without napari.
"""

from .core import (
    Detections,
    SpotDetectError,
    apply_filters,
    count_molecules,
    count_spots_in_cells,
    detect,
    detect_iter,
    evaluate,
    finetune,
    iter_finetune,
    load_model,
    make_filter,
    measure_spots,
    read_image_with_info,
    read_trackmate_xml,
    score_model,
    write_points_table,
    write_trackmate_xml,
)

#: the one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``)
__version__ = "0.1.0"

__all__ = ["Detections", "SpotDetectError", "__version__", "apply_filters", "count_molecules",
           "count_spots_in_cells", "detect", "detect_iter", "evaluate", "finetune", "iter_finetune",
           "load_model", "make_filter", "measure_spots", "read_image_with_info", "read_trackmate_xml",
           "score_model", "write_points_table", "write_trackmate_xml"]
