"""The second stage's fitted values as a model carries them: a model over per-candidate features.

The score is a few shallow gradient-boosted trees (stored as arrays, evaluated with numpy) when the entry has
them, else the logistic model that every entry carries.

Why here: a model file holds its second stage (the optional ``"rescore"`` entry of :mod:`..weights.native`),
so the values and their file round trip belong with the models; computing the features of a plane's
candidates is detection's job (:mod:`..detection.rescore`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: LoG scales (px) of the proposal and feature maps
SIGMAS = (1.0, 1.5, 2.0, 3.0, 4.0)
#: per-candidate features, in the order of the logistic model's weights
FEATURES = ("net_logit", "has_net", "log_response", "log_sigma", "contrast", "relative_contrast",
            "local_snr", "saturated", "dominance", "relative_log")
#: network scores are clipped to this before their logit (and proposals the network did not find get the low end)
NET_CLIP = 1e-4
#: the lowest threshold a rescored model allows: its scores are probabilities, its default far above this
LOWEST_THRESHOLD = 0.001


@dataclass
class Rescorer:
    """Proposal settings plus a logistic model over standardised :data:`FEATURES` and, optionally, boosted trees
    over the raw features (:class:`BoostedTrees`), which then give the score."""

    weights: np.ndarray  # (F,) on standardised features
    bias: float
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    net_floor: float = 0.002  # the network's peaks above this are candidates
    proposal_cut: float = 3.0  # LoG peaks above this (noise units) are proposals
    scale_cut: float | None = None  # also each single scale's LoG peaks above this (None: not)
    merge_radius: float = 2.0  # no proposal within this distance (px) of a network candidate
    voxel_calibration: tuple = (1.0, 0.0)  # z-stacks: p = sigmoid(a * logit(net) + b)
    card: dict = field(default_factory=dict)
    trees: BoostedTrees | None = None

    # -- file round trip ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": [float(v) for v in self.weights], "bias": float(self.bias),
                "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
                "net_floor": float(self.net_floor), "proposal_cut": float(self.proposal_cut),
                "sigmas": list(SIGMAS), "scale_cut": None if self.scale_cut is None else float(self.scale_cut),
                "merge_radius": float(self.merge_radius),
                "voxel_calibration": [float(v) for v in self.voxel_calibration],
                "card": dict(self.card), **({"trees": self.trees.to_dict()} if self.trees is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Rescorer:
        if list(d.get("features", [])) != list(FEATURES) or list(d.get("sigmas", SIGMAS)) != list(SIGMAS):
            raise ValueError("the rescoring entry names features this version does not compute "
                             f"({d.get('features')}); update napari-spotdetect")
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("weights", "mean", "scale")}
        if any(a.shape != (len(FEATURES),) or not np.isfinite(a).all() for a in arr.values()):
            raise ValueError("the rescoring entry's weights are damaged")
        return cls(arr["weights"], float(d["bias"]), arr["mean"], arr["scale"], float(d.get("net_floor", 0.002)),
                   float(d.get("proposal_cut", 3.0)),
                   None if d.get("scale_cut") is None else float(d["scale_cut"]), float(d.get("merge_radius", 2.0)),
                   tuple(float(v) for v in d.get("voxel_calibration", (1, 0))), dict(d.get("card") or {}),
                   BoostedTrees.from_dict(d["trees"]) if d.get("trees") is not None else None)

    # -- scoring ---------------------------------------------------------------------------------------------
    def probability(self, feats: np.ndarray) -> np.ndarray:
        if self.trees is not None:
            return sigmoid(self.trees.logit(feats))
        z = ((feats - self.mean) / self.scale) @ self.weights + self.bias
        return sigmoid(z)

    def calibrate_voxels(self, net_scores: np.ndarray) -> np.ndarray:
        a, b = self.voxel_calibration
        return sigmoid(a * logit(net_scores) + b).astype(np.float32)


@dataclass
class BoostedTrees:
    """Gradient-boosted binary trees of one depth D over the raw features, as arrays: tree t sends a candidate
    from internal node k (0-based, breadth first, ``2**D - 1`` of them) to node ``2k + 2`` when its feature
    ``feature[t, k]`` is at least ``threshold[t, k]``, else to ``2k + 1`` (``feature`` -1: always ``2k + 1``);
    leaf j adds ``value[t, j]`` to the log-odds, which start at ``base``."""

    base: float
    feature: np.ndarray  # (T, 2**D - 1) int
    threshold: np.ndarray  # (T, 2**D - 1)
    value: np.ndarray  # (T, 2**D)

    @property
    def depth(self) -> int:
        return int(self.value.shape[1]).bit_length() - 1

    def logit(self, feats: np.ndarray) -> np.ndarray:
        x = np.asarray(feats, dtype=np.float64).reshape(-1, len(FEATURES))
        rows = np.arange(len(x))
        n_inner = self.feature.shape[1]
        out = np.full(len(x), self.base)
        for f, t, v in zip(self.feature, self.threshold, self.value):
            node = np.zeros(len(x), dtype=np.int64)
            for _ in range(self.depth):
                fk = f[node]
                right = (fk >= 0) & (x[rows, np.maximum(fk, 0)] >= t[node])
                node = 2 * node + 1 + right
            out += v[node - n_inner]
        return out

    def to_dict(self) -> dict:
        return {"base": float(self.base), "feature": self.feature.astype(int).tolist(),
                "threshold": self.threshold.astype(float).tolist(), "value": self.value.astype(float).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> BoostedTrees:
        try:
            feat = np.asarray(d["feature"], dtype=np.int64)
            thr = np.asarray(d["threshold"], dtype=np.float64)
            val = np.asarray(d["value"], dtype=np.float64)
            base = float(d["base"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the rescoring entry's trees are damaged ({e})") from None
        ok = (feat.ndim == 2 and val.ndim == 2 and thr.shape == feat.shape and len(val) == len(feat)
              and val.shape[1] == feat.shape[1] + 1 and val.shape[1] >= 2 and val.shape[1] & (val.shape[1] - 1) == 0
              and feat.min(initial=-1) >= -1 and feat.max(initial=-1) < len(FEATURES)
              and np.isfinite(val).all() and np.isfinite(base) and not np.isnan(thr).any())
        if not ok:
            raise ValueError("the rescoring entry's trees are damaged")
        return cls(base, feat, thr, val)


def sigmoid(z):
    """The logistic function, clipped so that exp never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def logit(p):
    """Log-odds of network scores clipped to [NET_CLIP, 1 - NET_CLIP]."""
    p = np.clip(np.asarray(p, dtype=np.float64), NET_CLIP, 1 - NET_CLIP)
    return np.log(p / (1 - p))
