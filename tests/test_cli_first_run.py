"""A newcomer's first commands: the demo leaves files the next commands can use, and models says what exists."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tifffile

from napari_spotdetect.cli import build_parser, cli_syntax, main


def _next_commands(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.splitlines() if line.startswith("  ")]


@pytest.mark.slow
def test_demo_writes_tiff_and_truth_and_the_printed_evaluate_command_works(tmp_path, capsys, monkeypatch):
    # a shell where this environment is not activated (its bin folder is not on PATH), as after
    # `.venv/bin/spotdetect demo`: the printed commands must start when pasted there
    here = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != here)
    monkeypatch.setenv("PATH", path or os.defpath)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    image = tmp_path / "demo" / "demo_image.tif"
    with tifffile.TiffFile(image) as tif:
        assert tif.series[0].shape == (512, 512)
    napari_cmd, evaluate_cmd = _next_commands(out)
    assert Path(napari_cmd[-3]) == image and all(Path(p).exists() for p in napari_cmd[-3:])
    assert shutil.which(napari_cmd[0]) or napari_cmd[:2] == [sys.executable, "-m"], napari_cmd
    res = subprocess.run(evaluate_cmd, capture_output=True, text=True)
    assert res.returncode == 0 and "mean" in res.stdout, res.stderr


@pytest.mark.slow
def test_demo_without_out_uses_a_new_temporary_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    made = [p for p in tmp_path.iterdir() if p.name.startswith("spotdetect-demo-")]
    assert len(made) == 1 and (made[0] / "demo_image.tif").exists()
    assert not (tmp_path / "spotdetect-demo").exists()


def test_models_lists_bundled_downloadable_cache_and_piscis_source(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTDETECT_CACHE", str(tmp_path / "cache"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default:" in out and "deepspot:" in out and "not downloaded yet" in out
    assert str(tmp_path / "cache") in out and "wniu/Piscis" in out and "devices:" in out


def test_every_cli_option_has_help():
    import argparse

    parser = build_parser()
    missing = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


@pytest.mark.parametrize("python, cli", [
    ("use axes='yxc' here.", "use --axes yxc here."),
    ("e.g. device='cpu' or 'auto'.", "e.g. --device cpu or 'auto'."),
    ("e.g. tile_size=256.", "e.g. --tile-size 256."),
    ("e.g. min_distance=1.", "e.g. --min-distance 1."),
])
def test_hints_read_as_cli_syntax(python, cli):
    assert cli_syntax(python) == cli
