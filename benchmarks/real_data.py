"""Folders of real annotated images (``<source>/images/*.tif`` + ``<source>/spots/*.csv`` + ``meta.json``).

The layout of the project's real benchmark data (``../shared/data/real``): one folder per public source,
each with a ``meta.json`` that lists its images with their split (``train`` / ``val``) and the source's
licence. Training and the real-data benchmark read it through :func:`load_annotated`, so both see the
same images, splits and coordinates (pixel centres at integers, as everywhere in this package).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_spotdetect.core.errors import SpotDetectError


@dataclass
class AnnotatedImage:
    """One real image with its annotated spot centres."""

    source: str
    stem: str
    split: str
    image: np.ndarray  # (H, W) or (Z, H, W), as stored
    spots: np.ndarray  # (N, ndim) float64: (y, x) or (z, y, x)
    licence: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def axes(self) -> str:
        return "zyx" if self.image.ndim == 3 else "yx"


def load_annotated(root, split: str | None = None, sources=None, ndim: int | None = None,
                   per_source: int | None = None) -> list[AnnotatedImage]:
    """Images of ``root`` (optionally one split, some sources, one dimensionality, the first ``per_source`` of
    each source), sources in name order, images in the order of their meta.json."""
    import pandas as pd
    import tifffile

    root = Path(root)
    metas = sorted(root.glob("*/meta.json"))
    if not metas:
        raise SpotDetectError(f"No annotated sources found in {root}.",
                              "point to a folder holding <source>/meta.json, <source>/images and <source>/spots.")
    out = []
    for meta_path in metas:
        src = meta_path.parent
        if sources is not None and src.name not in sources:
            continue
        meta = json.loads(meta_path.read_text())
        lic = meta.get("licence") or {}
        licence = lic.get("name", "") if isinstance(lic, dict) else str(lic)
        taken = 0
        for rec in meta.get("images", []):
            if split is not None and rec.get("split") != split:
                continue
            if ndim is not None and len(rec.get("shape", ())) != ndim:
                continue
            if per_source is not None and taken >= per_source:
                break
            taken += 1
            img = tifffile.imread(src / "images" / f"{rec['stem']}.tif")
            df = pd.read_csv(src / "spots" / f"{rec['stem']}.csv")
            cols = [c for c in ("z", "y", "x") if c in df.columns][-img.ndim:]
            pts = df[cols].to_numpy(dtype=np.float64).reshape(-1, len(cols))
            out.append(AnnotatedImage(src.name, rec["stem"], rec.get("split", ""), img, pts, licence, rec))
    return out


def held_out(model) -> set:
    """The real ``train`` images a model's network did not train on, as ``source/stem`` (its card's list): where
    its scores are honest, so where its second stage is fitted and train-side choices are made."""
    card = model.info.card or {}
    return set((((card.get("training_data") or {}).get("real") or {}).get("held_out_for_validation")) or [])


# -- scoring a detector on annotated sources -------------------------------------------------------------
#: match radius (px) of the real-data scores: human clicks and crowd consensus sit up to ~1-2 px off
REAL_RADIUS = 3.0
#: thresholds tried for the hindsight-best one
SWEEP = np.unique(np.round(np.concatenate([np.arange(0.02, 0.99, 0.01), [0.99, 0.995, 0.998, 0.999]]), 4))


class StackCandidates:
    """A z-stack's detection, re-made at each threshold (3-D components depend on it)."""

    def __init__(self, det):
        self.det = det

    def at(self, threshold: float):
        sp = self.det.rethreshold(max(float(threshold), self.det.floor))
        cols = [c for c in ("z", "y", "x") if c in sp.columns]
        return sp[cols].to_numpy(), sp["score"].to_numpy()


def model_candidates(model, images, augment: bool = False, contrast_floor: float | None = None,
                     speed: str = "exact") -> list:
    """Every image's candidates at the model's lowest threshold that pass the contrast floor (the model's own
    unless given), in ``speed`` mode: (coords, scores) or :class:`StackCandidates`."""
    from napari_spotdetect.core.detection.detect import detect

    floor = float(model.threshold_range[0])
    out = []
    for im in images:
        det = detect(im.image, model, threshold=floor, axes=im.axes, keep_maps=False, augment=augment,
                     contrast_floor=contrast_floor, speed=speed)
        if det.stack:
            out.append(StackCandidates(det))
        else:
            c = det.candidates[det.passes_contrast_floor()]
            out.append((c[["y", "x"]].to_numpy(), c["score"].to_numpy()))
    return out


