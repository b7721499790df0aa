"""Gate maps: palette, winner map, the PNG figure, video frames and the MP4 writer."""

from __future__ import annotations

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.reports.gate_maps import (
    _gate_figure,
    expert_palette,
    save_gate_figure,
    video_frame,
    winner_map,
    winner_shares,
    write_video,
)

# matplotlib's published tab10 / tab20 colours, written out as the oracle.
# The built-in experts' colours, written out (seaborn's "colorblind" palette: 4dgs, e-d3dgs, ex4dgs, stg).
BUILTIN = {"4dgs": "0173b2", "e-d3dgs": "de8f05", "ex4dgs": "029e73", "stg": "d55e00"}
IDS = ["4dgs", "e-d3dgs", "ex4dgs"]


def rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i:i + 2], 16) for i in (0, 2, 4)]


def test_palette_is_per_id_whatever_the_other_experts():
    import seaborn as sns
    from matplotlib.colors import to_hex

    colorblind = [to_hex(c)[1:] for c in sns.color_palette("colorblind", 10)]  # (seaborn itself as the oracle)
    assert list(BUILTIN.values()) == colorblind[:4]
    for names in (["4dgs", "stg"], ["stg", "e-d3dgs", "4dgs", "ex4dgs"], ["ex4dgs"]):
        np.testing.assert_array_equal(expert_palette(names), np.array([rgb(BUILTIN[x]) for x in names], np.uint8))
    # Plugin ids: the same colour in any company, distinct within a figure, up to 20 experts.
    many = [f"plugin-{i}" for i in range(16)] + IDS + ["stg"]
    p = expert_palette(many)
    assert p.shape == (20, 3) and p.dtype == np.uint8 and len(np.unique(p, axis=0)) == 20
    alone = expert_palette(["plugin-3"])
    with_builtins = expert_palette(["4dgs", "plugin-3"])
    np.testing.assert_array_equal(alone[0], with_builtins[1])


@pytest.mark.parametrize("names", [[], [f"x{i}" for i in range(21)], ["a", "a"]])
def test_palette_rejects_bad_sets(names):
    with pytest.raises(ValueError, match="experts: expected"):
        expert_palette(names)


def hand_gates() -> tuple[np.ndarray, np.ndarray]:
    """K=3 gates over 2x3 pixels and the winner index of each pixel, chosen by hand."""
    gates = np.array([
        [[0.7, 0.1, 0.2], [0.5, 0.3, 0.1]],
        [[0.2, 0.8, 0.2], [0.5, 0.3, 0.1]],
        [[0.1, 0.1, 0.6], [0.0, 0.4, 0.8]],
    ], dtype=np.float32)  # [K, H, W]; pixel (1, 0) ties experts 0 and 1
    winners = np.array([[0, 1, 2], [0, 2, 2]])
    return gates, winners


def test_winner_map_matches_hand_picked_winners():
    gates, winners = hand_gates()
    colours = np.array([rgb(BUILTIN[x]) for x in IDS], dtype=np.uint8)
    expected = colours[winners]  # [2, 3, 3]
    got = winner_map(gates, IDS)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(winner_map(torch.from_numpy(gates), IDS), expected)
    np.testing.assert_allclose(winner_shares(gates), [2 / 6, 1 / 6, 3 / 6])


@pytest.mark.parametrize(("gates", "message"), [
    (np.zeros((2, 3), np.float32), r"gates: expected shape \[K, H, W\]"),
    (np.zeros((0, 2, 3), np.float32), r"gates: expected shape \[K, H, W\]"),
    (np.zeros((21, 2, 3), np.float32), "gates: at most 20"),
    (np.full((2, 2, 3), np.nan, np.float32), "gates: contains 12 NaN"),
    (np.zeros((2, 2, 3), np.int64), "gates: expected a floating-point"),
    ([[[1.0]]], "gates: expected a torch.Tensor or numpy array"),
])
def test_winner_map_rejects_bad_gates(gates, message):
    with pytest.raises(InputError, match=message):
        winner_map(gates, [f"e{i}" for i in range(np.shape(gates)[0])] if np.ndim(gates) == 3 else ["e0"])


def test_gate_figure_legend_names_and_shares():
    gates = np.zeros((2, 10, 10), np.float32)
    gates[0].flat[:41] = 1.0  # expert 0 wins 41 of 100 pixels
    gates[1] = 1.0 - gates[0]
    fig = _gate_figure(gates, ["4dgs", "stg"])
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == ["4dgs 41%", "stg 59%"]
    titles = {ax.get_title() for ax in fig.axes}
    assert {"winning expert", "4dgs", "stg"} <= titles and "mixture" not in titles


