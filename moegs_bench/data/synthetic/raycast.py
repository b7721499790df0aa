"""A small vectorised ray caster of analytic primitives: the ground-truth renderer of the synthetic
suite. It is deliberately *not* a Gaussian rasterizer, so that no expert reproduces it exactly.

Primitives (all in world coordinates, OpenCV-style world with y pointing down):

- :class:`Ellipsoid` (spheres included): textured, optionally glossy or emissive;
- :class:`Box`: oriented, textured per face;
- :class:`Room`: the inside of an axis-aligned box, the static background (walls, floor, ceiling);
- :class:`Sheet`: a rectangle deformed by travelling waves (a height field in its own frame),
  intersected by marching plus bisection along the ray;
- :class:`Flame`: a volumetric emitter, a sum of anisotropic Gaussian blobs whose emission is
  integrated analytically along the ray up to the first surface (erf), composited as light.

Shading is ambient + Lambert from one directional light, plus an optional Phong highlight and
emission. :func:`trace` returns per-ray colour, depth and the index of the primitive hit (-1 for
none); :class:`Rig` / :func:`render` trace cameras with ``ss x ss`` supersampling per pixel,
intersecting each primitive only with the rays inside its projected bounding box, and reuse the
trace of the static surfaces over time.

Everything is float32 torch on the CPU, element-wise, so results are deterministic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from moegs_bench.cameras import Camera

EPS = 1e-4  # minimum ray distance of a hit
TAU = 2 * math.pi
LIGHT_DIR = (-0.45, -0.8, -0.4)  # towards the light: up (-y), to the left and towards the cameras
AMBIENT = 0.38
DIFFUSE = 0.72
BACKGROUND = (0.0, 0.0, 0.0)  # colour of rays that hit nothing (the rooms close every scene)

Color = Sequence[float]


def _vec(x: Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32).reshape(3)


# torch reductions over a last dimension of size 3 are ~25x slower than element-wise ops on this
# CPU build: dot products go through a matrix-vector product, minima/maxima through columns.
_ONES3 = torch.ones(3)


def _dot(a: Tensor, b: Tensor) -> Tensor:  # [N, 3], [N, 3] -> [N]
    return (a * b) @ _ONES3


def _max3(x: Tensor) -> Tensor:
    return torch.maximum(torch.maximum(x[:, 0], x[:, 1]), x[:, 2])


def _min3(x: Tensor) -> Tensor:
    return torch.minimum(torch.minimum(x[:, 0], x[:, 1]), x[:, 2])


def _argmax3(x: Tensor) -> Tensor:
    """Index of the largest of the three columns (the first on ties)."""
    a, b, c = x[:, 0], x[:, 1], x[:, 2]
    return torch.where((a >= b) & (a >= c), 0, torch.where(b >= c, 1, 2))


def _onehot3(axis: Tensor) -> Tensor:
    return (axis[:, None] == torch.arange(3)).to(torch.float32)


def _normalize(v: Tensor) -> Tensor:
    if v.dim() == 1:
        return v / v.norm().clamp_min(1e-12)
    return v * torch.rsqrt(_dot(v, v).clamp_min(1e-24))[:, None]


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> Tensor:
    """Local-to-world rotation ``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (radians; y is the vertical axis)."""
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (math.cos, math.sin))
    ry = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rz = torch.tensor([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return ry @ rx @ rz


# ------------------------------------------------------------------------------------- textures
@functools.lru_cache(maxsize=256)
def _lattice(seed: int) -> Tensor:
    """A 256 x 256 table of uniform values (flattened), the lattice of :func:`value_noise`."""
    return torch.rand(256 * 256, generator=torch.Generator().manual_seed(int(seed) % (2**63)))


def value_noise(uv: Tensor, seed: int, octaves: int = 2) -> Tensor:
    """Smooth lattice noise in [0, 1] (bilinear with smoothstep, ``octaves`` doubling octaves;
    the lattice repeats every 256 cells)."""
    out = torch.zeros(uv.shape[0])
    amp, total, scale = 1.0, 0.0, 1.0
    for o in range(octaves):
        table = _lattice(seed * 7 + o)
        p = uv * scale
        i = torch.floor(p)
        f = p - i
        f = f * f * (3.0 - 2.0 * f)
        i = i.to(torch.int64) & 255
        ix, iy = i[:, 0], i[:, 1] * 256
        ix1, iy1 = (ix + 1) & 255, ((i[:, 1] + 1) & 255) * 256
        a, b = table.take(iy + ix), table.take(iy + ix1)
        c, d = table.take(iy1 + ix), table.take(iy1 + ix1)
        fx, fy = f[:, 0], f[:, 1]
        out = out + amp * torch.lerp(torch.lerp(a, b, fx), torch.lerp(c, d, fx), fy)
        total += amp
        amp *= 0.5
        scale *= 2.0
    return out / total


@dataclass
class Texture:
    """Procedural albedo over 2D surface coordinates: a base colour, an optional checker of
    ``checker`` cells per unit in a second colour, optional stripes (lines of ``stripe_width``
    every ``1 / stripes`` units along u), per-cell brightness jitter of amplitude ``cells`` on a
    grid of ``cell_size`` cells per unit (tiles, bricks, planks: piecewise constant, so it costs
    little in PNG files) and smooth value noise of amplitude ``noise``."""

    base: Color
    alt: Color | None = None
    checker: float = 0.0
    stripes: float = 0.0
    stripe_color: Color = (0.1, 0.1, 0.1)
    stripe_width: float = 0.15  # fraction of a stripe period
    grid: bool = False  # stripes along u and v (tiles with grout lines)
    noise: float = 0.0
    noise_scale: float = 4.0
    cells: float = 0.0
    cell_size: tuple[float, float] = (1.0, 1.0)
    seed: int = 0

    def __call__(self, uv: Tensor) -> Tensor:  # uv [N, 2] -> rgb [N, 3]
        n = uv.shape[0]
        col = _vec(self.base).expand(n, 3)
        if self.alt is not None and self.checker > 0:
            cell = torch.floor(uv * self.checker)
            c = (cell[:, 0] + cell[:, 1]).remainder(2.0)[:, None]
            col = col * (1 - c) + _vec(self.alt) * c
        if self.stripes > 0:
            line = (uv[:, 0] * self.stripes).remainder(1.0) < self.stripe_width
            if self.grid:
                line = line | ((uv[:, 1] * self.stripes).remainder(1.0) < self.stripe_width)
            col = torch.where(line[:, None], _vec(self.stripe_color).expand(n, 3), col)
        if self.cells > 0:
            cell = torch.floor(uv * torch.tensor(self.cell_size, dtype=torch.float32)).to(torch.int64) & 255
            jitter = _lattice(self.seed * 7 + 5).take(cell[:, 1] * 256 + cell[:, 0])[:, None]
            col = col * (1.0 + self.cells * (2.0 * jitter - 1.0))
        if self.noise > 0:
            nz = value_noise(uv * self.noise_scale, self.seed)[:, None]
            col = col * (1.0 + self.noise * (2.0 * nz - 1.0))
        return col.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------- primitives
@dataclass
class Hit:
    """Shading inputs of the rays that hit one primitive: world normal (unit, any side), albedo,
    emission, glossiness."""

    normal: Tensor  # [M, 3]
    albedo: Tensor  # [M, 3]
    emission: Tensor | None = None  # [M, 3]
    gloss: float = 0.0


class Primitive:
    name: str

    def intersect(self, o: Tensor, d: Tensor) -> Tensor:  # [N, 3], [N, 3] -> t [N] (inf: miss)
        raise NotImplementedError

    def shade(self, p: Tensor, d: Tensor) -> Hit:  # hit points [M, 3], ray directions [M, 3]
        raise NotImplementedError

    def bound(self) -> Tensor | None:
        """The 8 corners ``[8, 3]`` of a box that encloses the primitive, or None when it may
        cover any ray."""
        return None


_SIGNS = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])


def _box_corners(center: Tensor, half: Tensor, rot: Tensor) -> Tensor:
    """Corners ``[8, 3]`` of the box ``center + rot @ (+-half)``."""
    return center + (_SIGNS * half) @ rot.T


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    b = torch.where(b.abs() < 1e-12, torch.full_like(b, 1e-12), b)
    return a / b


@dataclass
class Ellipsoid(Primitive):
    """An ellipsoid (a sphere when the three ``radii`` agree) at ``center`` with local-to-world
    rotation ``rot``. Texture coordinates: longitude and latitude of the local unit sphere, scaled
    by ``uv_scale``; rotating ``rot`` therefore turns the texture with the object."""

    name: str
    center: Sequence[float] | Tensor
    radii: Sequence[float] | Tensor
    texture: Texture
    rot: Tensor = field(default_factory=lambda: torch.eye(3))
    uv_scale: tuple[float, float] = (1.0, 1.0)
    gloss: float = 0.0
    emission: Color | None = None

    def __post_init__(self) -> None:
        self.center, self.radii = _vec(self.center), _vec(self.radii)
        self.rot = torch.as_tensor(self.rot, dtype=torch.float32)

    def bound(self) -> Tensor:
        return _box_corners(self.center, self.radii, self.rot)

    def _local(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        return ((o - self.center) @ self.rot) / self.radii, (d @ self.rot) / self.radii

    def intersect(self, o: Tensor, d: Tensor) -> Tensor:
        lo, ld = self._local(o, d)
        a = _dot(ld, ld)
        b = _dot(lo, ld)
        c = _dot(lo, lo) - 1.0
        disc = b * b - a * c
        sq = disc.clamp_min(0.0).sqrt()
        t0, t1 = (-b - sq) / a, (-b + sq) / a
        t = torch.where(t0 > EPS, t0, t1)
        return torch.where((disc >= 0) & (t > EPS), t, torch.full_like(t, math.inf))

    def shade(self, p: Tensor, d: Tensor) -> Hit:
        q = ((p - self.center) @ self.rot) / self.radii  # on the unit sphere
        normal = _normalize((q / self.radii) @ self.rot.T)
        u = torch.atan2(q[:, 0], q[:, 2]) / (2 * math.pi) + 0.5
        v = torch.acos((-q[:, 1]).clamp(-1.0, 1.0)) / math.pi
        uv = torch.stack([u * self.uv_scale[0], v * self.uv_scale[1]], -1)
        emission = None if self.emission is None else _vec(self.emission).expand(p.shape[0], 3)
        return Hit(normal, self.texture(uv), emission, self.gloss)


def Sphere(name: str, center, radius: float, texture: Texture, **kw) -> Ellipsoid:  # noqa: N802
    return Ellipsoid(name, center, (radius, radius, radius), texture, **kw)


@dataclass
class Box(Primitive):
    """An oriented box: ``center``, ``half`` extents along its local axes, local-to-world ``rot``.
    Each face is textured in its own two local coordinates (scaled by ``uv_scale``)."""

    name: str
    center: Sequence[float] | Tensor
    half: Sequence[float] | Tensor
    texture: Texture
    rot: Tensor = field(default_factory=lambda: torch.eye(3))
    uv_scale: float = 1.0
    gloss: float = 0.0
    emission: Color | None = None

    def __post_init__(self) -> None:
        self.center, self.half = _vec(self.center), _vec(self.half)
        self.rot = torch.as_tensor(self.rot, dtype=torch.float32)

    def bound(self) -> Tensor:
        return _box_corners(self.center, self.half, self.rot)

    def intersect(self, o: Tensor, d: Tensor) -> Tensor:
        lo, ld = (o - self.center) @ self.rot, d @ self.rot
        t1, t2 = _safe_div(-self.half - lo, ld), _safe_div(self.half - lo, ld)
        tmin = _max3(torch.minimum(t1, t2))
        tmax = _min3(torch.maximum(t1, t2))
        t = torch.where(tmin > EPS, tmin, tmax)
        return torch.where((tmax >= tmin) & (t > EPS), t, torch.full_like(t, math.inf))

    def shade(self, p: Tensor, d: Tensor) -> Hit:
        q = (p - self.center) @ self.rot
        r = q / self.half
        axis = _argmax3(r.abs())  # the face
        normal = (_onehot3(axis) * r.sign()) @ self.rot.T
        # the two other coordinates of the face (x: (z, y), y: (x, z), z: (x, y))
        uv = torch.stack([torch.where(axis == 0, q[:, 2], q[:, 0]), torch.where(axis == 1, q[:, 2], q[:, 1])], -1)
        uv = uv * self.uv_scale
        emission = None if self.emission is None else _vec(self.emission).expand(p.shape[0], 3)
        return Hit(normal, self.texture(uv), emission, self.gloss)


@dataclass
class Room(Primitive):
    """The inside of the box ``[lo, hi]``: six textured walls seen from within. Faces:
    ``"left"`` (x = lo), ``"right"`` (x = hi), ``"ceiling"`` (y = lo, up), ``"floor"`` (y = hi),
    ``"front"`` (z = lo, behind the cameras), ``"back"`` (z = hi). Missing faces use ``"walls"``."""

    name: str
    lo: Sequence[float] | Tensor
    hi: Sequence[float] | Tensor
    textures: dict[str, Texture]

    FACES = (("left", "right"), ("ceiling", "floor"), ("front", "back"))

    def __post_init__(self) -> None:
        self.lo, self.hi = _vec(self.lo), _vec(self.hi)

    def intersect(self, o: Tensor, d: Tensor) -> Tensor:
        t_exit = torch.where(d > 0, self.hi - o, self.lo - o) / d
        t = _min3(torch.where(d == 0, math.inf, t_exit))  # no wall along an axis the ray does not move on
        return torch.where(t > EPS, t, torch.full_like(t, math.inf))

    def shade(self, p: Tensor, d: Tensor) -> Hit:
        # the wall is the one nearest to the point, in the direction of the ray
        dist = torch.where(d > 0, self.hi - p, p - self.lo).abs()
        dist = torch.where(d == 0, math.inf, dist)
        axis = _argmax3(-dist)
        onehot = _onehot3(axis)
        positive = _dot(d, onehot) > 0
        normal = -onehot * d.sign()
        face = 2 * axis + positive.to(torch.int64)
        albedo = torch.zeros_like(p)
        for ax, (neg_name, pos_name) in enumerate(self.FACES):
            others = [1, 2] if ax == 0 else [0, 2] if ax == 1 else [0, 1]
            for name, side in ((neg_name, 0), (pos_name, 1)):
                idx = torch.nonzero(face == 2 * ax + side)[:, 0]
                if idx.numel():
                    tex = self.textures.get(name) or self.textures["walls"]
                    albedo.index_copy_(0, idx, tex(p[idx][:, others]))
        return Hit(normal, albedo)


@dataclass
class Wave:
    """One travelling wave ``amp * sin(k_u u + k_v v - omega + phase)`` of a :class:`Sheet`
    (``omega`` is the temporal phase, already multiplied by time)."""

    amp: float
    k_u: float
    k_v: float = 0.0
    phase: float = 0.0


@dataclass
class Sheet(Primitive):
    """A ``2 * half_u`` by ``2 * half_v`` rectangle in the plane of the local axes (columns 0 and
    1 of ``rot``) through ``center``, displaced along its normal (column 2) by the height field
    ``h(u, v) = env(u) * sum(waves)``. ``pinned=True`` makes the envelope grow linearly from 0 at
    ``u = -half_u`` (a flag on its pole). Two-sided."""

    name: str
    center: Sequence[float] | Tensor
    half_u: float
    half_v: float
    waves: list[Wave]
    texture: Texture
    rot: Tensor = field(default_factory=lambda: torch.eye(3))
    pinned: bool = True
    steps: int = 16  # marching steps through the bounding slab
    refine: int = 5  # bisection steps after the first sign change (then linear interpolation)

    def __post_init__(self) -> None:
        self.center = _vec(self.center)
        self.rot = torch.as_tensor(self.rot, dtype=torch.float32)
        self.amp = sum(abs(w.amp) for w in self.waves) + 1e-6

    def bound(self) -> Tensor:
        return _box_corners(self.center, _vec((self.half_u, self.half_v, self.amp)), self.rot)

    def height(self, u: Tensor, v: Tensor) -> Tensor:
        """``h(u, v)`` at local coordinates."""
        s = torch.zeros_like(u)
        for w in self.waves:
            s = s + w.amp * torch.sin(w.k_u * u + w.k_v * v + w.phase)
        return (u + self.half_u) * (s / (2 * self.half_u)) if self.pinned else s

    def slope(self, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``dh/du``, ``dh/dv`` at local coordinates."""
        s, su, sv = torch.zeros_like(u), torch.zeros_like(u), torch.zeros_like(u)
        for w in self.waves:
            arg = w.k_u * u + w.k_v * v + w.phase
            cs = torch.cos(arg)
            s = s + w.amp * torch.sin(arg)
            su = su + w.amp * w.k_u * cs
            sv = sv + w.amp * w.k_v * cs
        if not self.pinned:
            return su, sv
        env = (u + self.half_u) / (2 * self.half_u)
        return env * su + s / (2 * self.half_u), env * sv

    def intersect(self, o: Tensor, d: Tensor) -> Tensor:
        """First crossing of the height field: march through the bounding slab in steps of at most
        a quarter of the shortest wavelength (and at most ``steps`` steps), keeping only the rays
        still marching, then bisect the bracket ``refine`` times and interpolate linearly."""
        lo, ld = (o - self.center) @ self.rot, d @ self.rot
        half = torch.tensor([self.half_u, self.half_v, self.amp])
        t1, t2 = _safe_div(-half - lo, ld), _safe_div(half - lo, ld)
        tmin = _max3(torch.minimum(t1, t2)).clamp_min(EPS)
        tmax = _min3(torch.maximum(t1, t2))
        out = torch.full((o.shape[0],), math.inf)
        idx = torch.nonzero(tmax > tmin)[:, 0]
        if idx.numel() == 0:
            return out
        lo, ld, a, b = lo[idx], ld[idx], tmin[idx], tmax[idx]
        # along the ray every wave's phase is linear in s: A + s * B; so is the envelope: E0 + s * E1
        ray = [lo[:, 2], ld[:, 2]]
        for w in self.waves:
            ray += [w.k_u * lo[:, 0] + w.k_v * lo[:, 1] + w.phase, w.k_u * ld[:, 0] + w.k_v * ld[:, 1]]
        if self.pinned:
            ray += [(lo[:, 0] + self.half_u) / (2 * self.half_u), ld[:, 0] / (2 * self.half_u)]
        amps = [w.amp for w in self.waves]

        def g(s: Tensor, oz: Tensor, dz: Tensor, *coef: Tensor) -> Tensor:  # ray height above the sheet
            h = torch.zeros_like(s)
            for i, amp in enumerate(amps):
                h = h + amp * torch.sin(coef[2 * i] + s * coef[2 * i + 1])
            if self.pinned:
                h = h * (coef[-2] + s * coef[-1])
            return oz + s * dz - h

        k_max = max((math.hypot(w.k_u, w.k_v) for w in self.waves), default=0.0)
        max_step = TAU / (4 * k_max) if k_max > 0 else math.inf
        step = torch.maximum((b - a) / self.steps, torch.clamp((b - a) / 2, max=max_step))
        m = a.shape[0]
        lo_s, hi_s, g_lo, g_hi = torch.zeros(m), torch.zeros(m), torch.zeros(m), torch.zeros(m)
        found = torch.zeros(m, dtype=torch.bool)
        # state of the rays still marching (compacted every step)
        act = torch.arange(m)
        s_p, b_a, st = a, b, step
        r_a = ray
        g_p = g(s_p, *r_a)
        while act.numel():
            s_k = torch.minimum(s_p + st, b_a)
            g_k = g(s_k, *r_a)
            crossed = (g_p * g_k) <= 0
            ids = act[crossed]
            if ids.numel():
                found[ids] = True
                lo_s[ids], hi_s[ids], g_lo[ids], g_hi[ids] = s_p[crossed], s_k[crossed], g_p[crossed], g_k[crossed]
            keep = torch.nonzero(~crossed & (s_k < b_a))[:, 0]
            if keep.numel() == act.numel():
                s_p, g_p = s_k, g_k
                continue
            act, s_p, g_p, b_a, st = act[keep], s_k[keep], g_k[keep], b_a[keep], st[keep]
            r_a = [x[keep] for x in r_a]
        hit = torch.nonzero(found)[:, 0]
        if hit.numel() == 0:
            return out
        lo_s, hi_s, g_lo, g_hi = lo_s[hit], hi_s[hit], g_lo[hit], g_hi[hit]
        r_h = [x[hit] for x in ray]
        for _ in range(self.refine):
            mid = 0.5 * (lo_s + hi_s)
            g_mid = g(mid, *r_h)
            same = (g_mid * g_lo) > 0
            lo_s, g_lo = torch.where(same, mid, lo_s), torch.where(same, g_mid, g_lo)
            hi_s, g_hi = torch.where(same, hi_s, mid), torch.where(same, g_hi, g_mid)
        denom = g_lo - g_hi
        frac = torch.where(denom.abs() > 1e-12, g_lo / torch.where(denom == 0, 1.0, denom), 0.5).clamp(0.0, 1.0)
        out[idx[hit]] = lo_s + frac * (hi_s - lo_s)
        return out

    def shade(self, p: Tensor, d: Tensor) -> Hit:
        q = (p - self.center) @ self.rot
        hu, hv = self.slope(q[:, 0], q[:, 1])
        n_local = _normalize(torch.stack([-hu, -hv, torch.ones_like(hu)], -1))
        return Hit(n_local @ self.rot.T, self.texture(q[:, :2]))


