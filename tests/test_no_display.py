"""Without a display (no Xvfb, no desktop) the napari tests are skipped with the reason, and the run goes on
to its summary: before, Qt aborted the whole pytest run (exit 134, no summary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_viewer_tests_are_skipped_with_a_reason_when_no_display_can_start(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH without Xvfb, no DISPLAY, no offscreen platform
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM",
                                                               "XAUTHORITY")}
    env["PATH"] = str(tmp_path / "bin")
    res = subprocess.run([sys.executable, "-m", "pytest", "tests/widgets/test_panels.py", "-q", "-rs",
                          "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "no display could start for napari" in out and " skipped" in out and "passed" not in out, out[-3000:]
