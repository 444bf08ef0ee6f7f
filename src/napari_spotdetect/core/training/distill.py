"""Training a Piscis-architecture network to reproduce another one's maps (knowledge distillation).

Why: a smaller or faster body (the folded one) trained on the annotations alone stays behind the bundled
network on real images; the bundled network's own maps on the same crops say more than the annotations do
(how sure it is at every pixel, where it puts a spot's centre on images nobody annotated fully), so the
student is taught both: the usual SmoothF1 + masked L2 against the annotations, plus this term against the
teacher's pooled label probabilities, the map detection reads its spots and scores from (their
Kullback-Leibler divergence per pixel, the teacher's probability as a soft target, summed and divided by the
teacher's spot mass), and displacements (squared error, weighted by the teacher's probability: a displacement
only matters where a spot is). Not the un-pooled maps: SmoothF1 scores only the pooled ones, so two
networks can reach the same pooled map from quite different un-pooled ones.

Measured on the folded network with the bundled one as teacher (README, *A folded network*): it moves the
student towards the teacher on the trainer's validation images, but not on the synthetic held-out images or
the real ones the second stage is fitted on, so no shipped model uses it yet.

The teacher sees exactly the student's input (the same normalised, augmented crop), so it must normalise
images as the student does. It runs without gradients, in float32, loaded onto the trainer's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SpotDetectError

#: probabilities are clipped this far from 0 and 1 before the cross-entropy
EPS = 1e-6


class Teacher:
    """A frozen Piscis-architecture network whose maps a student is trained to reproduce."""

    def __init__(self, model, adjustment: str | None, weight: float = 1.0):
        from ..models.piscis import PiscisModel

        if not isinstance(model, PiscisModel):
            raise SpotDetectError(f"A teacher must be a Piscis-architecture model, not a {type(model).__name__}.",
                                  "pass a Piscis-architecture model file (e.g. the bundled 'default').")
        if model.adjustment != adjustment:
            raise SpotDetectError(f"The teacher normalises its input by {model.adjustment!r}, the student by "
                                  f"{adjustment!r}: the teacher would see other images than it was trained on.",
                                  f"train the student with --normalization {model.adjustment}.")
        if not weight > 0:
            raise SpotDetectError(f"Distillation weight {weight!r} is not above 0.", "use e.g. 1.0.")
        self.net = model.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.weight = float(weight)

    def loss(self, x: torch.Tensor, pooled: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(weighted distillation loss, its parts) of the student's pooled labels ``pooled`` (B, H, W) and
        ``deltas`` (B, 2, H, W) on input ``x`` against the teacher's."""
        with torch.no_grad():
            t_pooled, t_deltas = self.net(x.float())
        p, t = pooled.clamp(EPS, 1 - EPS), t_pooled.clamp(EPS, 1 - EPS)
        # the cross-entropy less the teacher's own entropy (KL divergence: 0 where the maps agree), per unit of
        # the teacher's spot mass: most pixels are background, and a per-pixel mean would drown the spots
        mass = t_pooled.sum().clamp_min(1.0)
        kl = (F.binary_cross_entropy(p, t, reduction="sum") - F.binary_cross_entropy(t, t, reduction="sum")) / mass
        l2 = ((deltas - t_deltas) ** 2 * t_pooled[:, None]).sum() / (2 * mass)
        total = self.weight * (kl + l2)
        return total, {"distill_kl": float(kl.detach()), "distill_l2": float(l2.detach())}
