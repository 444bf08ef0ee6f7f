"""The engine: models, tiled detection, training and metrics. No Qt or napari imports here."""

from .calibration import Calibration, calibrate, calibrated_model
from .cells import assign_cells, cell_table, count_spots_in_cells
from .detect import Detections, Progress, detect, detect_iter
from .errors import Cancelled, ModelFileError, SpotDetectError
from .examples import examples_from_arrays, pairs_from_folder, split_examples
from .exports import (
    read_cell_table,
    read_points_table,
    read_trackmate_xml,
    write_cell_table,
    write_points_table,
    write_trackmate_xml,
)
from .filters import apply_filters, make_filter
from .finetuning import DEFAULTS as FINETUNE_DEFAULTS
from .finetuning import FinetuneDefaults, FinetuneEvent, FinetuneResult, finetune, finetune_config, iter_finetune
from .fit import fit_gaussians
from .image_files import ImageInfo, read_image_with_info
from .measure import count_molecules, measure_spots
from .metrics import evaluate, score_model
from .models.base import ModelInfo, SpotModel
from .models.zoo import load_model
from .regions import read_regions_csv, region_examples
from .suggest import suggest_region

__all__ = [
    "Cancelled", "Detections", "ImageInfo", "ModelFileError", "ModelInfo", "Progress", "SpotDetectError",
    "SpotModel", "detect", "detect_iter", "load_model", "read_image_with_info",
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
