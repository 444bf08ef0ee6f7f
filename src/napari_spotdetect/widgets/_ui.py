"""Small pieces of look and feel shared by the dock widgets."""

ERROR_STYLE = "color: #e0a040;"


def show_status(label, text: str, error: bool = False) -> None:
    """Put ``text`` in a magicgui Label, amber when it describes a problem the user must fix."""
    label.value = text
    label.native.setStyleSheet(ERROR_STYLE if error else "")
