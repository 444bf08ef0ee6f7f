"""core.training.finetuning: the one fine-tuning entry point (CLI, API and napari panel), without Qt."""

from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import pytest
import torch

from napari_spotdetect import detect, load_model
from napari_spotdetect.core.common.steps import run_steps
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.groundtruth.metrics import evaluate, score_model
from napari_spotdetect.core.training import finetuning
from napari_spotdetect.core.training.examples import examples_from_arrays, split_examples
from napari_spotdetect.core.training.finetune_defaults import DEFAULTS
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.training.train import TrainConfig


def _pairs():
    return [synthetic_image((96, 96), n_spots=20, seed=s) for s in (1, 2)]


def _weights(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def _run(gen):
    seen = []
    return seen, run_steps(gen, seen.append)


def test_iter_finetune_trains_saves_and_leaves_the_base_model_alone(tiny_piscis, tmp_path):
    before = _weights(tiny_piscis)
    cfg = finetuning.finetune_config(epochs=2, steps_per_epoch=2, batch_size=2, crop=64)
    train, val = _pairs()[:1], _pairs()[1:]
    events, res = _run(finetuning.iter_finetune(tiny_piscis, train, val, cfg, out=tmp_path / "g.pt"))
    kinds = [e.kind for e in events]
    assert kinds == ["loading", "measuring", "start", "step", "step", "epoch", "step", "step", "epoch", "done"]
    start = events[2]
    assert start.val_f1 == pytest.approx(res.before["f1"]) and start.epochs == 2 and start.steps == 2
    steps = [e for e in events if e.kind == "step"]
    assert all(e.loss is not None and e.loss >= 0 for e in steps)  # SmoothF1 shown as 1 - F1 + L2
    assert [e.done_steps for e in steps] == [1, 2, 3, 4] and steps[-1].total_steps == 4
    assert res.path == tmp_path / "g.pt" and not res.stopped and len(res.history) == 2
    assert (tmp_path / "g_checkpoints" / "g_best.pt").exists()
    loaded = load_model(res.path, device="cpu")
    assert loaded.info.card["validation_before"] == res.before
    assert loaded.default_threshold == pytest.approx(res.model.default_threshold)
    for k, v in _weights(tiny_piscis).items():
        assert torch.equal(v, before[k]), k


def test_before_score_is_detection_at_the_models_threshold_scored_as_qc_does(tiny_piscis, tmp_path):
    """The plot's epoch 0 is what detect + evaluate (the QC panel, `spotdetect evaluate`) give."""
    img, pts = _pairs()[0]
    expect = evaluate(detect(img, tiny_piscis).spots[["y", "x"]].to_numpy(), pts, 1.0)
    assert score_model(tiny_piscis, [(img, pts)], 1.0)["f1"] == pytest.approx(expect["f1"])
    cfg = finetuning.finetune_config(epochs=1, steps_per_epoch=1, batch_size=1, crop=64)
    res = finetuning.finetune(tiny_piscis, [(img, pts)], None, cfg, out=tmp_path / "one.pt")
    assert res.before["f1"] == pytest.approx(expect["f1"])
    assert res.before["f1_integral"] == pytest.approx(expect["f1_integral"])
    assert res.before["threshold"] == pytest.approx(tiny_piscis.default_threshold)


def test_stop_before_the_first_epoch_saves_nothing(tiny_piscis, tmp_path):
    cfg = finetuning.finetune_config(epochs=2, steps_per_epoch=5, batch_size=1, crop=64)
    steps_seen = [0]
    gen = finetuning.iter_finetune(tiny_piscis, _pairs(), None, cfg, out=tmp_path / "s.pt",
                                   stop=lambda: steps_seen[0] >= 2)

    def count(ev):
        steps_seen[0] += ev.kind == "step"

    res = run_steps(gen, count)
    assert res.stopped and res.model is None and res.path is None
    assert steps_seen[0] == 2 and not (tmp_path / "s.pt").exists()


def test_stop_while_measuring_the_starting_model_ends_at_once(tiny_piscis, tmp_path):
    cfg = finetuning.finetune_config(epochs=2, steps_per_epoch=5, batch_size=1, crop=64)
    events, res = _run(finetuning.iter_finetune(tiny_piscis, _pairs(), None, cfg, out=tmp_path / "s.pt",
                                                stop=lambda: True))
    assert res.stopped and res.model is None and events[-1].kind == "stopped"
    assert not any(e.kind == "step" for e in events)


def test_a_model_that_cannot_be_loaded_is_refused(tmp_path):
    with pytest.raises(SpotDetectError, match="does not exist|No model"):
        _run(finetuning.iter_finetune(str(tmp_path / "missing.pt"), _pairs(), None, out=tmp_path / "x.pt"))
    with pytest.raises(SpotDetectError, match="folder"):
        _run(finetuning.iter_finetune("default", _pairs(), None, out=tmp_path))
    with pytest.raises(SpotDetectError, match="Unknown fine-tuning setting"):
        finetuning.finetune_config(learning_rate=1e-3)


def test_the_configs_device_is_the_one_device_setting_and_reaches_the_trainer(tiny_piscis, tmp_path):
    """TrainConfig.device decides where the starting model is loaded and trained; there is no second one."""
    from napari_spotdetect.core.weights.native import save_model

    save_model(tiny_piscis, tmp_path / "start.pt")
    cfg = finetuning.finetune_config(epochs=1, steps_per_epoch=1, batch_size=1, crop=32, device="cpu:0")
    res = finetuning.finetune(str(tmp_path / "start.pt"), _pairs(), None, cfg, out=tmp_path / "d.pt")
    # "cpu:0" is not torch's plain "cpu": only the config can have put the trained model there
    assert res.model.device == torch.device("cpu:0") and res.model.info.card["train_config"]["device"] == "cpu:0"
    with pytest.raises(TypeError, match="device"):  # the old second setting is gone, not silently ignored
        finetuning.finetune(tiny_piscis, _pairs(), None, cfg, out=tmp_path / "e.pt", device="cpu")


@pytest.mark.parametrize("device", ["auto", None])
def test_an_automatic_device_trains_where_the_settings_check_said(tiny_piscis, tmp_path, device):
    """'auto' passed the settings check and then crashed the Trainer (torch.device('auto')); None meant the
    best device to the check but the CPU to the Trainer. Both now mean the best device here, in both."""
    from napari_spotdetect.core.common.device import select_device

    cfg = finetuning.finetune_config(epochs=1, steps_per_epoch=1, batch_size=1, crop=32, device=device)
    res = finetuning.finetune(tiny_piscis, _pairs(), None, cfg, out=tmp_path / "auto.pt")
    assert res.model.device.type == select_device(None).type and res.path.exists()


def test_deepspot_models_fine_tune_too(mhybrid, tmp_path):
    from napari_spotdetect.core.models.deepspot import DeepSpotModel

    published = load_model(mhybrid, device="cpu")
    cfg = finetuning.finetune_config(epochs=1, steps_per_epoch=3, batch_size=2, crop=64, lr=1e-4)
    res = finetuning.finetune(published, _pairs()[:1], None, cfg, out=tmp_path / "ds.pt")
    assert isinstance(res.model, DeepSpotModel) and res.path.exists()
    again = load_model(res.path, device="cpu")
    assert isinstance(again, DeepSpotModel) and again.info.card["validation_before"]["f1"] >= 0


def test_one_set_of_defaults():
    cfg = finetuning.finetune_config()
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.lr, cfg.batch_size, cfg.crop, cfg.loss, cfg.val_radius) == (
        DEFAULTS.epochs, DEFAULTS.steps_per_epoch, DEFAULTS.lr, DEFAULTS.batch_size, DEFAULTS.crop, DEFAULTS.loss,
        DEFAULTS.radius)
    assert TrainConfig.finetune() == cfg  # the Trainer-level shortcut is the same call
    with pytest.raises(dataclasses.FrozenInstanceError):  # nobody changes the defaults of everyone else
        DEFAULTS.lr = 1.0  # type: ignore[misc]
    from napari_spotdetect.cli_train import add_train_parsers

    ap = argparse.ArgumentParser()
    add_train_parsers(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["finetune", "--out", "x.pt"])
    assert (args.epochs, args.steps_per_epoch, args.lr, args.batch_size, args.crop, args.loss, args.seed) == (
        DEFAULTS.epochs, DEFAULTS.steps_per_epoch, DEFAULTS.lr, DEFAULTS.batch_size, DEFAULTS.crop, DEFAULTS.loss,
        DEFAULTS.seed)