def candidates_at(cand, threshold: float):
    """(coords, scores) of one image's candidates scoring above ``threshold``."""
    if isinstance(cand, StackCandidates):
        return cand.at(threshold)
    c, s = cand
    keep = s > threshold
    return c[keep], s[keep]


def matched_by_score(coords: np.ndarray, scores: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """Which candidates are true when each, strongest first, takes the nearest annotated spot within ``radius``
    that no stronger one took (how detection benchmarks rank, e.g. PASCAL VOC's average precision)."""
    from scipy.spatial import cKDTree

    is_tp = np.zeros(len(coords), dtype=bool)
    if not len(coords) or not len(truth):
        return is_tp
    taken = np.zeros(len(truth), dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    for i, near in zip(order, cKDTree(truth).query_ball_point(coords[order], radius)):
        free = [j for j in near if not taken[j]]
        if free:
            j = free[int(np.argmin(np.linalg.norm(truth[free] - coords[i], axis=1)))]
            taken[j] = is_tp[i] = True
    return is_tp


def separation(cands, images, radius: float = REAL_RADIUS, by_score: bool = False) -> float:
    """P(a true candidate outscores a false one), matched at ``radius``, pooled over images (AUC).

    A candidate is true when the one-to-one matching of all candidates by distance alone takes it (default), or
    with ``by_score`` when it takes an annotated spot before any weaker candidate does (:func:`matched_by_score`):
    by distance, a weak candidate nearer an annotation takes it from a strong one, and both count against the
    ranking."""
    from scipy.stats import mannwhitneyu

    from napari_spotdetect.core.groundtruth.metrics import match_spots

    tp, fp = [], []
    for cand, im in zip(cands, images):
        c, s = candidates_at(cand, -np.inf)
        is_tp = (matched_by_score(c, s, im.spots, radius) if by_score
                 else match_spots(c, im.spots, radius).pred_is_tp(len(c)))
        tp.append(s[is_tp])
        fp.append(s[~is_tp])
    tp, fp = np.concatenate(tp), np.concatenate(fp)
    if not len(tp) or not len(fp):
        return float("nan")
    return float(mannwhitneyu(tp, fp).statistic / (len(tp) * len(fp)))


def localisation_ceiling(coords: np.ndarray, truth: np.ndarray, radius: float = REAL_RADIUS, seed: int = 0) -> float:
    """The F1 integral this detector would reach if it found every annotated spot and nothing else, each at
    its own localisation error: matched spots stay where it put them, missed ones move by an error drawn
    from the matched ones. What is left below 1.0 is disagreement about positions (label noise included),
    which no threshold or training on detection can remove."""
    from napari_spotdetect.core.groundtruth.metrics import f1_integral, match_spots

    if not len(truth) or not len(coords):
        return float("nan")
    m = match_spots(coords, truth, radius)
    if not m.tp:
        return float("nan")
    errors = coords[m.pred_matched] - truth[m.true_matched]
    oracle = truth + errors[np.random.default_rng(seed).integers(0, len(errors), len(truth))]
    oracle[m.true_matched] = coords[m.pred_matched]
    return f1_integral(oracle, truth)


def score_sources(cands, images, threshold: float, radius: float = REAL_RADIUS) -> dict:
    """Per source (means over its images) and their mean: precision, recall, F1 at ``radius``, F1 integral,
    the recall of every candidate (at the lowest threshold the candidates were kept at),
    spots found / annotated at ``threshold``, the hindsight-best threshold, the score separation and the
    :func:`localisation_ceiling` of the F1 integral."""
    from napari_spotdetect.core.groundtruth.metrics import evaluate, f1_integral, match_spots

    by_src: dict[str, list[int]] = {}
    for i, im in enumerate(images):
        by_src.setdefault(im.source, []).append(i)
    out = {}
    for src, idx in by_src.items():
        ims, cs = [images[i] for i in idx], [cands[i] for i in idx]
        per = []
        for cand, im in zip(cs, ims):
            c, _ = candidates_at(cand, threshold)
            e = evaluate(c, im.spots, radius)
            every, _ = candidates_at(cand, -np.inf)
            per.append(dict(precision=e["precision"], recall=e["recall"], f1=e["f1"],
                            candidate_recall=match_spots(every, im.spots, radius).tp / max(len(im.spots), 1),
                            f1_integral=f1_integral(c, im.spots), found=len(c), annotated=len(im.spots),
                            ceiling=localisation_ceiling(c, im.spots, radius)))
        row = {k: float(np.mean([p[k] for p in per]))
               for k in ("precision", "recall", "f1", "f1_integral", "candidate_recall")}
        row["f1_integral_ceiling"] = float(np.nanmean([p["ceiling"] for p in per]))
        row.update(found=int(sum(p["found"] for p in per)), annotated=int(sum(p["annotated"] for p in per)))
        row["count_ratio"] = row["found"] / max(row["annotated"], 1)
        sweep = [np.mean([match_spots(candidates_at(cand, t)[0], im.spots, radius).f1 for cand, im in zip(cs, ims)])
                 for t in SWEEP]
        b = int(np.argmax(sweep))
        row.update(best_threshold=float(SWEEP[b]), f1_at_best=float(sweep[b]),
                   f1_integral_at_best=float(np.mean([f1_integral(candidates_at(cand, SWEEP[b])[0], im.spots)
                                                      for cand, im in zip(cs, ims)])),
                   separation=separation(cs, ims, radius),
                   separation_by_score=separation(cs, ims, radius, by_score=True), images=len(ims))
        out[src] = row
    srcs = list(out)
    out["mean"] = {k: float(np.mean([out[s][k] for s in srcs]))
                   for k in ("precision", "recall", "f1", "f1_integral", "f1_at_best", "f1_integral_at_best",
                             "f1_integral_ceiling", "candidate_recall")}
    return out


def score_model(model, images, augment: bool = False, radius: float = REAL_RADIUS,
                contrast_floor: float | None = None) -> dict:
    """:func:`score_sources` of a model at its own default threshold (and contrast floor, unless given)."""
    return score_sources(model_candidates(model, images, augment, contrast_floor), images, model.default_threshold,
                         radius)


#: contrast floors tried when choosing a model's own (:func:`choose_contrast_floor`)
CONTRAST_FLOORS = tuple(float(v) for v in np.round(np.arange(0.0, 0.81, 0.05), 2))


def choose_contrast_floor(model, images, floors=CONTRAST_FLOORS) -> tuple[float, dict]:
    """The contrast floor (:mod:`.contrast`) with the best F1 integral on ``images`` (2-D; the mean over their
    sources) at the model's own threshold, and the F1 integral of every floor tried. Run it on ``train``
    images, as the threshold is chosen: the floor says what counts as a spot, which ``val`` must not decide.
    Synthetic images can join as one more source (:func:`synthetic_source`), so the floor keeps their dimmer
    true spots too."""
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import f1_integral

    thr = float(model.default_threshold)
    per = []
    for im in images:
        c = detect(im.image, model, threshold=thr, axes=im.axes, keep_maps=False, contrast_floor=0.0,
                   contrast=True).candidates
        if "relative_contrast" not in c:
            continue  # a z-stack: no contrast features
        per.append((im.source, c[["y", "x"]].to_numpy(), c["score"].to_numpy(), c["relative_contrast"].to_numpy(),
                    im.spots))
    if not per:
        raise SpotDetectError("No 2-D images to choose a contrast floor on.", "pass 2-D annotated images.")
    table = {}
    for k in floors:
        by: dict[str, list[float]] = {}
        for src, yx, score, rel, truth in per:
            keep = (score > thr) & (rel >= k)
            by.setdefault(src, []).append(f1_integral(yx[keep], truth))
        table[float(k)] = float(np.mean([np.mean(v) for v in by.values()]))
    return max(table, key=table.get), table


def synthetic_source(pairs, name: str = "synthetic") -> list[AnnotatedImage]:
    """(image, spots) pairs as annotated images of one source, to weigh in where real ones are weighed."""
    return [AnnotatedImage(name, f"{name}_{i}", "val", np.asarray(img), np.asarray(pts, dtype=np.float64))
            for i, (img, pts) in enumerate(pairs)]


def contrast_floor_card(floor: float, table: dict, images) -> dict:
    """The model card's record of how its contrast floor was chosen (``images``: those it was chosen on)."""
    counts: dict[str, int] = {}
    for im in images:
        counts[im.source] = counts.get(im.source, 0) + 1
    on = ", ".join(f"{src} ({n})" for src, n in counts.items())
    return {"value": float(floor), "chosen_on": f"2-D images: {on} (real ones from the train split only)",
            "rule": "the floor with the best mean F1 integral over those sources, at the model's threshold",
            "f1_integral_by_floor": {f"{k:.2f}": round(float(v), 4) for k, v in table.items()}}
