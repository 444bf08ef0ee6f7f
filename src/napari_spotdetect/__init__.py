"""napari-spotdetect: deep-learning spot detection for napari.

The public API lives in :mod:`napari_spotdetect.core`; the most used names are re-exported here so that
``import napari_spotdetect as sd; sd.detect(image, sd.load_model("default"))`` works without napari.

The names are loaded on first use (PEP 562), so importing the package, its napari reader and writer, its
manifest or ``spotdetect --help`` does not import torch.
"""

import os
import sys
from typing import TYPE_CHECKING

# torch's OpenMP threads spin while they wait for each other; where the cores are shared (napari's own threads,
# other programs) the spinning takes the time the late thread needs: one 256^2 DeepSpot tile on 2 threads of a
# loaded 2-core machine took 2.2-3.2 s spinning, 0.75 s waiting passively (README, Performance). Only before
# torch is loaded (the OpenMP runtime reads it once), and never over the user's own setting.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
