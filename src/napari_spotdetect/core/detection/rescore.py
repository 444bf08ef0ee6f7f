"""A second stage that finds the spots a network misses and scores every candidate by the evidence.

Why: the network's own peaks miss spots it never saw in training (saturated, flat-topped spots; wide PSFs)
and its scores saturate, so they rank true above false candidates less well than a plain Laplacian of
Gaussian (LoG) response does. This stage

1. adds *proposals*: peaks of the multi-scale LoG response of the plane (in noise units), and of each
   single scale's response, that no network candidate sits near, so a spot the network scores at 0, or a
   dim one beside a bright one, is still a candidate (:mod:`.proposals`);
2. describes every candidate by a few scale-free features (:data:`FEATURES`: the network's score, the LoG
   response and its best scale, contrast over the plane's noise and over its elbow, local signal-to-noise,
   saturation, and how it compares with its neighbours);
3. scores it with a small logistic model (the bundled one), or a few shallow gradient-boosted trees where a
   model file holds them (numpy only at inference), fitted on annotated ``train`` images and synthetic ones
   (``scripts/fit_rescorer.py``, :mod:`.rescore_fit`), so ``score`` is the probability that a candidate is an
   annotated spot.

Candidates whose brightest pixel is a camera's hot pixel are dropped (:mod:`.hot_pixels`), and on planes so are the
dim second calls an aberrated PSF puts beside every bright spot at one offset (:mod:`.echoes`), and a clipped spot,
round, merged with others into one plateau or cut by the image's edge, keeps one call, at its centre
(:mod:`.plateaus`; in stacks too, :func:`fill_clipped_spots`); a point on the rim of a bright object keeps the
network's own score (:mod:`.edges`). Everything is per 2-D plane. Z-stacks keep the network's voxel scores, shifted
in logit (:meth:`Rescorer.calibrate_voxels`) so that the model's default threshold keeps the voxels the network's
own default kept, and each plane's proposals join them as voxels (:func:`stack_plane_proposals`,
:func:`merge_stack_proposals`), so a spot the network misses in every plane is still a 3-D component. A model file
carries it as its optional ``"rescore"`` entry (:mod:`..weights.native`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..models.rescorer import FEATURES, LOWEST_THRESHOLD, NET_CLIP, SIGMAS, BoostedTrees, Rescorer
from .echoes import psf_echoes
from .edges import capped_scores
from .plateaus import clipped_spot_calls, clipped_spots
from .proposals import candidate_features
from .rescore_fit import auc, fit_boosted_trees, fit_logistic

__all__ = ["FEATURES", "LOWEST_THRESHOLD", "NET_CLIP", "SIGMAS", "BoostedTrees", "Rescorer", "auc",
           "candidate_features", "drop_hot_voxels", "fill_clipped_spots", "fit_boosted_trees", "fit_logistic",
           "merge_stack_proposals", "rescore_candidates", "rescore_frame", "rescore_voxels", "stack_plane_proposals",
           "StackPlateau"]

#: candidates scoring above this make the pairs that show a PSF's echoes (:func:`.echoes.psf_echoes`)
ECHO_ELIGIBLE = 0.05
#: z-stack voxels at or below this network score are no candidates (stacks get no proposals)
STACK_NET_FLOOR = 0.01


def rescore_candidates(rescorer: Rescorer, plane, yx: np.ndarray, net_scores: np.ndarray, device=None):
    """(coords, calibrated scores, extras of :func:`candidate_features`) of the network's candidates plus the
    plane's proposals (filtered on ``device``, see :func:`candidate_features`); a one-sided candidate's score is
    held to the network's (:func:`.edges.capped_scores`)."""
    yx, feats, extra = candidate_features(plane, yx, net_scores, rescorer.proposal_cut, rescorer.scale_cut,
                                          rescorer.merge_radius, device)
    prob = capped_scores(rescorer.probability(feats), extra["edge"], extra["network_score"], rescorer.net_floor)
    return yx, prob, extra


