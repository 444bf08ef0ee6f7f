"""The Fine-tune panel's live plot: whether training helps, seen while it runs (the panel feeds it events)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..core.training.finetune_defaults import DEFAULTS as FT


class TrainingPlot(QWidget):
    """Loss per step and per epoch (left axis) and validation F1 per epoch (right axis, 0-1), against epochs.

    The loss is shown positive (1 - F1 + L2 for SmoothF1: :func:`core.training.finetuning.display_loss`); epoch 0 is
    the starting model's F1 at its own threshold, the number the QC panel shows for it.

    A small QPainter plot: matplotlib and pyqtgraph are not napari dependencies, and this needs no more.
    """

    COLORS = {"step": QColor(150, 150, 150), "loss": QColor(80, 160, 255), "f1": QColor(255, 160, 40)}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedHeight(200)  # a fixed height: the wrapped labels around it must not squeeze it
        self.setMinimumWidth(240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.clear()

    def clear(self, epochs: int = 1) -> None:
        self.epochs = max(int(epochs), 1)
        self.step_loss: list[tuple[float, float]] = []  # (epoch position, loss)
        self.epoch_loss: list[tuple[float, float]] = []
        self.val_f1: list[tuple[float, float]] = []
        self.update()

    def add_step(self, x: float, loss: float) -> None:
        if np.isfinite(loss):
            self.step_loss.append((float(x), float(loss)))
            self.update()

    def add_epoch(self, x: float, loss: float | None, f1: float | None) -> None:
        if loss is not None and np.isfinite(loss):
            self.epoch_loss.append((float(x), float(loss)))
        if f1 is not None:
            self.val_f1.append((float(x), float(f1)))
        self.update()

    def add_event(self, ev) -> None:
        """Plot a :class:`~napari_spotdetect.core.training.finetuning.FinetuneEvent` (other kinds: nothing)."""
        if ev.kind == "start" and ev.val_f1 is not None:  # the starting model, measured before training
            self.add_epoch(0, None, ev.val_f1)
        elif ev.kind == "step":
            self.add_step(ev.epoch - 1 + ev.step / max(ev.steps, 1), float("nan") if ev.loss is None else ev.loss)
        elif ev.kind == "epoch":
            self.add_epoch(ev.epoch, ev.loss, ev.val_f1)

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        losses = [v for _, v in self.step_loss + self.epoch_loss]
        lo, hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        digits = 2 if hi - lo >= 0.1 else 3
        ticks_y = [(v, f"{v:.{digits}f}") for v in (lo, (lo + hi) / 2, hi)]
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        left = max(fm.horizontalAdvance(t) for _, t in ticks_y) + 8
        right, top, bottom = fm.horizontalAdvance("1.0") + 12, 8 + fm.height(), fm.height() + 10
        w, h = self.width() - left - right, self.height() - top - bottom
        if w < 40 or h < 40:
            return

        def X(x):
            return left + w * x / self.epochs

        def Y(v, a=lo, b=hi):
            return top + h * (1 - (v - a) / (b - a))

        # frame, ticks and labels
        p.setPen(QPen(fg, 1))
        p.drawRect(left, top, w, h)
        for v, text in ticks_y:
            p.drawText(2, int(Y(v)) + fm.ascent() // 2, text)
        p.setPen(QPen(self.COLORS["f1"], 1))
        for v in (0.0, 0.5, 1.0):
            p.drawText(left + w + 4, int(Y(v, 0, 1)) + fm.ascent() // 2, f"{v:.1f}")
        p.setPen(QPen(fg, 1))
        ticks = sorted({0, self.epochs, *range(0, self.epochs + 1, max(1, self.epochs // 5))})
        for e in ticks:
            p.drawLine(int(X(e)), top + h, int(X(e)), top + h + 3)
            label = str(e)
            p.drawText(int(X(e)) - fm.horizontalAdvance(label) // 2, top + h + 3 + fm.ascent(), label)
        p.drawText(left + w - fm.horizontalAdvance("epoch"), self.height() - 2, "epoch")
        # legend
        x0 = left
        legend = (("step", "loss per step"), ("loss", "loss per epoch"),
                  ("f1", f"validation F1 ({FT.radius:g} px)"))
        for key, text in legend:
            p.setPen(QPen(self.COLORS[key], 2))
            p.drawLine(x0, fm.height() // 2 + 2, x0 + 14, fm.height() // 2 + 2)
            p.setPen(QPen(fg, 1))
            p.drawText(x0 + 18, fm.ascent(), text)
            x0 += 18 + fm.horizontalAdvance(text) + 14
        # series
        self._line(p, [(X(x), Y(v)) for x, v in self.step_loss], "step", 1, dots=False)
        self._line(p, [(X(x), Y(v)) for x, v in self.epoch_loss], "loss", 2, dots=True)
        self._line(p, [(X(x), Y(v, 0, 1)) for x, v in self.val_f1], "f1", 2, dots=True)
        if not (self.step_loss or self.val_f1):
            p.setPen(QPen(fg, 1))
            p.drawText(left, top, w, h, Qt.AlignmentFlag.AlignCenter, "The curves appear here during training.")
        p.end()

    def _line(self, p, pts, key, width, dots):
        if not pts:
            return
        p.setPen(QPen(self.COLORS[key], width))
        path = QPainterPath(QPointF(*pts[0]))
        for q in pts[1:]:
            path.lineTo(QPointF(*q))
        p.drawPath(path)
        if dots:
            p.setBrush(self.COLORS[key])
            for q in pts:
                p.drawEllipse(QPointF(*q), 3, 3)
            p.setBrush(Qt.BrushStyle.NoBrush)
