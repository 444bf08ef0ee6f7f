import numpy as np
import pytest
import torch

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.models.ops import deformable_pool, deformable_softmax_pool, peak_local_softmax
from napari_spotdetect.core.training import losses
from napari_spotdetect.core.training.targets import voronoi_targets

from ...conftest import SHARED, need_shared, separated_points


def shared(*parts):
    return need_shared(SHARED.joinpath(*parts))


def _fixture():
    d = np.load(shared("fixtures", "piscis", "img256_training_targets_and_losses.npz"))
    t = np.load(shared("fixtures", "piscis", "img256_tiles.npz"))
    return d, t


def test_pooling_ops_match_piscis():
    d, _ = _fixture()
    lab, dl = torch.tensor(d["pool_labels"]), torch.tensor(d["pool_deltas"])
    np.testing.assert_allclose(deformable_softmax_pool(lab, dl, None, 3, 0.05), d["pool_softmax"], atol=1e-5)
    np.testing.assert_allclose(peak_local_softmax(lab, 3, 0.05), d["peak_local_softmax"], atol=1e-5)


def test_smoothf1_and_l2_match_piscis_on_real_network_outputs():
    d, t = _fixture()
    pooled = torch.tensor(t["pooled_labels_max"])
    dp = torch.tensor(t["fpn_logits"][:, 1:])
    target = {"labels": torch.tensor(d["labels"])[None], "deltas": torch.tensor(d["deltas"])[None],
              "n_spots": torch.tensor([len(d["gt_coords"])])}
    sf = losses.smoothf1(pooled, dp, target["deltas"], target["n_spots"])
    l2 = losses.masked_l2(dp, target["deltas"], target["labels"])
    assert sf.item() == pytest.approx(float(d["smoothf1"]), abs=1e-4)
    assert l2.item() == pytest.approx(float(d["masked_l2"]), abs=1e-4)
    total, parts = losses.PiscisLoss("smoothf1", l2_weight=0.1)(None, pooled, dp, target)
    assert total.item() == pytest.approx(float(d["loss_total"]), abs=1e-4)
    assert losses.PiscisLoss().l2_weight == 0.25  # the paper's weight is the default


def _maps(coords, shape, dilation=1):
    lab, dl = voronoi_targets(coords, shape, dilation)
    return torch.tensor(lab, dtype=torch.float32)[None], torch.tensor(dl)[None]


def _spots(n=30, shape=(96, 96), seed=0):
    return separated_points(n, shape, margin=3, min_distance=6, seed=seed)


def test_smoothf1_is_minus_one_on_perfect_maps():
    coords = _spots()
    lab, dl = _maps(coords, (96, 96))
    pooled = deformable_pool(lab, dl, 3, "max")
    sf = losses.smoothf1(pooled, dl, dl, torch.tensor([len(coords)]))
    assert sf.item() == pytest.approx(-1.0, abs=1e-3)


@pytest.mark.parametrize("n_fn,n_fp", [(0, 10), (12, 0), (6, 9)])
def test_smoothf1_approximates_the_true_f1(n_fn, n_fp):
    coords = _spots(30)
    lab, dl = _maps(coords[n_fn:], (96, 96))  # the network misses the first n_fn spots
    pooled = deformable_pool(lab, dl, 3, "max")
    rng = np.random.default_rng(1)
    added = 0
    while added < n_fp:  # isolated false peaks far from every spot
        p = rng.integers(2, 94, 2)
        if np.hypot(*(coords - p).T).min() > 4 and pooled[0, p[0] - 2:p[0] + 3, p[1] - 2:p[1] + 3].max() == 0:
            pooled[0, p[0], p[1]] = 1.0
            added += 1
    _, dl_gt = _maps(coords, (96, 96))
    tp = 30 - n_fn
    f1 = 2 * tp / (2 * tp + n_fp + n_fn)
    sf = losses.smoothf1(pooled, dl_gt, dl_gt, torch.tensor([30]))
    assert -sf.item() == pytest.approx(f1, abs=0.01)


def test_smoothf1_tolerates_small_pixel_shifts_while_dice_does_not():
    """Suppl. Fig. 6 of the paper: spot pixels off by <= 1 px, displacements right -> F1 stays ~1."""
    coords = _spots(30, seed=3)
    _, dl = _maps(coords, (96, 96))
    pts = np.rint(coords).astype(int)
    rng = np.random.default_rng(2)
    shifted = pts + rng.integers(-1, 2, size=pts.shape)
    assert (shifted != pts).any(axis=1).mean() > 0.6
    labels = torch.zeros(1, 96, 96)
    labels[0, shifted[:, 0], shifted[:, 1]] = 1.0  # each spot lights one pixel, often a neighbour
    pooled = deformable_pool(labels, dl, 3, "max")
    sf = losses.smoothf1(pooled, dl, dl, torch.tensor([30]))
    gt0, _ = _maps(coords, (96, 96), dilation=0)
    dice = losses.dice(labels, gt0)
    assert sf.item() < -0.98
    assert dice.item() > -0.5  # Dice counts every shifted pixel as both a FP and a FN
    shifted_only = (shifted != pts).any(axis=1).mean()
    assert -dice.item() == pytest.approx(1 - shifted_only, abs=0.02)


@pytest.mark.parametrize("kind", ["smoothf1", "dice", "ce", "focal"])
def test_all_losses_have_finite_gradients(kind):
    torch.manual_seed(0)
    coords = _spots(10, (48, 48))
    loss = losses.PiscisLoss(kind)
    lab, dl = voronoi_targets(coords, (48, 48), loss.dilation)
    target = {"labels": torch.tensor(lab)[None].repeat(2, 1, 1), "deltas": torch.tensor(dl)[None].repeat(2, 1, 1, 1),
              "n_spots": torch.tensor([10, 10])}
    logits = torch.randn(2, 48, 48, requires_grad=True)
    deltas = torch.randn(2, 2, 48, 48, requires_grad=True)
    labels = torch.sigmoid(logits)
    pooled = deformable_pool(labels, deltas, 3, "max")
    total, parts = loss(labels, pooled, deltas, target)
    total.backward()
    assert torch.isfinite(total) and set(parts) == {"loss", kind, "l2"}
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(deltas.grad).all() and deltas.grad.abs().sum() > 0


def test_weighted_losses_balance_the_classes():
    g = torch.zeros(1, 10, 10)
    g[0, 0, :5] = 1  # 5 positive, 95 negative pixels: alpha = 19
    p = torch.full((1, 10, 10), 0.5)
    ce = losses.weighted_ce(p, g)
    assert ce.item() == pytest.approx((19 * 5 + 95) * np.log(2) / 100, rel=1e-5)
    assert losses.weighted_focal(p, g).item() == pytest.approx(ce.item() * 0.25, rel=1e-5)


def test_deepspot_loss_is_bce_plus_squared_max_difference():
    t = torch.tensor([[0.0, 1.0], [0.2, 0.5]])
    p = torch.tensor([[0.1, 0.7], [0.3, 0.4]])
    bce = torch.nn.functional.binary_cross_entropy(p, t)
    assert losses.deepspot_loss(p, t).item() == pytest.approx(bce.item() + 0.3 ** 2, rel=1e-5)


def test_unknown_loss():
    with pytest.raises(SpotDetectError, match="smoothf1"):
        losses.PiscisLoss("mse")