# -- what detect() calls -----------------------------------------------------------------------------------
def filter_device(device):
    """Where the second stage filters: a CUDA model's GPU (float64 there is exact enough and fast), else None
    (scipy on the CPU; MPS has no float64)."""
    return device if device is not None and getattr(device, "type", None) == "cuda" else None


def rescore_frame(rescorer: Rescorer, frame, plane, outer: dict, floor: float, device=None,
                  left_out: dict | None = None):
    """A plane's network candidates (a DataFrame with ``y, x, score``, or None) -> the rescored candidates
    (proposals added, ``score`` calibrated, ``contrast`` and ``relative_contrast`` added) above ``floor``, less
    the camera's hot pixels (:mod:`.hot_pixels`), the PSF's echoes (:mod:`.echoes`) and the repeat calls on a
    clipped spot (:mod:`.plateaus`: each spot of a clipped plateau has one call, at its centre), which are no
    spots at any threshold; ``left_out``: a count by rule (``hot_pixels``, ``psf_echoes``, ``plateau_repeats``)
    to add those to."""
    import pandas as pd

    yx = frame[["y", "x"]].to_numpy() if frame is not None else np.zeros((0, 2))
    net = frame["score"].to_numpy() if frame is not None else np.zeros(0)
    coords, prob, extra = rescore_candidates(rescorer, plane, yx, net, filter_device(device))
    above = prob > floor
    keep = above & ~extra["hot_pixel"]
    echo = psf_echoes(coords, extra["contrast"], keep & (prob > ECHO_ELIGIBLE))
    if left_out is not None:
        left_out["hot_pixels"] += int((above & extra["hot_pixel"]).sum())
        left_out["psf_echoes"] += int((keep & echo).sum())
    keep &= ~echo
    coords, repeat, added, donors = clipped_spot_calls(plane, coords, prob, extra["saturated"],
                                                       extra["clip_level"], keep)
    if len(added):  # the spots of a merged plateau without a call: each takes the plateau's best call's scores
        coords, prob = np.concatenate([coords, added]), np.concatenate([prob, prob[donors]])
        repeat = np.concatenate([repeat, np.zeros(len(added), dtype=bool)])
        keep = np.concatenate([keep, np.ones(len(added), dtype=bool)])
        extra = {k: np.concatenate([extra[k], extra[k][donors]])
                 for k in ("intensity", "contrast", "relative_contrast")}
    if left_out is not None:
        left_out["plateau_repeats"] += int(repeat.sum())
    keep &= ~repeat
    coords = coords[keep]
    n = len(coords)
    return pd.DataFrame({**{a: np.full(n, i) for a, i in outer.items()}, "y": coords[:, 0], "x": coords[:, 1],
                         "score": prob[keep], "intensity": extra["intensity"][keep],
                         "contrast": extra["contrast"][keep], "relative_contrast": extra["relative_contrast"][keep]})


