"""Every key this plugin writes into a napari layer's ``metadata``, and the roles they give a layer.

One home, so a widget that looks for a key and the widget that writes it cannot drift apart (the fine-tune
panel once looked for a key nobody wrote and offered the QC "missed" layer as training truth). No Qt or
napari imports: the reader, the writer and the widgets all use it.
"""

from __future__ import annotations

#: provenance of a detection (plain dict: model, threshold, tiling, ``layer_axes``, ``image_layer``);
#: saved beside the spots CSV
PROVENANCE = "spotdetect"
#: the :class:`core.detection.detect.Detections` behind a detection layer, for re-thresholding without the network
DETECTIONS = "spotdetect_detections"
#: marks an image layer holding a model map (its value: the map's name)
SCORE_MAP = "spotdetect_map"
#: marks a ground-truth layer: ``{"image": image layer name, "path": the CSV it saves to, once saved}``
TRUTH = "spotdetect_truth"
#: predictions deleted while correcting (a DataFrame): negatives for training
REJECTED = "spotdetect_rejected"
#: marks the QC layer of missed true spots (its value: the predictions layer's name)
QC_MISSED = "spotdetect_qc_missed"
#: the axes of a layer read from a spots CSV (e.g. ``"zyx"``)
AXES = "spotdetect_axes"
#: the CSV file a layer was opened from
SOURCE_FILE = "source_file"
#: the file an image layer was read from by the folder workflow (its annotation goes beside it)
IMAGE_FILE = "spotdetect_image_file"
#: set once a user has edited the layer's spots (never replace such a layer with a new detection)
EDITED = "spotdetect_edited"

#: every key above (tests check that no module spells one of them by hand)
#: Points layers: the full set of spots and the feature filters in force (Filter spots by feature)
FILTERS = "spotdetect_filters"

ALL = (PROVENANCE, DETECTIONS, SCORE_MAP, TRUTH, REJECTED, QC_MISSED, AXES, SOURCE_FILE, IMAGE_FILE, EDITED,
       FILTERS)


def is_truth(layer) -> bool:
    return TRUTH in layer.metadata


def is_qc(layer) -> bool:
    """Layers made by the QC panel: pictures of a comparison, never anyone's annotation."""
    return QC_MISSED in layer.metadata


def is_detection(layer) -> bool:
    return PROVENANCE in layer.metadata and not is_truth(layer) and not is_qc(layer)


def is_training_candidate(layer) -> bool:
    """A Points layer that may hold correct spots: anything but a QC layer."""
    return not is_qc(layer)
