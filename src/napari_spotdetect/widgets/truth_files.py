"""The Correct panel's ground truth on disk: start it from detections, save after every edit, never lose one.

A mixin of :class:`correct_widget.CorrectWidget` (its widgets and layer live there); the rule about which
files may be written over is :mod:`annotation_files` (Qt-free).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QFileDialog, QMessageBox

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.groundtruth import annotations as A
from . import layers as L
from .annotation_files import files_for


class GroundTruthFiles:
    """Saving and opening ground truth for the Correct panel."""

    # -- ground truth on disk -----------------------------------------------------------------------------
    def start_ground_truth(self, *_):
        """A copy of the chosen spots, marked as ground truth and saved at once; returns the new layer."""
        src = self._points.value
        if src is None:
            self._set_status("Choose a spots layer first.", error=True)
            return None
        image = self._image.value
        try:
            truth_path = self.paths()[0]
        except SpotDetectError:
            truth_path = None  # no place yet: the layer says so and saves once a folder is chosen
        if truth_path is not None and not self._may_write(None, truth_path):
            return None
        name = L.layer_name("truth", image.name if image is not None else src.name)
        meta = {k: v for k, v in src.metadata.items()
                if k not in (K.DETECTIONS, K.TRUTH, K.EDITED, K.SOURCE_FILE)}
        meta[K.REJECTED] = pd.DataFrame()
        meta[K.TRUTH] = {"image": image.name if image is not None else src.name}
        if truth_path is not None:
            meta[K.TRUTH]["path"] = str(truth_path.resolve())
        new = self._viewer.add_points(
            np.array(src.data, copy=True), name=name, features=src.features.copy(), ndim=src.ndim,
            size=src.size.copy() if len(src.data) else 7, face_color="transparent", border_color=L.TRUTH_COLOUR,
            border_width=0.15, border_width_is_relative=True, scale=src.scale, translate=src.translate,
            metadata=meta, projection_mode=getattr(src, "projection_mode", "none"),
        )
        src.visible = False
        for lay in self._viewer.layers:  # the score map hides the spots being corrected
            if K.SCORE_MAP in lay.metadata:
                lay.visible = False
        self._points.value = new  # attaches (and ticks 'Ground truth': the layer is marked already)
        self._last_error = None
        self._save()
        self._update_where()
        new.mode = "add"
        return new

    # -- never lose an annotation ---------------------------------------------------------------------------
    @staticmethod
    def confirm(title: str, text: str) -> bool:
        """Ask the user a yes/no question (tests replace this)."""
        answer = QMessageBox.question(None, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _may_write(self, layer, truth: Path) -> bool:
        """Whether ``layer`` (None: a layer about to be made) may write its ground truth to ``truth``.

        Never two layers to one file; never over a file this session did not write unless the user agrees
        (the layer was opened from that file, or the user said yes), and then a backup is kept first.
        """
        resolved = str(Path(truth).expanduser().resolve())
        meta = layer.metadata if layer is not None else {}
        if (meta.get(K.TRUTH) or {}).get("path") == resolved:
            return True
        for other in self._viewer.layers:
            if other is not layer and not L.same_layer(other, layer) \
                    and (other.metadata.get(K.TRUTH) or {}).get("path") == resolved:
                msg = (f"'{other.name}' already saves its ground truth to {resolved}; a second layer would "
                       f"overwrite it. Fix: correct '{other.name}', or close it before starting another.")
                self._refuse(msg)
                return False
        files = files_for(self._viewer)
        if files.needs_consent(resolved, meta.get(K.SOURCE_FILE)) and not self.confirm(
                "Replace an existing annotation?",
                f"{resolved} already exists and was not written in this session.\n\nReplace it? "
                "A copy is kept as .bak beside it."):
            self._refuse(f"Kept {Path(resolved).name} as it was: nothing is saved from this layer. Fix: choose "
                         "another folder under 'Save in', or open that file (Open spots CSV…) to go on "
                         "correcting it.")
            return False
        files.claim(resolved)
        if layer is not None and K.TRUTH in layer.metadata:
            layer.metadata[K.TRUTH]["path"] = resolved
        return True

    def _refuse(self, msg: str) -> None:
        self._set_status(msg, error=True)
        show_error(msg)

    # -- opening spot tables ----------------------------------------------------------------------------------
    def open_spots_csv(self, path=None, truth_of: str | None = None):
        """Open a spot CSV with this plugin's reader (a file dialog when no path); returns the new layer.

        ``truth_of``: the image name whose ground truth the file is (the folder workflow), so that edits
        save back into it (after a backup, once).
        """
        from .._reader import _points_layer
        from ..core.io.spots_io import read_spots_csv

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.native, "Open a spot table", "", "Spot tables (*.csv)")
            if not path:
                return None
        path = Path(path)
        try:
            df = read_spots_csv(path)
        except (SpotDetectError, ValueError, OSError) as err:
            msg = (f"{path.name} is not a spot table ({err}). Fix: choose a CSV with y and x columns (z, t, c "
                   "for stacks), as this plugin and 'spotdetect predict' write them.")
            self._refuse(msg)
            return None
        data, kw, _ = _points_layer(df, path)
        rejected = path.with_name(path.stem + ".rejected.csv")
        if rejected.is_file():  # the deleted predictions saved with it: keep them (the next save rewrites them)
            try:
                kw["metadata"][K.REJECTED] = read_spots_csv(rejected)
            except (SpotDetectError, ValueError, OSError):
                pass
        if truth_of is not None:
            kw["metadata"][K.TRUTH] = {"image": truth_of}
            kw["name"], kw["border_color"] = L.layer_name("truth", truth_of), L.TRUTH_COLOUR
        layer = self._viewer.add_points(data, **kw)
        self._points.value = layer
        self._set_status(f"Opened {len(data):,} spots from {path.name}.")
        return layer

    def _on_truth_toggled(self, on) -> None:
        layer = self._layer
        if layer is None:
            return
        if on:
            image = self._image.value
            old = layer.metadata.get(K.TRUTH) or {}
            layer.metadata[K.TRUTH] = {**old, "image": image.name if image is not None else layer.name}
            self._last_error = None
            self._save()
            if K.TRUTH not in layer.metadata:  # refused (another layer's file, or the user said no)
                with self.truth.changed.blocked():
                    self.truth.value = False
        else:
            layer.metadata.pop(K.TRUTH, None)
        self._update_where()

    def paths(self):
        """(truth CSV, rejected CSV) for the current layer; raises SpotDetectError if there is no place."""
        image = self._image.value
        folder = str(self._folder.value) if str(self._folder.value) not in ("", ".") else None
        src = None
        if image is not None:
            src = image.metadata.get(K.IMAGE_FILE) or getattr(getattr(image, "source", None), "path", None)
        name = image.name if image is not None else self._layer.name
        return A.annotation_paths(name, src, folder)

    def _update_where(self):
        if self._layer is None or K.TRUTH not in self._layer.metadata:
            self.where.value = "Not saved automatically (tick 'Ground truth' to save after every edit)."
            return
        try:
            truth, rejected = self.paths()
            self.where.value = f"Saving to {truth} (deleted predictions: {rejected.name})"
        except SpotDetectError as err:
            self.where.value = str(err)

    def _save(self) -> None:
        self._dirty = False
        layer = self._layer
        if layer is None or K.TRUTH not in layer.metadata:
            return
        try:
            truth, rejected = self.paths()
            if not self._may_write(layer, truth):
                layer.metadata.pop(K.TRUTH, None)
                self._update_where()
                return
            table = A.spots_table(layer.data, layer.features, L.layer_axes(layer))
            prov = dict(layer.metadata.get(K.PROVENANCE) or {})
            prov["ground_truth"] = {"image": layer.metadata[K.TRUTH].get("image"), "n_spots": len(table),
                                    "n_manual": int((table.get("source", pd.Series(dtype=str)) == A.MANUAL).sum())}
            A.save_annotations(table, layer.metadata.get(K.REJECTED), truth, rejected, prov)
            self._last_error = None
            self._set_status(f"Saved {len(table)} spots to {truth.name}.")
        except (SpotDetectError, OSError) as err:
            msg = f"Ground truth NOT saved: {err}"
            self._set_status(msg, error=True)
            if msg != self._last_error:  # one pop-up per problem, not one per click
                show_error(msg)
            self._last_error = msg