def stack_plane_proposals(rescorer: Rescorer, plane, z: int, yx: np.ndarray, net_scores: np.ndarray,
                          floor: float, outer: dict, device=None, left_out: dict | None = None):
    """A z-stack plane's LoG proposals (:func:`candidate_features`) that no network peak of that plane sits
    near, as voxels (``z, row, col, score, dy, dx, intensity``) scored by the rescorer above ``floor``, and the
    (row, col) of the plane's network peaks that are a camera's hot pixels (:mod:`.hot_pixels`; the caller
    drops the network's voxels there, :func:`drop_hot_voxels`), and the plane's clipped spots (round plateaus
    and each spot of a merged or edge-cut one) as :class:`StackPlateau` (:mod:`.plateaus`; the caller makes each
    one voxel set, :func:`fill_clipped_spots`).

    Why: in a stack the network's voxels make the spots (3-D components), so a spot it scores near 0 in every
    plane (saturated, flat-topped, wide) had no voxel at all; a proposal's voxels in consecutive planes join
    into one component like the network's. ``yx``, ``net_scores``: the plane's 2-D network peaks (the
    proposals' neighbours, scored as on a plane). Proposals touching a network voxel are dropped later, with
    the neighbouring planes known (:func:`merge_stack_proposals`)."""
    import pandas as pd

    coords, prob, extra = rescore_candidates(rescorer, plane, yx, net_scores, filter_device(device))
    net_hot = ~extra["is_proposal"] & extra["hot_pixel"]
    hot_rc = np.rint(coords[net_hot]).astype(np.int64)
    live = (prob > floor) & ~extra["hot_pixel"]
    keep = extra["is_proposal"] & live
    found = clipped_spots(plane, coords, prob, extra["saturated"], extra["clip_level"], live)
    plateaus = [StackPlateau(spot.centre, spot.radius, spot.pixels,
                             float(prob[spot.calls[0] if len(spot.calls) else spot.best]), extra["clip_level"])
                for spot in found if len(spot.pixels)]
    if left_out is not None:  # per plane: a hot pixel through the stack counts once in each plane it is found
        left_out["hot_pixels"] += int(((prob > floor) & extra["hot_pixel"]).sum())
        left_out["plateau_repeats"] += sum(max(len(spot.calls) - 1, 0) for spot in found)
    coords, prob = coords[keep], prob[keep]
    h, w = (int(v) for v in plane.shape[-2:])
    r = np.clip(np.rint(coords[:, 0]).astype(np.int64), 0, h - 1)
    c = np.clip(np.rint(coords[:, 1]).astype(np.int64), 0, w - 1)
    n = len(r)
    return pd.DataFrame({**{a: np.full(n, i) for a, i in outer.items()}, "z": np.full(n, z, dtype=np.int32),
                         "row": r.astype(np.int32), "col": c.astype(np.int32), "score": prob.astype(np.float32),
                         "dy": (coords[:, 0] - r).astype(np.float32), "dx": (coords[:, 1] - c).astype(np.float32),
                         "intensity": extra["intensity"][keep]}), hot_rc, plateaus


#: a clipped spot's voxels replace the plane's voxels up to this far (px) outside the disc of its area
PLATEAU_REACH = 2.0


class StackPlateau(NamedTuple):
    """A clipped spot of a stack plane, as :func:`fill_clipped_spots` makes it a voxel set."""

    centre: np.ndarray  # (2,) where its voxels' offsets point
    radius: float  # of the disc of its area (px): the plane's voxels within PLATEAU_REACH of it go
    pixels: np.ndarray  # (n, 2) its voxels' rows and columns
    score: float  # the best score of the candidates on it
    value: float  # the clipped value: its voxels' intensity


def fill_clipped_spots(voxels, proposals, plateaus: list[StackPlateau], z: int, outer: dict):
    """A stack plane's network voxels and proposal voxels with each clipped spot (of
    :func:`stack_plane_proposals`) made one voxel set: every voxel within :data:`PLATEAU_REACH` px of the disc
    of its area goes, and each of its pixels becomes a voxel at the best score there, its offsets pointing at
    its centre. Why: the network's and the LoG's voxels ring a flat top in pieces, so a clipped spot became 2-7
    spots of the stack; filled, it is one 3-D component, centred where its plateau is (a merged plateau's
    spots are filled a gap apart, :data:`.plateaus.GAP`, so each stays its own component)."""
    import pandas as pd

    if not plateaus:
        return voxels, proposals
    from scipy.spatial import cKDTree

    best = [p.score for p in plateaus]

    def outside(f):
        """``f`` less its voxels near a plateau (each goes to the first plateau that reaches it), whose scores
        raise that plateau's best."""
        if f is None or not len(f):
            return f
        tree = cKDTree(np.column_stack([f["row"].to_numpy(), f["col"].to_numpy()]).astype(np.float64))
        scores = f["score"].to_numpy()
        drop = np.zeros(len(f), dtype=bool)
        for k, p in enumerate(plateaus):
            inside = np.asarray(tree.query_ball_point(p.centre, p.radius + PLATEAU_REACH), dtype=np.int64)
            inside = inside[~drop[inside]]
            best[k] = max(best[k], float(scores[inside].max(initial=-np.inf)))
            drop[inside] = True
        return f[~drop]

    voxels, proposals = outside(voxels), outside(proposals)
    filled = pd.concat([pd.DataFrame({**{a: np.full(len(p.pixels), i) for a, i in outer.items()},
                                      "z": np.full(len(p.pixels), z, dtype=np.int32),
                                      "row": p.pixels[:, 0].astype(np.int32), "col": p.pixels[:, 1].astype(np.int32),
                                      "score": np.full(len(p.pixels), score, dtype=np.float32),
                                      "dy": (p.centre[0] - p.pixels[:, 0]).astype(np.float32),
                                      "dx": (p.centre[1] - p.pixels[:, 1]).astype(np.float32),
                                      "intensity": np.full(len(p.pixels), float(p.value))})
                        for p, score in zip(plateaus, best)], ignore_index=True)
    voxels = filled if voxels is None or not len(voxels) else pd.concat([voxels, filled], ignore_index=True)
    return voxels, proposals


