"""The "Measure and count spots" dock widget: Gaussian fits, molecules, spots per cell, and exports.

Everything is computed by the engine (``core.analysis.measure``, ``core.analysis.cells``, ``core.io.exports``:
the same calls as ``spotdetect measure / count / export``); the widget converts layer coordinates into image and
label pixels, runs the fit in a worker, writes the results into the Points layer's features and provenance, and shows
the per-cell table. The pixel size comes from the image layer's scale (napari's default scale 1 means pixels).
"""

from __future__ import annotations

from typing import Optional

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, create_widget
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from .. import layer_keys as K
from ..core.analysis.cells import check_labels_match, count_spots_in_cells
from ..core.analysis.measure import count_molecules, measure_spots_iter
from ..core.common.validate import axes_for_rank
from ..core.errors import SpotDetectError
from ..core.io.exports import write_cell_table, write_points_table, write_trackmate_xml
from ..core.io.units import pixel_size_from_scale
from . import layers as L
from ._ui import make_scrollable, show_status, when_closed
from .panel_worker import PanelWorker

_TABLE_SHOWN = 8  # columns of the per-cell table shown in the dock (all of them are exported)


def layer_coords_in(src, dst, data=None) -> np.ndarray:
    """``src`` data coordinates as data coordinates of ``dst`` over ``dst``'s (trailing) axes.

    Through world space with scale and translate only; a 2-D label layer under a 3-D spot layer takes the
    spots' last two axes (cells drawn on a projection apply to every plane).
    """
    data = np.asarray(src.data if data is None else data, dtype=np.float64).reshape(-1, src.ndim)
    world = data * np.asarray(src.scale) + np.asarray(src.translate)
    k = dst.ndim
    if k > src.ndim:
        raise SpotDetectError(f"The spots layer is {src.ndim}-D and '{dst.name}' is {k}-D.",
                              "choose a layer with as many dimensions as the spots, or fewer.")
    return (world[:, -k:] - np.asarray(dst.translate)) / np.asarray(dst.scale)


def image_axes(layer) -> str:
    return L.guess_layer_axes(layer.ndim, layer.axis_labels, getattr(layer, "rgb", False))


def layer_pixel_size(layer) -> tuple | None:
    """(z, y, x) um from a layer's scale, or None when the scale is napari's default (pixels)."""
    if layer is None:
        return None
    axes = image_axes(layer) if isinstance(layer, napari.layers.Image) else L.layer_axes(layer)
    return pixel_size_from_scale(layer.scale, axes)


