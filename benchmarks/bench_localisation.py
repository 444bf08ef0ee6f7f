"""How high can the F1 integral go on the default model's benchmark? Localisation sets the ceiling.

The F1 integral averages F1 over match radii from 0 to 3 px, so sub-pixel error costs even when every spot
is found. This prints, on the held-out benchmark of ``scripts/train_default_model.py`` (20 images of 256²,
kind ``train``, seed 3):

- the F1 integral of the true positions jittered by Gaussian noise of a given sigma per axis (perfect
  detection, imperfect localisation);
- the same with each spot jittered by its own Cramér-Rao bound (Mortensen et al. 2010, Gaussian PSF with
  background; read noise counted as extra background): what an ideal estimator could reach;
- the bundled model, plain and with test-time augmentation.

The generator's per-spot width and brightness are recorded by wrapping its spot-drawing function.

    PYTHONPATH=src python benchmarks/bench_localisation.py [--threads 2]

Writes benchmarks/results/localisation.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import napari_spotdetect.core.training.synthetic as synth
from napari_spotdetect import detect, load_model
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.io.files import atomic_write_text

SEED, N, SHAPE = 3, 20, (256, 256)


def benchmark_with_spot_parameters():
    """The benchmark images, their true spots, and each true spot's (sigma, peak, local background)."""
    drawn = []
    original = synth._gauss

    def recording(img, cy, cx, s, a):
        h, w = img.shape
        drawn.append((s, a, float(img[min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)])))
        original(img, cy, cx, s, a)

    synth._gauss = recording
    try:
        out = []
        for i in range(N):
            drawn.clear()
            img, gt = synth.synthetic_image(SHAPE, seed=np.random.SeedSequence([SEED, i]).generate_state(1)[0],
                                            kind="train")
            out.append((img, gt, np.array(drawn[:len(gt)])))  # spots are drawn first, then blobs and defocus
        return out
    finally:
        synth._gauss = original


def crlb_sigma(sigma, peak, background, read_noise=7.0):
    """Per-axis Cramér-Rao bound (px) for a pixelated Gaussian spot: N photons over background b per pixel."""
    photons = peak * 2 * np.pi * sigma ** 2
    sa2 = sigma ** 2 + 1 / 12
    tau = 2 * np.pi * (background + read_noise ** 2) * sa2 / photons
    return np.sqrt(sa2 / photons * (1 + 4 * tau + np.sqrt(2 * tau / (1 + 4 * tau))))


def mean_f1_integral(pairs) -> float:
    return float(np.mean([evaluate(pred, gt)["f1_integral"] for pred, gt in pairs]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "localisation.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = benchmark_with_spot_parameters()
    rng = np.random.default_rng(0)
    rows = []
    for s in (0.05, 0.07, 0.1, 0.15, 0.2):
        rows.append((f"truth + {s} px jitter", mean_f1_integral([(gt + rng.normal(0, s, gt.shape), gt)
                                                                   for _, gt, _ in data])))
    bounds = np.concatenate([crlb_sigma(*p.T) for _, _, p in data])
    for f in (1.0, 1.5):
        rows.append((f"truth + {f:g} x Cramér-Rao bound", mean_f1_integral(
            [(gt + rng.normal(0, 1, gt.shape) * f * crlb_sigma(*p.T)[:, None], gt) for _, gt, p in data])))
    model = load_model("default", device="cpu")
    for aug in (False, True):
        rows.append((f"bundled model{', augment=True' if aug else ''}", mean_f1_integral(
            [(detect(img, model, keep_maps=False, augment=aug).spots[["y", "x"]].to_numpy(), gt)
             for img, gt, _ in data])))
    print(f"Cramér-Rao bound per axis over {len(bounds)} spots: median {np.median(bounds):.3f} px, "
          f"90th percentile {np.percentile(bounds, 90):.3f} px")
    print(f"{'':40s} F1 integral")
    for name, v in rows:
        print(f"{name:40s} {v:.4f}")
    result = {"benchmark": "localisation", "data": {"kind": "train", "n_images": N, "shape": list(SHAPE),
                                                    "seed": SEED},
              "crlb_px": {"median": float(np.median(bounds)), "p90": float(np.percentile(bounds, 90))},
              "f1_integral": dict(rows)}
    atomic_write_text(Path(a.out), json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
