"""Section 2 of the Fine-tune panel: the model to start from, the training settings and where the new model goes.

The starting values are the core's fine-tuning defaults (the CLI's too), and the last values used are
remembered between sessions. The settings become the :class:`~napari_spotdetect.core.training.config.TrainConfig`
that :func:`~napari_spotdetect.core.training.finetuning.iter_finetune` runs.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit, SpinBox

from ..core.models.zoo import bundled_path
from ..core.training import finetuning
from ..core.training.finetune_defaults import DEFAULTS as FT
from ..core.training.finetune_defaults import FAST
from ._ui import compact_combos
from .settings import load_settings, save_settings

SECTION = "finetune"
DEFAULT_OUT = str(Path.home() / "napari-spotdetect" / "models")
#: the panel's starting values: the core's fine-tuning defaults (the CLI's too), plus where to save
DEFAULTS = {"start": "default", "epochs": FT.epochs, "steps": FT.steps_per_epoch, "lr": FT.lr, "loss": FT.loss,
            "val_percent": int(round(100 * FT.val_share)), "out_dir": DEFAULT_OUT, "crop": FT.crop,
            "batch": FT.batch_size, "threads": 0, "decoder_only": FT.freeze_encoder}
#: one choice sets the sizes of a run: the core's defaults, or its fast preset (the CLI's ``--fast``: decoder and
#: heads, 5 x 8 steps of 96 px crops; one region in about 30 CPU s, benchmarks/bench_hitl.py --real --clicks)
PRESETS = {"standard": FT, "quick": FAST}
_PRESET_CHOICES = [("Standard: every layer", "standard"), ("Quick: one region in about 30 s", "quick"),
                   ("Custom", "custom")]
_LRS = [("gentle (0.0001)", 1e-4), ("moderate (0.0003)", 3e-4), ("standard (0.001)", 1e-3)]
_LOSSES = [("SmoothF1 (recommended)", "smoothf1"), ("Dice", "dice"), ("Weighted cross-entropy", "ce"),
           ("Focal", "focal")]
_TIP = {
    "preset": "Quick trains only the decoder and heads for 5 x 8 short steps: about 30 s of CPU for one region,\n"
              "measured to give most of the gain there. Standard trains every layer (a few minutes). Changing a\n"
              "size below makes it Custom.",
    "start": "The model to adapt. It is copied: the model you detect with is not changed by training.",
    "epochs": "One epoch = the steps below, then a check on the validation images.\nMore epochs: longer, and "
              "a risk of learning your few examples by heart; the best epoch is kept.",
    "steps": "Training steps (batches of random crops) per epoch.",
    "lr": "How big each learning step is. 'gentle' changes the model least (use it for DeepSpot models).",
    "loss": "What training minimises. SmoothF1 is the Piscis paper's loss; the others are for comparison.",
    "val": "Share of the images set aside to choose the threshold and the best epoch. A single image (or region)\n"
           "is split: a strip of this share is held out. 0: checked on the training examples, which flatters.",
    "out": "The fine-tuned model (.pt) is saved in this folder, with a model card describing the training.",
    "name": "File name of the new model (without .pt).",
    "crop": "Training crops are this many pixels square (a multiple of 8).",
    "batch": "Crops per step. Larger batches: smoother learning, more memory and time per step.",
    "threads": "Threads training uses on the CPU; 0 takes the cores that are idle when training starts\n"
               "(all cores on a busy machine is many times slower).",
    "advanced": "Show the crop size, batch size, CPU threads and decoder-only training.",
    "decoder": "Keep the encoder and BatchNorm statistics as loaded and train the decoder and heads: about 3x less "
               "CPU a step, no recalibration.",
}


class TrainingSettings(Container):
    """The settings controls; ``models`` is the viewer's model registry (the session's models to start from).

    ``on_change()`` is called when a choice that decides whether Train may start changes.
    """

    def __init__(self, models, on_change):
        self._models = models
        self._on_change = None  # not while the section is built: the panel around it is not ready
        s = {**DEFAULTS, **load_settings(SECTION)}
        self.start = ComboBox(label="Start from", choices=self._start_choices, tooltip=_TIP["start"])
        self.start_file = FileEdit(label="Model file", mode="r", tooltip=_TIP["start"])
        self.epochs = SpinBox(label="Epochs", min=1, max=500, value=int(s["epochs"]), tooltip=_TIP["epochs"])
        self.steps = SpinBox(label="Steps per epoch", min=1, max=10_000, value=int(s["steps"]), tooltip=_TIP["steps"])
        self.lr = ComboBox(label="Learning rate", choices=_LRS, tooltip=_TIP["lr"])
        self.loss = ComboBox(label="Loss", choices=_LOSSES, tooltip=_TIP["loss"])
        self.val_percent = SpinBox(label="Validation (%)", min=0, max=50, value=int(s["val_percent"]),
                                   tooltip=_TIP["val"])
        self.advanced = CheckBox(text="More settings", value=False, tooltip=_TIP["advanced"])
        self.crop = SpinBox(label="Crop size (px)", min=32, max=1024, step=8, value=int(s["crop"]),
                            tooltip=_TIP["crop"])
        self.batch = SpinBox(label="Batch size", min=1, max=64, value=int(s["batch"]), tooltip=_TIP["batch"])
        cores = max(1, os.cpu_count() or 1)
        self.threads = SpinBox(label="CPU threads (0: idle cores)", min=0, max=cores, tooltip=_TIP["threads"],
                               value=min(cores, max(0, int(s.get("threads") or 0))))
        self.decoder_only = CheckBox(text="Decoder only (fast)", value=bool(s["decoder_only"]),
                                     tooltip=_TIP["decoder"])
        self.preset = ComboBox(label="Preset", choices=_PRESET_CHOICES, tooltip=_TIP["preset"])
        self.save_in = FileEdit(label="Save in", mode="d", value=s["out_dir"], tooltip=_TIP["out"])
        self.model_name = LineEdit(label="Model name", value=default_name(), tooltip=_TIP["name"])
        compact_combos(self.start, self.lr, self.loss, self.preset)
        form = Container(widgets=[self.start, self.start_file, self.preset, self.epochs, self.steps, self.lr,
                                  self.loss, self.val_percent], labels=True)
        more = Container(widgets=[self.crop, self.batch, self.threads, self.decoder_only], labels=True,
                         visible=False)
        out = Container(widgets=[self.save_in, self.model_name], labels=True)
        super().__init__(widgets=[form, self.advanced, more, out], labels=False)
        for c in (self, form, more, out):
            c.margins = (0, 0, 0, 0)
        self.lr.value = min((v for _, v in _LRS), key=lambda v: abs(v - float(s["lr"])))
        self.loss.value = s["loss"] if s["loss"] in {v for _, v in _LOSSES} else "smoothf1"
        self.advanced.changed.connect(lambda v: setattr(more, "visible", bool(v)))
        self.start.changed.connect(self._on_start)
        for w in (self.start_file, self.save_in, self.model_name):
            w.changed.connect(self._changed)
        self.start.value = s["start"] if s["start"] in self.start.choices else self.start.choices[0]
        self._on_start()
        self._show_preset()
        self.preset.changed.connect(self._apply_preset)
        for w in (self.epochs, self.steps, self.crop, self.decoder_only):
            w.changed.connect(self._show_preset)
        self._on_change = on_change

    # -- presets --------------------------------------------------------------------------------------
    def _sizes(self) -> tuple:
        return int(self.epochs.value), int(self.steps.value), int(self.crop.value), bool(self.decoder_only.value)

    def _apply_preset(self, key) -> None:
        d = PRESETS.get(key)
        if d is None:
            return
        self.epochs.value, self.steps.value, self.crop.value = d.epochs, d.steps_per_epoch, d.crop
        self.decoder_only.value = d.freeze_encoder
        self._show_preset()  # (each size set above showed Custom until the last one)

    def _show_preset(self, *_) -> None:
        """The preset the sizes match, or Custom."""
        match = [k for k, d in PRESETS.items() if self._sizes() == _preset_sizes(d)]
        with self.preset.changed.blocked():
            self.preset.value = match[0] if match else "custom"

    def _changed(self, *_) -> None:
        if self._on_change is not None:
            self._on_change()

    def _start_choices(self, _widget=None) -> list:
        out = []
        if bundled_path("default").exists():
            out.append(("Bundled default model", "default"))
        if self._models.last_detection_model is not None:
            out.append((f"Model of the last detection ({self._models.last_detection_model.info.name})", "last"))
        out += [(e.label, k) for k, e in self._models.models.items()]
        out.append(("Model file (.pt)", "file"))
        return out

    def _on_start(self, *_) -> None:
        self.start_file.visible = self.start.value == "file"
        self._changed()

    # -- what Train gets --------------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why these settings cannot train (a message for the user), or None."""
        if self.start.value is None:
            return "Choose the model to start from."
        if self.start.value == "file":
            p = Path(str(self.start_file.value)).expanduser()
            if str(self.start_file.value) in ("", ".") or not p.is_file():
                return "Choose the model file to start from."
        name = self.model_name.value.strip()
        if not name or any(c in name for c in '/\\:*?"<>|'):
            return "Give the new model a name (letters, digits, - and _)."
        if str(self.save_in.value) in ("", "."):
            return "Choose the folder to save the model in."
        if self.model_path().exists():
            return f"A model named '{name}' already exists in that folder; choose another name."
        return None

    def config(self):
        """The :class:`~napari_spotdetect.core.training.config.TrainConfig` these settings train with."""
        return finetuning.finetune_config(epochs=int(self.epochs.value), steps_per_epoch=int(self.steps.value),
                                          lr=float(self.lr.value), loss=self.loss.value, crop=int(self.crop.value),
                                          batch_size=int(self.batch.value),
                                          freeze_encoder=bool(self.decoder_only.value))

    def model_source(self):
        """The model to start from, as :func:`~napari_spotdetect.core.training.finetuning.iter_finetune` takes it."""
        kind = self.start.value
        if kind == "last":
            return self._models.last_detection_model
        if kind in self._models.models:
            return self._models.models[kind].model
        if kind == "file":
            return str(self.start_file.value)
        return kind

    def model_path(self) -> Path:
        return Path(str(self.save_in.value)).expanduser() / f"{self.model_name.value.strip()}.pt"

    def remember(self) -> None:
        """Keep these settings for the next session (a model of this session is not there then: the default)."""
        start = self.start.value if self.start.value in ("default", "file") else "default"
        save_settings(SECTION, {"start": start, "epochs": int(self.epochs.value), "steps": int(self.steps.value),
                                "lr": float(self.lr.value), "loss": self.loss.value,
                                "val_percent": int(self.val_percent.value), "out_dir": str(self.save_in.value),
                                "crop": int(self.crop.value), "batch": int(self.batch.value),
                                "threads": int(self.threads.value), "decoder_only": bool(self.decoder_only.value)})

    def next_name(self) -> None:
        """Move the model name on to one not taken (``name-2``, ``name-3``…), so Train can be pressed again."""
        self.model_name.value = _free_name(self.model_name.value.strip(), Path(str(self.save_in.value)).expanduser())


def _preset_sizes(d) -> tuple:
    """What a preset sets: epochs, steps per epoch, crop, decoder only."""
    return d.epochs, d.steps_per_epoch, d.crop, d.freeze_encoder


def default_name() -> str:
    return "finetuned-" + _dt.datetime.now().strftime("%Y%m%d-%H%M")


def _free_name(name: str, folder: Path) -> str:
    """``name`` or ``name-2``, ``name-3``… : the first that is not taken."""
    stem, k = name, 2
    if "-" in name and name.rsplit("-", 1)[1].isdigit() and len(name.rsplit("-", 1)[1]) < 3:
        stem, k = name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1]) + 1
    cand = name
    while (folder / f"{cand}.pt").exists():
        cand, k = f"{stem}-{k}", k + 1
    return cand
