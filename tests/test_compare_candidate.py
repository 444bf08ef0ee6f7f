"""``benchmarks/compare_piscis.py``'s candidate engines: a model file beside the bundled model, never in its place."""

from __future__ import annotations

import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_piscis


def test_candidate_engines_need_a_file_and_are_not_run_by_default(capsys):
    with pytest.raises(SystemExit) as e:
        compare_piscis.main(["--engines", "default-fast", "candidate-fast"])
    assert e.value.code == 2 and "--candidate" in capsys.readouterr().err
    ap_default = [e for e in compare_piscis.ENGINES if not e.startswith("candidate")]
    assert "default-fast" in ap_default and "candidate" not in ap_default


def test_a_candidate_runs_its_own_file_and_the_default_engines_keep_the_bundled_model(monkeypatch, tmp_path):
    started = []

    class FakeWorker:
        def __init__(self, name, argv, env=None):
            started.append((name, [str(a) for a in argv]))

    monkeypatch.setattr(compare_piscis, "Worker", FakeWorker)
    monkeypatch.setitem(compare_piscis.MODEL_FILES, "candidate", str(tmp_path / "cand.pt"))
    for name in ("default-fast", "candidate-fast", "candidate"):
        compare_piscis.start_worker(name, tmp_path / "img.npy", 1, "cpu")
    paths = {name: argv[argv.index("--_worker") + 1] for name, argv in started}
    assert paths == {"default-fast": "default", "candidate-fast": str(tmp_path / "cand.pt"),
                     "candidate": str(tmp_path / "cand.pt")}
    speeds = {name: argv[argv.index("--_worker") + 2] for name, argv in started}
    assert speeds == {"default-fast": "fast", "candidate-fast": "fast", "candidate": "exact"}