def test_examples_from_stacks_and_the_validation_split():
    stack = np.arange(3 * 20 * 20, dtype=np.float32).reshape(3, 20, 20)
    pairs = examples_from_arrays([(stack, np.array([[0.2, 5, 5], [2.0, 7, 8], [2.1, 9, 9]])),
                                  (stack[0], np.array([[3.0, 4.0]]))])
    assert len(pairs) == 3 and [len(p) for _, p in pairs] == [1, 2, 1]
    np.testing.assert_array_equal(pairs[1][0], stack[2])
    train, val = split_examples(list(range(10)), DEFAULTS.val_share)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_examples([1], 0.5) == ([1], None)
    assert len(split_examples([1, 2], 0.9)[1]) == 1  # never all
    with pytest.raises(SpotDetectError, match="Validation share"):
        split_examples([1, 2], 1.0)


def test_the_cli_calls_the_core_entry_point(tiny_piscis, tmp_path, monkeypatch):
    from napari_spotdetect.core.weights.native import save_model

    save_model(tiny_piscis, tmp_path / "start.pt")
    img, pts = synthetic_image((64, 64), n_spots=6, seed=4)
    np.save(tmp_path / "one.npy", img)
    (tmp_path / "one.csv").write_text("y,x\n" + "\n".join(f"{y},{x}" for y, x in pts))
    calls = []
    real = finetuning.iter_finetune

    def spy(*a, **kw):
        calls.append(kw)
        return (yield from real(*a, **kw))

    monkeypatch.setattr(finetuning, "iter_finetune", spy)
    from napari_spotdetect.cli_train import add_train_parsers

    ap = argparse.ArgumentParser()
    add_train_parsers(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["finetune", "--model", str(tmp_path / "start.pt"), "--images", str(tmp_path), "--out",
                          str(tmp_path / "ft.pt"), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1",
                          "--crop", "32", "--device", "cpu:0"])
    assert args.func(args) == 0
    assert len(calls) == 1 and calls[0]["out"] == str(tmp_path / "ft.pt")
    card = load_model(tmp_path / "ft.pt", device="cpu").info.card
    assert "f1" in card["validation_before"]  # the CLI now records the "before" score too
    assert card["train_config"]["device"] == "cpu:0"  # --device is the trainer's one device setting


