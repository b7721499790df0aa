"""The named scenes of the synthetic suite: each is a function of time ``t`` in [0, 1) and of a
seed-dependent :class:`Variation`, returning the primitives of :mod:`.raycast`.

World: OpenCV-style, y points down; the floor is the plane y = 1, the back wall z = 2.6; the cameras
stand on an arc around the -z side looking at :data:`TARGET`. Every scene mixes the same five
motion regimes, in different proportions, so that the best deformation prior differs between
scenes and between regions of one scene:

- ``static``: the room (walls, floor) and static furniture, textured with fine detail;
- ``rigid``: slow, smooth rigid motion (sliding, rolling, turning);
- ``oscillating``: fast non-rigid or oscillating motion (waving cloth, pulsating jelly, pendulum);
- ``appearance``: colour change without motion (heating kettle, blinking beacon, hue-cycling
  cube, flickering neon) and emissive flames;
- ``topology``: objects that appear and disappear (splitting tomato, popping balloon, thrown balls).

:attr:`SceneSpec.regions` names, per regime, the surfaces that carry it (tests and reports use it).
Periodic motions complete a whole number of cycles over the sequence.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from moegs_bench.data.synthetic.raycast import (
    Blob,
    Box,
    Ellipsoid,
    Flame,
    Room,
    Scene3D,
    Sheet,
    Sphere,
    Texture,
    Wave,
    rotation,
)

TAU = 2 * math.pi
TARGET = (0.0, -0.35, 0.6)  # where the cameras look
ROOM_LO, ROOM_HI = (-5.5, -3.6, -6.5), (5.5, 1.0, 2.6)
FLOOR = ROOM_HI[1]
REGIMES = ("static", "rigid", "oscillating", "appearance", "topology")


class Variation:
    """Seed-dependent constants of a scene, stable over time: ``u(key)`` in [-1, 1] is a fixed
    pseudo-random number per (seed, key); ``seed_for(key)`` a texture noise seed."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def _digest(self, key: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "little")

    def u(self, key: str) -> float:
        return self._digest(key) / 2**63 - 1.0

    def seed_for(self, key: str) -> int:
        return self._digest(key) % 1_000_003

    def color(self, key: str, rgb: tuple[float, float, float], amount: float = 0.06) -> tuple[float, float, float]:
        """``rgb`` shifted by up to ``amount`` per channel."""
        r, g, b = (min(1.0, max(0.0, c + amount * self.u(f"{key}/{i}"))) for i, c in enumerate(rgb))
        return r, g, b


@dataclass(frozen=True)
class SceneSpec:
    name: str
    description: str
    build: Callable[[float, Variation], Scene3D]
    regions: dict[str, tuple[str, ...]]  # regime -> names of the surfaces that carry it ("flame:NAME": a flame)
    cycles: int  # whole oscillation periods over the sequence of the "oscillating" surfaces

    def at(self, t: float, seed: int = 0) -> Scene3D:
        return self.build(float(t), Variation(seed))


# --------------------------------------------------------------------------------------- helpers
def _smooth(x: float) -> float:
    """Smoothstep of ``x`` clamped to [0, 1]."""
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    h = (h % 1.0) * 6
    i, f = int(h) % 6, h - int(h)
    p, q, r = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, r, p), (q, v, p), (p, v, r), (p, q, v), (r, p, v), (v, p, q)][i]


def flicker(t: float, var: Variation, key: str, cycles: tuple[int, ...] = (3, 7, 11)) -> float:
    """A deterministic flicker in [0, 1] (a few incommensurate-looking sines, whole cycles)."""
    s = sum(math.sin(TAU * c * t + 3 * var.u(f"{key}/{c}")) / (k + 1) for k, c in enumerate(cycles))
    norm = sum(1 / (k + 1) for k in range(len(cycles)))
    return 0.5 + 0.5 * s / norm


