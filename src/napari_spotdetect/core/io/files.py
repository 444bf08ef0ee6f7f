"""Writing files so that a crash never leaves half of one, and fingerprinting them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it; done once, at import, not while threads write
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def atomic_write(path, write: Callable, binary: bool = False) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, flush it to disk, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's host and process id in the name: a later run can tell a kill's left-over from a live write
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_WRITER}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _writer_tag() -> str:
    import socket

    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch == "-")[:40] or "host"
    return f"{host}-{os.getpid()}"


_WRITER = _writer_tag()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(folder) -> list[Path]:
    """Delete the hidden temporary files that killed writers of this host left in ``folder``; returns them.

    A write of a live process (this one, or another run into the same folder) is left alone.
    """
    folder = Path(folder)
    host = _WRITER.rsplit("-", 1)[0]
    removed = []
    if not folder.is_dir():
        return removed
    for f in folder.glob(".*.tmp"):
        parts = f.name[: -len(".tmp")].split(".")
        tag = next((p for p in reversed(parts) if p.startswith(host + "-")), None)
        pid = tag.rsplit("-", 1)[1] if tag else ""
        if pid.isdigit() and (pid := int(pid)) != os.getpid() and not _alive(pid):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def sha256_of_files(paths: Iterable) -> str:
    """One SHA-256 over the bytes of ``paths`` in order (a single file gives that file's usual hash)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def file_sha256(path) -> str:
    return sha256_of_files([path])