class MeasureWidget(Container):
    """Dock widget (npe2 command ``napari-spotdetect.measure_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self.cells: pd.DataFrame | None = None
        self._spots = create_widget(annotation=napari.layers.Points, label="Spots",
                                    options={"tooltip": "The detected (or corrected) spots to measure."})
        self._image = create_widget(annotation=napari.layers.Image, label="Image",
                                    options={"tooltip": "The image the spots were found in (for the fits)."})
        self._cells = create_widget(annotation=Optional[napari.layers.Labels], label="Cells",  # noqa: UP045 (magicgui reads it)
                                    options={"tooltip": "Cell labels (e.g. from Cellpose), 2-D or 3-D."})
        self._nuclei = create_widget(annotation=Optional[napari.layers.Labels], label="Nuclei",  # noqa: UP045
                                     options={"tooltip": "Optional nucleus labels: spots are then nucleus or "
                                                         "cytoplasm."})
        self._sigma = FloatSpinBox(label="Spot sigma (px)", value=1.2, min=0.5, max=10.0, step=0.1,
                                   tooltip="About how wide the spots are (Gaussian sigma, pixels): where the fit "
                                           "starts and how large a window it uses. The fit finds the real sigma.")
        self._units = Label(value="")
        self._fit = PushButton(text="Fit Gaussians", tooltip="Fit every spot: sub-pixel centre, amplitude, sigma, "
                               "background, SNR, integrated intensity; then count molecules in clusters.")
        self._count = PushButton(text="Count spots per cell", tooltip="Give each spot its cell and compartment "
                                 "and build the per-cell table.")
        self._progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self._status = Label(value="Choose spots and an image; add cell labels to count per cell.")
        self._status.native.setWordWrap(True)
        self._status.native.setMinimumWidth(260)
        self._out = FileEdit(label="Export to", mode="w", tooltip="File (or stem) for the exports below.")
        self._export_cells = PushButton(text="Cells (CSV)", enabled=False,
                                        tooltip="The per-cell table, one row per cell (AnnData obs).")
        self._export_tm = PushButton(text="TrackMate XML", tooltip="Spots for Fiji's TrackMate, in um when the "
                                     "image has a pixel size.")
        self._export_pts = PushButton(text="Points (CSV)", tooltip="x, y, (z) in um and in pixels, with every "
                                      "feature: loads into SpatialData, pandas, R.")
        form = Container(widgets=[self._spots, self._image, self._cells, self._nuclei, self._sigma], labels=True)
        buttons = Container(widgets=[self._fit, self._count], layout="horizontal", labels=False)
        out_form = Container(widgets=[self._out], labels=True)
        exports = Container(widgets=[self._export_cells, self._export_tm, self._export_pts], layout="horizontal",
                            labels=False)
        for c in (form, buttons, out_form, exports):
            c.margins = (0, 0, 0, 0)
        self.extend([form, self._units, buttons, self._progress, self._status])
        self._table = QTableWidget(0, 0)
        self._table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._table.verticalHeader().setVisible(False)
        self._table.setMinimumHeight(140)
        self.native.layout().addWidget(self._table)
        self.extend([out_form, exports])
        make_scrollable(self)  # never taller than a laptop screen, alone or in the tabbed dock
        self._job = PanelWorker(self._status, self._progress, [self._fit], what="Fitting")
        self._close_watcher = when_closed(self.native, self._job.close)
        self._fit.changed.connect(self.fit)
        self._count.changed.connect(self.count)
        self._export_cells.changed.connect(lambda *_: self.export("cells"))
        self._export_tm.changed.connect(lambda *_: self.export("trackmate"))
        self._export_pts.changed.connect(lambda *_: self.export("points"))
        self._spots.changed.connect(self._on_spots)
        self._image.changed.connect(self._show_units)
        self._on_spots()

    # -- inputs -------------------------------------------------------------------------------------------
    def _on_spots(self, *_):
        """Pick the image the spots were detected in, when the detection says which."""
        layer = self._spots.value
        prov = (layer.metadata.get(K.PROVENANCE) or {}) if layer is not None else {}
        name = prov.get("image_layer")
        if name and name in self._viewer.layers and isinstance(self._viewer.layers[name], napari.layers.Image):
            self._image.value = self._viewer.layers[name]
        self._show_units()

    def pixel_size(self) -> tuple | None:
        try:
            return layer_pixel_size(self._image.value) or layer_pixel_size(self._spots.value)
        except SpotDetectError:
            return None

    def _show_units(self, *_):
        ps = self.pixel_size()
        if ps is None:
            self._units.value = "Pixel size: not set (layer scale 1): tables and exports in pixels."
        else:
            txt = ", ".join("?" if np.isnan(v) else f"{v:g}" for v in (ps if not np.isnan(ps[0]) else ps[1:]))
            axes = "y, x" if np.isnan(ps[0]) else "z, y, x"
            self._units.value = f"Pixel size from the image scale: {txt} um ({axes})."

    # -- public API (scripts, notebooks, tests) ----------------------------------------------------------
    def set_layer(self, layer) -> None:
        """Measure the spots of ``layer`` (the image is picked from its provenance when it is open)."""
        self._spots.value = layer

    @property
    def image_layer(self):
        return self._image.value

    def set_labels(self, cells=None, nuclei=None) -> None:
        """Cell (and optionally nucleus) Labels layers to count spots in."""
        self._cells.value, self._nuclei.value = cells, nuclei

    def set_sigma(self, sigma: float) -> None:
        """Starting sigma (px) of the Gaussian fits."""
        self._sigma.value = float(sigma)

    def set_export_path(self, path) -> None:
        """File (or stem) that :meth:`export` writes."""
        self._out.value = path

    @property
    def units_text(self) -> str:
        """The pixel size the panel found, as it shows it."""
        return self._units.value

    @property
    def status(self) -> str:
        return self._status.value

    def table_text(self) -> list[list[str]]:
        """The per-cell table as the panel shows it, row by row."""
        t = self._table
        return [[t.item(r, c).text() if t.item(r, c) else "" for c in range(t.columnCount())]
                for r in range(t.rowCount())]

    def spots_table(self, target=None) -> pd.DataFrame:
        """The spots as a table in the pixel coordinates of ``target`` (default the image layer)."""
        layer = self._spots.value
        if layer is None:
            raise SpotDetectError("No spots layer is chosen.", "detect spots first or open a spot table.")
        target = target if target is not None else self._image.value
        if target is None:
            coords, axes = np.asarray(layer.data), L.layer_axes(layer)
        else:
            coords = layer_coords_in(layer, target)
            axes = image_axes(target) if isinstance(target, napari.layers.Image) else axes_for_rank(target.ndim)
            if len(axes) != coords.shape[1]:
                axes = axes[-coords.shape[1]:]
        df = pd.DataFrame({a: coords[:, i] for i, a in enumerate(axes)})
        feats = layer.features.reset_index(drop=True)
        return pd.concat([df, feats.drop(columns=[c for c in feats.columns if c in df.columns])], axis=1)

    def _set_status(self, text, error=False):
        show_status(self._status, text, error)

    @property
    def running(self) -> bool:
        return self._job.running

    # -- fit ----------------------------------------------------------------------------------------------
    def fit(self, *_):
        """Fit every spot in a worker; the features and the provenance are updated when it returns."""
        if self.running:
            return None
        image = self._image.value
        try:
            if image is None:
                raise SpotDetectError("No image is chosen.", "choose the image the spots were found in.")
            axes = image_axes(image)
            table = self.spots_table(image)
            data = image.data[0] if image.multiscale else image.data
            sigma = (max(1.5, float(self._sigma.value)), float(self._sigma.value))  # (z, lateral)
            gen = measure_spots_iter(data, table, axes=axes, sigma=sigma,  # lazy: plane by plane
                                     pixel_size=self.pixel_size())
        except SpotDetectError as err:
            self._set_status(str(err), error=True)
            return None
        layer = self._spots.value
        return self._job.start(gen, lambda res: self._fitted(layer, res), f"Fitting {len(table):,} spots…")

    def _fitted(self, layer, table: pd.DataFrame):
        if len(layer.data) != len(table):
            self._set_status(f"The spots of '{layer.name}' changed during the fit; nothing was stored.",
                             error=True)
            return
        note = {"n_fit_ok": int(table["fit_ok"].sum()) if len(table) else 0, "n_spots": len(table)}
        ps = self.pixel_size()
        try:
            table, ref = count_molecules(table, pixel_size=ps)
            note["single_molecule_intensity"] = ref
            extra = f", {int(table['molecules'].sum()):,} molecules ({int(table['cluster'].sum())} clusters)"
        except SpotDetectError as err:  # nothing isolated and well fitted: the fits still stand
            extra = f"; molecules not counted: {err.problem}"
        coord_cols = [c for c in ("t", "c", "z", "y", "x") if c in table.columns]
        layer.features = table.drop(columns=coord_cols).reset_index(drop=True)
        layer.metadata.setdefault(K.PROVENANCE, {})["gaussian_fit"] = note
        sig = table["sigma"].median() if len(table) else float("nan")
        self._set_status(f"Fitted {len(table):,} spots ({note['n_fit_ok']:,} good fits, median sigma "
                         f"{sig:.2f} px){extra}.")

    # -- cells --------------------------------------------------------------------------------------------
    def _check_grid(self, labels, name: str) -> None:
        """Labels on another pixel grid than the image (another shape, or another scale: pixels shown at a
        different size) put spots in the wrong cell or "outside" without a word: refuse them, naming both."""
        image = self._image.value
        if image is None:
            return
        data = image.data[0] if image.multiscale else image.data
        shape = tuple(data.shape[:-1] if getattr(image, "rgb", False) else data.shape)
        check_labels_match(labels.data, shape, image_axes(image), name=f"{name} ('{labels.name}')",
                           image=f"the image '{image.name}'")
        k = labels.ndim
        own, img = np.asarray(labels.scale, float), np.asarray(image.scale, float)[-k:]
        if not np.allclose(own, img, rtol=1e-6):
            fmt = ", ".join
            raise SpotDetectError(
                f"The {name} labels '{labels.name}' have scale ({fmt(f'{v:g}' for v in own)}) but the image "
                f"'{image.name}' has scale ({fmt(f'{v:g}' for v in img)}) on the same axes: the labels' pixels "
                "are shown at another size, so spots would be counted in the wrong cells.",
                "give the labels layer the image's scale (layer properties or `layer.scale = image.scale`), "
                "or choose labels segmented on this image.")

    def count(self, *_) -> pd.DataFrame | None:
        """Assign every spot to its cell and compartment and fill the per-cell table."""
        cells, nuclei, layer = self._cells.value, self._nuclei.value, self._spots.value
        try:
            if cells is None:
                raise SpotDetectError("No cell labels are chosen.",
                                      "add a Labels layer of cells (e.g. from Cellpose) and choose it.")
            for lab, name in ((cells, "cells"), (nuclei, "nuclei")):
                if lab is not None:
                    self._check_grid(lab, name)
            table = self.spots_table(cells)
            nuc = None
            if nuclei is not None:
                if nuclei.data.shape != cells.data.shape:
                    raise SpotDetectError("The nuclei and cell labels have different shapes.",
                                          "choose labels made on the same image.")
                nuc = np.asarray(nuclei.data)
            ps = layer_pixel_size(cells) or self.pixel_size()
            assigned, per_cell = count_spots_in_cells(table, np.asarray(cells.data), nuc, pixel_size=ps)
        except SpotDetectError as err:
            self._set_status(str(err), error=True)
            return None
        feats = layer.features.reset_index(drop=True).copy()
        feats["cell"] = assigned["cell"].to_numpy()
        feats["compartment"] = assigned["compartment"].to_numpy()
        layer.features = feats
        layer.metadata.setdefault(K.PROVENANCE, {})["cells"] = {
            "labels_layer": cells.name, "nuclei_layer": nuclei.name if nuclei is not None else None,
            "n_cells": len(per_cell), "n_spots_in_cells": int((feats["cell"] > 0).sum())}
        self.cells = per_cell
        self._fill_table(per_cell)
        self._export_cells.enabled = True
        med = float(per_cell["n_spots"].median()) if len(per_cell) else 0.0
        self._set_status(f"{int((feats['cell'] > 0).sum()):,} of {len(feats):,} spots in {len(per_cell)} cells "
                         f"(median {med:g} per cell).")
        return per_cell

    def _fill_table(self, df: pd.DataFrame):
        cols = list(df.columns[:_TABLE_SHOWN])
        self._table.setColumnCount(len(cols))
        self._table.setHorizontalHeaderLabels(cols)
        self._table.setRowCount(len(df))
        for i, row in enumerate(df[cols].itertuples(index=False)):  # the table the user reads: one row per cell
            for j, v in enumerate(row):
                text = f"{v:.4g}" if isinstance(v, float) else str(v)
                self._table.setItem(i, j, QTableWidgetItem(text))
        self._table.resizeColumnsToContents()

    # -- exports ------------------------------------------------------------------------------------------
    def export(self, kind: str):
        """Write the per-cell table, TrackMate XML or the points table; returns the path or None."""
        from pathlib import Path

        raw = str(self._out.value)
        if raw in ("", "."):
            self._set_status("Choose a file to export to first.", error=True)
            return None
        suffix = {"cells": ".csv", "trackmate": ".xml", "points": ".csv"}[kind]
        base = Path(raw)
        stem = base.with_suffix("") if base.suffix.lower() in (".csv", ".xml", ".parquet") else base
        path = stem.with_name(stem.name + {"cells": ".cells", "trackmate": "", "points": ".points"}[kind] + suffix)
        try:
            if kind == "cells":
                if self.cells is None:
                    raise SpotDetectError("There is no per-cell table yet.", "press 'Count spots per cell' first.")
                out = write_cell_table(self.cells, path)
            else:
                table = self.spots_table()
                ps = self.pixel_size()
                if kind == "trackmate":
                    img = self._image.value
                    shape = img.data.shape if img is not None else None
                    src = (img.source.path or "") if img is not None and img.source is not None else ""
                    out = write_trackmate_xml(table, path, pixel_size=ps, image_shape=shape, image_name=src or "")
                else:
                    out = write_points_table(table, path, pixel_size=ps)
        except (SpotDetectError, OSError) as err:
            self._set_status(str(err), error=True)
            return None
        self._set_status(f"Saved {out}.")
        return out
