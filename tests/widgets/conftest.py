"""Fixtures for the napari tests: a tiny random network (fast), a call counter, isolated settings."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PiscisModel
from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet
from napari_spotdetect.widgets.settings import ENV_VAR


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread on the test's own thread for every napari test, whatever earlier tests left: a widget
    run with ``threads`` 1 and a reference ``detect()`` here then sum in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """Never read or write the user's own widget settings."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "settings.json"))


class CountingModel(PiscisModel):
    """A tiny random Piscis network that counts forward passes (and can be slowed down)."""

    calls = 0
    delay = 0.0

    def forward_maps(self, x):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return super().forward_maps(x)


@pytest.fixture
def tiny_model() -> CountingModel:
    torch.manual_seed(0)
    net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    return CountingModel(net, ModelInfo(name="tiny-random", arch="piscis", source="<test>"), device="cpu")


@pytest.fixture
def detect_widget(make_napari_viewer):
    """A viewer and the plugin's widget, docked through the npe2 manifest as a user would open it."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    return viewer, widget


@pytest.fixture
def run_and_wait(qtbot):
    """Press Run and wait for the worker to finish (the viewer keeps processing events meanwhile)."""

    def run(widget, timeout=600_000):  # ends when the worker does; generous for a loaded machine
        worker = widget.run()
        assert worker is not None, widget.problem()
        qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
        return worker

    return run


class MouseEvent:
    """The parts of a napari mouse event that the Points mouse callbacks read."""

    def __init__(self, type, position, modifiers=(), pos=(0, 0)):
        self.type = type
        self.position = tuple(position)
        self.modifiers = list(modifiers)
        self.pos = np.asarray(pos, dtype=float)
        self.is_dragging = type == "mouse_move"
        self.view_direction = None
        self.up_direction = None
        self.dims_displayed = [0, 1]
        self.handled = False


@pytest.fixture
def click():
    """Press and release the mouse on a layer at a world position, through napari's callback machinery."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    def wrap(*args, **kwargs):  # as the canvas does: callbacks see later events through the first one
        return ReadOnlyWrapper(MouseEvent(*args, **kwargs), exceptions=("handled",))

    def do(layer, position, modifiers=(), drag_to=None):
        mouse_press_callbacks(layer, wrap("mouse_press", position, modifiers))
        end = position
        if drag_to is not None:
            for f in np.linspace(0.25, 1.0, 4):
                end = tuple(np.asarray(position) + f * (np.asarray(drag_to) - np.asarray(position)))
                mouse_move_callbacks(layer, wrap("mouse_move", end, modifiers, pos=(50 * f, 50 * f)))
        mouse_release_callbacks(layer, wrap("mouse_release", end, modifiers,
                                                  pos=(50, 50) if drag_to is not None else (0, 0)))

    return do


@pytest.fixture
def detected_2d(detect_widget, tiny_model, run_and_wait):
    """The 2-D sample detected with the tiny model: (viewer, image layer, spots layer, true spots layer)."""
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget.set_model(tiny_model)
    run_and_wait(widget)
    spots = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    return viewer, viewer.layers["smFISH (synthetic)"], spots, viewer.layers["true spots"]

@pytest.fixture
def finetune_widget(make_napari_viewer):
    """A viewer with both dock widgets, opened through the manifest as a user would."""
    viewer = make_napari_viewer()
    _d1, detect = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    _d2, tune = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Fine-tune on my spots")
    return viewer, detect, tune


@pytest.fixture(autouse=True)
def _no_modal_questions(monkeypatch):
    """A question box would wait forever for a click under Xvfb: a test that triggers one unasked fails."""
    from napari_spotdetect.widgets.correct_widget import CorrectWidget

    def unexpected(title, text):
        raise AssertionError(f"unexpected question to the user: {title}: {text}")

    monkeypatch.setattr(CorrectWidget, "confirm", staticmethod(unexpected))


def _no_display_reason() -> str | None:
    """Why a Qt window cannot start here (None when it can): Qt aborts the whole pytest run otherwise.

    Asked of a child process, since a failing QApplication kills its process (exit 134, no summary).
    """
    import os
    import subprocess
    import sys

    probe = "from qtpy.QtWidgets import QApplication; app = QApplication([]); print('ok')"
    try:
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             env=os.environ.copy())
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"no display could start for napari ({err})"
    if res.returncode == 0 and "ok" in res.stdout:
        return None
    last = (res.stderr.strip().splitlines() or ["no message"])[-1][:160]
    return (f"no display could start for napari (Qt exited with {res.returncode}: {last}); install Xvfb "
            "(e.g. apt install xvfb, used by pytest-xvfb), run under a desktop, or set QT_QPA_PLATFORM=offscreen")


def pytest_collection_modifyitems(config, items):
    """Every test here starts a napari viewer: mark it ``widgets`` (``-m "not widgets"`` skips them all), and
    skip them all, with the reason, where no display can start."""
    here = str(__import__("pathlib").Path(__file__).parent)
    mine = [item for item in items if str(item.path).startswith(here)]
    for item in mine:
        item.add_marker(pytest.mark.widgets)
    if mine:
        reason = _no_display_reason()
        if reason:
            for item in mine:
                item.add_marker(pytest.mark.skip(reason=reason))
