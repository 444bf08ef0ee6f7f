"""The folder loop (as in the cellpose GUI): open a folder, and for each image detect, correct, mark done, next.

Each image's ground truth is saved beside it (``<image>.csv``, after every edit, by the correction panel);
which images are done is kept in ``spotdetect_folder.json`` in the folder, so the work resumes after a
restart, and the fine-tune panel can train on exactly the images marked done. This panel only opens and
closes layers and calls the detection and correction panels; it lives in the tabbed dock with them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton
from qtpy.QtWidgets import QListWidget

from .. import layer_keys as K
from ..core.errors import SpotDetectError
from ..core.groundtruth import annotations as A
from ..core.io.spots_io import IMAGE_SUFFIXES, atomic_write_text, read_image, read_spots_csv, write_spots_csv
from . import layers as L
from . import shortcuts as S
from ._ui import disconnect_all, make_scrollable, show_status
from .model_registry import registry_for

log = logging.getLogger(__name__)

STATE_FILE = "spotdetect_folder.json"
#: the detections the ground truth was started from, one CSV (+ provenance) per image: QC compares the truth
#: with them after a restart. A sub-folder, so that no tool takes them for an image's annotation.
DETECTIONS_DIR = "spotdetect_detected"
#: the key that marks the image done and opens the next one (bound on the viewer)
DONE_KEY = S.key_of("napari-spotdetect:done_and_next_image")


def folder_images(folder) -> list[Path]:
    """The images of a folder, sorted by name (hidden files left out)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def load_state(folder) -> dict:
    try:
        data = json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {"done": {}}
    if not isinstance(data, dict) or not isinstance(data.get("done"), dict):
        return {"done": {}}
    return data


def done_images(folder) -> list[str]:
    """File names of the images marked done whose annotation is still beside them."""
    folder = Path(folder)
    return [n for n in load_state(folder)["done"]
            if (folder / n).is_file() and (folder / n).with_suffix(".csv").is_file()]


