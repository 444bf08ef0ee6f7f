"""Training examples: (2-D plane, (N, 2) y/x spots) pairs from arrays, z-stacks, time series or a folder.

Every face that trains (the CLI, the Python API, the napari fine-tuning panel) prepares its data here, and
holds out validation images with :func:`split_examples`, so the three agree on what a run learns from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SpotDetectError

#: share of the examples held out for validation when none are given (at least one, never all)
VAL_SHARE = 0.2


def planes_with_spots(image, points) -> list:
    """(2-D plane, (N, 2) y/x) for each plane of an n-D image on which spots are annotated.

    Training learns from planes; a z-stack or time series annotated in napari has points with the image's
    number of coordinates, and each point belongs to the plane its leading coordinates round to. Planes
    without a point are left out (nothing says they are empty), and only annotated planes are read, so a
    large (dask) stack is not loaded whole.
    """
    shape = tuple(np.shape(image))
    pts = np.asarray(points, dtype=np.float64)
    pts = pts.reshape(0, len(shape)) if pts.size == 0 else pts
    if len(shape) < 2 or pts.ndim != 2 or pts.shape[1] != len(shape):
        raise SpotDetectError(f"Spots with {pts.shape[-1] if pts.ndim == 2 else '?'} coordinates do not fit an "
                              f"image of shape {shape}.",
                              "give one coordinate per image axis (e.g. z, y, x for a stack).")
    if len(shape) == 2:
        return [(np.asarray(image, dtype=np.float32), pts)]
    lead = np.rint(pts[:, :-2]).astype(np.int64)
    ok = ((lead >= 0) & (lead < np.array(shape[:-2]))).all(axis=1)
    out = []
    for idx in sorted({tuple(r) for r in lead[ok]}):
        mine = ok & (lead == np.array(idx)).all(axis=1)
        out.append((np.asarray(image[idx], dtype=np.float32), pts[mine, -2:]))
    return out


def pairs_from_folder(images, spots=None, only=None, regions=None) -> list:
    """(image, spots) pairs from a folder of images and a folder (default: the same) of same-named CSVs.

    ``only``: file names of the images to use (e.g. those marked done in the napari folder loop).
    ``regions``: boxes by image stem (:func:`.regions.read_regions_csv`): each box of a 2-D image gives an
    ``(image, spots, box)`` example; images without a region are left out (their annotation may be partial).
    """
    from ..io.spots_io import IMAGE_SUFFIXES, read_image, read_spots_csv

    images = Path(images)
    spots = Path(spots) if spots is not None else images
    if not images.is_dir():
        raise SpotDetectError(f"{images} is not a folder.", "pass a folder of images with a CSV of spots per image.")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if only is not None:
        files = [p for p in files if p.name in set(only)]
    if not files:
        raise SpotDetectError(f"No images in {images}.", f"put images ({', '.join(sorted(IMAGE_SUFFIXES))}) there.")
    pairs, missing = [], []
    for f in files:
        csv = spots / f"{f.stem}.csv"
        if not csv.exists():
            missing.append(csv.name)
            continue
        boxes = None
        if regions is not None:
            from ..groundtruth.regions import regions_for

            boxes = regions_for(regions, f.stem)
            if not boxes:
                continue
        img = np.squeeze(read_image(f))
        table = read_spots_csv(csv)
        if boxes is not None:
            from ..groundtruth.regions import region_examples

            pairs.extend(region_examples(img, table[["y", "x"]].to_numpy(), boxes))
            continue
        lead = [c for c in ("t", "c", "z") if c in table.columns][-max(0, img.ndim - 2):] if img.ndim > 2 else []
        if img.ndim > 2 and len(lead) != img.ndim - 2:
            raise SpotDetectError(f"{f.name} has {img.ndim} axes but {csv.name} gives only y, x.",
                                  "add the plane column (z, or t) to the CSV, or save the image as 2-D planes.")
        pairs.extend(planes_with_spots(img, table[[*lead, "y", "x"]].to_numpy()))
    if missing:
        raise SpotDetectError(f"{len(missing)} image(s) in {images} have no spot CSV (e.g. {missing[:3]}) in {spots}.",
                              "add one CSV per image, named like the image with .csv (columns y,x), "
                              "or remove the image.")
    if regions is not None and not pairs:
        raise SpotDetectError(f"No region of the regions file names an image in {images}.",
                              "name the images (column image) or leave the column out to use every image.")
    return pairs


def examples_from_arrays(items) -> list:
    """Training pairs from ``[(image, points), ...]``: n-D images give one pair per annotated plane.

    ``points`` carry one coordinate per image axis (z, y, x for a stack), in the image's pixels.
    """
    out = []
    for k, item in enumerate(items):
        try:
            image, points = item
        except (TypeError, ValueError) as err:
            raise SpotDetectError(f"Item {k} is not an (image, points) pair.",
                                  "pass a list of (image array, (N, image.ndim) points array) pairs.") from err
        out.extend(planes_with_spots(image, points))
    return out


def split_examples(pairs: list, val_share: float = VAL_SHARE, seed: int = 0) -> tuple[list, list | None]:
    """Hold out ``val_share`` of the examples (at least one, never all) for validation.

    A single example (an image, or a region: ``(image, spots, box)``) is split in space: a strip of
    ``val_share`` of its area along the longer side is held out, so the threshold and the best epoch are
    chosen on pixels the network did not train on. None (no held-out data) for a share of 0, or when a part
    would hold no spot; the trainer then checks on the training examples themselves (and says so in the card).
    """
    if not 0 <= val_share < 1:
        raise SpotDetectError(f"Validation share {val_share!r} is not in [0, 1).", "use e.g. 0.2 (20 %).")
    if len(pairs) == 1 and val_share > 0:
        return _split_area(pairs[0], val_share)
    if len(pairs) < 2 or val_share <= 0:
        return list(pairs), None
    n_val = min(len(pairs) - 1, max(1, int(round(len(pairs) * val_share))))
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]


def _split_area(item, val_share: float) -> tuple[list, list | None]:
    from ..groundtruth.regions import check_box, inside, split_box

    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        return [item], None  # not an example the trainer could take; it says so
    image, pts, *box = item
    shape = np.shape(image)
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) if len(shape) == 2 else None
    if pts is None:
        return [item], None
    box = check_box(box[0], shape) if box and box[0] is not None else (0, 0, shape[0], shape[1])
    parts = split_box(box, val_share, pts)
    if parts is None:
        return [item], None
    a, b = parts
    return [(image, pts[inside(pts, a)], a)], [(image, pts[inside(pts, b)], b)]


def checked_pairs(train, val) -> tuple[list, list, list, list]:
    """Training and validation pairs, checked, and their regions (None: the whole image); at least one
    training image with at least one spot."""
    train, train_boxes = _as_pairs(train, "training")
    val, val_boxes = _as_pairs(val, "validation")
    if not train:
        raise SpotDetectError("No training images.", "pass at least one (image, spots) pair.")
    if sum(len(p) for _, p in train) == 0:
        raise SpotDetectError("None of the training images has any spot annotated.",
                              "annotate spots (a CSV of y,x per image) before training.")
    return train, train_boxes, val, val_boxes


def _as_pairs(data, what: str) -> tuple[list, list]:
    """Validate (image, coords[, region]) items: 2-D finite images, (N, 2) coordinates; (pairs, boxes)."""
    from ..groundtruth.regions import check_box, inside

    out, boxes = [], []
    for i, item in enumerate(data or []):
        try:
            img, pts, *box = item
            if len(box) > 1:
                raise ValueError
        except (TypeError, ValueError) as err:
            raise SpotDetectError(f"{what} item {i} is not an (image, spots) pair.",
                                  "pass a list of (2-D image, (N, 2) y/x array[, (y0, x0, y1, x1) region]) "
                                  "items.") from err
        img = np.asarray(img)
        if img.ndim != 2:
            raise SpotDetectError(f"{what} image {i} has shape {img.shape}; training takes 2-D images.",
                                  "pass single planes (split z-stacks and channels first).")
        if img.shape[0] < 16 or img.shape[1] < 16:
            raise SpotDetectError(f"{what} image {i} is only {img.shape}.", "use images of at least 16 x 16 pixels.")
        img = img.astype(np.float32)
        if not np.isfinite(img).all():
            raise SpotDetectError(f"{what} image {i} contains NaN or infinite pixels.", "clean the image first.")
        if hasattr(pts, "columns"):  # a spot DataFrame
            pts = pts[["y", "x"]].to_numpy()
        pts = np.asarray(pts, dtype=np.float64)
        pts = pts.reshape(0, 2) if pts.size == 0 else pts
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise SpotDetectError(f"{what} spots {i} have shape {pts.shape}; expected (N, 2) rows of (y, x).",
                                  "pass 2-D spot coordinates (drop z or other columns).")
        box = check_box(box[0], img.shape) if box and box[0] is not None else None
        out.append((img, pts if box is None else pts[inside(pts, box)]))
        boxes.append(box)
    return out, boxes
