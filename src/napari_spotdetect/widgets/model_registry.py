"""Models made in a viewer's session, shared between its fine-tuning and detection widgets (one registry per viewer).

The fine-tuning widget adds a model here when training ends; nothing else changes until the user presses
"Use this model", which asks every listening detection widget to switch to it (and maybe detect again).
Plain callbacks held by weak reference, so a closed widget neither stays alive nor gets called: a magicgui
widget is not a QObject, so Qt cannot disconnect it for us.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ..core.models.base import SpotModel
from .per_viewer import PerViewer

log = logging.getLogger(__name__)


@dataclass
class SessionModel:
    """A model trained in this session (weights in memory), or in an earlier one (read from ``path`` when
    first used: a folder remembers the models made for it)."""

    key: str  # stable id used as a combo-box value
    _model: SpotModel | None
    path: Path | None
    card: dict = field(default_factory=dict)
    name: str = ""

    @property
    def model(self) -> SpotModel:
        if self._model is None:
            from ..core.models.zoo import load_model

            self._model = load_model(str(self.path))
        return self._model

    @property
    def source(self):
        """What a detection loads: the model in memory, or its file (read in the worker, not the GUI thread)."""
        return self._model if self._model is not None else str(self.path)

    @property
    def label(self) -> str:
        f1 = (self.card.get("validation") or {}).get("f1")
        name = self.name or self.model.info.name
        return f"Fine-tuned: {name}" + (f" (val. F1 {f1:.2f})" if f1 is not None else "")


class _Callbacks:
    """A list of weakly held callbacks; callbacks of deleted Qt widgets are dropped, not fatal."""

    def __init__(self):
        self._refs: list = []

    def connect(self, fn) -> None:
        ref = weakref.WeakMethod(fn) if hasattr(fn, "__self__") else (lambda f=fn: f)
        self._refs.append(ref)

    def disconnect(self, fn) -> None:
        self._refs = [r for r in self._refs if r() is not None and r() != fn]

    def emit(self, *args) -> list:
        results = []
        for ref in list(self._refs):
            fn = ref()
            if fn is None:
                self._refs.remove(ref)
                continue
            try:
                results.append(fn(*args))
            except RuntimeError as err:  # "wrapped C/C++ object ... has been deleted": the widget was closed
                if "deleted" not in str(err):
                    raise
                log.debug("dropping the callback of a closed widget: %s", err)
                self._refs.remove(ref)
        return results

    def __len__(self) -> int:
        return sum(ref() is not None for ref in self._refs)


class ModelRegistry:
    """The session's fine-tuned models, and the model of the last detection (to fine-tune from)."""

    def __init__(self):
        self.models: dict[str, SessionModel] = {}
        self.last_detection_model: SpotModel | None = None
        self.added = _Callbacks()  # fn(entry): a new model to offer
        self.use_requested = _Callbacks()  # fn(entry, detect_again) -> bool: switch to it (True if done)

    def add(self, model: SpotModel, path=None) -> SessionModel:
        key = f"session:{len(self.models) + 1}"
        entry = SessionModel(key, model, Path(path) if path else None, dict(model.info.card or {}))
        self.models[key] = entry
        self.added.emit(entry)
        return entry

    def restore(self, path, name: str, card: dict | None = None) -> SessionModel | None:
        """Offer a model file made in an earlier session (not read until used); None if it is offered already."""
        path = Path(path)
        if any(e.path is not None and e.path.resolve() == path.resolve() for e in self.models.values()):
            return None
        key = f"session:{len(self.models) + 1}"
        entry = SessionModel(key, None, path, dict(card or {}), name)
        self.models[key] = entry
        self.added.emit(entry)
        return entry

    def use(self, entry: SessionModel, detect_again: bool = False) -> int:
        """Ask the detection widgets to use ``entry``; returns how many did."""
        return sum(bool(r) for r in self.use_requested.emit(entry, detect_again))

    def clear(self) -> None:
        self.models.clear()
        self.last_detection_model = None


_registries = PerViewer(ModelRegistry)


def registry_for(viewer) -> ModelRegistry:
    """The models of ``viewer``'s session: its fine-tune and detect panels share them, other viewers do not."""
    return _registries.get(viewer)
