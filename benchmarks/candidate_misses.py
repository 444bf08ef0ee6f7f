"""Why is an annotated spot not a candidate? Per source, the missed spots of a model's second stage by cause.

A spot no candidate matches (one-to-one, within 3 px) at the model's lowest threshold cannot be brought back
by any threshold. This script sorts each such spot into the first cause that fits it, in this order:

- ``scored_below_lowest``: a candidate was there, but the second stage scored it below the lowest threshold;
- ``close_pair_shared``: one candidate sits between it and another annotated spot within 3 px (matched to that);
- ``candidate_taken``: a candidate within 3 px was matched to another annotated spot further away;
- ``saturated``: its 3 x 3 holds the image's maximum (a clipped plateau);
- ``border``: within 2 px of the image's edge;
- ``no_log_peak``: no peak of the best-scale LoG response within 2.5 px (a wide spot, or the shoulder of a
  brighter neighbour);
- ``log_peak_below_cut``: a LoG peak is there, but below the proposal cut (dim);
- ``other``.

Run it on ``train`` (the default) to decide what the proposals need; ``val`` only to report.

    python benchmarks/candidate_misses.py [--model default] [--split train] [--held-out-only]

Prints a table and writes benchmarks/results/candidate_misses.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
CAUSES = ("scored_below_lowest", "close_pair_shared", "candidate_taken", "saturated", "border", "no_log_peak",
          "log_peak_below_cut", "other")


def network_candidates(model, image):
    """The network's own planar candidates above the second stage's network floor: (yx, scores)."""
    from napari_spotdetect.core.detection.detect import detect

    resc, rng = model.rescorer, model.threshold_range
    model.rescorer, model.threshold_range = None, (resc.net_floor, rng[1])
    try:
        c = detect(image, model, threshold=resc.net_floor, axes="yx", keep_maps=False, contrast_floor=0.0).candidates
    finally:
        model.rescorer, model.threshold_range = resc, rng
    return c[["y", "x"]].to_numpy(), c["score"].to_numpy()


def _cause(t, others, near_cand: int, x, peaks, resp, cut) -> str:
    h, w = x.shape
    r, c = (int(np.clip(np.rint(v), 0, n - 1)) for v, n in zip(t, (h, w)))
    if near_cand:
        return "close_pair_shared" if others else "candidate_taken"
    top = x.max()
    if top > np.median(x) and (x[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] >= top).any():
        return "saturated"
    if min(t[0], t[1], h - 1 - t[0], w - 1 - t[1]) < 2:
        return "border"
    if peaks is None:
        return "no_log_peak"
    d, j = peaks[0].query(t)
    if d > 2.5:
        return "no_log_peak"
    return "log_peak_below_cut" if resp[tuple(peaks[1][j])] <= cut else "other"


def misses(model, im) -> tuple[int, dict]:
    """(annotated spots, {cause: count}) of one 2-D image."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from napari_spotdetect.core.detection import fft_filters
    from napari_spotdetect.core.detection import proposals as rs
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    resc = model.rescorer
    x = np.asarray(im.image, dtype=np.float64)
    yx, net = network_candidates(model, x)
    coords, feats, _ = rs.candidate_features(x, yx, net, resc.proposal_cut, resc.scale_cut, resc.merge_radius)
    p = resc.probability(feats)
    truth = im.spots
    kept = match_spots(coords[p > model.threshold_range[0]], truth, 3.0)
    found = np.zeros(len(truth), dtype=bool)
    found[kept.true_matched] = True
    raw = np.zeros(len(truth), dtype=bool)
    raw[match_spots(coords, truth, 3.0).true_matched] = True
    resp = rs.log_response(x / rs._noise(fft_filters.highpass(x)))
    pk = np.argwhere((resp == ndimage.maximum_filter(resp, 3, mode="nearest")) & (resp > 0))
    peaks = (cKDTree(pk), pk) if len(pk) else None
    ttree, ctree = cKDTree(truth), cKDTree(coords) if len(coords) else None
    out = dict.fromkeys(CAUSES, 0)
    for i in np.flatnonzero(~found):
        if raw[i]:
            out["scored_below_lowest"] += 1
            continue
        others = [j for j in ttree.query_ball_point(truth[i], 3.0) if j != i]
        near = len(ctree.query_ball_point(truth[i], 3.0)) if ctree is not None else 0
        out[_cause(truth[i], others, near, x, peaks, resp, resc.proposal_cut)] += 1
    return len(truth), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default="train", choices=("train", "val"))
    ap.add_argument("--held-out-only", action="store_true",
                    help="train: only the images the network's card lists as held out from its training")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "candidate_misses.json"))
    a = ap.parse_args(argv)

    import torch
    from real_data import held_out, load_annotated

    from napari_spotdetect import load_model

    torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    if model.rescorer is None:
        raise SystemExit(f"{a.model} has no second stage: its candidates are the network's peaks.")
    images = load_annotated(a.data, split=a.split, ndim=2)
    if a.held_out_only:
        held = held_out(model)
        images = [im for im in images if f"{im.source}/{im.stem}" in held]
    t0 = time.time()
    by: dict[str, dict] = {}
    for im in images:
        n, causes = misses(model, im)
        row = by.setdefault(im.source, {"annotated": 0, **dict.fromkeys(CAUSES, 0)})
        row["annotated"] += n
        for k, v in causes.items():
            row[k] += v
    print(f"\nmissed annotated spots at the lowest threshold ({model.threshold_range[0]:g}), `{a.split}` 2-D images\n")
    print("| source | annotated | candidate recall | " + " | ".join(CAUSES) + " |")
    print("| --- " * (3 + len(CAUSES)) + "|")
    for src, row in by.items():
        row["candidate_recall"] = 1 - sum(row[k] for k in CAUSES) / max(row["annotated"], 1)
        print(f"| {src} | {row['annotated']} | {row['candidate_recall']:.3f} | "
              + " | ".join(str(row[k]) for k in CAUSES) + " |")
    doc = {"date": time.strftime("%Y-%m-%d"), "model": a.model, "split": a.split, "held_out_only": a.held_out_only,
           "lowest_threshold": model.threshold_range[0], "seconds": round(time.time() - t0, 1), "sources": by}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