def test_a_model_with_a_second_stage_is_measured_and_kept_as_the_user_has_it(tmp_path):
    """The bundled model rescores its candidates: epoch 0 is scored with that stage (its threshold is a
    probability), and when no epoch beats it the saved model still has it."""
    base = load_model("default", device="cpu")
    assert base.rescorer is not None
    img, pts = _pairs()[0]
    expect = evaluate(detect(img, base).spots[["y", "x"]].to_numpy(), pts, 1.0)
    cfg = dataclasses.replace(finetuning.finetune_config(epochs=1, steps_per_epoch=1, batch_size=1, crop=64), lr=1e-12)
    res = finetuning.finetune(base, [(img, pts)], [(img, pts)], cfg, out=tmp_path / "kept.pt")
    assert res.before["f1"] == pytest.approx(expect["f1"])
    assert res.kept_start and res.second_stage
    again = load_model(res.path, device="cpu")
    assert again.rescorer is not None and again.threshold_range == base.threshold_range
    assert len(detect(img, again).spots) == pytest.approx(len(detect(img, base).spots), abs=2)


def test_a_trained_epoch_keeps_the_second_stage_when_it_validates_better(tmp_path):
    """The bundled model's second stage finds the sample's saturated spots, which its network alone scores
    near 0; an epoch is validated with and without that stage, and a model that wins with it keeps it (in the
    returned model and in the best checkpoint), so a fine-tune does not lose those spots."""
    from napari_spotdetect._sample_data import smfish_2d
    from napari_spotdetect.core.groundtruth.metrics import match_spots
    from napari_spotdetect.core.training.train import Trainer

    base = load_model("default", device="cpu")
    (img, _, _), (truth, _, _) = smfish_2d()
    train = [(img, truth, (0, 0, 256, 512))]
    val = [(img, truth, (256, 0, 512, 512))]
    cfg = dataclasses.replace(finetuning.finetune_config(epochs=1, steps_per_epoch=1, batch_size=1, crop=64),
                              lr=1e-12, ema=None)
    trainer = Trainer(base, train, val, cfg, out_dir=tmp_path, name="ft")
    res = trainer.fit()
    val_rec = res.history[-1]
    assert val_rec["val_second_stage"] is True  # the stage validated better than the network alone
    assert res.model.rescorer is base.rescorer and res.model.threshold_range == base.threshold_range
    rc = np.rint(truth).astype(int)
    saturated = truth[img[rc[:, 0], rc[:, 1]] >= img.max()]
    found = detect(img, res.model).spots[["y", "x"]].to_numpy()
    alone = copy.copy(res.model)
    alone.rescorer = None  # the same weights and threshold without the stage
    plain = detect(img, alone).spots[["y", "x"]].to_numpy()
    assert match_spots(found, saturated, 3.0).tp >= match_spots(plain, saturated, 3.0).tp + 5
    assert load_model(trainer.best_path, device="cpu").rescorer is not None


