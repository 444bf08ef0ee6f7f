"""The engine stays free of Qt and napari, so the CLI, the API and the widgets share it (and it runs on servers)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "superqt")

CHECK = f"""
import importlib, pkgutil, sys
import napari_spotdetect.core as core
for m in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
    importlib.import_module(m.name)
import napari_spotdetect.cli
bad = sorted({{name.split(".")[0] for name in sys.modules}} & set({FORBIDDEN!r}))
print(",".join(bad))
"""


def test_core_and_cli_import_neither_qt_nor_napari():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"the engine imported {out.stdout.strip()}"