def flame(
    name: str, base: tuple[float, float, float], height: float, t: float, var: Variation, gain: float = 1.0
) -> Flame:
    """A candle/burner flame standing on ``base``: three Gaussian blobs (white-yellow core, orange
    body, red tip) whose brightness, height and colour flicker fast; the sway is small."""
    f1, f2 = flicker(t, var, name + "a"), flicker(t, var, name + "b", (5, 9, 13))
    h = height * (0.85 + 0.3 * f1)
    sway = 0.04 * height * math.sin(TAU * 4 * t + var.u(name))
    bx, by, bz = base
    g = gain * (0.6 + 0.6 * f2) / height
    w = height  # widths scale with the nominal height, lengths with the flickering one
    return Flame(
        name,
        [
            Blob((bx, by - 0.25 * h, bz), (0.09 * w, 0.2 * h, 0.09 * w), (9 * g, 7.5 * g, 3.5 * g)),
            Blob((bx + 0.5 * sway, by - 0.5 * h, bz), (0.15 * w, 0.32 * h, 0.15 * w), (7 * g, 2.8 * g, 0.5 * g)),
            Blob((bx + sway, by - 0.95 * h, bz), (0.08 * w, 0.2 * h, 0.08 * w), (5 * g, 1.0 * g, 0.15 * g)),
        ],
    )


def _cols(a, b, c) -> torch.Tensor:
    """A rotation from its three columns (the local axes in world coordinates)."""
    return torch.tensor([a, b, c], dtype=torch.float32).T


def _room(var: Variation, back: Texture, floor: Texture, walls: Texture) -> Room:
    ceiling = Texture(base=(0.85, 0.84, 0.8))
    return Room("room", ROOM_LO, ROOM_HI, {"back": back, "floor": floor, "walls": walls, "ceiling": ceiling})


