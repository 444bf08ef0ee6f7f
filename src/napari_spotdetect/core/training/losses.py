"""Training losses (differentiable torch), one per method the Piscis paper compares, plus DeepSpot's.

All Piscis-style losses take the network's un-pooled probabilities ``labels`` (B, H, W), pooled
``pooled`` (B, H, W) and ``deltas`` (B, 2, H, W), and a target dict with ``labels`` (B, H, W) 0/1,
``deltas`` (B, 2, H, W) and ``n_spots`` (B,). Each returns the batch-mean total and a dict of its parts,
so progress reports can show them. "Paper" is the Piscis preprint (sections 4.2.5-4.2.10); "1.1.0" is
the released piscis package (shared/specs/piscis-1.1.md section 5.5).
"""

from __future__ import annotations

import torch

from ..errors import SpotDetectError
from ..models.ops import deformable_pool, deformable_softmax_pool, peak_local_softmax

#: weight of the masked L2 term; the paper uses 0.25 (piscis 1.1.0 ships 0.1)
L2_WEIGHT = 0.25


def masked_l2(deltas_pred, deltas_gt, mask, eps: float = 1e-7) -> torch.Tensor:
    """Paper eq. 4.2.6: mean Euclidean (not squared) displacement error over the GT spot pixels, per image."""
    err = torch.sqrt(((deltas_pred - deltas_gt) ** 2).sum(dim=1))
    mask = mask.to(err.dtype)
    return (err * mask).sum(dim=(1, 2)) / (mask.sum(dim=(1, 2)) + eps)


def smoothf1(pooled, deltas_pred, deltas_gt, n_spots, *, max_distance: float = 3.0, kernel_size: int = 3,
             temperature: float = 0.05, eps: float = 1e-7) -> torch.Tensor:
    """Negative soft F1 per image, as piscis 1.1.0 computes it (paper eq. 4.2.5, 1.1.0 form).

    peaked = peak_local_softmax(pooled) (soft NMS, always 3x3); quality = max(1 - |d_pred - d_gt| / Dmax, 0);
    TP = sum(min(sumpool_gt(peaked), 1) * softmaxpool_gt(peaked, quality)) where both pools use the
    *ground-truth* displacements, so prediction mass lands only on true spot pixels; FP = sum(peaked) - TP;
    FN = n_spots - TP; loss = -2 TP / (2 TP + FP + FN).
    """
    peaked = peak_local_softmax(pooled, 3, temperature)
    quality = torch.clamp(1 - torch.sqrt(((deltas_pred - deltas_gt) ** 2).sum(dim=1)) / max_distance, min=0)
    assign = deformable_pool(peaked, deltas_gt, kernel_size, "sum").clamp(max=1)
    match = deformable_softmax_pool(peaked, deltas_gt, quality, kernel_size, temperature)
    tp = (assign * match).sum(dim=(1, 2))
    fp = peaked.sum(dim=(1, 2)) - tp
    fn = n_spots.to(tp.dtype) - tp
    tp = tp + eps
    return -2 * tp / (2 * tp + fp + fn)


def dice(labels, labels_gt, eps: float = 1e-7) -> torch.Tensor:
    """Paper eq. 4.2.8: negative soft Dice of un-pooled probabilities against the GT labels, per image."""
    g = labels_gt.to(labels.dtype)
    return -2 * (labels * g).sum(dim=(1, 2)) / (g.sum(dim=(1, 2)) + labels.sum(dim=(1, 2)) + eps)


def _alpha(g):
    pos = g.sum(dim=(1, 2), keepdim=True)
    return ((g.numel() / g.shape[0]) - pos) / pos.clamp(min=1)


def weighted_ce(labels, labels_gt, eps: float = 1e-7) -> torch.Tensor:
    """Paper eq. 4.2.9: cross entropy with the positive class weighted by (#negative / #positive)."""
    g = labels_gt.to(labels.dtype)
    p = labels.clamp(eps, 1 - eps)
    ce = _alpha(g) * g * torch.log(p) + (1 - g) * torch.log(1 - p)
    return -ce.mean(dim=(1, 2))


def weighted_focal(labels, labels_gt, gamma: float = 2.0, eps: float = 1e-7) -> torch.Tensor:
    """Paper eq. 4.2.10: the weighted cross entropy with focal factors (1-p)^gamma and p^gamma."""
    g = labels_gt.to(labels.dtype)
    p = labels.clamp(eps, 1 - eps)
    f = _alpha(g) * (1 - p) ** gamma * g * torch.log(p) + p ** gamma * (1 - g) * torch.log(1 - p)
    return -f.mean(dim=(1, 2))


def deepspot_loss(pred, target, eps: float = 1e-7) -> torch.Tensor:
    """DeepSpot: mean binary cross entropy + (max(pred) - max(target))^2, maxima over the whole batch.

    ``target`` is the enhancement image (:func:`targets.deepspot_target`), in [0, 1].
    """
    p = pred.clamp(eps, 1 - eps)
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    return bce + (pred.max() - target.max()) ** 2


class PiscisLoss:
    """A classification loss + ``l2_weight`` x masked L2 on the displacements, batch-averaged.

    ``kind``: ``"smoothf1"`` (on pooled labels, the paper's main loss), ``"dice"``, ``"ce"``, ``"focal"``
    (on un-pooled probabilities, the paper's comparisons). ``dilation`` is the GT-label dilation the
    targets should use: 1 for all, except 0 for Dice (the paper mimics deepBlink's 1x1 grid there).
    """

    KINDS = ("smoothf1", "dice", "ce", "focal")

    def __init__(self, kind: str = "smoothf1", l2_weight: float = L2_WEIGHT, *, max_distance: float = 3.0,
                 kernel_size: int = 3, temperature: float = 0.05, dilation: int | None = None):
        if kind not in self.KINDS:
            raise SpotDetectError(f"Unknown loss {kind!r}.", f"use one of {', '.join(self.KINDS)}.")
        self.kind = kind
        self.l2_weight = float(l2_weight)
        self.max_distance = float(max_distance)
        self.kernel_size = int(kernel_size)
        self.temperature = float(temperature)
        self.dilation = (0 if kind == "dice" else 1) if dilation is None else int(dilation)

    def __call__(self, labels, pooled, deltas, target: dict):
        lg, dg = target["labels"], target["deltas"]
        if self.kind == "smoothf1":
            cls = smoothf1(pooled, deltas, dg, target["n_spots"], max_distance=self.max_distance,
                           kernel_size=self.kernel_size, temperature=self.temperature)
        elif self.kind == "dice":
            cls = dice(labels, lg)
        elif self.kind == "ce":
            cls = weighted_ce(labels, lg)
        else:
            cls = weighted_focal(labels, lg)
        l2 = masked_l2(deltas, dg, lg)
        cls, l2 = cls.mean(), l2.mean()
        total = cls + self.l2_weight * l2
        return total, {"loss": float(total.detach()), self.kind: float(cls.detach()), "l2": float(l2.detach())}
