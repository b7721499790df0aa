"""3DGS adaptive density control on hand-made cases (Kerbl et al. 2023, section 5.2)."""

import math

import torch

from moegs_bench.gaussian_table import GaussianTable
from moegs_bench.geometry import quat_to_rotmat
from moegs_bench.training.config import TrainConfig
from moegs_bench.training.densify import Densifier


def _table():
    t = GaussianTable()
    # 0: small, hot -> clone; 1: big, hot -> split; 2: cold; 3: transparent -> pruned
    t.add("means", torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]]), role="position")
    t.add("scales", torch.log(torch.tensor([[0.01] * 3, [0.5, 0.2, 0.1], [0.01] * 3, [0.01] * 3])), role="log_scale")
    quat_z90 = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]
    t.add("quats", torch.tensor([[1.0, 0, 0, 0], quat_z90, [1, 0, 0, 0], [1, 0, 0, 0]]), role="quat")
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    t.add("opacities", torch.tensor([logit(0.5), logit(0.5), logit(0.5), logit(0.001)]), role="logit_opacity")
    t.add("keyframes", torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])[:, None].repeat(1, 3, 1),
          role="position")
    t.add("router", torch.tensor([[10.0], [11], [12], [13]]), attached=True)
    return t


def _densifier(t):
    cfg = TrainConfig(densify_grad_threshold=0.1, percent_dense=0.1, prune_opacity=0.005)
    d = Densifier(cfg, extent=1.0)  # clone at max scale <= 0.1, split above
    means2d = torch.zeros(4, 2, requires_grad=True)
    (means2d * torch.tensor([[1.0, 0], [1, 0], [0, 0], [0, 0]])).sum().backward()  # grad 1 px in x
    d.observe(means2d, torch.tensor([3, 3, 3, 3]), width=2, height=2)  # NDC grad = px grad * W/2 = 1
    return d


def test_observe_accumulates_ndc_gradient_of_visible_gaussians():
    t = _table()
    d = _densifier(t)
    assert d.grad_accum.tolist() == [1.0, 1.0, 0.0, 0.0]
    means2d = torch.zeros(4, 2, requires_grad=True)
    means2d.sum().backward()
    d.observe(means2d, torch.tensor([0, 3, 3, 3]), width=2, height=2)  # Gaussian 0 not visible
    assert d.count.tolist() == [1.0, 2.0, 2.0, 2.0]


def test_clone_split_and_prune():
    t = _table()
    d = _densifier(t)
    report = d.densify_and_prune(t, [], torch.Generator().manual_seed(0), prune_big=False)
    assert (report.cloned, report.split, report.pruned) == (1, 1, 1)
    # rows: kept 0 and 2, then the clone of 0, then the two children of 1; 3 was pruned
    assert len(t) == 5
    means = t["means"].detach()
    torch.testing.assert_close(means[0], torch.tensor([0.0, 0, 0]))
    torch.testing.assert_close(means[1], torch.tensor([2.0, 0, 0]))
    torch.testing.assert_close(means[2], torch.tensor([0.0, 0, 0]))  # exact clone
    assert t["router"].detach()[:, 0].tolist() == [10.0, 12.0, 10.0, 11.0, 11.0]
    # split children: scale / 1.6, offset = R(q) @ (N(0,1) * s) around the parent
    torch.testing.assert_close(t["scales"][3:].exp(), torch.tensor([[0.5, 0.2, 0.1]] * 2) / 1.6)
    offsets = means[3:] - torch.tensor([1.0, 0, 0])  # [2, 3]
    R = quat_to_rotmat(t["quats"][3:].detach())  # rotation about z by 90 degrees
    local = (R.transpose(1, 2) @ offsets[..., None])[..., 0]  # back into the parent's frame
    g = torch.Generator().manual_seed(0)
    expected = torch.randn((2, 3), generator=g) * torch.tensor([0.5, 0.2, 0.1])
    torch.testing.assert_close(local, expected, atol=1e-5, rtol=1e-5)
    # keyframe tensors [N, K, 3] get the same offset at every keyframe
    kf = t["keyframes"].detach()
    torch.testing.assert_close(kf[3:] - torch.tensor([1.0, 0, 0]), offsets[:, None].expand(2, 3, 3))
    assert d.grad_accum.shape == (5,) and d.grad_accum.sum() == 0  # statistics restart