@dataclass
class Blob:
    """An anisotropic Gaussian emitter: density ``exp(-|rot^T (x - center) / sigma|^2 / 2)``."""

    center: Sequence[float] | Tensor
    sigma: Sequence[float] | Tensor
    color: Color  # emitted radiance per unit of line integral
    rot: Tensor = field(default_factory=lambda: torch.eye(3))

    def __post_init__(self) -> None:
        self.center, self.sigma, self.color = _vec(self.center), _vec(self.sigma), _vec(self.color)
        self.rot = torch.as_tensor(self.rot, dtype=torch.float32)

    def bound(self) -> Tensor:
        return _box_corners(self.center, 4.0 * self.sigma, self.rot)  # beyond 4 sigma: < 3e-4 of the peak

    def emission(self, o: Tensor, d: Tensor, t_max: Tensor) -> Tensor:  # -> [N, 3]
        """Emission integrated along the rays from 0 to ``t_max`` (closed form with erf)."""
        lo, ld = ((o - self.center) @ self.rot) / self.sigma, (d @ self.rot) / self.sigma
        A = _dot(ld, ld)
        B = _dot(lo, ld)
        m = _dot(lo, lo) - B * B / A  # squared whitened distance of the ray to the centre
        r = torch.sqrt(A / 2)
        tm = t_max.clamp(max=1e6)
        integral = torch.exp(-0.5 * m) * (math.sqrt(math.pi / 2) / torch.sqrt(A)) * (
            torch.erf(r * (tm + B / A)) - torch.erf(r * (B / A))
        )
        return integral[:, None] * self.color


