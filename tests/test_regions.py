"""Region masks: the file format (written, read, downscaled), the synthetic suite's regime labels
checked against its own images, and per-region scores by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moegs_bench.data import load_scene
from moegs_bench.data.regions import UNLABELLED, block_mode, read_regions, write_regions
from moegs_bench.data.scene import DatasetError
from moegs_bench.data.synthetic import generate
from moegs_bench.data.synthetic.generate import REGIMES
from moegs_bench.router.baselines import RegionTally


def test_block_mode_by_hand():
    labels = torch.tensor([[0, 0, 1, 2],
                           [0, 1, 2, 2],
                           [3, 3, 255, 255],
                           [1, 3, 255, 4]])
    assert block_mode(labels, 1) is labels
    assert block_mode(labels, 2).tolist() == [[0, 2], [3, 255]]
    assert block_mode(torch.tensor([[0, 1], [1, 0]]), 2).tolist() == [[0]]  # a tie: the smaller label


def test_masks_round_trip_and_bad_files_are_named(tmp_path):
    masks = {"cam00/000000": np.array([[0, 1], [255, 1]], dtype=np.uint8)}
    write_regions(tmp_path, ("a", "b"), masks)
    regions = read_regions(tmp_path)
    assert regions.labels == ("a", "b")
    assert regions.read("cam00/000000").tolist() == [[0, 1], [255, 1]]
    assert regions.read("cam00/000001") is None
    write_regions(tmp_path, ("a",), masks)  # label 1 is not declared any more
    with pytest.raises(ValueError, match="label 1 is not one of the 1 labels"):
        read_regions(tmp_path).read("cam00/000000")
    (tmp_path / "regions" / "cam00" / "000000.png").unlink()
    with pytest.raises(ValueError, match="000000.png: missing"):
        read_regions(tmp_path)


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions") / "kitchen"
    generate(root, "kitchen", frames=6, width=48, height=36, train_cameras=2)  # (5 frames: the towel's 5
    # cycles alias to standing still)
    return root


def test_the_suite_labels_every_test_view_and_the_labels_agree_with_its_images(kitchen):
    scene = load_scene(kitchen)
    assert scene.region_labels == REGIMES
    labels = torch.stack([scene.regions(f) for f in scene.test])  # [T, H, W]
    assert all(scene.regions(f) is None for f in scene.train)  # (test views only)
    images = torch.stack([scene.image(f) for f in scene.test])  # [T, H, W, 3]
    static = (labels == REGIMES.index("static")).all(0)  # static in every frame
    assert static.float().mean() > 0.3
    # an independent check: a pixel that shows static surfaces throughout keeps its colour
    change = (images.amax(0) - images.amin(0)).amax(-1)  # [H, W]
    assert float(change[static].quantile(0.95)) <= 2 / 255
    for regime in ("rigid", "oscillating", "appearance", "topology"):
        seen = (labels == REGIMES.index(regime)).any(0)
        assert bool(seen.any()), regime
        assert float(change[seen].amax()) > 0.1, regime  # where a dynamic regime shows, the image changes
    half = load_scene(kitchen, downscale=2)
    assert tuple(half.regions(half.test[0]).shape) == (18, 24)
    assert half.state.digest == scene.state.digest


def test_a_missing_mask_is_a_dataset_error(kitchen, tmp_path):
    import shutil

    copy = tmp_path / "k"
    shutil.copytree(kitchen, copy)
    data = json.loads((copy / "regions.json").read_text())
    next(iter(data["masks"].values()))
    (copy / next(iter(data["masks"].values()))).unlink()
    with pytest.raises(DatasetError, match="missing \\(the mask of cam00/000000 named in regions.json\\)"):
        load_scene(copy)


def test_region_tally_by_hand():
    """Two labels on a 2x2 image: label 0 the left column, label 1 the top-right pixel, the
    bottom-right unlabelled. Model "a" is off by 0.1 on label 0 and exact on label 1."""
    labels = torch.tensor([[0, 1], [0, UNLABELLED]])
    gt = torch.zeros(2, 2, 3)
    a = gt.clone()
    a[:, 0] = 0.1
    b = torch.full((2, 2, 3), 0.5)
    gates = torch.stack([torch.full((2, 2), 0.25), torch.full((2, 2), 0.75)])  # [K=2, H, W]
    tally = RegionTally(["left", "corner", "never"], ["a", "b"], ["a", "b"])
    tally.add(labels, gt, {"a": a, "b": b}, gates)
    tally.add(labels, gt, {"a": a, "b": b}, gates)
    out = tally.summary()
    assert set(out) == {"left", "corner"}  # a label no pixel carries is left out
    assert out["left"]["pixels"] == pytest.approx(2 / 3) and out["corner"]["pixels"] == pytest.approx(1 / 3)
    assert out["left"]["psnr"]["a"] == pytest.approx(20.0)  # mse 0.01
    assert out["left"]["psnr"]["b"] == pytest.approx(-10 * np.log10(0.25))
    assert out["corner"]["psnr"]["a"] is None  # exact: no finite PSNR
    assert out["left"]["gate_share"] == pytest.approx({"a": 0.25, "b": 0.75})
    assert out["left"]["win_share"] == {"a": 0.0, "b": 1.0}  # b's gate is the larger everywhere
    # A view where "a" wins the top row: on "left" it wins 1 of its 2 pixels; with the two views
    # before, 1 of 6.
    gates2 = gates.clone()
    gates2[:, 0] = torch.tensor([0.9, 0.1])[:, None]
    tally.add(labels, gt, {"a": a, "b": b}, gates2)
    out = tally.summary()
    assert out["left"]["win_share"] == pytest.approx({"a": 1 / 6, "b": 5 / 6})
    assert out["corner"]["win_share"] == pytest.approx({"a": 1 / 3, "b": 2 / 3})


def test_gate_flicker_by_hand():
    """One camera, frames 0, 1, 2 (and a frame 5 after a gap, not compared): two experts on a 1x2
    image. 0 -> 1: the left pixel goes from expert a to b (change 1), the right stays (0);
    1 -> 2: both move by 0.2 (change 0.2 each). All pixels: (1 + 0 + 0.2 + 0.2) / 4; static
    pixels (the right one in every frame): (0 + 0.2) / 2."""
    from dataclasses import replace

    from moegs_bench.cameras import Camera
    from moegs_bench.data.scene import Frame
    from moegs_bench.router.baselines import FlickerTally

    cam = Camera.look_at((0, 0, -1), (0, 0, 0), width=2, height=1, camera_id=0)
    g = [torch.tensor([[[1.0, 0.5]], [[0.0, 0.5]]]), torch.tensor([[[0.0, 0.5]], [[1.0, 0.5]]]),
         torch.tensor([[[0.2, 0.7]], [[0.8, 0.3]]]), torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])]
    labels = torch.tensor([[1, 0]])  # the right pixel is static (label 0)
    tally = FlickerTally(static_label=0)
    for i, gates in zip((0, 1, 2, 5), g):
        tally.add(Frame(replace(cam, time=i / 6), i, f"cam00/{i:06d}"), gates, labels)
    out = tally.summary()
    assert out["all"] == pytest.approx((1 + 0 + 0.2 + 0.2) / 4)
    assert out["static"] == pytest.approx(0.1)
    assert FlickerTally(static_label=None).summary() == {"all": None, "static": None}
