"""State that belongs to one napari viewer (its session's models, its shortcut handlers), held weakly.

A napari ``Viewer`` is not hashable, and plugin widgets receive napari's ``PublicOnlyProxy`` of it, so the
viewer is unwrapped and compared by identity; an entry goes when its viewer is garbage-collected.
"""

from __future__ import annotations

import weakref


class PerViewer:
    """``PerViewer(factory).get(viewer)``: the viewer's object, made by ``factory()`` on first use."""

    def __init__(self, factory):
        self._factory = factory
        self._entries: list[tuple[weakref.ref, object]] = []

    def get(self, viewer, create: bool = True):
        viewer = getattr(viewer, "__wrapped__", viewer)
        self._entries = [(v, obj) for v, obj in self._entries if v() is not None]
        for v, obj in self._entries:
            if v() is viewer:
                return obj
        if not create:
            return None
        obj = self._factory()
        self._entries.append((weakref.ref(viewer), obj))
        return obj
