"""Synthetic smFISH-like images with known spot positions (for tests, sample data and training).

``synthetic_image(...)`` without ``kind`` is the simple generator (Gaussian spots on a tilted background,
Poisson + read noise) used for sample data. With ``kind`` it draws from a named preset of realistic
nuisances: PSF-like spots of varied width and brightness, clusters and close pairs, uneven textured
background, bright autofluorescent blobs and out-of-focus spots (neither is a spot: they are what a
detector must learn to ignore), and photon + read noise. ``KINDS["train"]`` is what the bundled default
model was trained on; ``"large_spots"`` and ``"dense_textured"`` are kinds it has not seen, for
fine-tuning tests and benchmarks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import SpotDetectError

#: presets; ranges are (low, high), drawn per image or per spot
KINDS: dict[str, dict] = {
    "train": dict(sigma=(0.9, 1.7), density=(4e-4, 2e-3), snr=(5.0, 40.0), background=(30.0, 400.0),
                  read_noise=(2.0, 12.0), gradient=0.5, texture=(0.0, 0.8), texture_scale=(6.0, 25.0),
                  cluster_frac=(0.0, 0.35), pair_frac=(0.0, 0.2), min_distance=3.0, blobs=(0, 4),
                  blob_sigma=(3.5, 8.0), defocus=(0, 10), defocus_sigma=(3.0, 5.0)),
    "large_spots": dict(sigma=(2.2, 3.0), density=(3e-4, 9e-4), snr=(4.0, 20.0), background=(100.0, 300.0),
                        read_noise=(5.0, 10.0), gradient=0.3, texture=(0.1, 0.4), texture_scale=(15.0, 30.0),
                        cluster_frac=(0.0, 0.1), pair_frac=(0.0, 0.0), min_distance=8.0, blobs=(0, 0),
                        blob_sigma=(6.0, 9.0), defocus=(0, 0), defocus_sigma=(5.0, 7.0)),
    "dense_textured": dict(sigma=(1.0, 1.5), density=(3e-3, 5e-3), snr=(4.0, 15.0), background=(200.0, 600.0),
                           read_noise=(5.0, 15.0), gradient=1.0, texture=(0.3, 0.6), texture_scale=(3.0, 8.0),
                           cluster_frac=(0.2, 0.5), pair_frac=(0.1, 0.3), min_distance=2.8, blobs=(2, 6),
                           blob_sigma=(3.0, 6.0), defocus=(5, 15), defocus_sigma=(2.5, 4.0)),
}


def _gauss(img, cy, cx, s, a):
    """Add an integrated (pixel-area) Gaussian: what a camera pixel collects from a PSF."""
    from scipy.special import erf

    h, w = img.shape
    rad = int(np.ceil(4 * s)) + 1
    r0, r1 = max(0, int(cy) - rad), min(h, int(cy) + rad + 2)
    c0, c1 = max(0, int(cx) - rad), min(w, int(cx) + rad + 2)
    if r0 >= r1 or c0 >= c1:
        return
    k = 1 / (np.sqrt(2) * s)
    ry = np.arange(r0, r1)
    rx = np.arange(c0, c1)
    py = 0.5 * (erf((ry + 0.5 - cy) * k) - erf((ry - 0.5 - cy) * k))
    px = 0.5 * (erf((rx + 0.5 - cx) * k) - erf((rx - 0.5 - cx) * k))
    # normalised so that `a` is the peak height of a spot centred on a pixel
    peak = erf(0.5 * k) ** 2
    img[r0:r1, c0:c1] += a / peak * np.outer(py, px)


def _positions(rng, h, w, n, p, border=2.0):
    """Spot centres: uniform, some in clusters (a few px apart) and some in close pairs."""
    pts: list[np.ndarray] = []
    md = p["min_distance"]

    def ok(q, dmin):
        if not (border <= q[0] <= h - 1 - border and border <= q[1] <= w - 1 - border):
            return False
        return all(np.hypot(*(q - o)) >= dmin for o in pts)

    n_cl = int(n * rng.uniform(*p["cluster_frac"]))
    n_pair = int(n * rng.uniform(*p["pair_frac"]))
    tries = 0
    while n_cl > 0 and tries < 50 * n:
        tries += 1
        centre = rng.uniform([border, border], [h - 1 - border, w - 1 - border])
        for _ in range(min(n_cl, int(rng.integers(3, 9)))):
            q = centre + rng.normal(0, 2.0 * md, 2)
            if ok(q, md):
                pts.append(q)
                n_cl -= 1
    tries = 0
    while len(pts) < n and tries < 200 * n:
        tries += 1
        q = rng.uniform([border, border], [h - 1 - border, w - 1 - border])
        if ok(q, md):
            pts.append(q)
            if n_pair > 0:
                ang = rng.uniform(0, 2 * np.pi)
                q2 = q + rng.uniform(max(2.5, 0.8 * md), 1.3 * md) * np.array([np.cos(ang), np.sin(ang)])
                if ok(q2, min(2.5, md)):
                    pts.append(q2)
                    n_pair -= 1
    return np.array(pts[:n] if len(pts) > n else pts, dtype=np.float64).reshape(-1, 2)


def _preset_image(shape, rng, p):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = rng.uniform(*p["background"])
    g = rng.normal(0, 1, 2) * p["gradient"] * bg
    base = bg + g[0] * (yy / h - 0.5) + g[1] * (xx / w - 0.5)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, shape), rng.uniform(*p["texture_scale"]), mode="reflect")
    tex = tex / (tex.std() + 1e-12)
    base = np.clip(base * (1 + rng.uniform(*p["texture"]) * np.tanh(tex)), 0.05 * bg, None)
    noise = np.sqrt(bg + rng.uniform(*p["read_noise"]) ** 2)  # typical noise std, to set spot brightness
    img = base.copy()
    n = int(round(h * w * rng.uniform(*p["density"])))
    coords = _positions(rng, h, w, n, p)
    for cy, cx in coords:
        _gauss(img, cy, cx, rng.uniform(*p["sigma"]), noise * np.exp(rng.uniform(*np.log(p["snr"]))))
    for _ in range(int(rng.integers(p["blobs"][0], p["blobs"][1] + 1))):
        c = rng.uniform([0, 0], [h, w])
        _gauss(img, c[0], c[1], rng.uniform(*p["blob_sigma"]), noise * rng.uniform(5, 40))
    for _ in range(int(rng.integers(p["defocus"][0], p["defocus"][1] + 1))):
        c = rng.uniform([0, 0], [h, w])
        _gauss(img, c[0], c[1], rng.uniform(*p["defocus_sigma"]), noise * rng.uniform(1.0, 3.0))
    read = rng.uniform(*p["read_noise"])
    img = rng.poisson(np.clip(img, 0, None)).astype(np.float64) + rng.normal(0, read, size=shape)
    return img.astype(np.float32), coords


def synthetic_image(shape=(256, 256), n_spots: int = 60, seed: int | None = 0, *, sigma=(1.0, 1.6),
                    amplitude=(300.0, 1000.0), background: float = 100.0, read_noise: float = 10.0,
                    min_distance: float = 4.0, border: float = 3.0, kind: str | None = None):
    """Return (image float32 of ``shape``, true coordinates (N, 2) float64 in (y, x) pixel centres).

    With ``kind`` (a key of :data:`KINDS`) the preset decides the spot count and everything else, and the
    other keyword arguments are ignored.
    """
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in shape)
    if kind is not None:
        if kind not in KINDS:
            raise SpotDetectError(f"Unknown synthetic kind {kind!r}.", f"use one of {', '.join(KINDS)}.")
        return _preset_image((h, w), rng, KINDS[kind])
    pts = []
    tries = 0
    while len(pts) < n_spots and tries < n_spots * 200:
        tries += 1
        p = rng.uniform([border, border], [h - 1 - border, w - 1 - border])
        if all(np.hypot(*(p - q)) >= min_distance for q in pts):
            pts.append(p)
    coords = np.array(pts, dtype=np.float64).reshape(-1, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    tilt = 0.3 * background * (yy / h + xx / w)
    img = background + tilt
    sig = rng.uniform(*sigma, size=len(coords))
    amp = rng.uniform(*amplitude, size=len(coords))
    for (cy, cx), s, a in zip(coords, sig, amp):
        r0, r1 = max(0, int(cy - 4 * s)), min(h, int(cy + 4 * s) + 2)
        c0, c1 = max(0, int(cx - 4 * s)), min(w, int(cx + 4 * s) + 2)
        img[r0:r1, c0:c1] += a * np.exp(-((yy[r0:r1, c0:c1] - cy) ** 2 + (xx[r0:r1, c0:c1] - cx) ** 2) / (2 * s * s))
    img = rng.poisson(np.clip(img, 0, None)).astype(np.float64) + rng.normal(0, read_noise, size=img.shape)
    return img.astype(np.float32), coords


def synthetic_dataset(n_images: int, kind: str = "train", seed: int = 0, shape=None,
                      sizes=((128, 128), (192, 256), (256, 256), (256, 320))) -> list:
    """``n_images`` (image, coords) pairs of one kind; sizes cycle through ``sizes`` unless ``shape`` is given.

    Image i uses seed (seed, i), so a dataset is reproducible and different seeds never share images.
    """
    out = []
    for i in range(int(n_images)):
        shp = shape or sizes[i % len(sizes)]
        out.append(synthetic_image(shp, seed=np.random.SeedSequence([int(seed), i]).generate_state(1)[0],
                                   kind=kind))
    return out


# -- realistic images: what real microscopy shows ----------------------------------------------------------
#: the ingredients of :func:`realistic_image`; ``without=`` leaves some out (for the ablation of the bundled model)
INGREDIENTS = ("wide_psf", "render8", "deconvolved", "negatives", "illumination", "clusters")
#: what the bundled model's first training data lacked; ``extras=`` adds them (each to about half the images)
EXTRAS = ("saturated", "bright_tissue")


def realistic_image(shape=(256, 256), seed: int | None = 0, without=(), extras=(), extras_rate: float = 0.5):
    """(image float32, true (N, 2) y/x): a synthetic image drawn to look like the real ones the model meets.

    Ingredients (each can be left out with ``without``):
    ``wide_psf``: spot width (PSF sigma) from 0.7 to 3 px (else 0.9-1.7); ``render8``: a third of the images
    contrast-stretched, clipped and quantised to 8 bits as a display render; ``deconvolved``: a third with
    the background subtracted to near zero and smooth, low noise; ``negatives``: hot pixels, 1-2 px specks,
    dim out-of-focus blobs and granular autofluorescent texture, none of which is a spot; ``illumination``:
    vignetting and gradients over spots and background alike, and brighter cell-like regions where spots sit;
    ``clusters``: dense clusters and close pairs.

    ``extras`` (each given one is drawn for a share ``extras_rate`` of the images, from a stream of its own, so
    an image that draws none is the image without ``extras``): ``saturated``, the camera's full well clipping the
    brightest 5-40 % of the spots into flat tops; ``bright_tissue``, autofluorescent tissue from half as
    bright as the typical spot to four times brighter, over 10-40 % of the field, with spots on it.
    """
    unknown = set(without) - set(INGREDIENTS)
    if unknown:
        raise SpotDetectError(f"Unknown ingredient(s) {sorted(unknown)}.", f"use some of {', '.join(INGREDIENTS)}.")
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise SpotDetectError(f"Unknown extra(s) {sorted(unknown)}.", f"use some of {', '.join(EXTRAS)}.")
    has = {k: k not in without for k in INGREDIENTS}
    rng = np.random.default_rng(seed)
    xrng = np.random.default_rng(None if seed is None else [int(seed), 7])
    drawn = {k: k in extras and xrng.random() < extras_rate for k in EXTRAS}
    h, w = (int(v) for v in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sigma = float(np.exp(rng.uniform(np.log(0.7), np.log(3.0)))) if has["wide_psf"] else rng.uniform(0.9, 1.7)
    style = _style(rng, has)
    bg = rng.uniform(30.0, 500.0)
    read = rng.uniform(2.0, 12.0)
    noise = np.sqrt(bg + read ** 2)
    # where spots may sit: the whole field, or cell-like regions (brighter, as nuclei and cytoplasm are)
    region = np.ones((h, w))
    cells = has["illumination"] and rng.random() < 0.5
    if cells:
        blob = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(12, 30), mode="reflect")
        region = (blob > np.quantile(blob, rng.uniform(0.3, 0.7))).astype(np.float64)
        region = ndimage.gaussian_filter(region, 2.0)
    base = np.full((h, w), bg) + region * bg * rng.uniform(0.0, 1.0) * cells
    density = rng.uniform(3e-4, 3e-3) / max(1.0, (sigma / 1.3) ** 2)
    n = int(round(h * w * density * (region.mean() if cells else 1.0)))
    md = max(2.5, 2.2 * sigma)
    p = dict(min_distance=md, cluster_frac=(0.0, 0.4) if has["clusters"] else (0.0, 0.0),
             pair_frac=(0.0, 0.2) if has["clusters"] else (0.0, 0.0))
    coords = _positions(rng, h, w, 4 * n if cells else n, p)
    if cells and len(coords):
        inside_cell = region[np.clip(np.rint(coords[:, 0]).astype(int), 0, h - 1),
                             np.clip(np.rint(coords[:, 1]).astype(int), 0, w - 1)] > 0.5
        coords = coords[inside_cell][:n]
    signal = np.zeros((h, w))
    typical = noise * np.exp(rng.uniform(np.log(3.0), np.log(60.0)))  # the image's typical spot height
    _draw_spots(signal, rng, coords, sigma, typical)
    junk = _negatives(rng, h, w, sigma, noise) if has["negatives"] else np.zeros((h, w))
    illum = _illumination(rng, h, w, yy, xx) if has["illumination"] else np.ones((h, w))
    if drawn["bright_tissue"]:
        tissue, on_tissue = _bright_tissue(xrng, h, w, sigma, typical, coords, md)
        junk = junk + tissue
        _draw_spots(signal, xrng, on_tissue, sigma, typical)
        coords = np.concatenate([coords.reshape(-1, 2), on_tissue])
    clean = (base + signal + junk) * illum
    if style == "deconvolved":
        # deconvolution: near-zero background, spots sharpened a little, smooth residual noise
        img = np.clip(clean - base * illum * rng.uniform(0.9, 1.0), 0, None)
        img = img + np.abs(ndimage.gaussian_filter(rng.normal(0, noise * rng.uniform(0.1, 0.4), (h, w)), 1.0))
    else:
        img = rng.poisson(np.clip(clean, 0, None)).astype(np.float64) + rng.normal(0, read, (h, w))
    if has["negatives"]:  # hot pixels come from the camera, after the optics
        k = int(rng.integers(0, 20))
        img[rng.integers(0, h, k), rng.integers(0, w, k)] += noise * np.exp(rng.uniform(np.log(5), np.log(50), k))
    if drawn["saturated"] and len(coords):
        img = _full_well(xrng, img, coords)
    if style == "render8":
        lo, hi = np.percentile(img, (rng.uniform(0.0, 5.0), rng.uniform(99.0, 99.95)))
        img = np.round(np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1) * 255)
    return img.astype(np.float32), coords


def _style(rng, has: dict) -> str:
    """How the image was recorded: ``raw``, an 8-bit display ``render8`` or ``deconvolved`` (a third each)."""
    style = rng.choice(["raw", "render8", "deconvolved"]) if (has["render8"] or has["deconvolved"]) else "raw"
    if style == "render8" and not has["render8"]:
        style = "deconvolved"
    if style == "deconvolved" and not has["deconvolved"]:
        style = "render8" if has["render8"] else "raw"
    return style


def _negatives(rng, h: int, w: int, sigma: float, noise: float) -> np.ndarray:
    """What is not a spot: dim out-of-focus blobs, granular autofluorescence in patches, 1-2 px specks."""
    junk = np.zeros((h, w))
    for _ in range(int(rng.integers(0, 8))):  # dim out-of-focus blobs, at least twice as wide as a spot
        c = rng.uniform([0, 0], [h, w])
        _gauss(junk, c[0], c[1], rng.uniform(2.0, 4.0) * max(sigma, 1.2), noise * rng.uniform(1.0, 4.0))
    if rng.random() < 0.5:  # granular autofluorescence, in patches
        tex = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(0.8, 1.6))
        tex = np.clip(tex / (tex.std() + 1e-12), 0, None)
        patch = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(15, 40), mode="reflect")
        patch = np.clip(patch / (patch.std() + 1e-12) - rng.uniform(0.0, 1.0), 0, 1)
        junk += tex * patch * noise * rng.uniform(0.5, 2.5)
    if sigma >= 1.0:  # 1-2 px specks: narrower than any spot of this image
        for _ in range(int(rng.integers(0, 25))):
            c = rng.uniform([0, 0], [h, w])
            _gauss(junk, c[0], c[1], rng.uniform(0.3, 0.45), noise * np.exp(rng.uniform(np.log(2), np.log(20))))
    return junk


def _draw_spots(signal: np.ndarray, rng, coords: np.ndarray, sigma: float, typical: float) -> None:
    """Add a spot at each of ``coords`` to ``signal``: its width within 15 % of ``sigma``, its height spread
    log-normally around ``typical`` (wider spots a little lower, as a fixed number of photons spreads)."""
    for cy, cx in coords:
        s = sigma * rng.uniform(0.85, 1.15)
        _gauss(signal, cy, cx, s, typical * np.exp(rng.normal(0, 0.4)) * (1.3 / max(s, 1.3)) ** 0.5)


def _bright_tissue(rng, h: int, w: int, sigma: float, typical: float, coords: np.ndarray, md: float):
    """(tissue, spots on it): smooth autofluorescent bodies with a coarse grain (wider than any spot, so the
    grain is not a spot) at 0.5-4x the typical spot's height, and spots sitting on them as often as elsewhere."""
    field = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(15, 40), mode="reflect")
    body = field > np.quantile(field, 1 - rng.uniform(0.1, 0.4))
    soft = ndimage.gaussian_filter(body.astype(np.float64), rng.uniform(2.0, 6.0))
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), max(3.0, 2.5 * sigma))
    grain = 1 + 0.3 * grain / (grain.std() + 1e-12)
    tissue = np.clip(soft * grain, 0, None) * typical * np.exp(rng.uniform(np.log(0.5), np.log(4.0)))
    inside = np.argwhere(body)
    n = int(round(len(inside) * len(coords) / max(h * w, 1)))
    if n == 0 or len(inside) == 0:
        return tissue, np.zeros((0, 2))
    m = min(len(inside), 4 * n)
    cand = inside[rng.choice(len(inside), size=m, replace=False)] + rng.uniform(-0.5, 0.5, (m, 2))
    near = coords.reshape(-1, 2)  # the spots so far, the kept ones appended
    first = len(near)
    for c in cand:
        if len(near) - first == n:
            break
        if (c[0] < 2 or c[1] < 2 or c[0] > h - 3 or c[1] > w - 3
                or (len(near) and np.min(np.hypot(*(near - c).T)) < md)):
            continue
        near = np.vstack([near, c[None]])
    return tissue, near[first:]


