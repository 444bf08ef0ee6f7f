"""The Correct panel's review list: the least confident spots first, N / Shift+N to walk them, progress saved.

A mixin of :class:`correct_widget.CorrectWidget` (its table, layer and viewer live there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QTableWidgetItem

from .. import layer_keys as K
from ..core.groundtruth import annotations as A
from . import layers as L

#: feature column marking the spots a reviewer has looked at (N, Shift+N, a row click); saved with the spots
REVIEWED = "reviewed"
REVIEW_ROWS = 300  # the list shows this many of the least confident spots; more would not be reviewed


class ReviewList:
    """The review list of the Correct panel."""

    def refresh_review(self) -> None:
        """Fill the list with the least confident spots (hand-placed ones last)."""
        self._review_timer.stop()
        layer = self._layer
        order = [] if layer is None else A.review_order(layer.features)[:REVIEW_ROWS].tolist()
        self._row_index = order
        self.review_table.setRowCount(len(order))
        self._show_review_state()
        if layer is None:
            return
        axes = L.layer_axes(layer)
        iy, ix = axes.index("y") if "y" in axes else -2, axes.index("x") if "x" in axes else -1
        score = layer.features["score"] if "score" in layer.features else pd.Series(np.nan, index=layer.features.index)
        source = layer.features["source"] if "source" in layer.features else pd.Series("", index=layer.features.index)
        for row, i in enumerate(order):
            s = float(score.iloc[i])
            values = ["—" if np.isnan(s) else f"{s:.3f}", f"{layer.data[i, iy]:.1f}",
                      f"{layer.data[i, ix]:.1f}", str(source.iloc[i])]
            for col, v in enumerate(values):
                self.review_table.setItem(row, col, QTableWidgetItem(v))
        self.review_table.resizeColumnsToContents()

    def go_to(self, row: int) -> None:
        """Centre the view on the spot in review row ``row`` (its plane too) and select it."""
        layer = self._layer
        if layer is None or not 0 <= row < len(self._row_index):
            return
        i = self._row_index[row]
        self._cursor = row
        world = np.asarray(layer.data_to_world(layer.data[i]))
        dims = self._viewer.dims
        for d in range(min(len(world), dims.ndim)):
            if d not in dims.displayed:
                dims.set_point(d, world[d])
        self._viewer.camera.center = tuple(world[list(dims.displayed)])
        layer.selected_data = {i}
        self.review_table.selectRow(row)
        self._mark_reviewed(i)

    def _mark_reviewed(self, i: int) -> None:
        """Remember that spot ``i`` was looked at; saved with the ground truth, so a review resumes."""
        layer = self._layer
        features = layer.features.copy()
        reviewed = _reviewed(features)
        if reviewed[i]:
            return
        reviewed[i] = True
        features[REVIEWED] = reviewed
        layer.features = features
        if K.TRUTH in layer.metadata:
            self._save()
        self._show_review_state()

    def review_state(self) -> dict:
        """Counts for the review line: spots, reviewed, added by hand, deleted predictions."""
        layer = self._layer
        if layer is None:
            return {}
        f = layer.features
        return {"n": len(layer.data), "reviewed": int(_reviewed(f).sum()),
                "added": int((f["source"].astype(str) == A.MANUAL).sum()) if "source" in f else 0,
                "deleted": len(layer.metadata.get(K.REJECTED, pd.DataFrame()))}

    def _show_review_state(self) -> None:
        st = self.review_state()
        self.review_line.value = "" if not st else (
            f"{st['reviewed']} of {st['n']} reviewed · {st['added']} added · {st['deleted']} deleted")

    def next_doubtful(self, step: int = 1) -> None:
        if self._row_index:
            self.go_to((self._cursor + step) % len(self._row_index))


def _reviewed(features: pd.DataFrame) -> np.ndarray:
    """The 'reviewed' column as booleans (missing, NaN or text from a CSV count as not reviewed)."""
    if REVIEWED not in features.columns:
        return np.zeros(len(features), dtype=bool)
    col = features[REVIEWED]
    if col.dtype == bool:
        return col.to_numpy(copy=True)
    return col.astype(str).str.lower().isin(["true", "1", "1.0"]).to_numpy()
