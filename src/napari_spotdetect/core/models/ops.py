"""Array operations shared by inference and training: deformable pooling, peak finding, stack merging.

Deformable pooling is the step that turns Piscis's per-pixel spot probabilities and displacements into one
sharp value per spot: every pixel "votes" for the pixel its displacement points at, if that pixel is inside
its k x k window. The rounding (half to even) and the window rule follow piscis 1.1.0 exactly, because they
decide which pixel a spot lands on.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def weights_version(tensors) -> tuple:
    """A key that changes whenever any of ``tensors`` changes in place (training, ``load_state_dict``) or is
    replaced, moved or cast: for caches of arrays derived from weights (folded or re-arranged kernels)."""
    return tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


def landing_pixels(deltas: torch.Tensor, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index of the pixel each pixel votes for, and whether the vote counts.

    ``deltas`` is (B, 2, H, W) (dy, dx). A vote counts if the rounded displacement stays inside the
    ``kernel_size`` window around the source pixel and inside the image.
    """
    b, _, h, w = deltas.shape
    r = kernel_size // 2
    step = torch.round(deltas).to(torch.int64)  # half to even, as torch.round in piscis
    rows = torch.arange(h, device=deltas.device).view(1, h, 1)
    cols = torch.arange(w, device=deltas.device).view(1, 1, w)
    ly = rows + step[:, 0]
    lx = cols + step[:, 1]
    valid = (step[:, 0].abs() <= r) & (step[:, 1].abs() <= r) & (ly >= 0) & (ly < h) & (lx >= 0) & (lx < w)
    flat = (ly.clamp(0, h - 1) * w + lx.clamp(0, w - 1)) + (torch.arange(b, device=deltas.device) * h * w).view(
        b, 1, 1
    )
    return flat, valid


def deformable_pool(labels: torch.Tensor, deltas: torch.Tensor, kernel_size: int = 3, mode: str = "max"):
    """Pool (B, H, W) ``labels`` along (B, 2, H, W) ``deltas``: ``max`` (piscis) or ``sum`` (PiscisLegacy).

    Max pooling starts from 0, so pixels nobody votes for are 0. Both modes are differentiable in ``labels``
    (scatter-max passes the gradient to the winning voter).
    """
    b, h, w = labels.shape
    flat, valid = landing_pixels(deltas, kernel_size)
    src = torch.where(valid, labels, torch.zeros((), dtype=labels.dtype, device=labels.device)).reshape(-1)
    out = torch.zeros(b * h * w, dtype=labels.dtype, device=labels.device)
    if mode == "max":
        out = out.scatter_reduce(0, flat.reshape(-1), src, reduce="amax", include_self=True)
    elif mode == "sum":
        out = out.scatter_add(0, flat.reshape(-1), src)
    else:
        raise ValueError(f"unknown pooling mode {mode!r} (expected 'max' or 'sum')")
    return out.view(b, h, w)


def neighbours_nearest_first(size: int) -> list:
    """The offsets of a size x size window but its centre, nearest first (they reject the most points soonest)."""
    r = size // 2
    return sorted(((dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1) if dr or dc),
                  key=lambda o: (abs(o[0]) + abs(o[1]), o))


