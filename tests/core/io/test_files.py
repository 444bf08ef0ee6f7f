"""Atomic writes: whole files or nothing, with the permissions an ordinary write would give."""

import stat

import pytest

from napari_spotdetect.core.io import files
from napari_spotdetect.core.io.files import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = atomic_write_text(tmp_path / "a.csv", "y,x\n1,2\n")

    def broken(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, broken)
    assert p.read_text() == "y,x\n1,2\n"
    assert [q.name for q in tmp_path.iterdir()] == ["a.csv"]


def test_new_files_get_the_umask_mode_and_existing_ones_keep_theirs(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_UMASK", 0o022)  # the umask is read once, at import
    p = atomic_write_text(tmp_path / "new.csv", "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # not mkstemp's private 0600
    p.chmod(0o640)
    atomic_write_text(p, "y")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640 and p.read_text() == "y"
