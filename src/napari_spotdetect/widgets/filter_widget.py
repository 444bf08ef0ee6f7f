"""The "Filter spots by feature" dock widget: a histogram of any feature with a movable cut, as TrackMate's.

Filters select rows of the spots the layer held when filtering started (kept in the layer's metadata), so
moving a cut back brings spots back and nothing is re-detected. The filters in force are written to the
layer's provenance (``metadata["spotdetect"]["feature_filters"]``) and so into every saved table. When
the detection widget re-thresholds the layer, the new spots become the full set and the filters apply again;
new features of the shown spots (a Gaussian fit, cells) join the full set.
"""

from __future__ import annotations

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FloatRangeSlider, Label, PushButton, create_widget
from qtpy.QtCore import QTimer
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..core.errors import SpotDetectError
from ..core.filters import filter_mask, histogram, make_filter, numeric_features
from . import layers as L
from ._ui import show_status

META_KEY = "spotdetect"
FULL_KEY = "spotdetect_unfiltered"  # {"data": array, "features": DataFrame}: the spots before any filter
BINS = 64


class HistogramView(QWidget):
    """Bars of a feature's histogram; the part outside the cut is greyed out."""

    def __init__(self):
        super().__init__()
        self.counts = np.zeros(BINS)
        self.edges = np.linspace(0, 1, BINS + 1)
        self.cut = (0.0, 1.0)
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_data(self, counts, edges):
        self.counts, self.edges = np.asarray(counts, dtype=float), np.asarray(edges, dtype=float)
        self.update()

    def set_cut(self, lo, hi):
        self.cut = (float(lo), float(hi))
        self.update()

    def kept_fraction(self) -> float:
        """Share of the histogram's spots inside the cut (what the picture shows in colour)."""
        centres = 0.5 * (self.edges[:-1] + self.edges[1:])
        total = self.counts.sum()
        inside = (centres >= self.cut[0]) & (centres <= self.cut[1])
        return float(self.counts[inside].sum() / total) if total else 0.0

    def paintEvent(self, _event):  # noqa: N802 (Qt's name)
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(30, 30, 34))
        top = max(float(np.log1p(self.counts).max()), 1e-9)
        lo, hi = self.edges[0], self.edges[-1]
        span = hi - lo if hi > lo else 1.0
        bw = w / max(1, len(self.counts))
        for i, c in enumerate(self.counts):
            centre = 0.5 * (self.edges[i] + self.edges[i + 1])
            inside = self.cut[0] <= centre <= self.cut[1]
            bh = int((h - 4) * np.log1p(c) / top)
            p.fillRect(int(i * bw), h - bh, max(1, int(bw) - 1), bh,
                       QColor(240, 170, 60) if inside else QColor(90, 90, 96))
        p.setPen(QColor(255, 255, 255))
        for v in self.cut:
            x = int(w * (v - lo) / span)
            p.drawLine(x, 0, x, h)
        p.end()


