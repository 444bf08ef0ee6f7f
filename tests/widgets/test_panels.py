"""The panels fit a laptop screen (1366 x 768): each scrolls, and all four can share one tabbed dock."""

from __future__ import annotations

from qtpy.QtWidgets import QScrollArea

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


PANELS = ("Detect spots", "Correct spots", "Check against ground truth", "Fine-tune on my spots")
LAPTOP = (1366, 768)


def _fits(viewer) -> int:
    window = viewer.window._qt_window
    window.resize(*LAPTOP)
    return window.minimumSizeHint().height()


def test_all_four_panels_docked_at_once_fit_a_laptop_screen(make_napari_viewer):
    viewer = make_napari_viewer()
    widgets = [viewer.window.add_plugin_dock_widget("napari-spotdetect", name)[1] for name in PANELS]
    assert _fits(viewer) <= LAPTOP[1] - 40  # room for the window's title bar
    for w in widgets:  # every panel scrolls instead of squeezing or growing the window
        assert w.native.findChild(QScrollArea) is not None, type(w).__name__


def test_tabbed_dock_holds_the_folder_tab_and_the_four_panels_and_fits(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    assert [panels.tabs.tabText(i) for i in range(panels.tabs.count())] == ["Folder", "Detect", "Correct", "Check",
                                                                         "Fine-tune", "Measure", "Filter"]
    assert _fits(viewer) <= LAPTOP[1] - 40
    panels.show_tab("Fine-tune")
    assert panels.tabs.currentWidget() is panels.finetune.native
    points = viewer.add_points([[1.0, 2.0]], name="spots: later")  # layer lists follow, in every tab
    assert points in panels.correct.layer_choices() and points in panels.qc.prediction_choices()


def test_layer_list_elides_long_names_in_the_middle(make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    view = viewer.window._qt_viewer.layers
    assert view.textElideMode() != Qt.TextElideMode.ElideMiddle
    viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    qtbot.waitUntil(lambda: view.textElideMode() == Qt.TextElideMode.ElideMiddle, timeout=WAIT_MS)


def test_measure_and_filter_scroll_beside_the_tabs_and_live_in_them(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    extra = [viewer.window.add_plugin_dock_widget("napari-spotdetect", name)[1]
             for name in ("Measure and count spots", "Filter spots by feature")]
    assert _fits(viewer) <= LAPTOP[1] - 40  # docked beside the tabs, the window still fits a laptop screen
    for w in extra:
        assert w.native.findChild(QScrollArea) is not None, type(w).__name__
    panels.show_tab("Measure")
    assert type(panels.tabs.currentWidget().findChild(QScrollArea).widget()).__name__ == "QWidget"
    points = viewer.add_points([[1.0, 2.0]], name="spots", features={"score": [0.5]})
    panels.show_tab("Filter")
    panels.panels["Filter"].set_layer(points)
    assert panels.panels["Filter"].feature_choices == ["score"]
