"""A status text that wraps to several lines gets the height it needs in its panel: it never runs over the
widget below it (the Detect panel's two-line "Done: ..." message overlapped the next heading)."""

from __future__ import annotations

import numpy as np


def test_wrapped_status_does_not_overlap_the_next_widget(detect_widget, qtbot):
    viewer, widget = detect_widget
    viewer.window._qt_window.resize(1200, 800)
    viewer.window._qt_window.show()
    viewer.add_image(np.zeros((32, 32), dtype=np.float32), name="cells")
    label = widget._status.native
    qtbot.waitUntil(lambda: label.isVisible() and label.text() == "Ready.", timeout=10_000)
    one_line = label.height()

    widget._choices.axes.value = "zyx"  # wrong for a 2-D image: the panel says why, in a long message
    text = label.text()
    assert len(text) > 60, text
    qtbot.waitUntil(lambda: label.height() > one_line, timeout=10_000)
    need = label.heightForWidth(label.width())
    assert need > one_line  # the message wraps
    below = next(
        w for w in label.parentWidget().findChildren(type(label)) if "Keep the spots" in w.text())

    def laid_out():
        return label.geometry().bottom() < below.geometry().top() and label.height() >= need

    qtbot.waitUntil(laid_out, timeout=10_000)
