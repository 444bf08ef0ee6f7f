"""The Detect panel's "2. Keep the spots above a threshold": the threshold and contrast floor sliders re-filter
the cached :class:`Detections` of one Points layer (no network) and update that layer.

The slider counts at once and redraws when it pauses (a timer coalesces the ticks). The layer it drives is the
last detection, or any detection layer the user selects (its own model's range and tuned values).
"""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer

from .. import layer_keys as K
from ..core.detection.detections import left_out_text
from ..core.errors import SpotDetectError
from . import layers as L
from ._ui import show_status
from .measured import UNMEASURED, carry_measurements


class Rethreshold:
    """Drives one detection layer from the panel's threshold and floor sliders, count label and tuned button.

    ``status`` is the panel's status line (its "Done:" summary follows the sliders); ``running`` says whether
    the panel is detecting now.
    """

    def __init__(self, threshold, floor, count, tuned, status, running):
        self._threshold, self._floor, self._count, self._tuned, self._status = threshold, floor, count, tuned, status
        self._is_running = running
        self._target = None  # the Points layer the threshold slider drives
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(30)  # coalesce slider ticks: one layer update per pause, not per pixel moved
        self._timer.timeout.connect(self.apply_threshold)
        self._threshold.changed.connect(self._on_slider)
        self._floor.changed.connect(self._on_floor)
        self._tuned.changed.connect(self.use_tuned_threshold)

    @property
    def target(self):
        """The Points layer the sliders drive (None before a detection, or once it was removed)."""
        return self._target

    @property
    def running(self) -> bool:
        return self._is_running()

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)

    def stop(self) -> None:
        """The panel closed: no pending redraw."""
        try:
            self._timer.stop()
        except RuntimeError:
            pass

    def show_summary(self) -> None:
        """Say what the detection layer holds now (after a run ends)."""
        if self._target is not None:
            self._set_status(self._summary())

    def set_target(self, layer) -> None:
        self._target = layer
        dets = layer.metadata[K.DETECTIONS]
        lo, hi = dets.threshold_range  # the layer's own model, whichever model ran last
        lo = max(lo, dets.floor)
        with self._threshold.changed.blocked():
            self._threshold.min, self._threshold.max = lo, max(hi, dets.threshold)
            self._threshold.value = dets.threshold
        self._threshold.enabled = True
        with self._floor.changed.blocked():
            self._floor.value = dets.contrast_floor
        self._floor.enabled = dets.has_contrast
        self._tuned.enabled = dets.default_threshold is not None
        self._count.value = f"{len(layer.data):,} in '{_short(layer.name)}'"

    def on_layer_removed(self, event) -> None:
        if L.same_layer(event.value, self._target):
            self._target = None
            self._threshold.enabled = False
            self._floor.enabled = False
            self._tuned.enabled = False
            self._count.value = "run a detection first"

    def on_active_layer(self, event) -> None:
        layer = event.value
        if layer is not None and not L.same_layer(layer, self._target) \
                and K.DETECTIONS in getattr(layer, "metadata", {}):
            self.set_target(layer)

    def _on_slider(self, value: float) -> None:
        """Count at once (a table filter, milliseconds); redraw the layer when the slider pauses."""
        layer = self._target
        dets = layer.metadata.get(K.DETECTIONS) if layer is not None else None
        if dets is not None and not dets.stack:
            n = dets.count(value)
            self._count.value = f"{n:,} at {float(value):.2f} (updating '{_short(layer.name)}'…)"
        self._timer.start()

    def _on_floor(self, value: float) -> None:
        """The contrast floor moved: filter the cached detections again, as the threshold slider does."""
        layer = self._target
        dets = layer.metadata.get(K.DETECTIONS) if layer is not None else None
        if dets is None:
            return
        dets.set_contrast_floor(float(value))
        if not dets.stack:  # the live count says what moved: the floor, not the threshold
            n = dets.count(self._threshold.value)
            self._count.value = f"{n:,} at contrast floor {float(value):.2f} (updating '{_short(layer.name)}'…)"
        self._timer.start()

    def apply_threshold(self, value: float | None = None) -> int:
        """Filter the cached detections at ``value`` (default: the slider) and update the layer; no network."""
        self._timer.stop()
        layer = self._target
        if layer is None or K.DETECTIONS not in layer.metadata:
            return 0
        t = float(self._threshold.value if value is None else value)
        dets = layer.metadata[K.DETECTIONS]
        try:
            spots = dets.set_threshold(t)
        except SpotDetectError as err:
            self._set_status(str(err), error=True)
            return len(layer.data)
        coords, features = L.points_from_spots(spots, layer.metadata[K.PROVENANCE]["layer_axes"])
        features, unmeasured = carry_measurements(layer, coords, features)  # fits and cells stay with their spots
        t0 = time.perf_counter()
        try:
            L.replace_points(layer, coords, features)
        except Exception:  # never leave the count on "updating…"
            self._count.value = f"{len(layer.data):,} in '{_short(layer.name)}' (update failed, see the log)"
            raise
        # wait at least twice as long as an update takes before the next, so dragging never queues updates
        ms = 1000 * (time.perf_counter() - t0)
        self._timer.setInterval(int(min(1000, max(30, 2 * ms))))
        layer.metadata[K.PROVENANCE]["threshold"] = float(t)
        if dets.has_contrast:
            layer.metadata[K.PROVENANCE]["contrast_floor"] = dets.contrast_floor
        if unmeasured or UNMEASURED in layer.metadata[K.PROVENANCE]:
            layer.metadata[K.PROVENANCE][UNMEASURED] = unmeasured
        self._count.value = f"{len(coords):,} in '{_short(layer.name)}'" + (
            f" ({unmeasured:,} not measured yet)" if unmeasured else "")
        self._count.tooltip = layer.name
        if not self.running and self._status.value.startswith("Done:"):
            self._set_status(self._summary())  # the summary follows the sliders, never an old count
        return len(coords)

    def use_tuned_threshold(self, *_):
        """The threshold and contrast floor tuned for the model that made the layer the slider drives."""
        dets = self._target.metadata.get(K.DETECTIONS) if self._target is not None else None
        if dets is not None and dets.default_threshold is not None:
            if self._floor.enabled:
                self._floor.value = dets.default_contrast_floor  # its signal re-filters
            self._threshold.value = dets.default_threshold
            self.apply_threshold()

    def _summary(self) -> str:
        prov = self._target.metadata[K.PROVENANCE]
        floor = prov.get("contrast_floor")
        at_floor = f", contrast floor {floor:.2f}" if isinstance(floor, float) and floor > 0 else ""
        left = left_out_text(prov)
        return (f"Done: {len(self._target.data):,} spots at threshold {prov['threshold']:.2f}{at_floor} "
                f"with {prov['model']} on {prov['device']}." + (f" {left}" if left else ""))


def _short(name: str, keep: int = 14) -> str:
    """A layer name cut in the middle, as the layer list shows it, so the count never widens the panel."""
    return name if len(name) <= 2 * keep + 1 else f"{name[:keep]}…{name[-keep:]}"
