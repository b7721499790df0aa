from dataclasses import replace

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.demo import make_demo_scene
from moegs_bench.gaussians import GaussianState


def tagged_state(n: int = 6, offset: float = 0.0) -> GaussianState:
    """Every row of every field encodes its row number r (plus ``offset``), so misaligned rows show."""
    r = torch.arange(n, dtype=torch.float32) + offset
    return GaussianState(
        means=torch.stack([r, r + 0.1, r + 0.2], dim=-1),
        quats=torch.stack([r + 1, r, r, r], dim=-1),
        scales=torch.stack([r + 1, r + 2, r + 3], dim=-1) * 0.01,
        opacities=(r + 1) / (r.max() + 2),
        colors=torch.stack([r, -r, 2 * r, r + 5], dim=-1),
        extras={"w": r[:, None].repeat(1, 2), "tag": torch.arange(n) * 10},
        expert_ids=torch.arange(n) % 3,
    )


def assert_rows(state: GaussianState, source: GaussianState, rows: list[int]) -> None:
    """``state`` holds exactly ``source``'s ``rows``, checked field by field with Python indexing."""
    for name in ("means", "quats", "scales", "opacities", "colors", "expert_ids"):
        expected = torch.stack([getattr(source, name)[i] for i in rows]) if rows else getattr(source, name)[:0]
        assert torch.equal(getattr(state, name), expected), name
    assert state.extras.keys() == source.extras.keys()
    for key in source.extras:
        expected = torch.stack([source.extras[key][i] for i in rows]) if rows else source.extras[key][:0]
        assert torch.equal(state.extras[key], expected), key


def test_basic_properties():
    s = tagged_state(6)
    assert len(s) == s.num_gaussians == 6
    assert s.device == torch.device("cpu") and s.dtype == torch.float32
    assert len(GaussianState.random(0)) == 0


def test_bool_mask_keeps_rows_aligned():
    s = tagged_state(6)
    mask = torch.tensor([True, False, True, True, False, True])
    assert_rows(s[mask], s, [0, 2, 3, 5])
    assert_rows(s[torch.zeros(6, dtype=torch.bool)], s, [])


def test_index_tensor_and_slice_keep_rows_aligned():
    s = tagged_state(7)
    assert_rows(s[torch.tensor([4, 0, 4, -1])], s, [4, 0, 4, 6])
    assert_rows(s[torch.tensor([2, 5], dtype=torch.int32)], s, [2, 5])
    assert_rows(s[1:6:2], s, [1, 3, 5])


@pytest.mark.parametrize(
    "index",
    [torch.ones(5, dtype=torch.bool), torch.tensor([0.0, 1.0]), torch.tensor([0, 9]), torch.tensor([[0]]), 3],
)
def test_bad_index_raises(index):
    with pytest.raises(InputError, match="GaussianState index"):
        tagged_state(6)[index]


def test_cat_with_expert_ids():
    a, b, c = tagged_state(3), tagged_state(2, offset=10), tagged_state(4, offset=20)
    merged = GaussianState.cat([a, b, c], expert_ids=True)
    assert merged.expert_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert merged.means[:, 0].tolist() == [0, 1, 2, 10, 11, 20, 21, 22, 23]
    assert merged.extras["tag"].tolist() == [0, 10, 20, 0, 10, 0, 10, 20, 30]
    assert_rows(merged[merged.expert_ids == 1], replace(b, expert_ids=torch.ones(2, dtype=torch.int64)), [0, 1])
    # without retagging, the inputs' own ids are concatenated
    assert GaussianState.cat([a, b]).expert_ids.tolist() == [0, 1, 2, 0, 1]


def test_cat_rejects_mismatched_layouts():
    a = tagged_state(3)
    with pytest.raises(InputError, match="no states"):
        GaussianState.cat([])
    other_d = replace(GaussianState.random(3, channels=5), extras=a.extras, expert_ids=a.expert_ids)
    with pytest.raises(InputError, match="colors"):
        GaussianState.cat([a, other_d])
    with pytest.raises(InputError, match="sh_degree"):
        GaussianState.cat([GaussianState.random(3, sh_degree=1), GaussianState.random(3, sh_degree=2)])
    with pytest.raises(InputError, match="extras"):
        GaussianState.cat([a, replace(a, extras={"w": a.extras["w"]})])
    no_ids = replace(a, expert_ids=None)
    with pytest.raises(InputError, match="expert_ids"):
        GaussianState.cat([a, no_ids])
    assert GaussianState.cat([a, no_ids], expert_ids=True).expert_ids.tolist() == [0, 0, 0, 1, 1, 1]


def test_nbytes_hand_computed():
    s = tagged_state(10)
    # float32: means 10*3*4 + quats 10*4*4 + scales 10*3*4 + opacities 10*4 + colors 10*4*4
    # + extras w 10*2*4; int64: extras tag 10*8 + expert_ids 10*8
    expected = 120 + 160 + 120 + 40 + 160 + 80 + 80 + 80
    assert s.nbytes == expected
    assert s.storage_mb() == pytest.approx(expected / 2**20)
    # float64 doubles the float tensors only
    assert s.to(dtype=torch.float64).nbytes == 2 * (120 + 160 + 120 + 40 + 160 + 80) + 80 + 80


def test_to_and_detach():
    s = tagged_state(4)
    d = s.to(dtype=torch.float64)
    assert d.means.dtype == d.colors.dtype == d.extras["w"].dtype == torch.float64
    assert d.expert_ids.dtype == d.extras["tag"].dtype == torch.int64
    assert torch.equal(d.means.float(), s.means)
    with pytest.raises(InputError, match="dtype"):
        s.to(dtype=torch.int32)

    means = s.means.clone().requires_grad_(True)
    g = GaussianState(means, s.quats, s.scales, s.opacities, s.colors)  # validation keeps autograd intact
    (g[torch.tensor([1, 1, 3])].means.sum() * 2).backward()
    assert means.grad[:, 0].tolist() == [0, 4, 0, 2]
    assert not g.detach().means.requires_grad


