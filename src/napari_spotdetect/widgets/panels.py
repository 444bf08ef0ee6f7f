"""All panels in one tabbed dock: folder, detect, correct, check, fine-tune, measure, filter, one at a time.

Opened separately, the panels stack in napari's dock area; on a 768 px screen that leaves each a slit
(each scrolls, but it is cramped). The tabs keep one panel in view with the full height, and the folder
workflow (open, detect, correct, mark done, next) goes tab to tab.
"""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from ._ui import stop_choice_updates, when_closed
from .correct_widget import CorrectWidget
from .detect_widget import DetectWidget
from .filter_widget import FilterWidget
from .finetune_widget import FinetuneWidget
from .folder_widget import FolderWidget, done_images
from .measure_widget import MeasureWidget
from .qc_widget import QCWidget

TABS = (("Detect", DetectWidget), ("Correct", CorrectWidget), ("Check", QCWidget), ("Fine-tune", FinetuneWidget),
        ("Measure", MeasureWidget), ("Filter", FilterWidget))


class SpotDetectPanels(QWidget):
    """Dock widget (npe2 command ``napari-spotdetect.panels``): the panels as tabs."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self.tabs = QTabWidget()
        self.panels = {}
        for title, cls in TABS:
            panel = cls(viewer)
            self.panels[title] = panel
            self.tabs.addTab(panel.native, title)
        self.folder = FolderWidget(viewer, self.detect, self.correct)
        self.tabs.insertTab(0, self.folder.native, "Folder")
        self.finetune.examples.done_source = self._done_source
        self.finetune.examples.source.reset_choices()
        self.folder.on_train = self._to_training
        self.tabs.setCurrentIndex(1)  # Detect: the folder loop is there when wanted
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self._close_watcher = when_closed(self, self.close_panels)
        self._closed = False

    def close_panels(self, *_) -> None:
        """The dock's x: every tab stops its work and lets go of the viewer (keys, layer events, workers).

        napari only takes this widget out of its dock; the panels inside would otherwise go on running.
        """
        if self._closed:
            return
        self._closed = True
        stop_choice_updates(self._viewer, self)
        self.folder.close_panel()
        for panel in self.panels.values():
            if hasattr(panel, "close_panel"):
                panel.close_panel()
            elif getattr(panel, "running", False):  # fine-tuning: stop as its Stop button does
                panel.stop()

    def reset_choices(self, *_) -> None:
        """napari calls this on docked widgets when layers change: pass it on, so every panel's layer lists
        stay current (a docked magicgui panel gets it from napari directly)."""
        for panel in self.panels.values():
            panel.reset_choices()

    @property
    def detect(self) -> DetectWidget:
        return self.panels["Detect"]

    @property
    def correct(self) -> CorrectWidget:
        return self.panels["Correct"]

    @property
    def qc(self) -> QCWidget:
        return self.panels["Check"]

    @property
    def finetune(self) -> FinetuneWidget:
        return self.panels["Fine-tune"]

    def show_tab(self, title: str) -> None:
        self.tabs.setCurrentIndex(["Folder", *(t for t, _ in TABS)].index(title))

    def _to_training(self) -> None:
        source = self.finetune.examples.source
        source.reset_choices()
        source.value = "done"
        self.show_tab("Fine-tune")

    def _done_source(self):
        """(folder, names of the images marked done) for 'train on everything marked done'."""
        folder = self.folder.folder
        return (folder, done_images(folder)) if folder is not None else (None, [])
