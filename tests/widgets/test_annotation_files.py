"""The annotation files a session may overwrite belong to its viewer: a second viewer asks before replacing."""

from __future__ import annotations

import numpy as np

from napari_spotdetect.widgets.annotation_files import AnnotationFiles
from napari_spotdetect.widgets.correct_widget import CorrectWidget


def test_a_second_viewer_asks_before_replacing_the_first_ones_annotation(make_napari_viewer, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(CorrectWidget, "confirm", staticmethod(lambda title, text: asked.append(text) or False))
    truth_file = tmp_path / "cell.csv"
    written = []
    for n_spots in (3, 5):
        viewer = make_napari_viewer()
        viewer.add_image(np.zeros((32, 32), np.float32), name="cell")
        pts = viewer.add_points(np.arange(2 * n_spots, dtype=float).reshape(-1, 2) + 4, name="spots")
        _dock, correct = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
        correct.set_folder(tmp_path)
        correct.set_layer(pts)
        correct._copy.native.click()  # Start ground truth
        written.append(truth_file.read_text())
    assert len(asked) == 1 and "not written in this session" in asked[0]  # the first viewer was never asked
    assert written[1] == written[0]  # refused: the first viewer's annotation is kept as it was


def test_store_backs_up_once_and_trusts_the_file_a_layer_came_from(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("y,x\n1,2\n")
    files = AnnotationFiles()
    assert files.needs_consent(f) and not files.needs_consent(f, opened_from=f)
    assert [p.name for p in files.claim(f)] == ["a.csv.bak"]
    f.write_text("y,x\n3,4\n")
    assert files.claim(f) == [] and not files.needs_consent(f)  # one backup: the version before the session
    assert (tmp_path / "a.csv.bak").read_text() == "y,x\n1,2\n"