# ---------------------------------------------------------------------------------------- kitchen
def kitchen(t: float, var: Variation) -> Scene3D:
    """A kitchen counter in front of a tiled wall (cf. N3V's cooking scenes): a cutting board slides
    and turns slowly (rigid), a burner flame flickers and a kettle heats from blue to red
    (appearance), a tea towel flaps fast (oscillating), a tomato splits into two halves that roll
    apart (topology)."""
    tiles = Texture(
        base=var.color("tile", (0.86, 0.88, 0.9)), alt=var.color("tile2", (0.62, 0.74, 0.86)), checker=4.0,
        stripes=4.0, grid=True, stripe_width=0.1, stripe_color=(0.35, 0.35, 0.38), cells=0.1, cell_size=(4.0, 4.0),
        seed=var.seed_for("tiles"),
    )  # fmt: skip
    wood = Texture(
        base=var.color("floor", (0.55, 0.36, 0.2)), stripes=3.0, stripe_width=0.08, stripe_color=(0.3, 0.18, 0.1),
        cells=0.25, cell_size=(3.0, 0.6), seed=var.seed_for("floor"),
    )  # fmt: skip
    paper = Texture(
        base=(0.8, 0.76, 0.6), stripes=5.0, stripe_width=0.3, stripe_color=(0.6, 0.42, 0.3),
    )  # fmt: skip
    cabinet = Texture(
        base=var.color("cab", (0.25, 0.42, 0.38)), stripes=1.4, stripe_width=0.05, grid=True,
        stripe_color=(0.12, 0.16, 0.15), cells=0.12, cell_size=(1.4, 1.4), seed=var.seed_for("cab"),
    )  # fmt: skip
    # counter: top at y = 0.1, front face at z = 0.2
    counter = Box("counter", (0.0, 0.55, 0.9), (2.4, 0.45, 0.7), cabinet)
    worktop = Box(
        "worktop", (0.0, 0.06, 0.88), (2.5, 0.04, 0.74),
        Texture(base=(0.78, 0.78, 0.76), noise=0.35, noise_scale=7.0, seed=var.seed_for("marble")),
    )  # fmt: skip
    # slow rigid: cutting board slides 0.9 to the right and turns by 0.5 rad
    s = _smooth(t * 1.1)
    board = Box(
        "board", (-0.55 + 0.9 * s, -0.02, 0.6), (0.5, 0.04, 0.3),
        Texture(base=(0.78, 0.58, 0.34), alt=(0.55, 0.34, 0.18), checker=3.5, noise=0.15, seed=var.seed_for("board")),
        rot=rotation(yaw=0.5 * s + 0.1 * var.u("board")),
    )  # fmt: skip
    # appearance: kettle heating from steel blue to glowing red, static
    heat = _smooth(1.3 * t - 0.1)
    kettle_col = tuple(a + (b - a) * heat for a, b in zip((0.25, 0.4, 0.75), (0.85, 0.18, 0.1)))
    kettle = Ellipsoid(
        "kettle", (1.5, -0.32, 1.0), (0.45, 0.38, 0.45),
        Texture(base=kettle_col, stripes=6.0, stripe_width=0.1, stripe_color=tuple(0.6 * c for c in kettle_col)),
        uv_scale=(1.0, 1.0), gloss=0.45, emission=tuple(0.25 * heat * c for c in (1.0, 0.3, 0.1)),
    )  # fmt: skip
    # oscillating: tea towel hanging from the worktop, flapping fast (5 cycles per sequence)
    towel = Sheet(
        "towel", (0.75, 0.52, 0.1), 0.42, 0.32,
        [Wave(0.12, TAU / 0.6, 0.0, -TAU * 5 * t), Wave(0.04, TAU / 0.3, TAU / 0.45, -TAU * 10 * t + 1.0)],
        Texture(base=(0.9, 0.9, 0.88), alt=(0.8, 0.15, 0.15), checker=9.0, noise=0.05, seed=var.seed_for("towel")),
        rot=_cols((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    )  # fmt: skip
    # topology: the tomato splits at t = 0.5; its halves roll apart
    red = Texture(base=var.color("tomato", (0.85, 0.12, 0.08)), noise=0.2, noise_scale=3.0, seed=var.seed_for("tomato"))
    parts: list = []
    if t < 0.5:
        parts.append(Sphere("tomato", (0.3, -0.2, 1.2), 0.26, red, gloss=0.5))
    else:
        d = 0.16 + 0.8 * (t - 0.5)
        half = Texture(base=(0.95, 0.42, 0.3), alt=(0.85, 0.12, 0.08), checker=6.0)
        parts.append(Ellipsoid("halves", (0.3 - d, -0.06, 1.2), (0.2, 0.14, 0.2), half, rot=rotation(roll=4 * d)))
        parts.append(Ellipsoid("halves2", (0.3 + d, -0.06, 1.2), (0.2, 0.14, 0.2), half, rot=rotation(roll=-4 * d)))
    room = _room(var, tiles, wood, paper)
    burner = flame("burner", (-1.35, 0.02, 0.95), 0.85, t, var, gain=1.6)
    plate = Box("burner_plate", (-1.35, 0.05, 0.95), (0.34, 0.03, 0.34), Texture(base=(0.15, 0.15, 0.16), noise=0.2))
    return Scene3D([board, kettle, towel, *parts], [burner], static=[room, counter, worktop, plate])


# ---------------------------------------------------------------------------------------- windy
def windy(t: float, var: Variation) -> Scene3D:
    """A courtyard in the wind (non-rigid dominant): a large flag and a hanging banner wave fast,
    a globe rolls slowly across the ground (rigid), a beacon on the flagpole blinks (appearance),
    a balloon rises and pops, and a second one appears later (topology)."""
    brick = Texture(
        base=var.color("brick", (0.66, 0.3, 0.22)), alt=(0.56, 0.24, 0.18), checker=2.5, stripes=2.5, grid=True,
        stripe_width=0.12, stripe_color=(0.8, 0.78, 0.72), cells=0.2, cell_size=(2.5, 2.5), seed=var.seed_for("brick"),
    )  # fmt: skip
    grass = Texture(
        base=var.color("grass", (0.3, 0.52, 0.2)), alt=var.color("grass2", (0.36, 0.58, 0.22)), checker=1.0,
        cells=0.3, cell_size=(5.0, 5.0), seed=var.seed_for("grass"),
    )  # fmt: skip
    concrete = Texture(
        base=(0.62, 0.62, 0.6), stripes=1.0, stripe_width=0.03, grid=True, stripe_color=(0.4, 0.4, 0.4), cells=0.15,
        seed=var.seed_for("concrete"),
    )  # fmt: skip
    pole = Box("pole", (-1.75, -0.45, 0.9), (0.05, 1.45, 0.05), Texture(base=(0.7, 0.7, 0.72)), gloss=0.3)
    flag = Sheet(
        "flag", (-1.7 + 1.15, -1.2, 0.9), 1.15, 0.62,
        [
            Wave(0.2, TAU / 1.1, 0.0, -TAU * 5 * t + var.u("flag")),
            Wave(0.06, TAU / 0.45, TAU / 1.3, -TAU * 10 * t),
        ],
        Texture(
            base=(0.95, 0.95, 0.92), alt=var.color("flag", (0.12, 0.25, 0.7)), checker=2.6, stripes=1.3,
            stripe_width=0.12, stripe_color=(0.85, 0.15, 0.12), seed=var.seed_for("flag"),
        ),
        rot=_cols((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    )  # fmt: skip
    banner = Sheet(
        "banner", (1.55, -0.55, 1.6), 0.6, 0.32,
        [Wave(0.1, TAU / 0.7, 0.0, -TAU * 5 * t + 2.0), Wave(0.04, TAU / 0.35, TAU / 0.5, -TAU * 15 * t)],
        Texture(base=(0.95, 0.8, 0.2), stripes=4.0, stripe_width=0.35, stripe_color=(0.2, 0.5, 0.3)),
        rot=_cols((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    )  # fmt: skip
    bar = Box("banner_bar", (1.55, -1.17, 1.6), (0.42, 0.025, 0.025), Texture(base=(0.35, 0.25, 0.15)))
    # slow rigid: the globe rolls 1 unit to the left
    r = 0.42
    x = 1.15 - 1.0 * t
    globe = Sphere(
        "globe", (x, FLOOR - r, 0.35), r,
        Texture(base=(0.15, 0.4, 0.8), alt=(0.3, 0.7, 0.3), checker=4.0, noise=0.3, noise_scale=3.0,
                seed=var.seed_for("globe")),
        rot=rotation(roll=(x - 1.15) / r + var.u("globe")) @ rotation(pitch=0.4), uv_scale=(2.0, 1.0), gloss=0.25,
    )  # fmt: skip
    # appearance: a beacon blinking (3 slow blinks, soft edges) on top of the pole
    on = 0.5 - 0.5 * math.cos(TAU * 3 * t)
    beacon = Sphere(
        "beacon", (-1.75, -2.05, 0.9), 0.17, Texture(base=(0.5, 0.35, 0.1)),
        emission=(0.9 * on, 0.45 * on, 0.05 * on), gloss=0.3,
    )  # fmt: skip
    parts = []
    if t < 0.55:  # balloon rising from t = 0, popping at t = 0.55
        parts.append(Ellipsoid(
            "balloon", (0.3, 0.3 - 1.6 * t, 0.1), (0.24, 0.3, 0.24), Texture(base=(0.9, 0.2, 0.55)), gloss=0.6,
        ))  # fmt: skip
    if t >= 0.4:  # a second balloon appears later
        parts.append(Ellipsoid(
            "balloon2", (0.55, 0.75 - 1.0 * (t - 0.4), 1.5), (0.22, 0.27, 0.22), Texture(base=(0.2, 0.75, 0.9)),
            gloss=0.6,
        ))  # fmt: skip
    room = _room(var, brick, grass, concrete)
    return Scene3D([flag, banner, globe, beacon, *parts], static=[room, pole, bar])


# ---------------------------------------------------------------------------------------- carousel
def carousel(t: float, var: Variation) -> Scene3D:
    """A turntable (rigid dominant): three textured objects ride a slowly turning platform, a
    pendulum swings and a jelly pulsates fast (oscillating), a cube cycles through hues
    (appearance), a small box is present only in the middle of the sequence (topology)."""
    floor = Texture(base=(0.9, 0.9, 0.88), alt=(0.2, 0.2, 0.22), checker=2.0)
    wall = Texture(
        base=var.color("wall", (0.4, 0.55, 0.7)), stripes=3.0, stripe_width=0.25, stripe_color=(0.9, 0.88, 0.8),
        cells=0.15, cell_size=(3.0, 1.0), seed=var.seed_for("wall"),
    )  # fmt: skip
    back = Texture(
        base=(0.92, 0.86, 0.7), alt=(0.75, 0.55, 0.35), checker=3.0, stripes=6.0, stripe_width=0.08,
        stripe_color=(0.3, 0.25, 0.2), cells=0.15, cell_size=(3.0, 3.0), seed=var.seed_for("back"),
    )  # fmt: skip
    angle = 0.9 * t + 0.2 * var.u("turn")  # slow: 0.9 rad over the sequence
    cx, cz = 0.0, 0.7
    platform = Ellipsoid(
        "platform", (cx, FLOOR - 0.05, cz), (1.45, 0.1, 1.45),
        Texture(base=(0.55, 0.35, 0.25), alt=(0.85, 0.75, 0.55), checker=8.0, noise=0.1, seed=var.seed_for("plat")),
        rot=rotation(yaw=angle), uv_scale=(1.0, 1.0),
    )  # fmt: skip

    def on_platform(a0: float, rad: float) -> tuple[float, float]:
        return cx + rad * math.sin(a0 + angle), cz - rad * math.cos(a0 + angle)

    x1, z1 = on_platform(0.0, 0.8)
    crate = Box(
        "crate", (x1, FLOOR - 0.12 - 0.3, z1), (0.3, 0.3, 0.3),
        Texture(base=(0.85, 0.65, 0.3), alt=(0.6, 0.4, 0.15), checker=3.3, noise=0.2, seed=var.seed_for("crate")),
        rot=rotation(yaw=angle * 1.5),
    )  # fmt: skip
    x2, z2 = on_platform(2.1, 0.85)
    ball = Sphere(
        "ball", (x2, FLOOR - 0.12 - 0.32, z2), 0.32,
        Texture(base=(0.95, 0.95, 0.9), stripes=3.0, stripe_width=0.5, stripe_color=(0.2, 0.3, 0.8)),
        rot=rotation(yaw=-2.0 * angle, pitch=0.5), uv_scale=(2.0, 1.0), gloss=0.35,
    )  # fmt: skip
    x3, z3 = on_platform(4.2, 0.8)
    egg = Ellipsoid(
        "egg", (x3, FLOOR - 0.12 - 0.42, z3), (0.25, 0.42, 0.25),
        Texture(base=(0.3, 0.65, 0.35), alt=(0.95, 0.9, 0.4), checker=5.0), rot=rotation(yaw=angle),
        uv_scale=(3.0, 2.0),
    )  # fmt: skip
    # oscillating: pendulum swinging 5 times over the sequence, jelly pulsating 6 times
    theta = 0.55 * math.sin(TAU * 5 * t + 0.5 * var.u("pend"))
    pivot = (1.75, -2.1, 1.2)
    length = 1.4
    bob_c = (pivot[0] + length * math.sin(theta), pivot[1] + length * math.cos(theta), pivot[2])
    rod_c = (pivot[0] + 0.5 * length * math.sin(theta), pivot[1] + 0.5 * length * math.cos(theta), pivot[2])
    rod = Box("rod", rod_c, (0.025, 0.5 * length, 0.025), Texture(base=(0.3, 0.3, 0.3)), rot=rotation(roll=-theta))
    bob = Sphere(
        "bob", bob_c, 0.22, Texture(base=(0.9, 0.75, 0.2), alt=(0.6, 0.3, 0.1), checker=4.0), uv_scale=(2.0, 1.0),
        rot=rotation(roll=-theta), gloss=0.6,
    )  # fmt: skip
    mount = Box("mount", (1.75, -2.12, 1.2), (0.2, 0.04, 0.1), Texture(base=(0.25, 0.25, 0.25)))
    pedestal = Box(
        "pedestal", (-2.1, 0.67, 2.1), (0.3, 0.33, 0.3),
        Texture(base=(0.85, 0.85, 0.82), stripes=4.0, stripe_width=0.1, stripe_color=(0.5, 0.5, 0.5)),
    )  # fmt: skip
    pulse = math.sin(TAU * 5 * t)
    squash, bulge = 1 - 0.22 * pulse, 1 + 0.18 * pulse
    jelly = Ellipsoid(
        "jelly", (-1.85, FLOOR - 0.38 * squash, 0.5), (0.42 * bulge, 0.38 * squash, 0.42 * bulge),
        Texture(base=(0.9, 0.3, 0.5), alt=(0.95, 0.6, 0.75), checker=6.0), uv_scale=(2.0, 1.0), gloss=0.5,
    )  # fmt: skip
    # appearance: a static cube cycling once through the hues
    hue = _hsv(t + 0.1 * var.u("hue"), 0.75, 0.9)
    cube = Box(
        "cube", (-2.1, -0.02, 2.1), (0.36, 0.36, 0.36),
        Texture(base=hue, stripes=2.0, stripe_width=0.1, grid=True, stripe_color=tuple(0.4 * c for c in hue)),
        rot=rotation(yaw=0.5),
    )  # fmt: skip
    parts = []
    if 0.3 <= t < 0.7:
        parts.append(Box(
            "popup", (1.85, FLOOR - 0.26, 0.15), (0.26, 0.26, 0.26),
            Texture(base=(0.95, 0.5, 0.1), alt=(0.2, 0.2, 0.2), checker=4.0), rot=rotation(yaw=-0.3),
        ))  # fmt: skip
    room = _room(var, back, floor, wall)
    return Scene3D([platform, crate, ball, egg, rod, bob, jelly, cube, *parts], static=[room, mount, pedestal])


# ---------------------------------------------------------------------------------------- juggler
def juggler(t: float, var: Variation) -> Scene3D:
    """A fairground stall (topology and fast motion dominant): balls are thrown on parabolic arcs,
    each existing only during its flight, and soap bubbles grow and pop (topology); two candles
    flicker and a neon bar flashes (appearance); a crate slides slowly along a shelf (rigid); a
    curtain ripples (oscillating)."""
    back = Texture(
        base=(0.95, 0.92, 0.85), stripes=4.0, stripe_width=0.5, stripe_color=var.color("stripe", (0.75, 0.15, 0.2)),
        cells=0.1, cell_size=(8.0, 2.0), seed=var.seed_for("back"),
    )  # fmt: skip
    floor = Texture(
        base=(0.45, 0.4, 0.35), alt=(0.6, 0.55, 0.45), checker=3.0, cells=0.2, cell_size=(3.0, 3.0),
        seed=var.seed_for("fl"),
    )  # fmt: skip
    walls = Texture(base=(0.5, 0.3, 0.45), stripes=2.0, stripe_width=0.1, stripe_color=(0.9, 0.8, 0.3))
    shelf = Box("shelf", (0.0, 0.05, 2.25), (2.6, 0.05, 0.3), Texture(base=(0.5, 0.33, 0.2), noise=0.3, seed=3))
    s = _smooth(t)
    crate = Box(
        "crate", (-1.2 + 1.0 * s, -0.22, 2.2), (0.22, 0.22, 0.22),
        Texture(base=(0.3, 0.55, 0.8), alt=(0.9, 0.9, 0.95), checker=4.5, noise=0.1, seed=var.seed_for("crate")),
        rot=rotation(yaw=0.3 + 0.4 * s),
    )  # fmt: skip
    # flickering neon bar on the back wall (static)
    neon_on = 1.0 if (math.sin(TAU * 4 * t + var.u("neon")) > -0.2) else 0.15
    neon = Box(
        "neon", (2.0, -1.2, 2.5), (0.08, 0.7, 0.05), Texture(base=(0.2, 0.9, 0.9)),
        emission=(0.2 * neon_on, 0.9 * neon_on, 0.9 * neon_on),
    )  # fmt: skip
    wax = Texture(base=(0.95, 0.92, 0.8))
    candles = [Box(f"candle{i}", (x, 0.75, 0.3), (0.07, 0.25, 0.07), wax) for i, x in ((1, -1.9), (2, 1.9))]
    flames = [flame(f"flame{i}", (x, 0.52, 0.3), 0.4, t, var, gain=1.2) for i, x in ((1, -1.9), (2, 1.9))]
    curtain = Sheet(
        "curtain", (-2.3, -0.7, 1.6), 0.9, 0.5,
        [Wave(0.14, TAU / 1.5, TAU / 0.55, -TAU * 6 * t), Wave(0.05, TAU / 0.4, TAU / 0.9, -TAU * 12 * t + 1.5)],
        Texture(base=(0.6, 0.1, 0.15), alt=(0.95, 0.8, 0.25), checker=4.0, noise=0.1, seed=var.seed_for("curtain")),
        rot=_cols((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    )  # fmt: skip
    parts = []
    # three balls, each thrown from a hand to the other; they exist only during their flight
    for i, (start, col) in enumerate(((0.05, (0.9, 0.2, 0.2)), (0.35, (0.2, 0.8, 0.3)), (0.65, (0.95, 0.8, 0.1)))):
        u = (t - start) / 0.3
        if 0.0 <= u < 1.0:
            x = -0.8 + 1.6 * u if i % 2 == 0 else 0.8 - 1.6 * u
            y = 0.4 - 4 * 1.9 * u * (1 - u)
            parts.append(Sphere(
                f"ball{i + 1}", (x, y, 0.55), 0.22,
                Texture(base=col, alt=tuple(0.5 * c for c in col), checker=3.0), gloss=0.5, uv_scale=(2.0, 1.0),
                rot=rotation(roll=6 * u),
            ))  # fmt: skip
    # bubbles: grow over 0.25, then pop
    for i, (start, pos) in enumerate(((0.1, (-0.7, -0.4, 1.2)), (0.45, (0.8, -0.7, 1.3)), (0.7, (0.0, -1.2, 1.0)))):
        u = (t - start) / 0.25
        if 0.0 <= u < 1.0:
            rad = 0.08 + 0.3 * u
            parts.append(Sphere(
                f"bubble{i + 1}", (pos[0], pos[1] - 0.3 * u, pos[2]), rad,
                Texture(base=(0.35, 0.75, 0.95), stripes=3.0, stripe_width=0.5, stripe_color=(0.85, 0.5, 0.95)),
                gloss=1.0, uv_scale=(1.0, 1.0), emission=(0.05, 0.08, 0.12),
            ))  # fmt: skip
    room = _room(var, back, floor, walls)
    return Scene3D([crate, neon, curtain, *parts], flames, static=[room, shelf, *candles])


SCENES: dict[str, SceneSpec] = {
    spec.name: spec
    for spec in (
        SceneSpec(
            "kitchen", kitchen.__doc__ or "", kitchen,
            {
                "static": ("room", "counter", "worktop", "burner_plate"), "rigid": ("board",),
                "oscillating": ("towel",), "appearance": ("kettle", "flame:burner"),
                "topology": ("tomato", "halves", "halves2"),
            },
            5,
        ),
        SceneSpec(
            "windy", windy.__doc__ or "", windy,
            {
                "static": ("room", "pole", "banner_bar"), "rigid": ("globe",), "oscillating": ("flag", "banner"),
                "appearance": ("beacon",), "topology": ("balloon", "balloon2"),
            },
            5,
        ),
        SceneSpec(
            "carousel", carousel.__doc__ or "", carousel,
            {
                "static": ("room", "mount", "pedestal"), "rigid": ("platform", "crate", "ball", "egg"),
                "oscillating": ("jelly", "bob", "rod"), "appearance": ("cube",), "topology": ("popup",),
            },
            5,
        ),
        SceneSpec(
            "juggler", juggler.__doc__ or "", juggler,
            {
                "static": ("room", "shelf", "candle1", "candle2"), "rigid": ("crate",), "oscillating": ("curtain",),
                "appearance": ("neon", "flame:flame1", "flame:flame2"),
                "topology": ("ball1", "ball2", "ball3", "bubble1", "bubble2", "bubble3"),
            },
            6,
        ),
    )
}  # fmt: skip
DEFAULT_SCENE = "kitchen"
