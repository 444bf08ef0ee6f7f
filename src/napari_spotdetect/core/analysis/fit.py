"""Per-spot Gaussian fits, all spots at once: sub-pixel centre, amplitude, sigma(s), background, SNR, integral.

Each spot is fitted on a small window around its detected position with a pixel-integrated Gaussian on a
flat background (the camera integrates the light over each pixel, so the fitted sigma is the optical one
and does not grow by the pixel's own width). The model is separable, so its value and Jacobian cost a few
error functions per window row and column. A batched Levenberg-Marquardt step solves every spot's small
normal equations in one ``numpy.linalg.solve`` call; the only Python loops are over iterations and over
chunks of a few thousand spots (memory stays bounded).

Parameters per spot: ``N`` (integrated intensity above background), the centre (``z``,) ``y``, ``x``, the
lateral sigma ``s`` (and axial ``sz`` for z-stacks) and the background ``b``. ``amplitude`` is the peak of
the continuous Gaussian, ``N / (2 pi s^2)`` (``N / ((2 pi)^1.5 s^2 sz)`` in 3-D); ``snr`` is that
amplitude over the noise, the robust spread (median absolute deviation) of the fit's residuals: a
neighbouring spot in a corner of the window does not count as noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import ndtr

from ..common.steps import run_steps
from ..detection.detect import Progress
from ..errors import SpotDetectError

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
#: columns :func:`fit_gaussians` returns, in order (``z_fit`` and ``sigma_z`` only for z-stacks)
FIT_COLUMNS = ["z_fit", "y_fit", "x_fit", "amplitude", "sigma", "sigma_z", "background", "integrated_intensity",
               "snr", "fit_ok"]


def _axis_profile(u, c, s):
    """Pixel-integrated 1-D Gaussian at pixel centres ``u`` (n, w) for centres ``c`` and sigmas ``s`` (n,).

    Returns the profile and its derivatives with respect to the centre and the sigma.
    """
    s = s[:, None]
    tp = (u + 0.5 - c[:, None]) / s
    tm = (u - 0.5 - c[:, None]) / s
    pp, pm = np.exp(-0.5 * tp * tp) * _INV_SQRT_2PI, np.exp(-0.5 * tm * tm) * _INV_SQRT_2PI
    g = ndtr(tp) - ndtr(tm)
    dc = -(pp - pm) / s
    ds = -(pp * tp - pm * tm) / s
    return g, dc, ds


class _Windows:
    """Pixel values around each spot, gathered with index arithmetic (no loop over spots)."""

    def __init__(self, img: np.ndarray, centres: np.ndarray, radius: tuple, neighbours=None):
        self.nd = img.ndim
        centre_px = np.rint(centres).astype(np.int64)
        offsets = [np.arange(-r, r + 1) for r in radius]
        # pixel coordinates along each axis: (n, w_axis)
        self.axes = [centre_px[:, i, None] + offsets[i][None, :] for i in range(self.nd)]
        grids = np.meshgrid(*[np.arange(len(o)) for o in offsets], indexing="ij")
        flat = [g.ravel() for g in grids]
        coords = [self.axes[i][:, flat[i]] for i in range(self.nd)]  # (n, M) per axis
        inside = np.ones(coords[0].shape, dtype=bool)
        for i, c in enumerate(coords):
            inside &= (c >= 0) & (c < img.shape[i])
        clipped = tuple(np.clip(c, 0, img.shape[i] - 1) for i, c in enumerate(coords))
        self.values = np.asarray(img[clipped], dtype=np.float64)
        if neighbours is not None and neighbours.shape[1]:
            # pixels nearer to another spot than to this one belong to that spot: left out of this fit
            own = sum((coords[i] - centres[:, i, None]) ** 2 for i in range(self.nd))  # (n, M)
            for j in range(neighbours.shape[1]):
                other = sum((coords[i] - neighbours[:, j, i, None]) ** 2 for i in range(self.nd))
                inside &= ~(other < own)  # NaN (no neighbour) compares False: pixel kept
        self.weight = inside.astype(np.float64)
        self.flat = flat  # which row of each axis profile every window pixel uses

    def take(self, idx) -> _Windows:
        """The windows of the spots ``idx`` (the active set of an iteration)."""
        out = object.__new__(_Windows)
        out.nd, out.flat = self.nd, self.flat
        out.axes = [a[idx] for a in self.axes]
        out.values, out.weight = self.values[idx], self.weight[idx]
        return out


def _model(p: np.ndarray, win: _Windows, jac: bool):
    """Model values (n, M) and, if ``jac``, the Jacobian (n, M, P) for parameters ``p``."""
    nd = win.nd
    n_amp, cen, b = p[:, 0], p[:, 1:1 + nd], p[:, -1]
    s_lat = p[:, 1 + nd]
    sig = [p[:, 2 + nd]] * (nd == 3) + [s_lat, s_lat]  # per axis: (sz,) s, s
    prof = [_axis_profile(win.axes[i].astype(np.float64), cen[:, i], sig[i]) for i in range(nd)]
    g = [pr[0][:, f] for pr, f in zip(prof, win.flat)]  # (n, M) per axis
    shape = np.prod(g, axis=0)
    model = b[:, None] + n_amp[:, None] * shape
    if not jac:
        return model, None
    n_par = p.shape[1]
    J = np.empty(model.shape + (n_par,))
    J[..., 0] = shape
    ds_lat = np.zeros_like(shape)
    for i in range(nd):
        others = np.prod([g[k] for k in range(nd) if k != i], axis=0)
        dc = prof[i][1][:, win.flat[i]]
        dsig = prof[i][2][:, win.flat[i]]
        J[..., 1 + i] = n_amp[:, None] * dc * others
        if nd == 3 and i == 0:
            J[..., 2 + nd] = n_amp[:, None] * dsig * others
        else:
            ds_lat += dsig * others
    J[..., 1 + nd] = n_amp[:, None] * ds_lat
    J[..., -1] = 1.0
    return model, J


def _initial(win: _Windows, centres: np.ndarray, radius: tuple, sigma0) -> np.ndarray:
    with warnings.catch_warnings():  # a window with no pixel in the image: NaN start, fit_ok False
        warnings.simplefilter("ignore", RuntimeWarning)
        return _initial_guess(win, centres, radius, sigma0)


def _initial_guess(win: _Windows, centres: np.ndarray, radius: tuple, sigma0) -> np.ndarray:
    nd = win.nd
    vals = np.where(win.weight > 0, win.values, np.nan)
    border = np.zeros(win.values.shape[1], dtype=bool)
    for i, r in enumerate(radius):
        border |= (win.flat[i] == 0) | (win.flat[i] == 2 * r)
    b0 = np.nanmedian(vals[:, border], axis=1)
    b0 = np.where(np.isfinite(b0), b0, np.nanmin(vals, axis=1))
    above = np.clip(np.nan_to_num(vals - b0[:, None]), 0, None)
    n0 = np.maximum(above.sum(axis=1), 1e-6)
    n = len(centres)
    p = np.empty((n, 3 + nd + (nd == 3)))
    p[:, 0] = n0
    p[:, 1:1 + nd] = centres
    lat = float(sigma0[-1])
    p[:, 1 + nd] = lat
    if nd == 3:
        p[:, 2 + nd] = float(sigma0[0])
    p[:, -1] = b0
    return p


def _constrain(p: np.ndarray, centres: np.ndarray, radius: tuple, nd: int) -> np.ndarray:
    p[:, 0] = np.maximum(p[:, 0], 1e-9)
    lim = np.asarray(radius, dtype=np.float64) + 0.5
    p[:, 1:1 + nd] = np.clip(p[:, 1:1 + nd], centres - lim, centres + lim)
    p[:, 1 + nd] = np.clip(p[:, 1 + nd], 0.3, 2.0 * max(radius[-2:]) + 1)
    if nd == 3:
        p[:, 2 + nd] = np.clip(p[:, 2 + nd], 0.3, 2.0 * radius[0] + 1)
    return p


def _neighbours(centres: np.ndarray, radius: tuple, k: int = 4) -> np.ndarray:
    """Up to ``k`` other spots close enough to share each spot's window: (n, k, nd), NaN where none."""
    from scipy.spatial import cKDTree

    n, nd = centres.shape
    out = np.full((n, k, nd), np.nan)
    if n < 2:
        return out
    reach = 2.0 * float(np.sqrt(np.sum(np.square(radius)))) + 1.0
    dist, idx = cKDTree(centres).query(centres, k=min(k + 1, n), distance_upper_bound=reach)
    dist, idx = dist[:, 1:], idx[:, 1:]  # the first hit is the spot itself
    found = np.isfinite(dist)
    out[:, :idx.shape[1]][found] = centres[idx[found]]
    return out