def _full_well(rng, img: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``img`` clipped where the camera saturates: at a level that the brightest 5-40 % of the spots exceed,
    but never below the image's 99.5th percentile (a full well that flattens the background is no camera's)."""
    r = np.clip(np.rint(coords).astype(int), 0, np.array(img.shape) - 1)
    peaks = img[r[:, 0], r[:, 1]]
    level = max(np.quantile(peaks, 1 - rng.uniform(0.05, 0.4)), np.percentile(img, 99.5))
    return np.minimum(img, level)


def _illumination(rng, h: int, w: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Vignetting and gradients: a smooth multiplier over spots and background alike."""
    cy, cx = rng.uniform([0, 0], [h, w])
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (max(h, w) ** 2)
    illum = np.exp(-r2 * rng.uniform(0.0, 2.0)) * (1 + rng.normal(0, 0.3) * (yy / h - 0.5)
                                                 + rng.normal(0, 0.3) * (xx / w - 0.5))
    return np.clip(illum, 0.2, None)


def realistic_dataset(n_images: int, seed: int = 0, shape=None, without=(), extras=(), extras_rate: float = 0.5,
                      sizes=((128, 128), (192, 256), (256, 256), (256, 320))) -> list:
    """``n_images`` :func:`realistic_image` pairs; image i uses seed (seed, i), as :func:`synthetic_dataset`."""
    return [realistic_image(shape or sizes[i % len(sizes)],
                            seed=np.random.SeedSequence([int(seed), i]).generate_state(1)[0], without=without,
                            extras=extras, extras_rate=extras_rate)
            for i in range(int(n_images))]


