"""Independent CPU pieces side by side (core/common/parallel.py): same numbers at any thread count, no deadlock."""

import threading

import numpy as np
import torch

from napari_spotdetect.core.common.parallel import run_together, thread_map
from napari_spotdetect.core.detection.contrast import contrast_features
from napari_spotdetect.core.detection.rescore import candidate_features
from napari_spotdetect.core.training.synthetic import synthetic_image


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_second_stage_features_do_not_depend_on_the_thread_count():
    img, truth = synthetic_image((1100, 300), n_spots=120, seed=3)  # three bands of rows for the contrast pass
    yx = truth[:40] + 0.3
    net = np.linspace(0.05, 0.95, len(yx))
    one = _with_threads(1, lambda: candidate_features(img, yx, net, 2.0, 2.0, 1.5))
    two = _with_threads(2, lambda: candidate_features(img, yx, net, 2.0, 2.0, 1.5))
    assert len(one[0]) > len(yx)  # proposals joined the network's candidates
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[2]["contrast"], two[2]["contrast"])


def test_contrast_bands_read_side_by_side_give_the_whole_plane_numbers():
    img, truth = synthetic_image((1100, 200), n_spots=60, seed=4)
    reads = []

    class Rows:  # a lazy plane: records which rows each band reads
        shape = img.shape

        def __getitem__(self, sl):
            reads.append((sl.start, sl.stop, threading.current_thread().name))
            return img[sl]

    lazy = _with_threads(2, lambda: contrast_features(Rows(), truth))
    whole = _with_threads(1, lambda: contrast_features(img, truth))
    for a, b in zip(lazy, whole):
        np.testing.assert_array_equal(a, b)
    assert len(reads) == 3 and all(stop - start < img.shape[0] for start, stop, _ in reads)


def test_pieces_started_from_a_piece_run_in_turn_instead_of_waiting_forever():
    def outer(i):
        return sum(thread_map(lambda j: i * j, range(4), workers=2))

    assert thread_map(outer, range(3), workers=2) == [0, 6, 12]
    assert run_together(lambda: 1, lambda: 2) == [1, 2]


def test_callers_asking_for_different_thread_counts_at_once_all_finish():
    import time
    from concurrent.futures import ThreadPoolExecutor

    def slow(i):
        time.sleep(0.01)
        return i

    def caller(workers):
        return [sum(thread_map(slow, range(6), workers=workers)) for _ in range(5)]

    with ThreadPoolExecutor(3) as outer:  # three callers, three thread counts, interleaved
        results = list(outer.map(caller, (2, 3, 4)))
    assert results == [[15] * 5] * 3
