"""The second stage's fitted values as a model carries them: a logistic model over per-candidate features.

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
    """Proposal settings plus a logistic model over standardised :data:`FEATURES`."""

    weights: np.ndarray  # (F,) on standardised features
    bias: float
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    net_floor: float = 0.002  # the network's peaks above this are candidates
    proposal_cut: float = 3.0  # LoG peaks above this (noise units) are proposals
    voxel_calibration: tuple = (1.0, 0.0)  # z-stacks: p = sigmoid(a * logit(net) + b)
    card: dict = field(default_factory=dict)

    # -- file round trip ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": [float(v) for v in self.weights], "bias": float(self.bias),
                "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
                "net_floor": float(self.net_floor), "proposal_cut": float(self.proposal_cut),
                "sigmas": list(SIGMAS), "voxel_calibration": [float(v) for v in self.voxel_calibration],
                "card": dict(self.card)}

    @classmethod
    def from_dict(cls, d: dict) -> Rescorer:
        if list(d.get("features", [])) != list(FEATURES) or list(d.get("sigmas", SIGMAS)) != list(SIGMAS):
            raise ValueError("the rescoring entry names features this version does not compute "
                             f"({d.get('features')}); update napari-spotdetect")
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("weights", "mean", "scale")}
        if any(a.shape != (len(FEATURES),) or not np.isfinite(a).all() for a in arr.values()):
            raise ValueError("the rescoring entry's weights are damaged")
        return cls(arr["weights"], float(d["bias"]), arr["mean"], arr["scale"], float(d.get("net_floor", 0.002)),
                   float(d.get("proposal_cut", 3.0)), tuple(float(v) for v in d.get("voxel_calibration", (1, 0))),
                   dict(d.get("card") or {}))

    # -- scoring ---------------------------------------------------------------------------------------------
    def probability(self, feats: np.ndarray) -> np.ndarray:
        z = ((feats - self.mean) / self.scale) @ self.weights + self.bias
        return sigmoid(z)

    def calibrate_voxels(self, net_scores: np.ndarray) -> np.ndarray:
        a, b = self.voxel_calibration
        return sigmoid(a * logit(net_scores) + b).astype(np.float32)


def sigmoid(z):
    """The logistic function, clipped so that exp never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def logit(p):
    """Log-odds of network scores clipped to [NET_CLIP, 1 - NET_CLIP]."""
    p = np.clip(np.asarray(p, dtype=np.float64), NET_CLIP, 1 - NET_CLIP)
    return np.log(p / (1 - p))