@dataclass
class Flame:
    """A volumetric emitter (a sum of :class:`Blob`), seen through, occluded by surfaces in front
    and added as light over whatever lies behind it (``1 - (1 - c) exp(-E)`` per channel)."""

    name: str
    blobs: list[Blob]

    def emission(self, o: Tensor, d: Tensor, t_max: Tensor) -> Tensor:  # -> [N, 3]
        return sum((bl.emission(o, d, t_max) for bl in self.blobs), torch.zeros(o.shape[0], 3))


# -------------------------------------------------------------------------------------- tracing
@dataclass
class Scene3D:
    """What a scene is at one time: ``static`` surfaces (the same at every time: a renderer may
    trace them once per camera and reuse them), time-dependent ``surfaces``, volumetric flames.
    Primitive indices run over ``static`` first, then ``surfaces``."""

    surfaces: list[Primitive]
    flames: list[Flame] = field(default_factory=list)
    static: list[Primitive] = field(default_factory=list)

    def all_surfaces(self) -> list[Primitive]:
        return [*self.static, *self.surfaces]

    def names(self) -> list[str]:
        return [p.name for p in self.all_surfaces()]


@dataclass
class Trace:
    rgb: Tensor  # [N, 3] in [0, 1] (flames included)
    depth: Tensor  # [N] ray distance to the first surface (inf: none)
    prim: Tensor  # [N] int64, index into Scene3D.all_surfaces() (-1: none)
    glow: Tensor  # [N] total flame emission (sum over channels) along the ray
    surface_rgb: Tensor | None = None  # [N, 3] shaded surfaces before the flames


