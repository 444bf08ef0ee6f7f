"""Issue 23: torch threads chosen from the idle cores and set by ``--threads`` on every command that runs a
network; the package metadata in the form the build tools keep accepting."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_spotdetect.cli import build_parser, main
from napari_spotdetect.core.training.synthetic import synthetic_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def keep_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_piscis):
    from napari_spotdetect.core.weights.native import save_model

    return save_model(tiny_piscis, tmp_path_factory.mktemp("model") / "tiny.pt")


def _predict(tmp_path, tiny_file, *extra) -> dict:
    np.save(tmp_path / "a.npy", synthetic_image((64, 64), n_spots=5, seed=1)[0])
    out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
    assert main(["predict", str(tmp_path / "a.npy"), "--model", str(tiny_file), "--out", str(out), *extra]) == 0
    return json.loads((out / "a.provenance.json").read_text())


def test_threads_option_is_used_and_recorded(tmp_path, tiny_file, keep_threads, capsys):
    assert _predict(tmp_path, tiny_file, "--threads", "1")["threads"] == 1
    assert "1 thread(s)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "a.npy"), "--model", str(tiny_file), "--out", str(tmp_path / "z"),
                 "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "not a number of threads" in err and "--threads 1" in err


def test_default_threads_are_the_idle_cores(tmp_path, tiny_file, keep_threads, monkeypatch):
    torch.set_num_threads(max(2, torch.get_num_threads()))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores) + 3, 0.0, 0.0))  # other work on every core
    assert _predict(tmp_path, tiny_file)["threads"] == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine: torch's own choice
    torch.set_num_threads(2)
    assert _predict(tmp_path, tiny_file)["threads"] == min(2, cores)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own setting wins
    assert _predict(tmp_path, tiny_file)["threads"] == 1


def test_every_command_that_runs_a_network_has_threads_in_its_help():
    subs = build_parser()._subparsers._group_actions[0].choices
    for name in ("predict", "demo", "train", "finetune"):
        text = subs[name].format_help()
        assert "--threads N" in text and "idle" in text, name
    assert "--threads" not in subs["evaluate"].format_help()


def test_licence_is_an_spdx_expression_with_its_file_and_urls_are_given():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    from setuptools.warnings import SetuptoolsDeprecationWarning

    tomllib = pytest.importorskip("tomllib")
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = next(r for r in doc["build-system"]["requires"] if r.startswith("setuptools"))
    assert tuple(int(v) for v in floor.split(">=")[1].split(".")[:2]) >= (77, 0)  # PEP 639 support
    with warnings.catch_warnings():
        # the table form `license = {text = ...}` warns (an error after 2027-02-18); this must not
        warnings.simplefilter("error", SetuptoolsDeprecationWarning)
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "BSD-3-Clause"
    assert all((ROOT / f).is_file() for f in dist.metadata.license_files)
    assert {"Homepage", "Bug Tracker", "Documentation"} <= set(dist.metadata.project_urls)
    assert not any(c.startswith("License ::") for c in doc["project"]["classifiers"])  # conflicts with PEP 639
    assert any(c.startswith("Intended Audience") for c in doc["project"]["classifiers"])
