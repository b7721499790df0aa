"""Pinhole cameras in the OpenCV convention (x right, y down, z forward; README, "Rasterizer API")."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from moegs_bench._checks import InputError, check_tensor

Vec3 = Sequence[float] | Tensor

# Default world "up" of look_at/orbit: -y, so that in an OpenCV-style world (y down) a camera at
# the origin looking along +z gets the identity viewmat.
WORLD_UP: tuple[float, float, float] = (0.0, -1.0, 0.0)


@dataclass(frozen=True, eq=False)
class Camera:
    """One pinhole camera at one time. ``viewmat`` maps world to camera coordinates; ``K`` is in
    pixels, and pixel (u, v) has its centre at (u + 0.5, v + 0.5)."""

    K: Tensor  # [3, 3] pixels
    viewmat: Tensor  # [4, 4] world-to-camera
    width: int
    height: int
    time: float = 0.0  # normalised to [0, 1]
    camera_id: int = 0
    near: float = 0.01
    far: float = 1e10

    def __post_init__(self) -> None:
        K = check_tensor("Camera.K", self.K, (3, 3))
        if not (float(K[0, 0]) > 0 and float(K[1, 1]) > 0):
            raise InputError(f"Camera.K: fx, fy must be > 0, got fx={float(K[0, 0])}, fy={float(K[1, 1])}")
        if not torch.allclose(K[2].detach().double().cpu(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)):
            raise InputError(f"Camera.K: last row must be (0, 0, 1), got {K[2].tolist()}")
        V = check_tensor("Camera.viewmat", self.viewmat, (4, 4))
        if V.device != K.device:
            raise InputError(f"Camera.viewmat: device {V.device} differs from K's {K.device}")
        Vd = V.detach().double().cpu()
        if not torch.allclose(Vd[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
            raise InputError(f"Camera.viewmat: last row must be (0, 0, 0, 1), got {Vd[3].tolist()}")
        R = Vd[:3, :3]
        err = float((R @ R.T - torch.eye(3, dtype=torch.float64)).abs().max())
        det = float(torch.linalg.det(R))
        if err > 1e-4 or abs(det - 1.0) > 1e-4:
            raise InputError(
                f"Camera.viewmat: rotation part must be orthonormal with det +1 (tolerance 1e-4), "
                f"got max |R R^T - I| = {err:.3g}, det = {det:.6g}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise InputError(f"Camera.{name}: expected a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if isinstance(self.camera_id, bool) or not isinstance(self.camera_id, numbers.Integral):
            raise InputError(f"Camera.camera_id: expected an int, got {self.camera_id!r}")
        object.__setattr__(self, "camera_id", int(self.camera_id))
        for name in ("time", "near", "far"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InputError(f"Camera.{name}: expected a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not (math.isfinite(self.time) and 0.0 <= self.time <= 1.0):
            raise InputError(f"Camera.time: expected a finite value in [0, 1], got {self.time!r}")
        for name in ("near", "far"):
            if math.isnan(getattr(self, name)):
                raise InputError(f"Camera.{name}: got NaN; expected 0 < near < far")
        if not (math.isfinite(self.near) and 0.0 < self.near < self.far):
            raise InputError(f"Camera.near/far: expected 0 < near < far, got near={self.near!r}, far={self.far!r}")

    # -- pose ---------------------------------------------------------------------------------
    @property
    def R(self) -> Tensor:  # [3, 3] world-to-camera rotation
        return self.viewmat[:3, :3]

    @property
    def t(self) -> Tensor:  # [3] world-to-camera translation
        return self.viewmat[:3, 3]

    @property
    def campos(self) -> Tensor:  # [3] camera centre in world coordinates
        return -self.R.T @ self.t

    @property
    def device(self) -> torch.device:
        return self.K.device

    def to(self, device: torch.device | str) -> Camera:
        return replace(self, K=self.K.to(device), viewmat=self.viewmat.to(device))

    # -- geometry -------------------------------------------------------------------------------
    def rays(self) -> tuple[Tensor, Tensor]:
        """World-frame ray origins [H, W, 3] and unit directions [H, W, 3] through pixel centres."""
        K_inv = torch.linalg.inv(self.K.detach().float())
        c2w = torch.linalg.inv(self.viewmat.detach().float())  # [4, 4]
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32, device=self.device) + 0.5,
            torch.arange(self.width, dtype=torch.float32, device=self.device) + 0.5,
            indexing="ij",
        )
        pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
        dirs = pix @ K_inv.T @ c2w[:3, :3].T  # [H, W, 3]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = c2w[:3, 3].expand_as(dirs).contiguous()
        return origins, dirs

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Pinhole projection of world points [N, 3] to pixels ``uv`` [N, 2] and camera depth [N].

        ``uv`` is meaningless for points at depth <= 0; callers cull them with ``depth``.
        """
        check_tensor("Camera.project points", points, (None, 3), finite=False)
        R, t, K = (x.to(points) for x in (self.R, self.t, self.K))
        cam = points @ R.T + t  # [N, 3]
        depth = cam[:, 2]
        uv = (cam / depth[:, None]) @ K.T  # [N, 3], last column 1
        return uv[:, :2], depth

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def look_at(
        cls,
        eye: Vec3,
        target: Vec3,
        up: Vec3 = WORLD_UP,
        *,
        fov_x_deg: float = 60.0,
        width: int,
        height: int,
        time: float = 0.0,
        camera_id: int = 0,
        near: float = 0.01,
        far: float = 1e10,
    ) -> Camera:
        """A camera at ``eye`` looking at ``target``: square pixels, principal point at the centre.

        ``up`` is the world's up direction; the camera's y axis (image down) points opposite to
        its component orthogonal to the viewing direction. The default (0, -1, 0) suits an
        OpenCV-style world with y pointing down.
        """
        if not 0.0 < fov_x_deg < 180.0:
            raise InputError(f"Camera.look_at: fov_x_deg must be in (0, 180), got {fov_x_deg!r}")
        eye_, target_, up_ = (torch.as_tensor(x, dtype=torch.float64).detach().cpu() for x in (eye, target, up))
        for name, x in (("eye", eye_), ("target", target_), ("up", up_)):
            check_tensor(f"Camera.look_at {name}", x, (3,))
        forward = target_ - eye_
        if float(forward.norm()) < 1e-12:
            raise InputError("Camera.look_at: eye and target coincide")
        z = forward / forward.norm()
        x = torch.linalg.cross(-up_, z)
        if float(x.norm()) < 1e-9 * max(float(up_.norm()), 1e-300):
            raise InputError(f"Camera.look_at: up {up_.tolist()} is parallel to the viewing direction (or zero)")
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        viewmat = torch.eye(4, dtype=torch.float64)
        viewmat[:3, :3] = torch.stack([x, y, z])
        viewmat[:3, 3] = -viewmat[:3, :3] @ eye_
        f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
        K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return cls(
            K=K.float(), viewmat=viewmat.float(), width=width, height=height,
            time=time, camera_id=camera_id, near=near, far=far,
        )  # fmt: skip

    @classmethod
    def orbit(
        cls,
        n: int,
        *,
        radius: float,
        width: int,
        height: int,
        target: Vec3 = (0.0, 0.0, 0.0),
        height_offset: float = 0.0,
        fov_x_deg: float = 60.0,
        arc_deg: float = 360.0,
        start_deg: float = 0.0,
        up: Vec3 = WORLD_UP,
        time: float = 0.0,
        near: float = 0.01,
        far: float = 1e10,
    ) -> list[Camera]:
        """``n`` cameras on a circle of ``radius`` around ``target``, raised by ``height_offset``
        along ``up``, all looking at ``target``; ``camera_id`` is the position in the list.

        Angles run from ``start_deg`` over ``arc_deg`` (a full circle excludes its end point,
        a partial arc includes both ends). Angle 0 lies on the world's -z side of the target
        (-x if ``up`` is along z), so with the default up the first camera looks along +z.
        """
        if n < 1 or not radius > 0:  # (NaN is not > 0)
            raise InputError(f"Camera.orbit: need n >= 1 and radius > 0, got n={n!r}, radius={radius!r}")
        up_ = torch.as_tensor(up, dtype=torch.float64).detach().cpu()
        if float(up_.norm()) == 0.0:
            raise InputError("Camera.orbit: up must be non-zero")
        up_ = up_ / up_.norm()
        ref = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        if float(torch.linalg.cross(ref, up_).norm()) < 1e-6:
            ref = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
        d0 = ref - (ref @ up_) * up_
        d0 = d0 / d0.norm()
        d1 = torch.linalg.cross(up_, d0)
        full = abs(arc_deg) >= 360.0
        steps = n if full or n == 1 else n - 1
        center = torch.as_tensor(target, dtype=torch.float64).detach().cpu() + height_offset * up_
        cams = []
        for i in range(n):
            a = math.radians(start_deg + arc_deg * i / steps)
            eye = center + radius * (math.cos(a) * d0 + math.sin(a) * d1)
            cams.append(
                cls.look_at(
                    eye, target, up_, fov_x_deg=fov_x_deg, width=width, height=height,
                    time=time, camera_id=i, near=near, far=far,
                )  # fmt: skip
            )
        return cams


def largest_downscale(cameras: Iterable[Camera]) -> int:
    """The largest integer downscale that leaves every camera at least one pixel wide and high
    (a downscale ``s`` makes a ``W x H`` camera ``W // s x H // s``; ``Scene`` downscales so)."""
    return min(min(c.width, c.height) for c in cameras)


def downscale_problem(cameras: Iterable[Camera], downscale: int) -> str | None:
    """None when ``downscale`` leaves every camera at least one pixel, else a sentence saying
    which camera it empties and the largest usable value (for the message of the option or key
    that set it)."""
    cams = list(cameras)
    worst = min(cams, key=lambda c: min(c.width, c.height))
    if downscale <= min(worst.width, worst.height):
        return None
    return (f"{downscale} leaves camera {worst.camera_id} ({worst.width}x{worst.height} pixels) with "
            f"{worst.width // downscale}x{worst.height // downscale} pixels; the largest usable value is "
            f"{largest_downscale(cams)}")
