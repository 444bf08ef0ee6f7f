"""The engine: models, tiled detection, training and metrics. No Qt or napari imports here.

Sub-packages by job, from the bottom up (each may import only those before it; ``models`` and ``weights`` are
peers; ``tests/test_layering.py`` holds the order):

- ``errors``: the errors a user can act on;
- ``common/``: running step generators, the compute device, input checks;
- ``io/``: image files and lazy sources, spot CSVs, exports, units, crash-safe writes (no torch);
- ``models/``, ``weights/``: the networks, the model wrapper and zoo; readers of weight files;
- ``detection/``: image -> tiles -> spots (:func:`detect`), speed modes, contrast floor, batches;
- ``groundtruth/``: snapping, the truth table, scoring against the truth;
- ``analysis/``: Gaussian fits, molecule counts, spots per cell, filters;
- ``training/``: examples, targets, losses, synthetic images, the Trainer, fine-tuning.

The public names below are loaded on first use (PEP 562): importing ``core.io`` for a CSV does not load torch.
"""

import importlib
from typing import TYPE_CHECKING

#: public name -> (module under core, its name there)
_WHERE = {
    "Cancelled": ("errors", "Cancelled"),
    "ModelFileError": ("errors", "ModelFileError"),
    "SpotDetectError": ("errors", "SpotDetectError"),
    "ImageInfo": ("io.image_files", "ImageInfo"),
    "read_image_with_info": ("io.image_files", "read_image_with_info"),
    "read_cell_table": ("io.exports", "read_cell_table"),
    "read_points_table": ("io.exports", "read_points_table"),
    "read_trackmate_xml": ("io.exports", "read_trackmate_xml"),
    "write_cell_table": ("io.exports", "write_cell_table"),
    "write_points_table": ("io.exports", "write_points_table"),
    "write_trackmate_xml": ("io.exports", "write_trackmate_xml"),
    "ModelInfo": ("models.base", "ModelInfo"),
    "SpotModel": ("models.base", "SpotModel"),
    "load_model": ("models.zoo", "load_model"),
    "DetectOptions": ("detection.options", "DetectOptions"),
    "Detections": ("detection.detect", "Detections"),
    "Progress": ("detection.detect", "Progress"),
    "detect": ("detection.detect", "detect"),
    "detect_iter": ("detection.detect", "detect_iter"),
    "evaluate": ("groundtruth.metrics", "evaluate"),
    "score_model": ("groundtruth.metrics", "score_model"),
    "assign_cells": ("analysis.cells", "assign_cells"),
    "cell_table": ("analysis.cells", "cell_table"),
    "count_spots_in_cells": ("analysis.cells", "count_spots_in_cells"),
    "apply_filters": ("analysis.filters", "apply_filters"),
    "make_filter": ("analysis.filters", "make_filter"),
    "fit_gaussians": ("analysis.fit", "fit_gaussians"),
    "count_molecules": ("analysis.measure", "count_molecules"),
    "measure_spots": ("analysis.measure", "measure_spots"),
    "examples_from_arrays": ("training.examples", "examples_from_arrays"),
    "pairs_from_folder": ("training.examples", "pairs_from_folder"),
    "split_examples": ("training.examples", "split_examples"),
    "FINETUNE_DEFAULTS": ("training.finetuning", "DEFAULTS"),
    "FinetuneDefaults": ("training.finetuning", "FinetuneDefaults"),
    "FinetuneEvent": ("training.finetuning", "FinetuneEvent"),
    "FinetuneResult": ("training.finetuning", "FinetuneResult"),
    "finetune": ("training.finetuning", "finetune"),
    "finetune_config": ("training.finetuning", "finetune_config"),
    "iter_finetune": ("training.finetuning", "iter_finetune"),
    "Calibration": ("groundtruth.calibration", "Calibration"),
    "calibrate": ("groundtruth.calibration", "calibrate"),
    "calibrated_model": ("groundtruth.calibration", "calibrated_model"),
    "read_regions_csv": ("groundtruth.regions", "read_regions_csv"),
    "region_examples": ("groundtruth.regions", "region_examples"),
    "suggest_region": ("groundtruth.suggest", "suggest_region"),
}

__all__ = [
    "Cancelled", "DetectOptions", "Detections", "ImageInfo", "ModelFileError", "ModelInfo", "Progress",
    "SpotDetectError", "SpotModel", "detect", "detect_iter", "load_model", "read_image_with_info",
    # fine-tuning and scoring: the same calls as the CLI and the napari panel
    "FINETUNE_DEFAULTS", "FinetuneDefaults", "FinetuneEvent", "FinetuneResult", "evaluate", "examples_from_arrays",
    "finetune", "finetune_config", "iter_finetune", "pairs_from_folder", "score_model", "split_examples",
    # adapting from a few annotated regions: calibrate (no training), where to click next
    "Calibration", "calibrate", "calibrated_model", "read_regions_csv", "region_examples", "suggest_region",
    # from spots to biology
    "apply_filters", "assign_cells", "cell_table", "count_molecules", "count_spots_in_cells", "fit_gaussians",
    "make_filter", "measure_spots", "read_cell_table", "read_points_table", "read_trackmate_xml",
    "write_cell_table", "write_points_table", "write_trackmate_xml",
]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _WHERE[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ loads them
    from .analysis.cells import assign_cells, cell_table, count_spots_in_cells
    from .analysis.filters import apply_filters, make_filter
    from .analysis.fit import fit_gaussians
    from .analysis.measure import count_molecules, measure_spots
    from .detection.detect import Detections, Progress, detect, detect_iter
    from .detection.options import DetectOptions
    from .errors import Cancelled, ModelFileError, SpotDetectError
    from .groundtruth.calibration import Calibration, calibrate, calibrated_model
    from .groundtruth.metrics import evaluate, score_model
    from .groundtruth.regions import read_regions_csv, region_examples
    from .groundtruth.suggest import suggest_region
    from .io.exports import (
        read_cell_table,
        read_points_table,
        read_trackmate_xml,
        write_cell_table,
        write_points_table,
        write_trackmate_xml,
    )
    from .io.image_files import ImageInfo, read_image_with_info
    from .models.base import ModelInfo, SpotModel
    from .models.zoo import load_model
    from .training.finetuning import DEFAULTS as FINETUNE_DEFAULTS
    from .training.finetuning import (
        FinetuneDefaults,
        FinetuneEvent,
        FinetuneResult,
        finetune,
        finetune_config,
        iter_finetune,
    )
