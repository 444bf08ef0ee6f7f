"""napari-spotdetect: deep-learning spot detection for napari.

The public API lives in :mod:`napari_spotdetect.core`; the most used names are re-exported here so that
``import napari_spotdetect as sd; sd.detect(image, sd.load_model("default"))`` works without napari.

The names are loaded on first use (PEP 562), so importing the package, its napari reader and writer, its
manifest or ``spotdetect --help`` does not import torch.
"""

from typing import TYPE_CHECKING

#: the one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``)
__version__ = "0.1.0"

__all__ = ["DetectOptions", "Detections", "SpotDetectError", "__version__", "apply_filters", "count_molecules",
           "count_spots_in_cells", "detect", "detect_iter", "evaluate", "finetune", "iter_finetune",
           "load_model", "make_filter", "measure_spots", "read_image_with_info", "read_trackmate_xml",
           "score_model", "write_points_table", "write_trackmate_xml"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import core

    value = getattr(core, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ loads them
    from .core import (
        Detections,
        DetectOptions,
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