def spots_in_texture(seed: int = 0, shape=(256, 256), n_bright: int = 25, n_dim: int = 300):
    """(image, bright spot centres): bright, separated spots among many dim puncta (granular
    autofluorescence) that nobody would count, as in the crowd-annotated RCA images; for the contrast floor."""
    rng = np.random.default_rng(seed)
    img = 300.0 + rng.normal(0, 4.0, shape)
    bright = rng.uniform(10, np.array(shape) - 10, (n_bright, 2))
    for cy, cx in bright:
        _gauss(img, cy, cx, 1.4, rng.uniform(600, 1200))
    for cy, cx in rng.uniform(4, np.array(shape) - 4, (n_dim, 2)):
        _gauss(img, cy, cx, 1.1, rng.uniform(25, 60))
    return img.astype(np.float32), bright


def with_bright_patch(img: np.ndarray, level: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``img`` (2-D) with a textured patch, ``level`` x its 99.8th percentile at the core, in the lower right
    corner (like autofluorescent tissue brighter than every spot), and the mask of where the patch shows.

    For checking that a bright region does not cost the spots elsewhere (``benchmarks/bench_bright_region.py``,
    the tests of :mod:`..models.bright_regions`)."""
    h, w = img.shape
    r = 0.15 * min(h, w)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - (h - r - 2)) ** 2 + (xx - (w - r - 2)) ** 2) / (2 * (r / 1.5) ** 2))
    tex = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((h, w)), 3)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    patch = level * np.percentile(img, 99.8) * blob * (0.6 + 0.4 * tex) * (blob > 0.3)
    return (img.astype(np.float32) + patch).astype(np.float32), blob > 0.05