def test_the_verdict_says_whether_a_trained_model_kept_the_second_stage(tiny_piscis):
    card = {"epoch": 3, "validation": {"f1": 0.9}}
    model = copy.copy(tiny_piscis)
    model.info = copy.deepcopy(tiny_piscis.info)
    model.info.card = card

    def verdict(stage):
        return finetuning.FinetuneResult(model, None, False, [], {"f1": 0.8}, second_stage=stage).verdict()

    assert "second stage" not in verdict(None)  # the start had none: nothing to say
    assert "scores with the starting model's second stage" in verdict(True)
    assert "without that stage" in verdict(False) and "saturated" in verdict(False)


def test_the_verdict_says_why_an_epoch_higher_in_the_plot_was_not_kept(tiny_piscis):
    """The plot shows each epoch's F1 at a threshold tuned on the validation spots themselves; the best epoch is
    chosen cross-validated. When the two disagree, the verdict says so with both numbers (seen in the panel:
    epoch 5 at 0.97 in the plot, epoch 2 kept)."""
    model = copy.copy(tiny_piscis)
    model.info = copy.deepcopy(tiny_piscis.info)
    model.info.card = {"epoch": 2, "validation": {"f1": 0.90}}
    history = [{"epoch": 1, "val_f1": 0.65, "val_selection": 0.65}, {"epoch": 2, "val_f1": 0.90, "val_selection": 0.90},
               {"epoch": 5, "val_f1": 0.97, "val_selection": 0.89}]
    said = finetuning.FinetuneResult(model, None, False, history, {"f1": 0.7}).verdict()
    assert "Epoch 5 reached F1 0.97 in the plot" in said and "it scored 0.89 against 0.90" in said
    history[-1]["val_f1"] = 0.88  # the plot agrees with the choice: nothing to explain
    assert "in the plot" not in finetuning.FinetuneResult(model, None, False, history, {"f1": 0.7}).verdict()
