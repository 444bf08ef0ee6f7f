"""The "Filter spots by feature" dock widget: a histogram of any feature with a movable cut, as TrackMate's.

Filters select rows of the spots the layer held when filtering started, so moving a cut back brings spots
back and nothing is re-detected. That full set and the filters live with the layer (:class:`LayerFilters`
in its metadata), not with the panel: closing the panel leaves the filters in force, a new panel shows
them again. The filters in force are written to the layer's provenance
(``feature_filters`` in the provenance entry of its metadata) and so into every saved table.

Changes made to the layer from outside are followed: a new threshold from *Detect spots* gives a new full
set, filtered again; a hand edit (spots deleted, added, moved) keeps the hidden spots hidden and the edit;
new features of the shown spots (a Gaussian fit, cells) join the full set.
"""

from __future__ import annotations

import weakref

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FloatRangeSlider, Label, PushButton, create_widget
from qtpy.QtCore import QTimer
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

from .. import layer_keys as K
from ..core.analysis.filters import filter_mask, histogram, make_filter, numeric_features
from ..core.errors import SpotDetectError
from . import layers as L
from ._ui import show_status

BINS = 64


class LayerFilters:
    """Filter state of one Points layer: the full set of spots, the filters in force, the rows shown.

    Kept in ``layer.metadata[K.FILTERS]`` so it lives exactly as long as the layer and listens to it
    whether or not a panel is open; panels register a refresh callback (held weakly).
    """

    def __init__(self, layer):
        self._layer = weakref.ref(layer)
        self.filters: list[dict] = list(self._prov(layer).get("feature_filters") or [])
        self.kept: np.ndarray | None = None
        self._applying = False
        self._pending: str | None = None
        self._views: list = []
        self.snapshot(layer)
        layer.events.data.connect(self._on_data)
        layer.events.features.connect(self._on_features)

    def __deepcopy__(self, memo):  # napari copies layer metadata; the state belongs to this layer only
        return self

    @classmethod
    def of(cls, layer) -> LayerFilters:
        state = layer.metadata.get(K.FILTERS)
        if not isinstance(state, cls):
            state = cls(layer)
            layer.metadata[K.FILTERS] = state
        return state

    @staticmethod
    def _prov(layer) -> dict:
        return layer.metadata.setdefault(K.PROVENANCE, {})

    def snapshot(self, layer) -> None:
        self.data = np.array(layer.data, copy=True)
        self.features = layer.features.reset_index(drop=True).copy()
        self.kept = np.arange(len(self.data))
        self._threshold = self._prov(layer).get("threshold")

    def add_view(self, callback) -> None:
        self._views.append(weakref.WeakMethod(callback))

    def apply(self, filters=None) -> int:
        """Show the spots of the full set that pass ``filters`` (default: those in force); returns how many."""
        layer = self._layer()
        if layer is None:
            return 0
        if filters is not None:
            self.filters = list(filters)
        keep = filter_mask(self.features, self.filters)
        self._applying = True
        try:
            L.replace_points(layer, self.data[keep], self.features[keep].reset_index(drop=True))
        finally:
            self._applying = False
        self.kept = np.flatnonzero(keep)
        prov = self._prov(layer)
        prov["feature_filters"] = list(self.filters)
        prov["n_before_filters"] = int(len(keep))
        return int(keep.sum())

    # -- changes from outside -------------------------------------------------------------------------------
    def _on_data(self, _event=None):
        if not self._applying:
            self._pending = "data"
            QTimer.singleShot(0, self._sync)  # data and features are set one after the other

    def _on_features(self, _event=None):
        if not self._applying and self._pending is None:
            self._pending = "features"
            QTimer.singleShot(0, self._sync)

    def _sync(self):
        pending, self._pending = self._pending, None
        layer = self._layer()
        if layer is None or self._applying or pending is None:
            return
        shown = layer.features.reset_index(drop=True)
        if pending == "data" and self._prov(layer).get("threshold") != self._threshold:
            self.snapshot(layer)  # a new detection threshold: a new full set
        elif pending == "data" or self.kept is None or len(self.kept) != len(shown):
            self._merge_edit(layer)
        else:
            self._merge_features(shown)
        try:
            self.apply()
        except SpotDetectError:  # a filtered feature is gone from the new spots: show them all
            self.apply([])
        for ref in list(self._views):
            cb = ref()
            if cb is None:
                self._views.remove(ref)
                continue
            try:
                cb()
            except RuntimeError:  # the panel's Qt widgets were deleted
                self._views.remove(ref)

    def _merge_edit(self, layer) -> None:
        """Spots deleted, added or moved by hand: the hidden spots stay as they were, the shown ones as edited."""
        hidden = np.ones(len(self.data), dtype=bool)
        if self.kept is not None:
            hidden[self.kept] = False
        shown = layer.features.reset_index(drop=True)
        feats = pd.concat([self.features[hidden].reset_index(drop=True), shown], ignore_index=True)
        data = np.asarray(layer.data, dtype=np.float64).reshape(-1, layer.ndim)
        self.data = np.concatenate([self.data[hidden].reshape(-1, layer.ndim), data])
        self.features = feats
        self.kept = np.arange(int(hidden.sum()), len(self.data))

    def _merge_features(self, shown: pd.DataFrame) -> None:
        """New measurements of the shown spots; hidden ones get NaN (or None) in the new columns."""
        full = self.features
        for c in shown.columns:
            col = shown[c]
            numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
            if c not in full.columns:  # numbers stay filterable (NaN where unknown); the rest is object
                full[c] = np.nan if numeric else pd.Series([None] * len(full), index=full.index, dtype=object)
            elif numeric and not pd.api.types.is_float_dtype(full[c]):
                full[c] = full[c].astype(float)
            full.loc[self.kept, c] = col.to_numpy(dtype=float) if numeric else col.to_numpy(dtype=object)


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

    def paintEvent(self, _event):
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
        self._state: LayerFilters | None = None
        self._shown = None  # the feature the slider and histogram show
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

    @property
    def filters(self) -> list[dict]:
        """The filters in force on the chosen layer."""
        return list(self._state.filters) if self._state is not None else []

    # -- state ------------------------------------------------------------------------------------------------
    def _on_layer(self, *_):
        layer = self._spots.value
        self._shown = None  # the slider's cut belongs to the previous layer: it is not carried over
        self._state = LayerFilters.of(L.unwrap_layer(layer)) if layer is not None else None
        if self._state is not None:
            self._state.add_view(self._refresh)
        self._feature.reset_choices()
        self._on_feature()

    def _refresh(self):
        """The layer changed from outside: new choices and histogram, the same cuts."""
        with self._feature.changed.blocked():
            self._feature.reset_choices()
        self._show_feature()
        self._report()

    def _feature_choices(self, _widget=None) -> list[str]:
        state = getattr(self, "_state", None)
        return numeric_features(state.features) if state is not None else []

    def _values(self) -> np.ndarray:
        name = self._feature.value
        if self._state is None or name is None or name not in self._state.features.columns:
            return np.zeros(0)
        return self._state.features[name].to_numpy(dtype=np.float64)

    def _on_feature(self, *_):
        self._commit(self._shown)  # the cut on the feature shown before stays in force
        self._shown = self._feature.value
        self._show_feature()
        self.apply()

    def _show_feature(self):
        if self._state is None or self._feature.value is None:
            self._hist.set_data(np.zeros(BINS), np.linspace(0, 1, BINS + 1))
            return
        counts, edges = histogram(self._values(), BINS)
        self._hist.set_data(counts, edges)
        lo, hi = float(edges[0]), float(edges[-1])
        prev = next((f for f in self._state.filters if f["feature"] == self._feature.value), None)
        with self._cut.changed.blocked():
            self._cut.min, self._cut.max = lo, hi
            self._cut.step = (hi - lo) / 1000 if hi > lo else 0.001
            self._cut.value = (prev["min"] if prev and prev["min"] is not None else lo,
                               prev["max"] if prev and prev["max"] is not None else hi)
        self._hist.set_cut(*self._cut.value)

    def _on_cut(self, value):
        self._hist.set_cut(*value)
        self._timer.start()

    # -- public API (scripts, notebooks, tests) ----------------------------------------------------------
    def set_layer(self, layer) -> None:
        """Filter the spots of ``layer`` (a Points layer with features)."""
        self._spots.value = layer

    def set_feature(self, name: str) -> None:
        """Show (and cut on) feature ``name``; its earlier cut, if any, comes back."""
        self._feature.value = name

    @property
    def feature_choices(self) -> list[str]:
        return list(self._feature.choices)

    def set_cut(self, low: float | None = None, high: float | None = None) -> None:
        """Keep spots with ``low <= feature <= high`` (None: the feature's own limit); applied when it pauses."""
        lo, hi = self.cut_limits
        self._cut.value = (lo if low is None else float(low), hi if high is None else float(high))

    @property
    def cut(self) -> tuple[float, float]:
        return tuple(self._cut.value)

    @property
    def cut_limits(self) -> tuple[float, float]:
        """The smallest and largest value of the feature shown (the slider's ends)."""
        return float(self._cut.min), float(self._cut.max)

    @property
    def histogram_counts(self) -> np.ndarray:
        return self._hist.counts

    @property
    def count_text(self) -> str:
        """"k of n spots kept", as the panel shows it."""
        return self._count.value

    def current_filter(self, feature=None) -> dict | None:
        """The slider's cut on the shown feature; a bound at the end of the range is open (keeps anything beyond)."""
        feature = self._shown if feature is None else feature
        if feature is None:
            return None
        lo, hi = self._cut.value
        at_lo, at_hi = np.isclose(lo, self._cut.min), np.isclose(hi, self._cut.max)
        return make_filter(feature, None if at_lo else lo, None if at_hi else hi)

    def _commit(self, feature) -> None:
        if feature is None or self._state is None:
            return
        cur = self.current_filter(feature)
        filters = [f for f in self._state.filters if f["feature"] != feature]
        if cur["min"] is not None or cur["max"] is not None:
            filters.append(cur)
        self._state.filters = filters

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
        if self._state is None:
            return 0
        try:
            n = self._state.apply(self.active_filters())
        except SpotDetectError as err:
            show_status(self._count, str(err), error=True)
            return len(self._spots.value.data)
        self._report()
        return n

    def _report(self):
        if self._state is None:
            return
        filters = self._state.filters
        n_all = len(self._state.data)
        n = len(self._state.kept) if self._state.kept is not None else n_all
        show_status(self._count, f"{n:,} of {n_all:,} spots kept")
        self._active_label.value = "Filters: " + ("; ".join(_describe(f) for f in filters) if filters else "none")

    def add_filter(self, *_):
        """Commit the current cut, so another feature can be filtered on top of it."""
        self._commit(self._shown)
        self.apply()

    def clear(self, *_):
        if self._state is not None:
            self._state.filters = []
        with self._cut.changed.blocked():
            self._cut.value = (self._cut.min, self._cut.max)
        self._hist.set_cut(*self._cut.value)
        self.apply()


def _describe(f: dict) -> str:
    lo, hi = f.get("min"), f.get("max")
    if lo is not None and hi is not None:
        return f"{lo:.4g} ≤ {f['feature']} ≤ {hi:.4g}"
    return f"{f['feature']} ≥ {lo:.4g}" if lo is not None else f"{f['feature']} ≤ {hi:.4g}"
