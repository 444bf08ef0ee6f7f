"""Small pieces of look and feel shared by the dock widgets."""

from qtpy.QtCore import QEvent, QObject

ERROR_STYLE = "color: #e0a040;"


class CloseWatcher(QObject):
    """Calls ``on_close`` when the watched widget loses its parent: napari's way of closing a dock widget
    (its x takes the widget out of the dock, which is deleted later)."""

    def __init__(self, on_close):
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self._on_close()
        return False


def when_closed(native, on_close) -> CloseWatcher:
    """Call ``on_close(*_)`` when the Qt widget ``native`` leaves its dock or is deleted; keep the result alive.

    ``on_close`` should be a bound method: PyQt crashed collecting a lambda connected to ``destroyed``.
    """
    watcher = CloseWatcher(on_close)
    native.installEventFilter(watcher)
    native.destroyed.connect(on_close)
    return watcher


def disconnect_all(*pairs) -> None:
    """``emitter.disconnect(handler)`` for each pair, ignoring those already gone (closing a panel twice)."""
    for emitter, handler in pairs:
        try:
            emitter.disconnect(handler)
        except (TypeError, RuntimeError, ValueError):
            pass


def stop_choice_updates(viewer, widget) -> None:
    """napari connects a docked widget's ``reset_choices`` to the layer list's events and never disconnects
    it: a closed panel then ran at exit, on deleted Qt objects ("wrapped C/C++ object ... deleted")."""
    events = viewer.layers.events
    disconnect_all(*((getattr(events, name), widget.reset_choices)
                     for name in ("inserted", "removed", "reordered", "renamed")))


def show_status(label, text: str, error: bool = False) -> None:
    """Put ``text`` in a magicgui Label, amber when it describes a problem the user must fix."""
    label.value = text
    label.native.setStyleSheet(ERROR_STYLE if error else "")
    keep_wrapped_text_whole(label)


class _WrapHeight(QObject):
    """Keeps a word-wrapped QLabel as tall as its text needs at its current width (an event filter on it)."""

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Resize:
            _fit_height(obj)
        return False


def _fit_height(lab) -> None:
    need = lab.heightForWidth(max(lab.width(), 50))
    if need > 0 and need != lab.minimumHeight():
        lab.setMinimumHeight(need)


def keep_wrapped_text_whole(label) -> None:
    """A wrapped magicgui Label in a narrow dock got the height of one line and cut its text off at the bottom
    (its layout never asked for the height the wrapped text needs): it follows its width and text from now on."""
    lab = label.native
    if not lab.wordWrap():
        return
    if getattr(lab, "_spotdetect_wrap", None) is None:
        lab._spotdetect_wrap = _WrapHeight(lab)
        lab.installEventFilter(lab._spotdetect_wrap)
        label.changed.connect(lambda *_: _fit_height(lab))
    _fit_height(lab)


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
        widget = outer.itemAt(0).widget()
        if widget is not None:
            # removeWidget deletes the old layout item before the new layout makes one: Qt tells only the first
            # item made for a widget that its size changed, so an old item still alive (takeAt) kept that role
            # and the new one answered one line's height forever (a wrapped status ran over the widget below)
            outer.removeWidget(widget)
            inner.addWidget(widget)
            continue
        item = outer.takeAt(0)
        if item.layout() is not None:
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


def compact_combos(*combos) -> None:
    """Let magicgui combo boxes shrink below their longest item (layer and model names can be long): in a
    scrolling panel a wide item would otherwise widen it past the dock and cut off its right side."""
    from qtpy.QtWidgets import QComboBox

    for c in combos:
        c.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        c.native.setMinimumContentsLength(8)


def wrap_labels(*labels) -> None:
    """Word-wrap magicgui Labels. Call it before they go into a scroll area, which otherwise takes its minimum
    width from their unwrapped text."""
    from qtpy.QtWidgets import QSizePolicy

    for lab in labels:
        lab.native.setWordWrap(True)
        lab.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        lab.native.setMinimumWidth(200)


def keep_wide_enough(scroll, body) -> None:
    """Keep the scroll area ``scroll`` at least as wide as its ``body``'s minimum, which grows after construction
    (choices filled in, rows shown, texts after a run): nothing is cut off at the dock's right edge."""
    scroll._width_follower = _WidthFollower(scroll, body)
    body.installEventFilter(scroll._width_follower)