class FolderWidget(Container):
    """The folder tab of the tabbed dock; ``detect`` and ``correct`` are the panels it drives."""

    def __init__(self, viewer, detect, correct):
        super().__init__(labels=False)
        self._viewer = viewer
        self._detect = detect
        self._correct = correct
        self.images: list[Path] = []
        self.state: dict = {"done": {}}
        self.current: int | None = None
        self._layers: list = []  # layers made for the current image (closed when moving on)
        self._pending = None  # the image layer whose detection should become ground truth when it arrives

        self._folder = FileEdit(label="Folder", mode="d", tooltip="A folder of images (TIFF, PNG, .npy).")
        self._auto = CheckBox(value=True, text="Detect when an image opens, then correct a copy",
                              tooltip="Runs 'Detect spots' with its current model and starts the ground truth "
                                      "from the result. An image with an annotation beside it opens that instead.")
        self._images_list = QListWidget()
        self._images_list.setMinimumHeight(120)
        self._images_list.itemDoubleClicked.connect(lambda item: self.open_image(self._images_list.row(item)))
        self._prev = PushButton(text="◀ Previous", tooltip="Open the image before this one (its annotation is "
                                                            "saved first).")
        self._open = PushButton(text="Open selected", tooltip="Open the image selected in the list (the current "
                                                              "one's annotation is saved first).")
        self._done = PushButton(text="Done ✓ and next (Ctrl+Enter)",
                                tooltip="The annotation is saved beside the image; mark it done and open the next "
                                        "image not done yet.")
        self._train = PushButton(text="Train on everything marked done…",
                                 tooltip="Go to the Fine-tune tab with the images marked done as the examples.")
        self.on_train = None  # set by the tabbed dock
        self._summary = Label(value="Choose a folder of images.")
        self._status = Label(value="")
        help_text = Label(value="For each image: check the spots (Correct tab), then <b>Ctrl+Enter</b>. "
                                "'Fine-tune' can then train on every image marked done.")
        for lab in (self._summary, self._status, help_text):
            lab.native.setWordWrap(True)
            lab.native.setMinimumWidth(240)
        form = Container(widgets=[self._folder], labels=True)
        nav = Container(widgets=[self._prev, self._open], layout="horizontal", labels=False)
        for c in (form, nav):
            c.margins = (0, 0, 0, 0)
        self.extend([form, self._auto, help_text, self._summary])
        self.native.layout().addWidget(self._images_list)
        self.extend([nav, self._done, self._train, self._status])
        make_scrollable(self)

        self._folder.changed.connect(lambda *_: self.set_folder(self._folder.value))
        self._prev.changed.connect(lambda *_: self.go(-1))
        self._open.changed.connect(lambda *_: self.open_image(self._images_list.currentRow()))
        self._done.changed.connect(lambda *_: self.mark_done_and_next())
        self._train.changed.connect(lambda *_: self.train_on_done())
        viewer.layers.events.inserted.connect(self._on_inserted)
        self._models = registry_for(viewer)
        self._models.added.connect(self._remember_model)
        self._done_binding = lambda _v: self.mark_done_and_next()
        viewer.bind_key(DONE_KEY, self._done_binding, overwrite=True)
        S.connect(viewer, "napari-spotdetect:done_and_next_image", self.mark_done_and_next)  # napari lists it

    def close_panel(self, *_) -> None:
        """The dock closed: Ctrl+Enter and new layers no longer reach this panel (its layers stay open, and a
        folder panel opened later on the same folder takes them over)."""
        self._pending = None
        disconnect_all((self._viewer.layers.events.inserted, self._on_inserted),
                       (self._models.added, self._remember_model))
        from napari.utils.key_bindings import coerce_keybinding

        key = coerce_keybinding(DONE_KEY)
        if self._viewer.keymap.get(key) is self._done_binding:
            self._viewer.keymap.pop(key)
        S.disconnect(self._viewer, "napari-spotdetect:done_and_next_image", self.mark_done_and_next)

    # -- the folder -------------------------------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        f = str(self._folder.value)
        return Path(f).expanduser() if f not in ("", ".") else None

    def set_folder(self, folder) -> None:
        """List the folder's images; open the first one not done yet."""
        folder = Path(str(folder)).expanduser()
        if not folder.is_dir():
            self._set_status(f"{folder} is not a folder. Fix: choose the folder that holds your images.", True)
            return
        if str(self._folder.value) != str(folder):
            with self._folder.changed.blocked():
                self._folder.value = folder
        self.images = folder_images(folder)
        self.state = load_state(folder)
        self._offer_models()
        self.current = None
        self._refresh_list()
        if not self.images:
            self._set_status(f"No images in {folder}. Fix: choose a folder with TIFF, PNG or .npy images.", True)
            return
        todo = [i for i, p in enumerate(self.images) if p.name not in self.state["done"]]
        self.open_image(todo[0] if todo else 0)

    # -- models made for this folder ---------------------------------------------------------------------------
    def _remember_model(self, entry) -> None:
        """A model fine-tuned while this folder is open: the folder keeps its file, for the next session."""
        if self.folder is None or entry.path is None or entry._model is None:
            return
        known = self.state.setdefault("models", [])
        path = str(Path(entry.path).resolve())
        if any(m.get("path") == path for m in known if isinstance(m, dict)):
            return
        val = (entry.card.get("validation") or {}) if isinstance(entry.card, dict) else {}
        known.append({"path": path, "name": entry.model.info.name, "validation": {"f1": val.get("f1")},
                      "at": _dt.datetime.now().isoformat(timespec="seconds")})
        self._save_state()

    def _offer_models(self) -> None:
        """Offer the models made for this folder in earlier sessions (those whose file is still there)."""
        for m in self.state.get("models") or []:
            if isinstance(m, dict) and m.get("path") and Path(m["path"]).is_file():
                self._models.restore(m["path"], str(m.get("name") or Path(m["path"]).stem),
                                     {"validation": m.get("validation") or {}})

    def _refresh_list(self) -> None:
        self._images_list.clear()
        for _i, p in enumerate(self.images):
            done = self.state["done"].get(p.name)
            mark = "✓" if done else ("✎" if p.with_suffix(".csv").exists() else "·")
            self._images_list.addItem(f"{mark} {p.name}" + (f"  ({done.get('n_spots', '?')} spots)" if done else ""))
        if self.current is not None:
            self._images_list.setCurrentRow(self.current)
        n_done = sum(p.name in self.state["done"] for p in self.images)
        self._summary.value = f"{n_done} of {len(self.images)} images done (✓ done, ✎ annotated, · not yet)."

    def _save_state(self) -> None:
        atomic_write_text(self.folder / STATE_FILE, json.dumps(self.state, indent=2))

    # -- moving between images --------------------------------------------------------------------------------
    def go(self, step: int) -> None:
        if self.images:
            self.open_image(((self.current or 0) + step) % len(self.images))

    def open_image(self, index: int):
        """Close the current image's layers (its annotation is saved) and open image ``index``."""
        if not 0 <= index < len(self.images):
            return None
        self._close_current()
        path = self.images[index]
        self.current = index
        image, truth = self._already_open(path)
        if image is None:
            try:
                data = np.squeeze(read_image(path))
            except Exception as err:
                self._set_status(f"Cannot read {path.name}: {err}. Fix: convert it to TIFF, or remove it.", True)
                return None
            image = self._viewer.add_image(data, name=path.stem, colormap="gray",
                                           metadata={K.IMAGE_FILE: str(path)})
        self._detect.set_image(image)
        self._correct._image.value = image
        with self._correct._folder.changed.blocked():
            self._correct._folder.value = path.parent  # annotations beside the image
        annotation = path.with_suffix(".csv")
        if truth is not None:
            self._correct._points.value = truth
            self._set_status(f"{path.name} was still open with its ground truth ({len(truth.data)} spots): "
                             "go on correcting it.")
        elif annotation.exists():
            self._restore_detections(image, path)
            self._resume(image, annotation)
        elif self._auto.value:
            self._pending = image
            if self._detect.run() is None:
                self._pending = None
                self._set_status(f"Opened {path.name}; detection cannot start: {self._detect.problem()}", True)
                return image
            self._set_status(f"Opened {path.name}; detecting…")
        else:
            self._set_status(f"Opened {path.name}. Detect, then 'Start ground truth' in the Correct tab.")
        self._refresh_list()
        return image

    def _already_open(self, path: Path):
        """(image layer, ground-truth layer or None) of ``path`` when a closed folder panel left them open,
        else (None, None). They become this panel's layers again: never a second copy, nor a second layer
        saving into the same annotation."""
        images = [lay for lay in self._viewer.layers if lay.metadata.get(K.IMAGE_FILE) == str(path)]
        if not images:
            return None, None
        image = images[-1]
        mine = [lay for lay in self._viewer.layers if lay is image
                or (lay.metadata.get(K.PROVENANCE) or {}).get("image_layer") == image.name
                or (lay.metadata.get(K.TRUTH) or {}).get("image") == image.name]
        self._layers = [lay for lay in mine if lay not in self._layers] + self._layers
        truths = [lay for lay in mine if K.is_truth(lay)]
        return image, (truths[-1] if truths else None)

    def _resume(self, image, annotation: Path) -> None:
        """Open the annotation saved beside the image as its ground truth, to go on correcting it."""
        layer = self._correct.open_spots_csv(annotation, truth_of=image.name)
        if layer is None:
            return
        layer.mode = "add"
        self._set_status(f"Opened {image.name} with its annotation ({len(layer.data)} spots) from {annotation.name}.")

    def _detections_file(self, path: Path) -> Path:
        return path.parent / DETECTIONS_DIR / (path.stem + ".csv")

    def _save_detections(self, image) -> None:
        """Keep the image's latest detections (with their provenance) for QC after a restart."""
        if self.current is None:
            return
        found = [lay for lay in self._viewer.layers if K.is_detection(lay)
                 and (lay.metadata.get(K.PROVENANCE) or {}).get("image_layer") == image.name]
        if not found:
            return
        layer = found[-1]
        axes = L.layer_axes(layer)
        coords = np.asarray(layer.data, dtype=float)
        df = pd.DataFrame({a: coords[:, i] for i, a in enumerate(axes)})
        feats = layer.features.reset_index(drop=True)
        df = pd.concat([df, feats.drop(columns=[c for c in feats.columns if c in df.columns])], axis=1)
        target = self._detections_file(self.images[self.current])
        try:
            target.parent.mkdir(exist_ok=True)
            write_spots_csv(df, target, provenance=dict(layer.metadata[K.PROVENANCE]))
        except (OSError, ValueError) as err:  # the annotation is what matters: say so, go on
            log.warning("could not keep the detections of %s in %s: %s", image.name, target, err)

    def _restore_detections(self, image, path: Path) -> None:
        """The detections kept for ``path``, as a detection layer of ``image`` (QC pairs it with the truth)."""
        from .._reader import _points_layer

        saved = self._detections_file(path)
        if not saved.is_file():
            return
        try:
            data, kw, _ = _points_layer(read_spots_csv(saved), saved)
        except (SpotDetectError, ValueError, OSError) as err:
            log.warning("could not reopen the detections %s: %s", saved, err)
            return
        prov = kw["metadata"].get(K.PROVENANCE)
        if not isinstance(prov, dict):
            return
        prov["image_layer"] = image.name
        kw["metadata"].pop(K.TRUTH, None)
        kw["name"] = L.layer_name("spots", image.name) + " (kept)"
        self._viewer.add_points(data, **kw)

    def _on_inserted(self, event) -> None:
        layer = event.value
        if self.current is not None and (K.PROVENANCE in layer.metadata or K.SCORE_MAP in layer.metadata
                                         or K.TRUTH in layer.metadata or K.QC_MISSED in layer.metadata
                                         or K.IMAGE_FILE in layer.metadata or K.SOURCE_FILE in layer.metadata):
            self._layers.append(layer)
        pending = self._pending
        if pending is not None and K.is_detection(layer) \
                and (layer.metadata.get(K.PROVENANCE) or {}).get("image_layer") == pending.name:
            self._pending = None
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, lambda: self._start_truth(layer, pending))  # after the detection settles

    def _start_truth(self, spots, image) -> None:
        if spots not in self._viewer.layers:
            return
        self._correct._points.value = spots
        self._correct._image.value = image
        truth = self._correct.start_ground_truth()
        self._save_detections(image)
        if truth is not None:
            self._set_status(f"{len(truth.data)} spots found in {image.name}: correct them, then Ctrl+Enter.")
        self._refresh_list()

    def _close_current(self) -> None:
        self._correct.flush()
        self._pending = None
        gone = list(reversed([lay for lay in self._layers if lay in self._viewer.layers]))
        for layer in gone:
            self._viewer.layers.remove(layer)
        self._layers = []
        if gone:
            # let the canvas take the removals in before the next image is added: adding it in the same
            # event-loop turn as removing a detection's layers crashed vispy's drawing (segfault, seen with
            # Mesa's software OpenGL under Xvfb, with or without this plugin's changes)
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()

    def truth_layer(self):
        """The ground-truth layer of the current image, or None."""
        if self.current is None:
            return None
        name = self.images[self.current].stem
        found = [lay for lay in self._viewer.layers if K.is_truth(lay) and lay.metadata[K.TRUTH].get("image") == name]
        return found[-1] if found else None

    def mark_done_and_next(self) -> bool:
        """Save and mark the current image done, then open the next image not done yet."""
        if self.current is None:
            self._set_status("Choose a folder first.", True)
            return False
        truth = self.truth_layer()
        path = self.images[self.current]
        if truth is None:
            self._set_status(f"{path.name} has no ground truth yet. Fix: detect and press 'Start ground truth' "
                             "(Correct tab), or open its annotation.", True)
            return False
        self._correct.flush()
        image = next((lay for lay in self._viewer.layers if lay.metadata.get(K.IMAGE_FILE) == str(path)), None)
        if image is not None:
            self._save_detections(image)  # as they are now (re-thresholded, or detected by hand)
        if not path.with_suffix(".csv").exists():
            self._correct._points.value = truth
            self._correct._save()
        if not path.with_suffix(".csv").exists():
            self._set_status(f"{path.name}'s annotation could not be saved: {self._correct.status.value}", True)
            return False
        features = truth.features
        manual = int((features.get("source", pd.Series(dtype=str)).astype(str) == A.MANUAL).sum())
        self.state["done"][path.name] = {
            "n_spots": int(len(truth.data)), "added": manual,
            "reviewed": self._correct.review_state().get("reviewed", 0)
            if self._correct._layer is truth else None,
            "deleted": int(len(truth.metadata.get(K.REJECTED, pd.DataFrame()))),
            "annotation": path.with_suffix(".csv").name, "at": _dt.datetime.now().isoformat(timespec="seconds")}
        self._save_state()
        todo = [i for i in range(len(self.images)) if self.images[i].name not in self.state["done"]]
        after = [i for i in todo if i > self.current] or todo
        if not after:
            self._refresh_list()
            self._set_status(f"All {len(self.images)} images are done. Train on them in the Fine-tune tab.")
            return True
        self.open_image(after[0])
        return True

    # -- public API (scripts, notebooks, tests) ----------------------------------------------------------
    def set_auto_detect(self, on: bool) -> None:
        """Detect when an image opens (then correct a copy), or open it without detecting."""
        self._auto.value = bool(on)

    def train_on_done(self):
        """What 'Train on everything marked done' does: hand over to the fine-tune panel (None without one)."""
        return self.on_train() if self.on_train else None

    def image_marks(self) -> list[str]:
        """The mark of each image in the list: ✓ done, ✎ annotated, · not yet."""
        return [self._images_list.item(i).text()[0] for i in range(self._images_list.count())]

    @property
    def summary(self) -> str:
        return self._summary.value

    @property
    def status(self) -> str:
        return self._status.value

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self._status, text, error)