Bound = Tensor | None  # corners [8, 3] of an enclosing box; None: unbounded
Selector = Callable[[Bound], Tensor | None]  # bound -> indices of the rays that may meet it (None: all)

#: rays per batch: element-wise ops on tensors beyond ~256 KB are several times slower per element
#: on our CPUs (fresh pages for every temporary), so rays are intersected in chunks of this size
CHUNK = 16384


def _chunks(idx: Tensor | None, n: int) -> list[Tensor | slice]:
    if idx is None:
        return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]
    return [idx[i : i + CHUNK] for i in range(0, idx.numel(), CHUNK)]


def _intersect(prims: Sequence[Primitive], first: int, o: Tensor, d: Tensor, best: Tensor, prim: Tensor,
               select: Selector) -> None:  # fmt: skip
    """Nearest hits of ``prims`` (indices from ``first``): updates ``best`` and ``prim`` in place."""
    for k, p in enumerate(prims, start=first):
        for part in _chunks(select(p.bound()), o.shape[0]):
            t = p.intersect(o[part], d[part])
            if isinstance(part, slice):
                closer = t < best[part]
                best[part] = torch.where(closer, t, best[part])
                prim[part] = torch.where(closer, k, prim[part])
            else:
                closer = t < best[part]
                sel = part[closer]
                best[sel] = t[closer]
                prim[sel] = k


