"""Keep one bright region from setting a whole plane's brightness scale.

Percentile-normalised models map a plane's 99.8th percentile to 1. That is the level of the brightest spots as
long as spots hold the plane's brightest pixels. A bright autofluorescent patch, a cell body or debris brighter
than every spot takes those pixels instead: the percentile then sits at the patch's level, every ordinary spot
looks several times dimmer than any spot the model trained on, and many of them fall out (measured by
``benchmarks/bench_bright_region.py``: a textured patch 3x the brightest spots, over a few % of a real image,
cost the spots outside it F1 0.69 -> 0.49 on the mean of the ``val`` sources, 0.71 -> 0.12 on one).

What tells such a region apart from bright spots: the pixels above the high percentile lie almost all in one
connected *body* (the area above half of the high level), where spots spread them over many separate bodies.
When one body holds at least :data:`DOMINANT` of them, it is left out with its rim and the percentile is taken
from the rest, again while one body dominates (a patch's rim can take over once its core is out). Planes whose
brightest pixels are spots keep exactly their limits: on every real ``train`` image the largest share one body
holds is at most 0.82 (a nucleus holding most of an image's TetO spots), against 0.88-1.0 for the same images
with a patch 3x their brightest spots pasted in (``DOMINANT`` was set there, never on ``val``; no real ``val``
image's limits change either). The held-out synthetic benchmark moves by 1e-4 (one of its 20 images holds a
bright out-of-focus blob that now counts as a region). A milder patch (2x) is caught on 60 of the 82 ``train``
images, a 3x one on 80.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: a body holding this share of the pixels above the high percentile is a bright region, not spots
DOMINANT = 0.9
#: at most this many regions are left out, and never more than :data:`MAX_SHARE` of the plane
MAX_REGIONS = 6
MAX_SHARE = 0.5
#: a region's body: its connected area above this fraction of the way from the low to the high level
BODY_LEVEL = 0.5
#: what is left out with a region: its connected area above this fraction (its rim, see :func:`_skirt`)
SKIRT_LEVEL = 0.2
_EIGHT = np.ones((3, 3), bool)


def _dominant_body(ch: np.ndarray, lo: float, hi: float, out: np.ndarray):
    """(mask of the body holding most pixels above ``hi``, its share of them), outside ``out``."""
    top = (ch > hi) & ~out
    n_top = int(top.sum())
    if n_top == 0:
        return None, 0.0
    body, n = ndimage.label((ch > lo + BODY_LEVEL * (hi - lo)) & ~out, structure=_EIGHT)
    counts = np.bincount(body[top], minlength=n + 1)
    counts[0] = 0
    k = int(np.argmax(counts))
    return body == k, counts[k] / n_top


def _skirt(ch: np.ndarray, lo: float, hi: float, out: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The region around a dominant ``body`` down to :data:`SKIRT_LEVEL`: its dimmer rim, which would take the
    top pixels next if only the body were left out (a textured patch's rim breaks into many bodies)."""
    lab, _ = ndimage.label((ch > lo + SKIRT_LEVEL * (hi - lo)) & ~out, structure=_EIGHT)
    ids = np.unique(lab[body])
    return np.isin(lab, ids[ids > 0]) | body


def without_bright_regions(ch: np.ndarray, lo: float, hi: float, high_percentile: float,
                           step: int = 1) -> tuple[float, float]:
    """(high limit, share of the plane left out): ``hi`` unless bright regions dominate the top pixels of the
    2-D channel ``ch`` (read at ``step``, see :func:`.piscis.percentile_limits`), then the ``high_percentile`` of
    the pixels outside them."""
    out = np.zeros(ch.shape, bool)
    grow = max(1, int(round(2 / step)))
    for _ in range(MAX_REGIONS):
        body, share = _dominant_body(ch, lo, hi, out)
        if body is None or share < DOMINANT:
            break
        region = ndimage.binary_dilation(_skirt(ch, lo, hi, out, body), structure=_EIGHT, iterations=grow)
        if (out | region).mean() > MAX_SHARE:  # the skirt reaches too far: the body alone
            region = ndimage.binary_dilation(body, structure=_EIGHT, iterations=grow)
        if (out | region).mean() > MAX_SHARE:  # most of the plane: that is the image, not a region in it
            break
        out |= region
        new_hi = float(np.percentile(ch[~out], high_percentile))
        if not new_hi > lo:
            break
        hi = new_hi
    return hi, float(out.mean())
