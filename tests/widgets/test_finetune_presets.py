"""The Fine-tune panel's *Preset*: the measured one-region fine-tune (the core's fast preset, the CLI's
``--fast``) in one choice instead of four settings, two of them under *More settings*."""

from __future__ import annotations

from tests.finetune_panel import choose_example, choose_start, set_settings, train_and_wait

from napari_spotdetect import load_model
from napari_spotdetect.core.training.finetune_defaults import DEFAULTS, FAST
from napari_spotdetect.core.weights.native import save_model
from napari_spotdetect.widgets.finetune_settings import TrainingSettings


def _sizes(cfg):
    return cfg.epochs, cfg.steps_per_epoch, cfg.crop, cfg.freeze_encoder


def test_the_quick_preset_trains_the_decoder_in_the_fast_presets_steps_and_is_remembered(
        finetune_widget, qtbot, tiny_model, tmp_path):
    viewer, _detect, tune = finetune_widget
    s = tune.settings
    assert s.preset.value == "standard" and _sizes(s.config()) == _sizes(DEFAULTS)
    s.preset.value = "quick"
    assert _sizes(s.config()) == _sizes(FAST) == (5, 8, 96, True)
    s.epochs.value = 6  # a size of its own: no longer the preset, and said so
    assert s.preset.value == "custom"
    s.epochs.value = FAST.epochs
    assert s.preset.value == "quick"

    viewer.open_sample("napari-spotdetect", "smfish_2d")
    choose_example(tune, viewer.layers["smFISH (synthetic)"], viewer.layers["true spots"])
    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    set_settings(tune, threads=1, save_in=tmp_path / "models", model_name="quick")
    train_and_wait(tune, qtbot)
    card = load_model(tmp_path / "models" / "quick.pt", device="cpu").info.card
    cfg = card["train_config"]
    assert (cfg["epochs"], cfg["steps_per_epoch"], cfg["crop"], cfg["freeze_encoder"]) == (5, 8, 96, True)
    again = TrainingSettings(s._models, lambda: None)  # the next session's panel
    assert again.preset.value == "quick" and again.decoder_only.value is True