def _shade(prims: Sequence[Primitive], first: int, o: Tensor, d: Tensor, best: Tensor, prim: Tensor, rgb: Tensor,
           select: Selector) -> None:  # fmt: skip
    """Shade the rays whose nearest hit is one of ``prims``: writes ``rgb`` in place."""
    light = _normalize(_vec(LIGHT_DIR))
    for k, p in enumerate(prims, start=first):
        cand = select(p.bound())
        sel = torch.nonzero(prim == k)[:, 0] if cand is None else cand[prim[cand] == k]
        for part in _chunks(sel, 0):
            dd = d[part]
            hit = p.shade(o[part] + best[part, None] * dd, dd)
            nrm = hit.normal
            nrm = torch.where((_dot(nrm, dd) > 0)[:, None], -nrm, nrm)  # face the viewer
            lam = (nrm @ light).clamp_min(0.0)[:, None]
            sky = 0.85 + 0.15 * (-nrm[:, 1:2])  # upward-facing surfaces get a bit more ambient light
            col = hit.albedo * (AMBIENT * sky + DIFFUSE * lam)
            if hit.gloss > 0:
                refl = dd - 2 * _dot(dd, nrm)[:, None] * nrm
                col = col + hit.gloss * (refl @ light).clamp_min(0.0)[:, None] ** 24
            if hit.emission is not None:
                col = col + hit.emission
            rgb.index_copy_(0, part, col.clamp(0.0, 1.0))