def test_random_reproducible_ranges_and_no_global_rng():
    before = torch.get_rng_state()
    a, b = GaussianState.random(500, seed=3, extent=2.0), GaussianState.random(500, seed=3, extent=2.0)
    assert torch.equal(torch.get_rng_state(), before)
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert not torch.equal(a.means, GaussianState.random(500, seed=4, extent=2.0).means)
    assert a.means.abs().max() <= 2.0
    assert 0.02 <= a.scales.min() and a.scales.max() <= 0.16
    assert torch.allclose(a.quats.norm(dim=-1), torch.ones(500))
    assert 0.2 <= a.opacities.min() and a.opacities.max() <= 0.95
    assert 0 <= a.colors.min() and a.colors.max() <= 1 and a.colors.shape == (500, 3)
    sh = GaussianState.random(10, sh_degree=2)
    assert sh.colors.shape == (10, 9, 3) and sh.sh_degree == 2
    dc_rgb = 0.5 + 0.28209479177387814 * sh.colors[:, 0]  # SH band 0 -> colour
    assert 0 <= dc_rgb.min() and dc_rgb.max() <= 1 and sh.colors[:, 1:].abs().max() <= 0.05
    assert GaussianState.random(10, channels=7).colors.shape == (10, 7)


def _bad(field: str, value):
    return {**tagged_state(4).__dict__, field: value}


def _with(t: torch.Tensor, index, value) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


S = tagged_state(4)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("means", _with(S.means, (1, 2), float("nan")), r"GaussianState\.means.*NaN"),
        ("means", S.means[:, :2], r"GaussianState\.means.*\(4, 2\)"),
        ("means", S.means.long(), r"GaussianState\.means.*dtype"),
        ("quats", _with(S.quats, (0, 0), float("inf")), r"GaussianState\.quats.*NaN/Inf"),
        ("quats", S.quats[:3], r"GaussianState\.quats.*\(3, 4\)"),
        ("quats", _with(S.quats, 2, 0.0), r"GaussianState\.quats.*zero norm"),
        ("scales", _with(S.scales, (0, 0), float("inf")), r"GaussianState\.scales.*NaN/Inf"),
        ("scales", _with(S.scales, (1, 1), 0.0), r"GaussianState\.scales: 1 value\(s\) <= 0"),
        ("scales", -S.scales, r"GaussianState\.scales: 12 value\(s\) <= 0"),
        ("opacities", _with(S.opacities, 0, 1.5), r"GaussianState\.opacities.*outside \[0, 1\]"),
        ("opacities", _with(S.opacities, 0, -0.1), r"GaussianState\.opacities.*outside \[0, 1\]"),
        ("opacities", S.opacities[:, None], r"GaussianState\.opacities.*\(4, 1\)"),
        ("opacities", S.opacities.double(), r"GaussianState\.opacities.*dtype"),
        ("colors", S.colors[:, None, :3], r"GaussianState\.colors.*SH-shaped.*sh_degree is None"),
        ("colors", _with(S.colors, (3, 3), float("nan")), r"GaussianState\.colors.*NaN"),
        ("sh_degree", 1, r"GaussianState\.colors"),
        ("sh_degree", -1, r"GaussianState\.sh_degree"),
        ("extras", {"w": torch.ones(3)}, r"GaussianState\.extras\['w'\].*\(3,\)"),
        ("extras", {"w": torch.full((4,), float("nan"))}, r"GaussianState\.extras\['w'\].*NaN"),
        ("expert_ids", torch.zeros(4), r"GaussianState\.expert_ids.*integer"),
        ("expert_ids", torch.zeros(5, dtype=torch.int64), r"GaussianState\.expert_ids.*\(5,\)"),
        ("expert_ids", torch.tensor([0, -1, 0, 0]), r"GaussianState\.expert_ids.*negative"),
    ],
)
def test_validation_errors_name_the_field(field, value, message):
    with pytest.raises(InputError, match=message):
        GaussianState(**_bad(field, value))


def test_sh_shapes():
    base = _bad("sh_degree", 2)
    with pytest.raises(InputError, match=r"GaussianState\.colors.*sh_degree=2.*\(4, 4, 3\)"):
        GaussianState(**{**base, "colors": torch.zeros(4, 4, 3)})
    with pytest.raises(InputError, match=r"GaussianState\.colors.*\(4, 9, 2\)"):
        GaussianState(**{**base, "colors": torch.zeros(4, 9, 2)})
    assert GaussianState(**{**base, "colors": torch.zeros(4, 16, 3)}).colors.shape == (4, 16, 3)  # K >= 9 is fine


def test_demo_scene_deterministic_visible_and_fast():
    a, cams = make_demo_scene(2000, seed=1, width=64, height=48, n_cameras=3, channels=5)
    b, _ = make_demo_scene(2000, seed=1, width=64, height=48, n_cameras=3, channels=5)
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert not torch.equal(a.means, make_demo_scene(2000, seed=2)[0].means)
    assert a.colors.shape == (2000, 5) and 0 <= a.colors.min() and a.colors.max() <= 1
    assert [c.camera_id for c in cams] == [0, 1, 2] and (cams[0].width, cams[0].height) == (64, 48)
    for cam in cams:
        uv, depth = cam.project(a.means)
        inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 64) & (uv[:, 1] >= 0) & (uv[:, 1] < 48)
        assert inside.float().mean() > 0.5
    assert len(make_demo_scene(50_000)[0]) == 50_000
