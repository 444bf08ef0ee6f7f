"""Section 1 of the Fine-tune panel: where the training examples come from, and their gathering into pairs.

The examples are image layers paired with Points layers of correct spots (one row each, optionally only
inside the rectangles of a Shapes layer), a folder of images with one CSV each, or the images marked done in
the Folder tab. Layers are read in the main thread when Train is pressed (napari layers are not for worker
threads); a folder is read in the training thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.training.examples import planes_with_spots
from ._ui import compact_combos

_SOURCES = [("Images and spot layers in this viewer", "layers"), ("A folder: images + one CSV each", "folder")]
_DONE_SOURCE = ("Every image marked done (Folder tab)", "done")
_SUGGESTION_LAYER = "click here next"  # the Adapt panel's hint, never a training region
_TIP = {
    "source": "Where the examples come from: Points layers of correct spots in this viewer, a folder of images\n"
              "with one CSV of spots each, or the images marked done in the Folder tab.",
    "folder": "A folder of images, each with a CSV of its spots (columns y, x; z too for stacks) named like the image.",
    "regions": "Train only inside the rectangles of this Shapes layer (mark every spot in them); outside is\n"
               "unknown, not 'no spot'. Each rectangle is normalised as the whole image, as detection sees it.",
}


def pairs_from_layers(image_layer, points_layer, load: bool = True) -> list:
    """[(2-D plane, (N, 2) y/x in the image's pixels)] from two layers, honouring their scale and translate.

    A 2-D image gives one pair; a z-stack or time series gives one pair per plane that has points
    (:func:`core.training.examples.planes_with_spots`). ``load=False`` only checks (no pixel copy), for the validation
    that runs on every layer change.
    """
    if image_layer is None or points_layer is None:
        raise SpotDetectError("A row has no image or no spot layer chosen.", "pick both, or remove the row.")
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    nd = np.ndim(data)
    if image_layer.rgb or nd < 2:
        raise SpotDetectError(f"'{image_layer.name}' is {'RGB' if image_layer.rgb else f'{nd}-D'}; "
                              "fine-tuning learns from single-channel fluorescence planes.",
                              "choose a grey-level image (2-D, a z-stack or a time series).")
    pts = np.asarray(points_layer.data, dtype=np.float64)
    if pts.ndim != 2 or (len(pts) and pts.shape[1] != nd):
        raise SpotDetectError(f"'{points_layer.name}' has {pts.shape[-1]}-D points; '{image_layer.name}' is {nd}-D.",
                              "choose a Points layer drawn on this image.")
    if len(pts) == 0:
        raise SpotDetectError(f"'{points_layer.name}' has no points.",
                              "add the correct spots (or choose the layer that holds them).")
    world = pts * np.asarray(points_layer.scale) + np.asarray(points_layer.translate)
    px = (world - np.asarray(image_layer.translate)) / np.asarray(image_layer.scale)
    inside = ((px >= -0.5) & (px < np.asarray(np.shape(data)) - 0.5)).all(axis=1)
    if not inside.any():
        raise SpotDetectError(f"No point of '{points_layer.name}' lies on '{image_layer.name}'.",
                              "pair each image with the spot layer drawn on it.")
    if not load:
        return []
    return planes_with_spots(data, px[inside])


class PairRow(Container):
    """One training example: an image layer and the Points layer with its correct spots."""

    def __init__(self, viewer, on_remove):
        from napari.layers import Image, Points

        def images(_w):
            return [(lay.name, lay) for lay in viewer.layers if isinstance(lay, Image)]

        def truth_candidates(_w):  # QC pictures ("missed (FN)") are never anyone's correct spots
            return [(lay.name, lay) for lay in viewer.layers
                    if isinstance(lay, Points) and K.is_training_candidate(lay)]

        self.image = ComboBox(choices=images, tooltip="The image.", nullable=True)
        self.points = ComboBox(choices=truth_candidates, tooltip="Its correct spots (a Points layer).", nullable=True)
        self.remove = PushButton(text="✕", tooltip="Remove this example.")
        compact_combos(self.image, self.points)
        super().__init__(widgets=[self.image, self.points, self.remove], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self.remove.native.setMaximumWidth(28)
        self.remove.changed.connect(lambda *_: on_remove(self))


def _preferred_spots(image, points_layers: list):
    """The spot layer a new row offers for ``image``: a ground truth, one named like the image, else the last."""
    if image is None:
        return None
    named = [p for p in points_layers if image.name in p.name]
    truth = [p for p in points_layers if K.is_truth(p)]
    return ([p for p in truth if p in named] or named or truth or points_layers or [None])[-1]


class TrainingExamples(Container):
    """"Learn from" (``source``: "layers", "folder" or "done"), its folder, regions and example ``rows``.

    ``on_change()`` is called whenever the choices change (the panel checks whether Train may start).
    """

    def __init__(self, viewer, on_change):
        self._viewer = viewer
        self._on_change = None  # not while the section is built: the panel around it is not ready
        self.rows: list[PairRow] = []
        self.done_source = None  # set by the tabbed dock: () -> (folder, names of the images marked done)
        self.source = ComboBox(label="Learn from", choices=self._source_choices, tooltip=_TIP["source"])
        self.folder = FileEdit(label="Folder", mode="d", tooltip=_TIP["folder"])
        self.regions = ComboBox(label="Only inside", choices=self._region_choices, tooltip=_TIP["regions"])
        self._rows_box = Container(labels=False)
        self.add_button = PushButton(text="+ Add an image", tooltip="Train on one more image and its spots.")
        compact_combos(self.source)
        form = Container(widgets=[self.source, self.folder, self.regions], labels=True)
        super().__init__(widgets=[form, self._rows_box, self.add_button], labels=False)
        for c in (self, form, self._rows_box):
            c.margins = (0, 0, 0, 0)
        self.source.changed.connect(self._on_source)
        self.folder.changed.connect(self._changed)
        self.add_button.changed.connect(lambda *_: self.add_row())
        self.add_row()
        self._on_source()
        self._on_change = on_change

    def _changed(self, *_) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- choices ----------------------------------------------------------------------------------------
    def _source_choices(self, _widget=None) -> list:
        return [*_SOURCES, _DONE_SOURCE] if getattr(self, "done_source", None) is not None else list(_SOURCES)

    def _region_choices(self, _widget=None) -> list:
        from napari.layers import Shapes

        return [("the whole images", None), *((lay.name, lay) for lay in self._viewer.layers
                                               if isinstance(lay, Shapes) and lay.name != _SUGGESTION_LAYER)]

    def _on_source(self, *_) -> None:
        self.folder.visible = self.source.value == "folder"
        self._rows_box.visible = self.add_button.visible = self.regions.visible = self.source.value == "layers"
        self._changed()

    def add_row(self, image=None, points=None) -> PairRow:
        """Add a row; by default the first image not yet used and a ground-truth (else the last) Points layer."""
        row = PairRow(self._viewer, self.remove_row)
        self.rows.append(row)
        self._rows_box.append(row)
        row.reset_choices()
        used = {r.image.value for r in self.rows}
        images = [v for v in row.image.choices if v is not None]
        row.image.value = image or next((i for i in images if i not in used), images[0] if images else None)
        if points is None:
            points = _preferred_spots(row.image.value, [v for v in row.points.choices if v is not None])
        row.points.value = points
        row.image.changed.connect(self._changed)
        row.points.changed.connect(self._changed)
        self._changed()
        return row

    def remove_row(self, row: PairRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            self._rows_box.remove(row)
        self._changed()

    # -- what Train gets --------------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why these examples cannot be trained on (a message for the user), or None."""
        if self.source.value == "folder":
            f = str(self.folder.value)
            if f in ("", ".") or not Path(f).expanduser().is_dir():
                return "Choose the folder of images and spot CSVs."
            return None
        if self.source.value == "done":
            _folder, names = self.done_source() if self.done_source else (None, [])
            return None if names else "No image is marked done yet: correct one in the Folder tab and press Ctrl+Enter."
        if not self.rows:
            return "Add an image and its spots (+ Add an image)."
        for row in self.rows:
            if row.image.value is None or row.points.value is None:
                return "Pick an image and its spot layer in every row (or remove the row)."
            try:
                pairs_from_layers(row.image.value, row.points.value, load=False)
            except SpotDetectError as err:
                return str(err)
        return None

    def gather(self):
        """``(load, info)``: ``load()`` gives the training pairs (call it in the training thread: a folder is read
        then; layers are read now), ``info`` describes them for the model card."""
        if self.source.value == "layers":
            pairs = [p for r in self.rows for p in self._examples_of(r)]
            info = {"layers": [[r.image.value.name, r.points.value.name] for r in self.rows]}
            if self.regions.value is not None:
                info["regions"] = self.regions.value.name
            return (lambda: pairs), info
        if self.source.value == "folder":
            folder, only = str(self.folder.value), None
            info = {"folder": str(Path(folder).expanduser().resolve())}
        else:
            folder, only = self.done_source()
            folder = str(folder)
            info = {"folder": str(Path(folder).resolve()), "images_marked_done": list(only)}

        def load():
            from ..core.training.examples import pairs_from_folder

            return pairs_from_folder(folder, only=only)

        return load, info

    def _examples_of(self, row) -> list:
        """A row's training examples: its planes, or only its regions when 'Only inside' names a Shapes layer."""
        pairs = pairs_from_layers(row.image.value, row.points.value)
        shapes = self.regions.value
        if shapes is None:
            return pairs
        from ..core.groundtruth.regions import region_examples
        from .adapt_widget import regions_in_image

        if len(pairs) != 1:
            raise SpotDetectError("Regions are drawn on 2-D images; this row has a stack.",
                                  "choose 'the whole images' for stacks.")
        boxes = regions_in_image(shapes, row.image.value)
        if not boxes:
            raise SpotDetectError(f"'{shapes.name}' holds no rectangle.",
                                  "draw a region, or train on the whole images.")
        return region_examples(pairs[0][0], pairs[0][1], boxes)