def test_max_gaussians_keeps_the_hottest():
    t = _table()
    cfg = TrainConfig(densify_grad_threshold=0.1, percent_dense=0.1, max_gaussians=5)
    d = Densifier(cfg, extent=1.0)
    means2d = torch.zeros(4, 2, requires_grad=True)
    (means2d * torch.tensor([[1.0, 0], [2, 0], [0, 0], [0, 0]])).sum().backward()
    d.observe(means2d, torch.tensor([3, 3, 3, 3]), width=2, height=2)
    report = d.densify_and_prune(t, [], torch.Generator().manual_seed(0), prune_big=False)
    assert (report.cloned, report.split) == (0, 1)  # room for one: the split Gaussian is hotter


def test_opacity_reset_clamps_to_one_percent_and_clears_adam_state():
    t = _table()
    opt = torch.optim.Adam([t["opacities"]], lr=0.1)
    t["opacities"].sum().backward()
    opt.step()
    Densifier(TrainConfig(), 1.0).reset_opacity(t, [opt])
    op = torch.sigmoid(t["opacities"].detach())
    assert torch.all(op <= 0.01 + 1e-6)
    assert float(op[3]) < 0.005  # already lower: kept
    assert opt.state[t["opacities"]]["exp_avg"].abs().sum() == 0


def _big_gaussians_table():
    """0: a normal Gaussian; 1: wide on screen; 2: large in the world (all opaque, none hot)."""
    t = GaussianTable()
    t.add("means", torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), role="position")
    t.add("scales", torch.log(torch.tensor([[0.01] * 3, [0.01] * 3, [0.5] * 3])), role="log_scale")
    t.add("quats", torch.tensor([[1.0, 0, 0, 0]] * 3), role="quat")
    t.add("opacities", torch.zeros(3), role="logit_opacity")
    return t


def _refine_at(step: int, reset_every: int) -> tuple[int, object]:
    t = _big_gaussians_table()
    cfg = TrainConfig(densify_from=0, densify_until=10_000, densify_every=100, opacity_reset_every=reset_every,
                      max_screen_size=20.0)
    d = Densifier(cfg, extent=1.0)  # world limit 0.1 * extent: Gaussian 2 (0.5) is above it
    means2d = torch.zeros(3, 2, requires_grad=True)
    (means2d * 0).sum().backward()  # no gradient: nothing is densified
    d.observe(means2d, torch.tensor([3.0, 40.0, 3.0]), width=100, height=100)  # Gaussian 1: radius 40 px
    report = d.step(step, t, [], torch.Generator().manual_seed(0))
    return len(t), report


def test_large_gaussians_are_pruned_only_after_the_first_opacity_reset():
    """3DGS / 4DGaussians ``train.py``: ``size_threshold = 20 if iteration > opacity_reset_interval
    else None``: before the first reset nothing is pruned for its size, after it the Gaussian
    wider than 20 px and the one larger than 0.1 x the extent go."""
    n, report = _refine_at(200, reset_every=300)
    assert n == 3 and report.pruned == 0
    n, report = _refine_at(400, reset_every=300)
    assert n == 1 and (report.pruned, report.pruned_screen, report.pruned_world, report.pruned_transparent) == (2, 1, 1, 0)


def test_no_size_pruning_in_a_schedule_without_resets():
    """opacity_reset_every = 0 means no reset ever happens (4DGaussians' N3V interval of 60,000
    exceeds its 14,000 steps): large Gaussians are never pruned for their size."""
    n, report = _refine_at(5000, reset_every=0)
    assert n == 3 and report.pruned == 0 and not report.reset_opacity
