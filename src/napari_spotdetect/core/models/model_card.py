"""A model card (the ``card`` dict inside our model files) as a few readable lines, for the CLI and widgets.

Users choosing a model want to know what it was trained on (and under which licences), how it normalises
its input, which threshold it calibrated, and how it scored on real images it never saw.
"""

from __future__ import annotations


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def card_lines(card: dict) -> list[str]:
    """Readable summary lines of a model card (empty for models without one, e.g. piscis files)."""
    if not card:
        return []
    lines = [card["description"]] if card.get("description") else []
    lines += _training_data_lines(card.get("training_data") or {})
    if card.get("normalization"):
        lines.append(f"input normalisation: {card['normalization']}")
    cal = card.get("threshold_calibration") or {}
    if cal:
        lines.append(f"threshold {_fmt(cal.get('threshold'))}: {cal.get('rule', '')}")
    floor = card.get("contrast_floor") or {}
    if floor:
        lines.append(f"contrast floor {_fmt(floor.get('value'))} (spots dimmer than that fraction of where their "
                     f"image's spots stand out are dropped): {floor.get('rule', '')}, "
                     f"on the {floor.get('chosen_on', '')}")
    lines += _real_val_lines(card.get("real_val") or {})
    bench = card.get("benchmark") or {}
    if bench.get("x1"):
        lines.append(f"synthetic held-out benchmark: F1 {_fmt(bench['x1']['f1'])}, "
                     f"F1 integral {_fmt(bench['x1']['f1_integral'])}")
    return lines


def _training_data_lines(data: dict) -> list[str]:
    """What the model was trained on: real sources (with licences and held-out images), then synthetic."""
    lines = []
    real = data.get("real") or {}
    if real:
        held = [h.split("/", 1)[0] for h in real.get("held_out_for_validation") or []]
        parts = [f"{src} ({d.get('images', 0) - held.count(src)} images for training, {held.count(src)} held out "
                 f"for choosing the epoch and threshold; {d.get('licence')})"
                 for src, d in (real.get("sources") or {}).items()]
        lines.append("real images (train split): " + "; ".join(parts))
        if real.get("not_used_licence"):
            lines.append("not trained on (licence unclear): " + ", ".join(real["not_used_licence"]))
    pairs = (("synthetic", data), ("realistic synthetic", data.get("realistic_synthetic") or {}))
    synth = [f"{d.get('n_images')} {name}" for name, d in pairs if d.get("n_images")]
    if synth:
        lines.append("and on synthetic images: " + ", ".join(synth))
    return lines


def _real_val_lines(rv: dict) -> list[str]:
    """Scores on real validation images, per source and their mean."""
    if not rv.get("sources"):
        return []
    lines = [f"real validation images (F1 within {rv.get('radius_px', 3):g} px; F1 integral; found/annotated):"]
    for src, r in rv["sources"].items():
        if src == "mean":
            lines.append(f"  mean over sources: F1 {_fmt(r['f1'])}, F1 integral {_fmt(r['f1_integral'])}")
        else:
            lines.append(f"  {src}: F1 {_fmt(r['f1'])}, F1 integral {_fmt(r['f1_integral'])}, "
                         f"{r.get('found')}/{r.get('annotated')}")
    return lines