def _glow(
    flames: Sequence[Flame], o: Tensor, d: Tensor, best: Tensor, select: Selector
) -> tuple[Tensor, Tensor]:
    """Flame emission along the rays ``[N, 3]`` (up to their first surface) and the indices of
    the rays that may carry some."""
    glow = torch.zeros(o.shape[0], 3)
    mask = torch.zeros(o.shape[0], dtype=torch.bool)
    for bl in (b for f in flames for b in f.blobs):
        idx = select(bl.bound())  # blobs are always bounded: never None
        assert idx is not None
        mask[idx] = True
        for part in _chunks(idx, 0):
            glow.index_add_(0, part, bl.emission(o[part], d[part], best[part]))
    return glow, torch.nonzero(mask)[:, 0]


def _finish(scene: Scene3D, o: Tensor, d: Tensor, best: Tensor, prim: Tensor, rgb: Tensor, select: Selector) -> Trace:
    if not scene.flames:
        return Trace(rgb, best, prim, torch.zeros(o.shape[0]), rgb)
    glow, idx = _glow(scene.flames, o, d, best, select)
    out = rgb.clone()
    out[idx] = 1.0 - (1.0 - rgb[idx]) * torch.exp(-glow[idx])  # emission added as light
    return Trace(out, best, prim, glow @ _ONES3, rgb)