class FilterWidget(Container):
    """Dock widget (npe2 command ``napari-spotdetect.filter_widget``)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._layer = None
        self._pending = None  # "data" or "features": what changed on the layer from outside
        self._kept = None  # indices into the full set of the spots shown
        self._shown = None  # the feature the slider and histogram show
        self._applying = False
        self.filters: list[dict] = []  # committed filters; the current cut is applied on top
        self._spots = create_widget(annotation=napari.layers.Points, label="Spots",
                                    options={"tooltip": "The spots to filter."})
        self._feature = ComboBox(label="Feature", choices=self._feature_choices,
                                 tooltip="Score, intensity, SNR, sigma, cell...: any numeric feature of the spots "
                                         "(fit them first for sigma, SNR, amplitude).")
        self._cut = FloatRangeSlider(label="Keep", min=0.0, max=1.0, value=(0.0, 1.0), step=0.001,
                                     tooltip="Spots whose feature lies inside this range are kept. Live: no "
                                             "detection is run again.")
        self._hist = HistogramView()
        self._add = PushButton(text="Add filter", tooltip="Keep this cut and filter on another feature too.")
        self._clear = PushButton(text="Remove all filters", tooltip="Bring every spot back.")
        self._count = Label(value="")
        self._active_label = Label(value="")
        self._active_label.native.setWordWrap(True)
        form = Container(widgets=[self._spots, self._feature], labels=True)
        form.margins = (0, 0, 0, 0)
        cut = Container(widgets=[self._cut], labels=True)
        cut.margins = (0, 0, 0, 0)
        buttons = Container(widgets=[self._add, self._clear], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.extend([form, cut, self._count, buttons, self._active_label])
        self.native.layout().insertWidget(1, self._hist)  # between the feature and its cut
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(30)  # one layer update per pause of the slider
        self._timer.timeout.connect(self.apply)
        self._spots.changed.connect(self._on_layer)
        self._feature.changed.connect(self._on_feature)
        self._cut.changed.connect(self._on_cut)
        self._add.changed.connect(self.add_filter)
        self._clear.changed.connect(self.clear)
        self._on_layer()

    # -- state ------------------------------------------------------------------------------------------------
    def _full(self):
        return self._layer.metadata[FULL_KEY] if self._layer is not None else None

    def _snapshot(self, layer):
        layer.metadata[FULL_KEY] = {"data": np.array(layer.data, copy=True),
                                    "features": layer.features.reset_index(drop=True).copy()}

    def _on_layer(self, *_):
        if self._layer is not None:
            self._layer.events.data.disconnect(self._on_data)
            self._layer.events.features.disconnect(self._on_features)
        layer = self._spots.value
        self._layer = L.unwrap_layer(layer) if layer is not None else None
        if self._layer is None:
            self._feature.reset_choices()
            return
        if FULL_KEY not in self._layer.metadata:
            self._snapshot(self._layer)
        self.filters = list((self._layer.metadata.get(META_KEY) or {}).get("feature_filters", []))
        self._shown = None  # the slider's cut belongs to the previous layer: do not commit it here
        self._layer.events.data.connect(self._on_data)
        self._layer.events.features.connect(self._on_features)
        self._feature.reset_choices()
        self._on_feature()

    def _feature_choices(self, _widget=None) -> list[str]:
        full = self._full() if getattr(self, "_layer", None) is not None else None
        return numeric_features(full["features"]) if full is not None else []

    def _on_data(self, _event=None):
        """Spots replaced from outside (re-threshold, edits): they become the full set once they settle."""
        if not self._applying:
            self._pending = "data"
            QTimer.singleShot(0, self._sync)  # data and features are set one after the other

    def _on_features(self, _event=None):
        """Features changed from outside (a Gaussian fit, cells): merged into the full set."""
        if not self._applying and self._pending is None:
            self._pending = "features"
            QTimer.singleShot(0, self._sync)

    def _sync(self):
        pending, self._pending = self._pending, None
        if self._layer is None or self._applying or pending is None:
            return
        if pending == "data" or self._kept is None or len(self._kept) != len(self._layer.features):
            self._snapshot(self._layer)
        else:  # the shown rows got new measurements: hidden rows get NaN for the new columns
            full = self._full()["features"]
            shown = self._layer.features.reset_index(drop=True)
            for c in shown.columns:
                col = shown[c]
                numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
                if c not in full.columns:  # numbers stay filterable (NaN where unknown); the rest is object
                    full[c] = np.nan if numeric else pd.Series([None] * len(full), index=full.index, dtype=object)
                elif numeric and not pd.api.types.is_float_dtype(full[c]):
                    full[c] = full[c].astype(float)
                full.loc[self._kept, c] = col.to_numpy(dtype=float) if numeric else col.to_numpy(dtype=object)
        self._feature.reset_choices()
        self.apply()

    def _values(self) -> np.ndarray:
        name = self._feature.value
        feats = self._full()["features"]
        if name is None or name not in feats.columns:
            return np.zeros(0)
        return feats[name].to_numpy(dtype=np.float64)

    def _on_feature(self, *_):
        self._commit(self._shown)  # the cut on the feature shown before stays in force
        self._shown = self._feature.value
        if self._layer is None or self._feature.value is None:
            self._hist.set_data(np.zeros(BINS), np.linspace(0, 1, BINS + 1))
            return
        counts, edges = histogram(self._values(), BINS)
        self._hist.set_data(counts, edges)
        lo, hi = float(edges[0]), float(edges[-1])
        prev = next((f for f in self.filters if f["feature"] == self._feature.value), None)
        with self._cut.changed.blocked():
            self._cut.min, self._cut.max = lo, hi
            self._cut.step = (hi - lo) / 1000 if hi > lo else 0.001
            self._cut.value = (prev["min"] if prev and prev["min"] is not None else lo,
                               prev["max"] if prev and prev["max"] is not None else hi)
        self._hist.set_cut(*self._cut.value)
        self.apply()

    def _on_cut(self, value):
        self._hist.set_cut(*value)
        self._timer.start()

    def current_filter(self, feature=None) -> dict | None:
        """The slider's cut on the shown feature; a bound at the end of the range is open (keeps anything beyond)."""
        feature = self._shown if feature is None else feature
        if feature is None:
            return None
        lo, hi = self._cut.value
        at_lo, at_hi = np.isclose(lo, self._cut.min), np.isclose(hi, self._cut.max)
        return make_filter(feature, None if at_lo else lo, None if at_hi else hi)

    def _commit(self, feature) -> None:
        if feature is None or self._layer is None:
            return
        cur = self.current_filter(feature)
        self.filters = [f for f in self.filters if f["feature"] != feature]
        if cur["min"] is not None or cur["max"] is not None:
            self.filters.append(cur)

    def active_filters(self) -> list[dict]:
        cur = self.current_filter()
        others = [f for f in self.filters if cur is None or f["feature"] != cur["feature"]]
        if cur is not None and (cur["min"] is not None or cur["max"] is not None):
            others.append(cur)
        return others

    # -- actions ------------------------------------------------------------------------------------------
    def apply(self) -> int:
        """Show the spots that pass every filter; returns how many; records the filters in the provenance."""
        self._timer.stop()
        layer = self._layer
        if layer is None:
            return 0
        full = self._full()
        filters = self.active_filters()
        try:
            keep = filter_mask(full["features"], filters)
        except SpotDetectError as err:
            show_status(self._count, str(err), error=True)
            return len(layer.data)
        self._applying = True
        try:
            L.replace_points(layer, full["data"][keep], full["features"][keep].reset_index(drop=True))
        finally:
            self._applying = False
        self._kept = np.flatnonzero(keep)
        prov = layer.metadata.setdefault(META_KEY, {})
        prov["feature_filters"] = filters
        prov["n_before_filters"] = int(len(keep))
        show_status(self._count, f"{int(keep.sum()):,} of {len(keep):,} spots kept")
        self._active_label.value = "Filters: " + ("; ".join(_describe(f) for f in filters) if filters else "none")
        return int(keep.sum())

    def add_filter(self, *_):
        """Commit the current cut, so another feature can be filtered on top of it."""
        self._commit(self._shown)
        self.apply()

    def clear(self, *_):
        self.filters = []
        with self._cut.changed.blocked():
            self._cut.value = (self._cut.min, self._cut.max)
        self._hist.set_cut(*self._cut.value)
        self.apply()


def _describe(f: dict) -> str:
    lo, hi = f.get("min"), f.get("max")
    if lo is not None and hi is not None:
        return f"{lo:.4g} ≤ {f['feature']} ≤ {hi:.4g}"
    return f"{f['feature']} ≥ {lo:.4g}" if lo is not None else f"{f['feature']} ≤ {hi:.4g}"