#: a hot pixel's network voxels reach this far (px, in rows and columns) from it
HOT_REACH = 2


def drop_hot_voxels(voxels, hot_rc: np.ndarray):
    """A plane's network voxels (``row``, ``col`` columns) less those within :data:`HOT_REACH` of a hot pixel."""
    if voxels is None or not len(voxels) or not len(hot_rc):
        return voxels
    from scipy.spatial import cKDTree

    rc = np.column_stack([voxels["row"].to_numpy(), voxels["col"].to_numpy()]).astype(np.float64)
    d, _ = cKDTree(np.asarray(hot_rc, dtype=np.float64)).query(rc, k=1, p=np.inf)
    return voxels[d > HOT_REACH].reset_index(drop=True)



def merge_stack_proposals(voxels, proposals, floor: float, axes: list, shape: tuple):
    """The stack's network voxels plus the proposals that touch no network voxel above ``floor`` (3 x 3 x 3):
    one that does is part of a spot the network already has (often its dim top or bottom plane).

    ``axes``: the index columns, outer ones first, ending ``z, row, col``; ``shape``: their sizes."""
    import pandas as pd

    if proposals is None or not len(proposals):
        return voxels
    if voxels is None or not len(voxels):
        return proposals
    shape = tuple(int(v) for v in shape)

    def keys(df, dz=0, dr=0, dc=0):
        idx = [df[a].to_numpy(np.int64) for a in axes]
        idx[-3:] = [idx[-3] + dz, idx[-2] + dr, idx[-1] + dc]
        ok = np.all([(i >= 0) & (i < n) for i, n in zip(idx, shape)], axis=0)
        k = np.ravel_multi_index(tuple(np.clip(i, 0, n - 1) for i, n in zip(idx, shape)), shape)
        return np.where(ok, k, -1)

    net = np.unique(keys(voxels[voxels["score"].to_numpy() > floor]))
    touching = np.zeros(len(proposals), dtype=bool)
    for dz in (-1, 0, 1):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                k = keys(proposals, dz, dr, dc)
                touching |= (k >= 0) & np.isin(k, net)
    # a voxel the network already holds (kept for its offsets) stays the network's
    taken = np.isin(keys(proposals), keys(voxels))
    return pd.concat([voxels, proposals[~touching & ~taken]], ignore_index=True)


def rescore_voxels(rescorer: Rescorer, tmaps: np.ndarray, i_score: int) -> np.ndarray:
    """A z-stack tile's maps with the score map calibrated (monotone, so components keep their shapes; pixels
    whose network score is at most :data:`STACK_NET_FLOOR` become 0, so they are never candidates)."""
    out = tmaps.copy()
    s = tmaps[i_score]
    out[i_score] = np.where(s > STACK_NET_FLOOR, rescorer.calibrate_voxels(s), 0.0)
    return out
