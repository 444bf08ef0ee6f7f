"""Which annotation files a viewer's session may write over: the never-lose-an-annotation rule, Qt-free.

A ground-truth CSV that exists and that this session did not write is someone's work: it is overwritten only
when the layer was opened from it or the user agreed, and a ``.bak`` copy of it (with its rejected spots and
provenance) is kept before the session's first write. Each viewer is its own session (a second viewer, or a
napari started again, remembers nothing it did not write itself).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..core.io.spots_io import provenance_path
from .per_viewer import PerViewer


class AnnotationFiles:
    """The annotation files (resolved paths) one session wrote, or was allowed to overwrite."""

    def __init__(self):
        self.written: set[str] = set()

    def needs_consent(self, path, opened_from=None) -> bool:
        """True when ``path`` holds an annotation this session neither wrote nor opened: ask before writing."""
        resolved = resolve(path)
        if resolved in self.written or not Path(resolved).exists():
            return False
        return not (opened_from and resolve(opened_from) == resolved)

    def claim(self, path) -> list[Path]:
        """This session writes ``path`` from now on; the first time, an existing file is backed up. Returns
        the backups made."""
        resolved = resolve(path)
        made = [] if resolved in self.written else backup(Path(resolved))
        self.written.add(resolved)
        return made


def resolve(path) -> str:
    return str(Path(path).expanduser().resolve())


def backup(truth: Path) -> list[Path]:
    """Copy the truth CSV, its rejected file and provenance to ``*.bak``: the version before this session's
    first write (one backup per file, so a folder worked on over many sessions does not fill up)."""
    out = []
    for f in (truth, truth.with_name(truth.stem + ".rejected.csv"), provenance_path(truth)):
        if f.exists():
            bak = f.with_name(f.name + ".bak")
            shutil.copy2(f, bak)
            out.append(bak)
    return out


_stores = PerViewer(AnnotationFiles)


def files_for(viewer) -> AnnotationFiles:
    """The annotation files of ``viewer``'s session (shared by every panel of that viewer)."""
    return _stores.get(viewer)
