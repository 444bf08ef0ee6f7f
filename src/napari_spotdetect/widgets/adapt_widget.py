"""The "Teach it your spots" panel: draw a region, mark every spot in it, calibrate, see where to click next.

The loop a biologist runs in a minute: detect; draw a rectangle (a Shapes layer of regions); mark every spot
inside it in a spot layer (the detection corrected, or a ground-truth layer); press *Calibrate from my
corrections*: the threshold that best matches the regions is chosen from the detection's own candidates (no
network, a fraction of a second), the detection layer follows when it holds no edits, and the calibrated
model is offered to *Detect spots* ("Use it and detect again"). *Suggest where to click next* draws the square
where the model is least sure. Fine-tuning on the same regions is the fine-tune panel's *Only inside*
choice. The work is :mod:`core.groundtruth.calibration` and :mod:`core.groundtruth.suggest`; this panel only
reads layers.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox
from napari.layers import Points, Shapes

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.groundtruth.calibration import CLICK_RADIUS, calibrate, calibrated_model
from ..core.groundtruth.regions import boxes_from_shapes, region_examples
from ..core.groundtruth.suggest import suggest_region
from . import layers as L
from .model_registry import registry_for

#: the Shapes layer the panel draws regions into, and the one showing the suggestion
REGIONS_LAYER = "annotated regions"
SUGGESTION_LAYER = "click here next"
#: where calibrated models are saved (the fine-tune panel's folder)
DEFAULT_OUT = Path.home() / "napari-spotdetect" / "models"


def regions_in_image(shapes_layer, image_layer) -> list:
    """The rectangles of a Shapes layer as boxes in the image's pixels (honouring both layers' scale/translate)."""
    if shapes_layer is None:
        return []
    verts = []
    for v in shapes_layer.data:
        v = np.asarray(v, dtype=np.float64)
        world = v * np.asarray(shapes_layer.scale) + np.asarray(shapes_layer.translate)
        px = (world[:, -2:] - np.asarray(image_layer.translate)[-2:]) / np.asarray(image_layer.scale)[-2:]
        verts.append(px)
    return boxes_from_shapes(verts)


class AdaptWidget(Container):
    """Dock widget (npe2 command ``napari-spotdetect.adapt_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._models = registry_for(viewer)
        self._entry = None
        self.calibration = None  # the last Calibration
        self._detection = ComboBox(label="Detection", choices=self._detection_choices,
                                   tooltip="The detection to calibrate: its scores decide the threshold.")
        self._spots = ComboBox(label="Your spots", choices=self._spot_choices,
                               tooltip="The layer where every spot inside the regions is marked (the detection you "
                                       "corrected, or a ground-truth layer).")
        self._regions = ComboBox(label="Regions", choices=self._region_choices,
                                 tooltip="Rectangles in which every spot is marked; outside them is unknown.")
        self._draw = PushButton(text="Draw a region",
                                tooltip="Add a rectangle: inside it, mark every spot (and remove false ones).")
        self._calibrate = PushButton(text="Calibrate from my corrections",
                                     tooltip="Choose the threshold that best matches your spots inside the regions "
                                             "(no training; under a second).")
        self._use_run = PushButton(text="Use it and detect again", enabled=False,
                                   tooltip="Select the calibrated model in 'Detect spots' and run it again.")
        self._size = SpinBox(label="Suggestion size (px)", min=16, max=1024, value=64,
                             tooltip="Side of the square suggested for your next clicks.")
        self._suggest = PushButton(text="Suggest where to click next",
                                   tooltip="Draw the square where the model is least sure (scores near the "
                                           "threshold), away from your regions.")
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        form = Container(widgets=[self._detection, self._spots, self._regions], labels=True)
        size_form = Container(widgets=[self._size], labels=True)
        for c in (form, size_form):
            c.margins = (0, 0, 0, 0)
        self.extend([Label(value="<b>Teach it your spots</b><br>Draw a region, mark every spot inside it, "
                                 "then calibrate (or fine-tune on it)."),
                     form, self._draw, self._calibrate, self._use_run, size_form, self._suggest, self._status])
        self[0].native.setWordWrap(True)
        self._draw.changed.connect(self.draw_region)
        self._calibrate.changed.connect(self.calibrate)
        self._use_run.changed.connect(self.use_and_detect)
        self._suggest.changed.connect(self.suggest)
        self._detection.changed.connect(self._pick_spots)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._refresh)
        self._pick_spots()

    # -- choices ----------------------------------------------------------------------------------------
    def _detection_choices(self, _w=None) -> list:
        return [(lay.name, lay) for lay in self._viewer.layers
                if isinstance(lay, Points) and K.is_detection(lay) and K.DETECTIONS in lay.metadata]

    def _spot_choices(self, _w=None) -> list:
        return [(lay.name, lay) for lay in self._viewer.layers if isinstance(lay, Points) and not K.is_qc(lay)]

    def _region_choices(self, _w=None) -> list:
        return [(lay.name, lay) for lay in self._viewer.layers
                if isinstance(lay, Shapes) and lay.name != SUGGESTION_LAYER]

    def _refresh(self, *_) -> None:
        for box in (self._detection, self._spots, self._regions):
            box.reset_choices()

    def _pick_spots(self, *_) -> None:
        """Default 'Your spots': a ground-truth layer of the detection's image, else the detection itself."""
        det = self._detection.value
        if det is None:
            return
        image = (det.metadata.get(K.PROVENANCE) or {}).get("image_layer")
        for lay in self._viewer.layers:
            if isinstance(lay, Points) and K.is_truth(lay) and (lay.metadata[K.TRUTH] or {}).get("image") == image:
                self._spots.value = lay
                return
        self._spots.value = det

    def _image_layer(self, det):
        name = (det.metadata.get(K.PROVENANCE) or {}).get("image_layer")
        if name not in self._viewer.layers:
            raise SpotDetectError(f"The image '{name}' of this detection is no longer open.",
                                  "open it again (or detect again on an open image).")
        return self._viewer.layers[name]

    def _set_status(self, text: str) -> None:
        self._status.value = text

    # -- actions ----------------------------------------------------------------------------------------
    def draw_region(self, *_):
        """Select (or add) the regions layer in rectangle mode: the next drag on the canvas draws a region."""
        if REGIONS_LAYER in self._viewer.layers:
            layer = self._viewer.layers[REGIONS_LAYER]
        else:
            layer = self._viewer.add_shapes(name=REGIONS_LAYER, edge_color="yellow", face_color="transparent",
                                            edge_width=2, ndim=2)
        self._viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        self._regions.reset_choices()
        self._regions.value = layer
        self._set_status("Drag a rectangle on the image, then mark every spot inside it.")
        return layer

    def _examples(self):
        det, spots, shapes = self._detection.value, self._spots.value, self._regions.value
        if det is None:
            raise SpotDetectError("No detection to calibrate.", "detect spots first ('Detect spots').")
        if spots is None or shapes is None or len(shapes.data) == 0:
            raise SpotDetectError("No region drawn.", "press 'Draw a region', drag a rectangle, mark every spot in it.")
        image = self._image_layer(det)
        dets = det.metadata[K.DETECTIONS]
        boxes = regions_in_image(shapes, image)
        world = np.asarray(spots.data, dtype=np.float64) * np.asarray(spots.scale) + np.asarray(spots.translate)
        px = (world - np.asarray(image.translate)) / np.asarray(image.scale)
        plane = np.zeros(dets.image_shape[-2:], dtype=np.float32)  # pixels unused: the detection has the scores
        return region_examples(plane, px[:, -2:], boxes), dets, det, image

    def calibrate(self, *_):
        """Choose the threshold from the regions; re-threshold the detection (when unedited); offer the model."""
        try:
            examples, dets, det_layer, _image = self._examples()
            cal = calibrate(None, examples, radius=CLICK_RADIUS, detections=[dets] * len(examples))
        except SpotDetectError as err:
            self._set_status(f"<font color='#e06c6c'>{err}</font>")
            return None
        self.calibration = cal
        note = ""
        if det_layer is not self._spots.value and not det_layer.metadata.get(K.EDITED):
            spots = dets.set_threshold(cal.threshold)
            coords, features = L.points_from_spots(spots, det_layer.metadata[K.PROVENANCE]["layer_axes"])
            L.replace_points(det_layer, coords, features)
            det_layer.metadata[K.PROVENANCE]["threshold"] = cal.threshold
            note = f" '{det_layer.name}' now shows {len(coords):,} spots."
        self._entry = None
        model = self._models.last_detection_model
        if model is not None and model.info.name == dets.model_name:
            cal_model = calibrated_model(model, cal)
            cal_model.info.name = f"{model.info.name}-calibrated"
            path = self._save(cal_model)
            self._entry = self._models.add(cal_model, path)
            note += f" Saved as {path}."
        self._use_run.enabled = self._entry is not None
        self._set_status(f"Calibrated: {cal.summary()}.{note}")
        return cal

    def _save(self, model):
        from ..core.weights.native import save_model

        DEFAULT_OUT.mkdir(parents=True, exist_ok=True)
        k, path = 1, DEFAULT_OUT / f"{model.info.name}.pt"
        while path.exists():
            k += 1
            path = DEFAULT_OUT / f"{model.info.name}-{k}.pt"
        return save_model(model, path)

    def use_and_detect(self, *_) -> bool:
        """Make the calibrated model the one 'Detect spots' uses, and detect again."""
        if self._entry is None:
            return False
        if self._models.use(self._entry, True) == 0:
            self._viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
            self._models.use(self._entry, True)
        self._set_status(self._status.value + f"<br>→ 'Detect spots' now uses {self._entry.model.info.name}.")
        return True

    def suggest(self, *_):
        """Draw the square where the detection's scores sit nearest its threshold, outside the regions."""
        det = self._detection.value
        if det is None:
            self._set_status("Detect spots first: the suggestion comes from the detection's scores.")
            return None
        dets = det.metadata[K.DETECTIONS]
        image = self._image_layer(det)
        exclude = regions_in_image(self._regions.value, image) if self._regions.value is not None else []
        c = dets.candidates
        box = suggest_region(c[["y", "x"]].to_numpy(), c["score"].to_numpy(), dets.threshold,
                             dets.image_shape, int(self._size.value), exclude)
        if box is None:
            self._set_status("No undecided spot left outside your regions.")
            return None
        y0, x0, y1, x1 = box
        rect = np.array([[y0 - 0.5, x0 - 0.5], [y1 - 0.5, x1 - 0.5]]) * np.asarray(image.scale)[-2:] \
            + np.asarray(image.translate)[-2:]
        if SUGGESTION_LAYER in self._viewer.layers:
            layer = self._viewer.layers[SUGGESTION_LAYER]
            layer.data = [rect]
        else:
            layer = self._viewer.add_shapes([rect], shape_type="rectangle", name=SUGGESTION_LAYER,
                                            edge_color="magenta", face_color="transparent", edge_width=2)
        self._viewer.camera.center = tuple(rect.mean(axis=0))
        self._set_status(f"Mark every spot in the magenta square (rows {y0}-{y1}, columns {x0}-{x1}), then draw "
                         "it as a region.")
        return box
