"""Our keyboard shortcuts as napari actions, so napari lists them (Preferences > Shortcuts, 'Viewer key bindings').

Each shortcut is an action of napari's action manager named ``napari-spotdetect:<what>``, bound on the
viewer, with the description napari shows. A panel registers what the action does for *its* viewer
(:func:`connect`); the action finds the panel of the viewer it was pressed in, and does nothing in a viewer
without one. The correction panel also binds the same keys on the layer it corrects: a Points layer's own
keys (napari's ``A`` selects every point) come before the viewer's, and the layer's binding wins there.
"""

from __future__ import annotations

import weakref

from .per_viewer import PerViewer

#: action name -> (default key, description shown by napari)
ACTIONS = {
    "napari-spotdetect:add_spot_at_cursor": ("a", "Spot Detect: add a spot at the mouse cursor (any tool)"),
    "napari-spotdetect:delete_spot_at_cursor": ("d", "Spot Detect: delete the spot under the mouse cursor"),
    "napari-spotdetect:next_doubtful_spot": ("n", "Spot Detect: jump to the next doubtful spot"),
    "napari-spotdetect:previous_doubtful_spot": ("Shift-n", "Spot Detect: jump to the previous doubtful spot"),
    "napari-spotdetect:toggle_snapping": ("g", "Spot Detect: snapping of added spots on/off"),
    "napari-spotdetect:delete_selected_spots": ("x", "Spot Detect: delete the selected spots"),
    "napari-spotdetect:undo_correction": ("Control-z", "Spot Detect: undo the last correction"),
    "napari-spotdetect:redo_correction": ("Control-Shift-z", "Spot Detect: redo"),
    "napari-spotdetect:done_and_next_image": ("Control-Enter", "Spot Detect: mark this image done, open the next"),
}

_callbacks = PerViewer(dict)  # viewer -> {action name: weak reference to the callback}
_registered = False


def key_of(name: str) -> str:
    return ACTIONS[name][0]


def _command(name: str):
    from napari.viewer import Viewer

    def run(viewer: Viewer) -> None:
        ref = _table(viewer).get(name)
        fn = ref() if ref is not None else None
        if fn is not None:
            fn()

    run.__name__ = name.split(":", 1)[1]  # napari's shortcut overlay matches actions by function name
    return run


def register_actions() -> None:
    """Register every action once per process (the panels call this; napari keeps actions for its lifetime)."""
    global _registered
    if _registered:
        return
    from napari.utils.action_manager import action_manager
    from napari.viewer import Viewer

    for name, (key, description) in ACTIONS.items():
        action_manager.register_action(name, _command(name), description, Viewer)
        action_manager.bind_shortcut(name, key)
    _registered = True


def connect(viewer, name: str, fn) -> None:
    """Make action ``name`` call ``fn()`` in ``viewer`` (a bound method is held weakly)."""
    if name not in ACTIONS:
        raise KeyError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}")
    register_actions()
    ref = weakref.WeakMethod(fn) if hasattr(fn, "__self__") else (lambda f=fn: f)
    _table(viewer, create=True)[name] = ref


def disconnect(viewer, name: str, fn) -> None:
    """Undo :func:`connect` for a panel that closes: the key then does nothing in ``viewer`` (unless another
    panel connected its own handler since)."""
    table = _table(viewer)
    ref = table.get(name)
    if ref is not None and ref() in (fn, None):
        del table[name]


def _table(viewer, create: bool = False) -> dict:
    table = _callbacks.get(viewer, create)
    return {} if table is None else table


def listed_shortcuts() -> dict:
    """{action name: [keys]} as napari's action manager holds them (what Preferences > Shortcuts shows)."""
    from napari.utils.action_manager import action_manager

    return {name: [str(k) for k in action_manager._shortcuts.get(name, [])] for name in ACTIONS
            if name in action_manager._actions}