def trace(scene: Scene3D, o: Tensor, d: Tensor, *, base: Trace | None = None, select: Selector | None = None) -> Trace:
    """Trace rays ``o`` [N, 3] (origins), ``d`` [N, 3] (unit directions) through ``scene``.

    ``base``: the trace of the same rays through ``scene.static`` alone (see :func:`trace_static`);
    then only the time-dependent surfaces are traced. ``select``: which rays may meet a bounding
    box (default: a test against the box's circumscribed sphere)."""
    select = select or functools.partial(_rays_near, o, d)
    n = o.shape[0]
    if base is None:
        base = trace_static(scene, o, d, select=select)
    best, prim = base.depth.clone(), base.prim.clone()
    rgb = base.surface_rgb.clone() if base.surface_rgb is not None else base.rgb.clone()
    if rgb.shape[0] != n:
        raise ValueError("trace: base was traced with other rays")
    first = len(scene.static)
    _intersect(scene.surfaces, first, o, d, best, prim, select)
    _shade(scene.surfaces, first, o, d, best, prim, rgb, select)
    return _finish(scene, o, d, best, prim, rgb, select)


def trace_static(scene: Scene3D, o: Tensor, d: Tensor, *, select: Selector | None = None) -> Trace:
    """Trace the rays through ``scene.static`` only (no flames): the reusable base of :func:`trace`."""
    select = select or functools.partial(_rays_near, o, d)
    n = o.shape[0]
    best = torch.full((n,), math.inf)
    prim = torch.full((n,), -1, dtype=torch.int64)
    rgb = _vec(BACKGROUND).expand(n, 3).clone()
    _intersect(scene.static, 0, o, d, best, prim, select)
    _shade(scene.static, 0, o, d, best, prim, rgb, select)
    return Trace(rgb, best, prim, torch.zeros(n), rgb)


def _rays_near(o: Tensor, d: Tensor, bound: Bound) -> Tensor | None:
    """Indices of the rays that pass within the sphere around the box ``bound`` (ahead of their
    origin)."""
    if bound is None:
        return None
    c = bound.mean(0)
    r = float((bound - c).norm(dim=-1).max())
    hits = []
    for part in _chunks(None, o.shape[0]):
        oc = c - o[part]
        along = _dot(oc, d[part])
        miss2 = _dot(oc, oc) - along * along
        hits.append(torch.nonzero((miss2 <= r * r) & (along > -r))[:, 0] + part.start)
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.int64)


def screen_window(cam: Camera, bound: Bound, ss: int = 1) -> tuple[int, int, int, int] | None:
    """Rows ``[v0, v1)`` and columns ``[u0, u1)`` of the ``ss``-times finer sample grid of ``cam``
    that may see the box with corners ``bound``: the bounding rectangle of their projections
    (conservative for a convex set in front of the camera, with a margin of one sample). None
    when it lies entirely behind the camera."""
    return _window(_cam_lists(cam), bound, ss)


def _cam_lists(cam: Camera) -> tuple:
    return (cam.R.double().tolist(), cam.t.double().tolist(), cam.K.double().tolist(), cam.height, cam.width)


def _window(cam: tuple, bound: Bound, ss: int) -> tuple[int, int, int, int] | None:
    R, t, K, height, width = cam
    H, W = height * ss, width * ss
    if bound is None:
        return 0, H, 0, W
    us, vs, behind = [], [], 0
    corners = bound.tolist()
    for p0, p1, p2 in corners:
        x, y, z = (R[i][0] * p0 + R[i][1] * p1 + R[i][2] * p2 + t[i] for i in range(3))
        if z <= 1e-6:
            behind += 1
            continue
        us.append(K[0][0] * x / z + K[0][1] * y / z + K[0][2])
        vs.append(K[1][1] * y / z + K[1][2])
    if behind == len(corners):
        return None
    if behind:
        return 0, H, 0, W
    u0, u1 = max(math.floor(min(us) * ss - 0.5) - 1, 0), min(math.ceil(max(us) * ss - 0.5) + 2, W)
    v0, v1 = max(math.floor(min(vs) * ss - 0.5) - 1, 0), min(math.ceil(max(vs) * ss - 0.5) + 2, H)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def camera_rays(cam: Camera, ss: int = 1) -> tuple[Tensor, Tensor]:
    """Rays of ``cam`` through ``ss x ss`` stratified sub-pixel positions: origins and unit
    directions ``[H * ss, W * ss, 3]`` (sub-sample (i, j) of pixel (u, v) at row v * ss + i)."""
    K_inv = torch.linalg.inv(cam.K.detach().double())
    c2w = torch.linalg.inv(cam.viewmat.detach().double())
    offs = (torch.arange(ss, dtype=torch.float64) + 0.5) / ss
    v = (torch.arange(cam.height, dtype=torch.float64)[:, None] + offs[None]).reshape(-1)
    u = (torch.arange(cam.width, dtype=torch.float64)[:, None] + offs[None]).reshape(-1)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pix = torch.stack([uu, vv, torch.ones_like(uu)], -1)
    dirs = pix @ K_inv.T @ c2w[:3, :3].T
    dirs = (dirs / dirs.norm(dim=-1, keepdim=True)).float()
    return c2w[:3, 3].float().expand_as(dirs).contiguous(), dirs


