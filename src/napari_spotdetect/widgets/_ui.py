"""Small pieces of look and feel shared by the dock widgets."""

from qtpy.QtCore import QEvent, QObject

ERROR_STYLE = "color: #e0a040;"


def show_status(label, text: str, error: bool = False) -> None:
    """Put ``text`` in a magicgui Label, amber when it describes a problem the user must fix."""
    label.value = text
    label.native.setStyleSheet(ERROR_STYLE if error else "")


def make_scrollable(container, min_height: int = 100):
    """Put everything in a magicgui Container into a vertical scroll area, so the panel never pushes napari's
    window taller than a laptop screen (all four panels at once stacked to about 2,300 px).

    Call it last in ``__init__``: widgets appended afterwards would land outside the scroll area. napari
    docks ``container.native``, so the scroll area lives inside it (magicgui's own ``scrollable=True``
    would be torn out of its scroll area by the dock).
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

    outer = container.native.layout()
    body = QWidget()
    inner = QVBoxLayout(body)
    inner.setContentsMargins(outer.contentsMargins())
    inner.setSpacing(outer.spacing())
    while outer.count():
        item = outer.takeAt(0)
        if item.widget() is not None:
            inner.addWidget(item.widget())
        elif item.layout() is not None:
            inner.addLayout(item.layout())
        elif item.spacerItem() is not None:
            inner.addItem(item.spacerItem())
    inner.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    scroll.setMinimumWidth(body.minimumSizeHint().width() + 16)
    # the body's needs grow after construction (choices filled in, texts after a run): the panel follows, so
    # nothing is cut off at the dock's edge (there is no horizontal scroll bar)
    scroll._width_follower = _WidthFollower(scroll, body)
    body.installEventFilter(scroll._width_follower)
    scroll.setMinimumHeight(min_height)
    scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return scroll


class _WidthFollower(QObject):
    """Keeps a scroll area at least as wide as its body's minimum (an event filter on the body)."""

    def __init__(self, scroll, body):
        super().__init__(scroll)
        self._scroll, self._body = scroll, body

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.LayoutRequest:
            need = self._body.minimumSizeHint().width() + 16
            if need > self._scroll.minimumWidth():
                self._scroll.setMinimumWidth(need)
        return False