def _fit_chunk(img, centres, radius, sigma0, max_iter, neighbours=None):
    """Levenberg-Marquardt on every window of the chunk; converged spots leave the active set."""
    win = _Windows(img, centres, radius, neighbours)
    nd = win.nd
    p = _initial(win, centres, radius, sigma0)
    w = win.weight
    y = win.values * w
    lam = np.full(len(p), 1e-2)
    model, _ = _model(p, win, False)
    cost = ((y - model * w) ** 2).sum(axis=1)
    eye = np.eye(p.shape[1])
    act = np.arange(len(p))
    for _ in range(max_iter):
        if not len(act):
            break
        wa, pa, ya, wwa = win.take(act), p[act], y[act], w[act]
        model, J = _model(pa, wa, True)
        r = ya - model * wwa
        JwT = (J * wwa[..., None]).transpose(0, 2, 1)
        JTJ = np.matmul(JwT, J)
        grad = np.matmul(JwT, r[..., None])[..., 0]
        diag = np.einsum("npp->np", JTJ)
        A = JTJ + (lam[act, None] * diag + 1e-12)[:, :, None] * eye
        try:
            step = np.linalg.solve(A, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:  # pragma: no cover - a singular system in the batch: one by one
            step = np.stack([np.linalg.lstsq(a, g, rcond=None)[0] for a, g in zip(A, grad)])
        trial = _constrain(pa + step, centres[act], radius, nd)
        t_model, _ = _model(trial, wa, False)
        t_cost = ((ya - t_model * wwa) ** 2).sum(axis=1)
        better = t_cost <= cost[act]
        moved = np.abs(trial - pa)
        small = (moved[:, 1:1 + nd].max(axis=1) < 1e-3) & \
            (moved[:, 1 + nd:-1].max(axis=1) < 1e-3 * pa[:, 1 + nd:-1].max(axis=1))
        gain = (cost[act] - t_cost) / np.maximum(cost[act], 1e-30)
        p[act[better]] = trial[better]
        cost[act] = np.where(better, t_cost, cost[act])
        lam[act] = np.where(better, lam[act] / 3.0, np.minimum(lam[act] * 4.0, 1e8))
        done = (small & (gain < 1e-6)) | (lam[act] >= 1e8)
        act = act[~done]
    # noise: robust spread of the residuals (MAD), so a neighbour's light in a corner of the window does not
    # count as noise; the RMS of the residuals is the fallback where half the window is exactly fitted
    model, _ = _model(p, win, False)
    resid = np.where(w > 0, win.values - model, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dev = np.abs(resid - np.nanmedian(resid, axis=1, keepdims=True))
        noise = 1.4826 * np.nanmedian(dev, axis=1)
    n_pix = np.maximum(w.sum(axis=1), 1.0)
    rms = np.sqrt(cost / np.maximum(n_pix - p.shape[1], 1.0))
    noise = np.where(noise > 0, noise, rms)
    return p, noise


def _sigma0(sigma, nd: int) -> tuple:
    if sigma is None:
        sigma = (1.5, 1.2, 1.2)
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if s.size == 1:
        s = np.repeat(s, 3)
    if s.size == 2:
        s = np.array([s[0], s[1], s[1]])
    if s.size != 3 or np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise SpotDetectError(f"Initial sigma {sigma!r} is not one positive number, (z, xy) or (z, y, x).",
                              "pass e.g. sigma=1.3 or sigma=(1.8, 1.3) in pixels.")
    return (float(s[0]), float(s[-1])) if nd == 3 else (float(s[-1]),)


def _radius(window, nd: int, sigma0) -> tuple:
    if window is None:
        lat = max(3, int(np.ceil(2.5 * sigma0[-1])))
        return ((max(2, int(np.ceil(2.0 * sigma0[0]))),) if nd == 3 else ()) + (lat, lat)
    r = tuple(int(v) for v in np.atleast_1d(window))
    if len(r) == 1:
        r = (r[0],) * nd
    if len(r) == 2 and nd == 3:
        r = (r[0], r[1], r[1])
    if len(r) != nd or min(r) < 1:
        raise SpotDetectError(f"Window radius {window!r} does not fit a {nd}-D image.",
                              "pass one radius >= 1 (pixels) or one per axis, e.g. window=(2, 3, 3).")
    return r


def fit_gaussians_iter(image, centres, *, sigma=None, window=None, max_iter: int = 30, chunk: int = 4096,
                       split_neighbours: bool = True):
    """Generator form of :func:`fit_gaussians`: yields :class:`Progress` per chunk, returns the table."""
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise SpotDetectError(f"Gaussian fits need a 2-D plane or a 3-D (z, y, x) stack, not {img.ndim}-D.",
                              "pass one plane or one z-stack (use measure_spots for time series or channels).")
    nd = img.ndim
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, nd) if len(centres) else np.zeros((0, nd))
    if not np.all(np.isfinite(centres)):
        raise SpotDetectError("Some spot coordinates are not finite.", "drop rows with NaN coordinates.")
    sigma0 = _sigma0(sigma, nd)
    radius = _radius(window, nd, sigma0)
    n = len(centres)
    params = np.zeros((n, 3 + nd + (nd == 3)))
    noise = np.zeros(n)
    total = max(1, -(-n // chunk))
    yield Progress(0, total, f"fitting {n} spots")
    near = _neighbours(centres, radius) if split_neighbours else None
    for k, start in enumerate(range(0, n, chunk)):
        sl = slice(start, start + chunk)
        params[sl], noise[sl] = _fit_chunk(img, centres[sl], radius, sigma0, max_iter,
                                           None if near is None else near[sl])
        yield Progress(k + 1, total, f"fitted {min(n, start + chunk)} of {n} spots")
    return _table(params, noise, centres, radius, nd)


def _table(p, noise, centres, radius, nd) -> pd.DataFrame:
    n_amp, cen, s, b = p[:, 0], p[:, 1:1 + nd], p[:, 1 + nd], p[:, -1]
    sz = p[:, 2 + nd] if nd == 3 else None
    peak = n_amp / (2 * np.pi * s**2) if nd == 2 else n_amp / ((2 * np.pi) ** 1.5 * s**2 * sz)
    moved = np.abs(cen - centres) <= np.asarray(radius) - 0.5
    ok = moved.all(axis=1) & (s > 0.31) & (s < 2.0 * max(radius[-2:])) & np.all(np.isfinite(p), axis=1)
    if nd == 3:
        ok &= (sz > 0.31) & (sz < 2.0 * radius[0])
    snr = np.where(noise > 0, peak / np.maximum(noise, 1e-12), np.where(np.isnan(noise), np.nan, np.inf))
    ok &= (peak > 1e-6 * np.maximum(1.0, np.abs(b))) & (snr > 1.0)  # a spot stands out of its background
    cols = {}
    if nd == 3:
        cols["z_fit"] = cen[:, 0]
    cols.update(y_fit=cen[:, -2], x_fit=cen[:, -1], amplitude=peak, sigma=s)
    if nd == 3:
        cols["sigma_z"] = sz
    cols.update(background=b, integrated_intensity=n_amp,
                snr=snr, fit_ok=ok)
    return pd.DataFrame(cols)


def fit_gaussians(image, centres, *, sigma=None, window=None, max_iter: int = 30, chunk: int = 4096,
                  split_neighbours: bool = True, progress=None) -> pd.DataFrame:
    """Fit a pixel-integrated Gaussian on a flat background to every spot of a 2-D plane or 3-D stack.

    Args:
        image: (H, W) or (Z, H, W) array.
        centres: (N, 2) ``y, x`` or (N, 3) ``z, y, x`` spot positions in pixels (pixel centres at integers).
        sigma: starting sigma in pixels: one number, ``(z, lateral)`` or ``(z, y, x)``; default 1.5 (z), 1.2.
        window: half-size of the fitted window per axis in pixels; default about 2.5 sigma (at least 3).
        max_iter: Levenberg-Marquardt iterations at most.
        chunk: spots fitted together (memory is about ``chunk x window pixels x parameters x 8`` bytes).
        split_neighbours: leave out of each spot's window the pixels nearer to another spot (of
            ``centres``) than to it, so close pairs are measured one by one rather than as a blend.

    Returns:
        One row per spot, in order: ``[z_fit,] y_fit, x_fit, amplitude, sigma, [sigma_z,] background,
        integrated_intensity, snr, fit_ok`` (``fit_ok`` is False when the centre left its window or a sigma
        hit its bound: a blend of spots or noise, not a single spot).
    """
    return run_steps(fit_gaussians_iter(image, centres, sigma=sigma, window=window, max_iter=max_iter,
                                        chunk=chunk, split_neighbours=split_neighbours), progress)