@dataclass
class Views:
    rgb: Tensor  # [C, H, W, 3] float32 in [0, 1], box-filtered over the sub-samples
    prim: Tensor  # [C, H*ss, W*ss] int64 primitive index per sub-sample (-1: none)
    depth: Tensor  # [C, H*ss, W*ss]
    glow: Tensor  # [C, H*ss, W*ss] flame emission per sub-sample
    ss: int
    names: list[str]

    def coverage(self, name: str) -> Tensor:
        """``[C, H, W]`` fraction of each pixel covered by the surface ``name``."""
        if name not in self.names:
            return torch.zeros(self.rgb.shape[:3])
        hit = (self.prim == self.names.index(name)).float()
        c, h, w = self.rgb.shape[:3]
        return hit.reshape(c, h, self.ss, w, self.ss).mean((2, 4))


class Rig:
    """Cameras of one resolution with their ``ss x ss`` sub-sample rays, traced in one batch.
    Screen windows of bounding boxes select the rays each primitive is intersected with;
    :meth:`base` traces the static surfaces once, to be reused at every time."""

    def __init__(self, cams: Sequence[Camera], ss: int = 2) -> None:
        if not cams or len({(c.width, c.height) for c in cams}) != 1:
            raise ValueError("Rig: need cameras that share one resolution")
        self.cams, self.ss = list(cams), ss
        self.h, self.w = cams[0].height, cams[0].width
        rays = [camera_rays(cam, ss) for cam in cams]
        self.o = torch.stack([r[0] for r in rays]).reshape(-1, 3)
        self.d = torch.stack([r[1] for r in rays]).reshape(-1, 3)
        self.per_cam = self.h * ss * self.w * ss
        self._lists = [_cam_lists(c) for c in cams]
        self._cache: dict[tuple, Tensor] = {}

    def select(self, bound: Bound) -> Tensor | None:
        """Indices of the sub-sample rays (all cameras) inside the screen windows of ``bound``."""
        if bound is None:
            return None
        key = tuple(bound.reshape(-1).tolist())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        W = self.w * self.ss
        parts = []
        for i, cam in enumerate(self._lists):
            win = _window(cam, bound, self.ss)
            if win is not None:
                v0, v1, u0, u1 = win
                rows = torch.arange(v0, v1)[:, None] * W + i * self.per_cam
                parts.append((rows + torch.arange(u0, u1)[None]).reshape(-1))
        out = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        if len(self._cache) > 512:
            self._cache.clear()
        self._cache[key] = out
        return out

    def base(self, scene: Scene3D) -> Trace:
        return trace_static(scene, self.o, self.d, select=self.select)

    def render(self, scene: Scene3D, base: Trace | None = None) -> Views:
        tr = trace(scene, self.o, self.d, base=base, select=self.select)
        C, h, w, ss = len(self.cams), self.h, self.w, self.ss
        rgb = _box(tr.rgb.reshape(C * h, ss, w, ss, 3)).reshape(C, h, w, 3)
        grid = (C, h * ss, w * ss)
        return Views(rgb, tr.prim.reshape(grid), tr.depth.reshape(grid), tr.glow.reshape(grid), ss, scene.names())


def _box(x: Tensor) -> Tensor:
    """Mean over the sub-samples of ``[R, ss, W, ss, 3]`` (sums of slices: fast on CPU)."""
    ss = x.shape[1]
    acc = x[:, 0, :, 0].clone()
    for i in range(ss):
        for j in range(ss):
            if i or j:
                acc += x[:, i, :, j]
    return acc / (ss * ss)


def render(scene: Scene3D, cams: Sequence[Camera], ss: int = 2) -> Views:
    """Render ``scene`` from each camera, anti-aliased by ``ss x ss`` stratified samples per pixel
    averaged with a box filter."""
    return Rig(cams, ss).render(scene)
