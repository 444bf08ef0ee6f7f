"""Packaging facts a release depends on: one version, a valid npe2 manifest with menus and categories."""

from __future__ import annotations

from pathlib import Path

import pytest

import napari_spotdetect

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_spotdetect" / "napari.yaml"


def test_the_version_is_written_once():
    from setuptools.config.expand import read_attr

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert read_attr("napari_spotdetect.__version__", package_dir={"": "src"}, root_dir=ROOT) == \
        napari_spotdetect.__version__


def test_the_manifest_is_valid_and_every_panel_is_in_a_layers_menu():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)  # raises on an invalid manifest, as `npe2 validate` does
    assert pm.categories and {str(c) for c in pm.categories} <= {"Image Processing", "Annotation", "Measurement"}
    in_menus = {item.command for items in pm.contributions.menus.values() for item in items
                if getattr(item, "command", None)}
    widgets = {w.command for w in pm.contributions.widgets}
    assert widgets <= in_menus, widgets - in_menus
    assert any(key.startswith("napari/layers/") for key in pm.contributions.menus)
