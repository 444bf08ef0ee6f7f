import numpy as np
import pytest

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.training.synthetic import KINDS, synthetic_dataset, synthetic_image


def test_simple_signature_still_works():
    img, c = synthetic_image((64, 80), n_spots=12, seed=3)
    assert img.shape == (64, 80) and img.dtype == np.float32 and c.shape == (12, 2)
    img2, c2 = synthetic_image((64, 80), n_spots=12, seed=3)
    np.testing.assert_array_equal(img, img2)


@pytest.mark.parametrize("kind", list(KINDS))
def test_kinds_are_reproducible_and_spots_are_bright(kind):
    img, c = synthetic_image((160, 200), seed=7, kind=kind)
    img2, c2 = synthetic_image((160, 200), seed=7, kind=kind)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(c, c2)
    assert len(c) > 3
    assert ((c >= 0) & (c <= np.array([159, 199]))).all()
    r = np.rint(c).astype(int)
    # spots stand out from their local surroundings (ring at 5-7 px)
    peaks = img[r[:, 0], r[:, 1]]
    ring = [np.median(img[max(0, y - 7):y + 8, max(0, x - 7):x + 8]) for y, x in r]
    assert np.median(peaks - np.array(ring)) > 2 * np.sqrt(np.median(img))


def _flatness(img, c):
    """Median over spots of (value 2 px from the centre - background) / (peak - background): wider -> flatter."""
    out = []
    for y, x in np.rint(c).astype(int):
        if 9 <= y < img.shape[0] - 9 and 9 <= x < img.shape[1] - 9:
            bg = np.median(np.concatenate([img[y - 8, x - 8:x + 9], img[y + 8, x - 8:x + 9]]))
            peak = img[y, x] - bg
            side = np.mean([img[y - 2, x], img[y + 2, x], img[y, x - 2], img[y, x + 2]]) - bg
            if peak > 0:
                out.append(side / peak)
    return np.median(out)


def test_unseen_kind_has_bigger_spots():
    small = np.median([_flatness(*synthetic_image((256, 256), seed=s, kind="train")) for s in range(3)])
    big = np.median([_flatness(*synthetic_image((256, 256), seed=s, kind="large_spots")) for s in range(3)])
    assert big > small + 0.2, (small, big)


def test_train_kind_has_nuisances_that_are_not_spots():
    # autofluorescent blobs / out-of-focus spots add bright structure far from every true spot
    img, c = synthetic_image((256, 256), seed=11, kind="train")
    yy, xx = np.mgrid[0:256, 0:256]
    d = np.min(np.hypot(yy[..., None] - c[:, 0], xx[..., None] - c[:, 1]), axis=-1)
    far = img[d > 8]
    assert far.max() > np.median(far) + 8 * np.sqrt(np.median(far))


def test_dataset_sizes_and_seeds():
    ds = synthetic_dataset(4, "train", seed=1)
    assert len({im.shape for im, _ in ds}) > 1
    other = synthetic_dataset(4, "train", seed=2)
    assert not np.array_equal(ds[0][0], other[0][0]) if ds[0][0].shape == other[0][0].shape else True
    assert all(im.shape == (96, 96) for im, _ in synthetic_dataset(2, "train", seed=1, shape=(96, 96)))


def test_unknown_kind():
    with pytest.raises(SpotDetectError, match="large_spots"):
        synthetic_image((32, 32), kind="nope")