def values_around(m: np.ndarray, rc: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``m`` at each point of ``rc`` (N, 2 rows and cols) moved by each of ``offsets`` (K, 2): (N, K), the image's
    edges clamped (as ``mode="nearest"``). One gather for a window or a ring around many points."""
    h, w = m.shape
    r = np.clip(rc[:, :1] + offsets[:, 0], 0, h - 1)
    c = np.clip(rc[:, 1:] + offsets[:, 1], 0, w - 1)
    return m[r, c]


def peaks_above(m: np.ndarray, cut: float, where: np.ndarray | None = None, size: int = 3) -> np.ndarray:
    """(row, col), row-major, of the pixels of ``m`` above ``cut`` (and in ``where``) that are the maximum of their
    ``size`` x ``size`` window, edges as ``ndimage.maximum_filter(mode="nearest")``: the same pixels as
    ``argwhere((m == maximum_filter(m, size)) & (m > cut) & where)``, but only the pixels above the cut are
    compared, a neighbour at a time, so a map whose pixels mostly sit below it costs a fraction of a filter."""
    h, w = m.shape
    above = m > cut
    rc = np.argwhere(above & where if where is not None else above)
    v = m[rc[:, 0], rc[:, 1]]
    for dr, dc in neighbours_nearest_first(size):
        if not len(rc):
            break
        keep = v >= m[np.clip(rc[:, 0] + dr, 0, h - 1), np.clip(rc[:, 1] + dc, 0, w - 1)]
        rc, v = rc[keep], v[keep]
    return rc


def local_maxima(score: np.ndarray, floor: float, min_distance: int = 1) -> np.ndarray:
    """Peak pixels of a 2-D map, as skimage's ``peak_local_max(exclude_border=False)`` finds them.

    A peak equals the maximum of its (2 min_distance + 1)^2 neighbourhood (edges replicated) and is strictly
    above ``floor``; a map equal to its maximum filter everywhere has none. Returned (K, 2) int64, ordered
    by decreasing value (ties in raster order). With ``min_distance > 1`` equal neighbours are thinned greedily
    in that order; because the greedy pass only looks at stronger peaks, keeping the peaks above a higher
    threshold later is the same as finding them at that threshold.
    """
    size = 2 * min_distance + 1
    if score.size == 0 or size == 1 or score.min() == score.max():  # equal to its maximum filter everywhere
        return np.zeros((0, 2), dtype=np.int64)
    # only the pixels above the floor are compared (a spot map is near 0 almost everywhere): 8x sooner than a
    # maximum filter over the whole tile, the same pixels
    peaks = peaks_above(score, floor, size=size)
    order = np.argsort(-score[peaks[:, 0], peaks[:, 1]], kind="stable")
    peaks = peaks[order]
    if min_distance > 1 and len(peaks) > 1:
        peaks = _thin_peaks(peaks, min_distance)
    return peaks


def _thin_peaks(peaks: np.ndarray, min_distance: int) -> np.ndarray:
    """Greedy Chebyshev spacing: drop a peak within ``min_distance`` of an already kept one."""
    from scipy.spatial import cKDTree

    tree = cKDTree(peaks)
    removed = np.zeros(len(peaks), dtype=bool)
    for i in range(len(peaks)):
        if removed[i]:
            continue
        for j in tree.query_ball_point(peaks[i], r=min_distance, p=np.inf):
            if j > i:
                removed[j] = True
    return peaks[~removed]


def stack_components(score: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Spots of a (Z, H, W) score map as piscis finds them in stacks.

    One spot per 26-connected component of ``score > threshold``: its voxel is the component's centroid
    truncated to integers. Returns (K, 3) int64 voxels and (K,) the component's maximum score.
    """
    mask = score > threshold
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.float32)
    index = np.arange(1, n + 1)
    zz, yy, xx = np.nonzero(lab)
    ids = lab[zz, yy, xx]
    counts = np.bincount(ids, minlength=n + 1)[1:]
    cent = np.stack([np.bincount(ids, weights=a, minlength=n + 1)[1:] / counts for a in (zz, yy, xx)], axis=1)
    voxels = cent.astype(np.int64)  # truncation, as piscis casts the centroid
    peak = ndimage.maximum(score, lab, index).astype(np.float32)
    return voxels, np.atleast_1d(peak)


def _windows(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B, H, W) -> (B, k*k, H, W): each pixel's zero-padded k x k neighbourhood, row-major offsets."""
    b, h, w = x.shape
    r = kernel_size // 2
    cols = torch.nn.functional.unfold(x[:, None], kernel_size, padding=r)
    return cols.view(b, kernel_size * kernel_size, h, w)


