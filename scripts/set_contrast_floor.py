"""Choose a model file's contrast floor on the real ``train`` split and write it into the file and its card.

The floor (:mod:`napari_spotdetect.core.detection.contrast`) drops candidates far dimmer than where their image's spots
stand out from its texture. It is chosen like the threshold, never on ``val``: the floor with the best mean
F1 integral over the ``train`` sources and 12 synthetic validation images as one more source
(:func:`~real_data.choose_contrast_floor`), so it keeps their dimmer true spots too.

    PYTHONPATH=src python scripts/set_contrast_floor.py src/napari_spotdetect/data/default_model.pt \\
        [--real ../shared/data/real] [--out other.pt] [--rescore]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# the reader of the real benchmark folders lives with the benchmarks (it is not part of the package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
#: the synthetic validation images the threshold is chosen on (train_default_model.py's VAL_SEED, 256²)
N_SYNTHETIC, SYNTHETIC_SEED = 12, 2


def set_floor(path, real=REAL, out=None, per_source=None, rescore: bool = False) -> tuple[float, dict]:
    """Choose the floor on ``train``, write it; with ``rescore``, also the card's real ``val`` scores at it."""
    from real_data import (
        choose_contrast_floor,
        contrast_floor_card,
        load_annotated,
        score_model,
        synthetic_source,
    )

    from napari_spotdetect import load_model
    from napari_spotdetect.core.training.synthetic import synthetic_dataset
    from napari_spotdetect.core.weights.native import atomic_torch_save

    model = load_model(path)
    images = load_annotated(real, split="train", ndim=2, per_source=per_source)
    images += synthetic_source(synthetic_dataset(per_source or N_SYNTHETIC, "train", seed=SYNTHETIC_SEED,
                                                 shape=(256, 256)))
    floor, table = choose_contrast_floor(model, images)
    obj = torch.load(path, map_location="cpu", weights_only=True)  # the file as it is: weights stay bit-identical
    obj["contrast_floor"] = floor
    obj["card"]["contrast_floor"] = contrast_floor_card(floor, table, images)
    if rescore:  # the card's real val scores, now at the floor the model will detect with
        model.default_contrast_floor = floor
        rv = obj["card"].setdefault("real_val", {"data": "val split of the project's real data (never trained or "
                                                         "tuned on)", "radius_px": 3.0})
        rv.update(threshold=model.default_threshold, contrast_floor=floor,
                  sources=json.loads(json.dumps(score_model(model, load_annotated(real, split="val")))))
    atomic_torch_save(obj, out or path)
    return floor, table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--real", default=str(REAL))
    ap.add_argument("--out", default=None)
    ap.add_argument("--rescore", action="store_true", help="also rewrite the card's real val scores at the floor")
    a = ap.parse_args(argv)
    floor, table = set_floor(a.model, a.real, a.out, rescore=a.rescore)
    for k, v in table.items():
        print(f"floor {k:.2f}: mean F1 integral {v:.4f}{'  <- chosen' if k == floor else ''}")
    print(f"wrote contrast floor {floor:.2f} into {a.out or a.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
