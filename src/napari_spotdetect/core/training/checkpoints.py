"""A training run's checkpoint files (``{name}_best.pt``, ``{name}_last.pt``): the folder checked before any work,
writes that leave the previous file intact when they fail, and resuming from ``last``.

Kept apart from the training loop so that what is on disk, and what a resume restores, can be read in one place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import SpotDetectError


class Checkpoints:
    """The checkpoint files of one run in ``out_dir`` (nothing is written when it is None)."""

    def __init__(self, out_dir, name: str):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.name = name

    @property
    def best_path(self) -> Path | None:
        return self.out_dir / f"{self.name}_best.pt" if self.out_dir else None

    @property
    def last_path(self) -> Path | None:
        return self.out_dir / f"{self.name}_last.pt" if self.out_dir else None

    def prepare(self, net: torch.nn.Module) -> None:
        """Check, before any work, that checkpoints of ``net`` can be written; remove what killed runs left behind.

        A save interrupted by ``kill -9`` leaves its hidden temporary file (``atomic_write``); they pile up.
        """
        d = self.out_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            for stale in list(d.glob(f".{self.name}_last.pt.*.tmp")) + list(d.glob(f".{self.name}_best.pt.*.tmp")):
                stale.unlink(missing_ok=True)
            with tempfile.TemporaryFile(dir=d) as f:
                f.write(b"0" * 4096)
                f.flush()
                os.fsync(f.fileno())
            free = shutil.disk_usage(d).free
        except OSError as err:
            raise SpotDetectError(f"Cannot write checkpoints to {d} ({err.strerror or err}).",
                                  "choose a folder you can write to, with free space.") from err
        need = 6 * sum(p.numel() * 4 for p in net.parameters()) + (1 << 20)  # last: weights, best, optimizer
        if free < need:
            raise SpotDetectError(f"Only {free / 2**20:.1f} MB free in {d}; a checkpoint needs about "
                                  f"{need / 2**20:.1f} MB.", "free some disk space or choose another folder.")

    @staticmethod
    def save(model, path, **kw) -> None:
        """save_model, with a full disk or a lost folder reported as such (the previous file stays intact)."""
        from ..weights.native import save_model

        try:
            save_model(model, path, **kw)
        except (OSError, RuntimeError) as err:
            raise SpotDetectError(f"Could not write the checkpoint {path} ({str(err)[:200]}); the previous "
                                  "checkpoint is intact.", "free some disk space or check the folder, then "
                                  "continue with resume.") from err


def save_last(trainer, epoch: int, val: dict | None, raw_state: dict | None = None) -> None:
    """Write ``last``: the weights (averaged, with EMA) plus what a resume needs (optimiser, history, best, raw)."""
    path = trainer.checkpoints.last_path
    if path is None:
        return
    best = trainer.best or {}
    extra = {"training": {"epoch": epoch, "optimizer": trainer.opt.state_dict(), "history": trainer.history,
                          "best": {k: v for k, v in best.items() if k != "state"},
                          "best_state": best.get("state", {})}}
    if raw_state is not None:
        extra["training"].update(raw_state=raw_state, ema_updates=trainer.average.updates)
    trainer.checkpoints.save(trainer.model, path, card=trainer.card(val, epoch), extra=extra)


def resume(trainer) -> None:
    """Continue ``trainer`` from its ``last`` checkpoint; a damaged or foreign file is refused with the fix."""
    path = trainer.checkpoints.last_path
    try:
        _restore(trainer, path)
    except SpotDetectError:
        raise
    except Exception as err:
        raise SpotDetectError(
            f"Cannot resume from {path}: it is damaged or comes from another network or settings "
            f"({type(err).__name__}: {str(err)[:200]}).",
            "train without resume (or delete that file), or resume with the settings of the run that wrote it.",
        ) from err


def _restore(trainer, path: Path) -> None:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    tr = obj.get("training") if isinstance(obj, dict) else None
    if not isinstance(tr, dict):
        raise SpotDetectError(f"{path} has no training state to resume from.", "delete it or train without resume.")
    saved = {k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
    trainer.net.load_state_dict(saved)
    # the file's weights are the average; training goes on from the raw ones
    if trainer.average is not None and "raw_state" in tr:
        trainer.average.restart_from(trainer.net)
        trainer.net.load_state_dict(tr["raw_state"])
        trainer.average.updates = int(tr.get("ema_updates", 0))
    trainer.opt.load_state_dict(tr["optimizer"])
    trainer.history = list(tr["history"])
    if tr.get("best"):
        trainer.best = {**tr["best"], "state": tr["best_state"]}
        trainer.best.setdefault("score", trainer.best["f1"])  # files from before ``select``
    trainer.model.default_threshold = float(obj.get("threshold", 0.5))
    trainer.start_epoch = int(tr["epoch"]) + 1