def _votes(deltas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B, k*k, H, W) bool: does the window pixel at each offset vote for the centre pixel?

    The pixel at offset (a, b) from q lands on q iff its rounded displacement is exactly (-a, -b). Padding
    outside the image has displacement 0 and so only "votes" at offset 0, which is always inside.
    """
    r = kernel_size // 2
    step = torch.round(deltas.detach())
    wy = _windows(step[:, 0], kernel_size)
    wx = _windows(step[:, 1], kernel_size)
    off = torch.arange(-r, r + 1, device=deltas.device, dtype=deltas.dtype)
    oy = off.repeat_interleave(kernel_size).view(1, -1, 1, 1)
    ox = off.repeat(kernel_size).view(1, -1, 1, 1)
    return (wy == -oy) & (wx == -ox)


def deformable_softmax_pool(labels: torch.Tensor, deltas: torch.Tensor, x: torch.Tensor | None = None,
                            kernel_size: int = 3, temperature: float = 0.05) -> torch.Tensor:
    """Softmax-weighted average of ``x`` (default ``labels``) over the pixels that vote for each pixel.

    The weights are a softmax over the whole k x k window of ``labels * vote / temperature``; pixels that do
    not vote enter the softmax as 0 rather than being excluded, and their ``x`` is averaged in with that
    small weight (piscis 1.1.0's rule, which the SmoothF1 loss relies on).
    Used only by the loss, where ``deltas`` are the ground truth.
    """
    x = labels if x is None else x
    vote = _votes(deltas, kernel_size)
    lab = _windows(labels, kernel_size) * vote
    weights = torch.softmax(lab / temperature, dim=1)
    return (weights * _windows(x, kernel_size)).sum(dim=1)


def peak_local_softmax(values: torch.Tensor, kernel_size: int = 3, temperature: float = 0.05) -> torch.Tensor:
    """Differentiable non-maximum suppression: each value times its softmax weight in its k x k window.

    A clear local maximum keeps (almost) its value, its neighbours are pushed towards 0, so a spot counts
    once in SmoothF1's sums however many pixels light up around it.
    """
    win = _windows(values, kernel_size)
    centre = (kernel_size * kernel_size) // 2
    return values * torch.softmax(win / temperature, dim=1)[:, centre]


def voxel_components(voxels: np.ndarray, shape) -> tuple[np.ndarray, int]:
    """26-connected components of a sparse set of (K, 3) voxels in a (Z, H, W) volume.

    The same components as ``ndimage.label`` on the dense mask, numbered alike (0-based, in raster order of
    each component's first voxel), without building the mask: memory grows with the voxels, not the volume.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = len(voxels)
    if k == 0:
        return np.zeros(0, dtype=np.int64), 0
    dims = np.asarray(shape[-3:], dtype=np.int64)
    v = np.asarray(voxels, dtype=np.int64)
    keys = np.ravel_multi_index(v.T, dims)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    rows, cols = [], []
    # half of the 26 neighbours: each edge is found once, from its earlier voxel
    offsets = [(dz, dy, dx) for dz in (0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if (dz, dy, dx) > (0, 0, 0)]
    for off in offsets:
        n = v + np.asarray(off, dtype=np.int64)
        inside = np.all((n >= 0) & (n < dims), axis=1)
        idx = np.flatnonzero(inside)
        nk = np.ravel_multi_index(n[idx].T, dims)
        pos = np.clip(np.searchsorted(skeys, nk), 0, k - 1)
        hit = skeys[pos] == nk
        rows.append(idx[hit])
        cols.append(order[pos[hit]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(k, k)).tocsr()
    n, lab = connected_components(graph, directed=False)
    # renumber by the first voxel of each component in raster order, as ndimage.label does
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, lab, keys)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n)
    return rank[lab], int(n)