def test_save_gate_figure_writes_png_atomically(tmp_path):
    h, w = 72, 96
    gates = np.zeros((3, h, w), np.float32)  # [K, H, W]: three large regions, one per expert
    gates[0, :, : w // 2] = 1.0
    gates[1, : h // 2, w // 2:] = 1.0
    gates[2, h // 2:, w // 2:] = 1.0
    image = torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "gates.png"
    save_gate_figure(path, torch.from_numpy(gates), ["4dgs", "stg", "ex4dgs"], image=image, title="t = 0.5")

    assert list(tmp_path.iterdir()) == [path]
    png = iio.imread(path)
    assert png.ndim == 3 and png.shape[2] in (3, 4) and png.dtype == np.uint8
    assert png.shape[0] > h and png.shape[1] > w
    pixels = png[..., :3].reshape(-1, 3)
    for colour in (BUILTIN[x] for x in ("4dgs", "stg", "ex4dgs")):  # each winner's colour (winner map, legend)
        assert (pixels == rgb(colour)).all(axis=1).any(), colour


def test_save_gate_figure_rejects_bad_inputs(tmp_path):
    gates = np.full((2, 4, 5), 0.5, np.float32)
    path = tmp_path / "gates.png"
    with pytest.raises(InputError, match=r"names: expected 2 names.*got 3 names"):
        save_gate_figure(path, gates, ["a", "b", "c"])
    with pytest.raises(InputError, match=r"names: expected 2 names.*got a str"):
        save_gate_figure(path, gates, "ab")
    with pytest.raises(InputError, match=r"gates: expected shape \[K, H, W\]"):
        save_gate_figure(path, gates[0], ["a"])
    with pytest.raises(InputError, match=r"image: expected shape \[4, 5, 3\]"):
        save_gate_figure(path, gates, ["a", "b"], image=np.zeros((5, 4, 3), np.float32))
    with pytest.raises(InputError, match=r"image: expected shape \[4, 5, 3\]"):
        save_gate_figure(path, gates, ["a", "b"], image=np.zeros((4, 5), np.float32))
    with pytest.raises(InputError, match="image: expected a floating-point"):
        save_gate_figure(path, gates, ["a", "b"], image=np.zeros((4, 5, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_video_frame_layout():
    h, w = 7, 3
    levels = np.arange(h * w * 3).reshape(h, w, 3) % 256  # exact 8-bit levels
    image = torch.from_numpy(levels / 255.0)  # [H, W, 3] float64
    gates = np.zeros((2, h, w), np.float32)
    gates[0, :4] = 1.0  # rows 0-3: expert 0, rows 4-6: expert 1
    gates[1, 4:] = 1.0
    winners = np.array([rgb(BUILTIN["4dgs"])] * 4 + [rgb(BUILTIN["stg"])] * 3, dtype=np.uint8)[:, None, :]
    winners = winners.repeat(w, axis=1)

    frame = video_frame(image, gates, ["4dgs", "stg"])
    s = 37  # smallest s with 7 * s >= 256; 259 rows, padded to 260
    assert frame.dtype == np.uint8 and frame.shape == (260, 2 * w * s + 2, 3)
    left = np.repeat(np.repeat(levels.astype(np.uint8), s, axis=0), s, axis=1)
    right = np.repeat(np.repeat(winners, s, axis=0), s, axis=1)
    np.testing.assert_array_equal(frame[:259, : w * s], left)
    np.testing.assert_array_equal(frame[:259, w * s + 2:], right)
    assert (frame[:, w * s: w * s + 2] == 255).all()  # the gap
    assert (frame[259] == 255).all()  # the padding row
    assert tuple(frame[100, 50]) == tuple(levels[100 // s, 50 // s])
    np.testing.assert_array_equal(video_frame(levels / 255.0, torch.from_numpy(gates), ["4dgs", "stg"]), frame)


@pytest.mark.parametrize(("h", "w", "shape"), [(72, 96, (288, 770, 3)), (256, 2, (256, 6, 3)), (301, 4, (302, 10, 3))])
def test_video_frame_sizes(h, w, shape):
    frame = video_frame(np.zeros((h, w, 3), np.float32), np.ones((1, h, w), np.float32), ["4dgs"])
    assert frame.shape == shape


def test_video_frame_rejects_mismatched_image():
    with pytest.raises(InputError, match=r"image: expected shape \[4, 5, 3\]"):
        video_frame(np.zeros((4, 6, 3), np.float32), np.ones((2, 4, 5), np.float32), ["4dgs", "stg"])


def flat_frames(n: int) -> list[np.ndarray]:
    """``n`` video frames of flat colour blocks that differ from frame to frame."""
    h, w = 7, 3
    gates = np.zeros((3, h, w), np.float32)
    gates[0, :3], gates[1, 3:5], gates[2, 5:] = 1.0, 1.0, 1.0
    colours = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.2, 0.2, 0.9), (0.9, 0.9, 0.1), (0.5, 0.5, 0.5)]
    return [video_frame(np.full((h, w, 3), colours[i % 5], np.float32), np.roll(gates, i, axis=0), IDS)
            for i in range(n)]


def test_write_video_round_trip(tmp_path):
    frames = flat_frames(5)
    path = tmp_path / "gates.mp4"
    assert write_video(path, iter(frames), fps=8) == 5
    assert list(tmp_path.iterdir()) == [path]

    with iio2.get_reader(path, format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        back = [np.asarray(f) for f in reader]
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 8
    assert len(back) == 5
    for i, (got, want) in enumerate(zip(back, frames)):
        assert got.shape == want.shape == (260, 224, 3)
        mae = np.abs(got.astype(np.float64) - want).mean()
        assert mae < 8, (i, mae)
        other = np.abs(got.astype(np.float64) - frames[(i + 1) % 5]).mean()
        assert other > 30, (i, other)  # frames come back in order


def test_write_video_rejects_bad_frames(tmp_path):
    path = tmp_path / "v.mp4"
    good = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="frames: expected at least one frame"):
        write_video(path, [])
    with pytest.raises(InputError, match=r"frames\[2\]: expected shape \[16, 16, 3\] like frames\[0\]"):
        write_video(path, (f for f in [good, good, np.zeros((16, 18, 3), np.uint8)]))
    with pytest.raises(InputError, match=r"frames\[0\]: expected even H and W"):
        write_video(path, [np.zeros((15, 16, 3), np.uint8)])
    with pytest.raises(InputError, match=r"frames\[1\]: expected a uint8"):
        write_video(path, [good, good.astype(np.float32)])
    with pytest.raises(InputError, match="fps: expected a positive int"):
        write_video(path, [good], fps=0)
    assert list(tmp_path.iterdir()) == []
