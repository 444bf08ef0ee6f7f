"""Our shortcuts are napari actions: listed in Preferences > Shortcuts, and they act in their own viewer."""

from __future__ import annotations

import numpy as np

from napari_spotdetect.widgets import shortcuts as S


def _listed_in_preferences() -> dict:
    """{description: keybinding text} of the 'Viewer key bindings' table napari's Preferences show."""
    from napari._qt.widgets.qt_keyboard_settings import ShortcutEditor

    editor = ShortcutEditor()
    editor._set_table(editor.VIEWER_KEYBINDINGS)
    t = editor._table
    out = {t.item(r, editor._action_name_col).text(): (t.item(r, editor._shortcut_col).text()
                                                       if t.item(r, editor._shortcut_col) else "")
           for r in range(t.rowCount()) if t.item(r, editor._action_name_col) is not None}
    editor.deleteLater()
    return out


def test_every_shortcut_is_listed_where_napari_lists_shortcuts(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    listed = _listed_in_preferences()
    for name, (_key, description) in S.ACTIONS.items():
        assert description in listed, (name, sorted(listed)[:5])
        assert listed[description], f"{name}: no keybinding shown"
    assert [k.lower() for k in S.listed_shortcuts()["napari-spotdetect:add_spot_at_cursor"]] == ["a"]


def test_the_action_adds_a_spot_in_its_own_viewer(make_napari_viewer):
    from napari.utils.key_bindings import coerce_keybinding

    viewer = make_napari_viewer()
    other = make_napari_viewer()  # a second viewer, created last: the key still acts where it was pressed
    img = viewer.add_image(np.zeros((40, 40), np.float32), name="img")
    pts = viewer.add_points(np.array([[5.0, 5.0]]), name="spots")
    _dock, correct = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    correct.set_layer(pts)
    correct.snap.value = False
    viewer.cursor.position = (20.0, 30.0)
    viewer.layers.selection.active = img  # the image is active: the viewer-level action still reaches the panel
    # the key as napari dispatches it: the viewer's class keymap, called with the viewer it was pressed in
    press = type(viewer).class_keymap[coerce_keybinding(S.key_of("napari-spotdetect:add_spot_at_cursor"))]
    press(viewer)
    assert len(pts.data) == 2
    np.testing.assert_allclose(pts.data[-1], [20.0, 30.0])
    press(other)  # no correction panel there: nothing happens, nothing fails
    assert len(pts.data) == 2


def test_a_adds_to_the_corrected_layer_with_another_points_layer_selected(make_napari_viewer):
    """A with another Points layer selected ran napari's "select all" on it (issue 23, item 11)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 40), np.float32), name="img")
    truth = viewer.add_points(np.array([[5.0, 5.0]]), name="truth")
    other = viewer.add_points(np.array([[10.0, 10.0], [12.0, 30.0]]), name="other")
    _dock, correct = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    correct.set_layer(truth)
    correct.snap.value = False
    keys = viewer.window._qt_viewer._key_map_handler  # what the canvas's key presses go through
    viewer.layers.selection.active = other
    viewer.cursor.position = (20.0, 30.0)
    keys.press_key("a")
    keys.release_key("a")
    assert len(truth.data) == 2 and len(other.data) == 2
    np.testing.assert_allclose(truth.data[-1], [20.0, 30.0])
    assert not other.selected_data  # napari's select-all did not run
    correct.close_panel()  # the panel gone, the other layer's own A is back
    viewer.layers.selection.active = truth
    viewer.layers.selection.active = other
    keys.press_key("a")
    keys.release_key("a")
    assert set(other.selected_data) == {0, 1}
    assert len(truth.data) == 2
