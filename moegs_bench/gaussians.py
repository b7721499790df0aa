"""A set of 3D Gaussians in the common form every expert renders through (README, "Rasterizer API")."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from moegs_bench._checks import InputError, check_gaussian_values, check_tensor
from moegs_bench.render.sh import rgb_to_sh


@dataclass(eq=False)  # tensors have no single-bool equality
class GaussianState:
    """Per-Gaussian tensors of one Gaussian set; every tensor has leading dimension N.

    ``colors`` holds plain features ``[N, D]`` when ``sh_degree`` is None, otherwise SH
    coefficients ``[N, K, 3]`` with ``K >= (sh_degree + 1) ** 2``. ``extras`` carries further
    per-Gaussian tensors (e.g. router weights) and ``expert_ids`` tags rows with their expert.
    """

    means: Tensor  # [N, 3] world
    quats: Tensor  # [N, 4] (w, x, y, z), not necessarily normalised
    scales: Tensor  # [N, 3] linear, > 0
    opacities: Tensor  # [N] in [0, 1]
    colors: Tensor  # [N, D] or [N, K, 3]
    sh_degree: int | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)  # each [N, ...]
    expert_ids: Tensor | None = None  # [N] integer

    def __post_init__(self) -> None:
        n = check_tensor("GaussianState.means", self.means, (None, 3)).shape[0]
        check_tensor("GaussianState.quats", self.quats, (n, 4))
        check_tensor("GaussianState.scales", self.scales, (n, 3))
        check_tensor("GaussianState.opacities", self.opacities, (n,))
        self._check_colors(n)
        for name in ("quats", "scales", "opacities", "colors"):
            t: Tensor = getattr(self, name)
            if t.dtype != self.means.dtype:
                raise InputError(f"GaussianState.{name}: dtype {t.dtype} differs from means' {self.means.dtype}")
        check_gaussian_values("GaussianState.", self.quats, self.scales, self.opacities)
        if not isinstance(self.extras, dict):
            raise InputError(f"GaussianState.extras: expected a dict of tensors, got {type(self.extras).__name__}")
        for key, value in self.extras.items():
            name = f"GaussianState.extras[{key!r}]"
            if not isinstance(value, Tensor) or value.dim() == 0 or value.shape[0] != n:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise InputError(f"{name}: expected a tensor with leading dimension {n}, got {got}")
            check_tensor(name, value, value.shape, floating=False)
        if self.expert_ids is not None:
            ids = check_tensor("GaussianState.expert_ids", self.expert_ids, (n,), floating=False)
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise InputError(f"GaussianState.expert_ids: expected an integer dtype, got {ids.dtype}")
            if n and int(ids.min()) < 0:
                raise InputError("GaussianState.expert_ids: negative expert id(s)")
        for t in self.tensors():
            if t.device != self.means.device:
                raise InputError(f"GaussianState: a {tuple(t.shape)} tensor is on {t.device}, means on {self.device}")

    def _check_colors(self, n: int) -> None:
        deg = self.sh_degree
        if deg is None:
            if isinstance(self.colors, Tensor) and self.colors.dim() == 3:
                raise InputError(
                    f"GaussianState.colors: got SH-shaped colours {tuple(self.colors.shape)} but sh_degree is None"
                )
            check_tensor("GaussianState.colors", self.colors, (n, None))
            if self.colors.shape[1] < 1:
                raise InputError(f"GaussianState.colors: expected at least one channel, got {tuple(self.colors.shape)}")
            return
        if isinstance(deg, bool) or not isinstance(deg, int) or deg < 0:
            raise InputError(f"GaussianState.sh_degree: expected None or an int >= 0, got {deg!r}")
        check_tensor("GaussianState.colors", self.colors, (n, None, 3))
        if self.colors.shape[1] < (deg + 1) ** 2:
            raise InputError(
                f"GaussianState.colors: sh_degree={deg} needs [N, >={(deg + 1) ** 2}, 3] SH coefficients, "
                f"got {tuple(self.colors.shape)}"
            )

    # -- size, device, dtype ---------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def tensors(self) -> Iterator[Tensor]:
        """Every tensor held, core fields first, then extras, then expert_ids."""
        yield from (self.means, self.quats, self.scales, self.opacities, self.colors)
        yield from self.extras.values()
        if self.expert_ids is not None:
            yield self.expert_ids

    @property
    def nbytes(self) -> int:
        """Storage size of all tensors in bytes (numel * element_size)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def storage_mb(self) -> float:
        """``nbytes`` in MB (2**20 bytes)."""
        return self.nbytes / 2**20

    # -- derived states ---------------------------------------------------------------------
    def _map(self, fn: Callable[[Tensor], Tensor]) -> GaussianState:
        return GaussianState(
            means=fn(self.means),
            quats=fn(self.quats),
            scales=fn(self.scales),
            opacities=fn(self.opacities),
            colors=fn(self.colors),
            sh_degree=self.sh_degree,
            extras={k: fn(v) for k, v in self.extras.items()},
            expert_ids=None if self.expert_ids is None else fn(self.expert_ids),
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianState:
        """Move to ``device``; ``dtype`` converts the floating-point tensors only."""
        if dtype is not None and not dtype.is_floating_point:
            raise InputError(f"GaussianState.to: dtype must be floating-point, got {dtype}")
        return self._map(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))

    def detach(self) -> GaussianState:
        return self._map(Tensor.detach)

    def __getitem__(self, index: Tensor | slice) -> GaussianState:
        """Rows selected by a bool mask [N], an integer index tensor [M] or a slice."""
        n = self.num_gaussians
        if isinstance(index, Tensor):
            if index.dtype == torch.bool:
                check_tensor("GaussianState index (bool mask)", index, (n,), floating=False)
            elif index.is_floating_point() or index.is_complex() or index.dim() != 1:
                raise InputError(
                    f"GaussianState index: expected a bool mask [{n}], an integer tensor [M] or a slice, "
                    f"got dtype {index.dtype} shape {tuple(index.shape)}"
                )
            elif index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
                raise InputError(f"GaussianState index: values out of range for {n} Gaussians")
            else:
                index = index.long()
            index = index.to(self.device)
        elif not isinstance(index, slice):
            raise InputError(
                f"GaussianState index: expected a bool mask, an integer tensor or a slice, got {type(index).__name__}"
            )
        return self._map(lambda t: t[index])

    @classmethod
    def cat(cls, states: Sequence[GaussianState], expert_ids: bool = False) -> GaussianState:
        """Concatenate states of one layout; ``expert_ids=True`` tags rows with their state's position."""
        if not states:
            raise InputError("GaussianState.cat: got no states")
        first = states[0]
        extra_shapes = {k: v.shape[1:] for k, v in first.extras.items()}
        for i, s in enumerate(states):
            where = f"GaussianState.cat: states[{i}]"
            if s.sh_degree != first.sh_degree or s.colors.shape[1:] != first.colors.shape[1:]:
                raise InputError(
                    f"{where} has sh_degree={s.sh_degree}, colors {tuple(s.colors.shape)}; "
                    f"states[0] has sh_degree={first.sh_degree}, colors {tuple(first.colors.shape)}"
                )
            if {k: v.shape[1:] for k, v in s.extras.items()} != extra_shapes:
                raise InputError(f"{where}: extras {sorted(s.extras)} differ from {sorted(first.extras)} (or shapes)")
            if s.dtype != first.dtype or s.device != first.device:
                raise InputError(f"{where} is {s.dtype} on {s.device}; states[0] is {first.dtype} on {first.device}")
            if not expert_ids and (s.expert_ids is None) != (first.expert_ids is None):
                raise InputError(f"{where}: expert_ids set on some states only; pass expert_ids=True to retag")

        def cat(name: str) -> Tensor:
            return torch.cat([getattr(s, name) for s in states])

        if expert_ids:
            tags = [torch.full((len(s),), i, dtype=torch.int64, device=first.device) for i, s in enumerate(states)]
            ids: Tensor | None = torch.cat(tags)
        else:
            ids = None if first.expert_ids is None else cat("expert_ids")
        return cls(
            means=cat("means"),
            quats=cat("quats"),
            scales=cat("scales"),
            opacities=cat("opacities"),
            colors=cat("colors"),
            sh_degree=first.sh_degree,
            extras={k: torch.cat([s.extras[k] for s in states]) for k in first.extras},
            expert_ids=ids,
        )

    @classmethod
    def random(
        cls,
        n: int,
        *,
        seed: int = 0,
        sh_degree: int | None = None,
        channels: int = 3,
        extent: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> GaussianState:
        """A reproducible random cloud: means in ``[-extent, extent]^3``, log-uniform scales in
        ``[0.01, 0.08] * extent``, unit quats, opacities in [0.2, 0.95], colours in [0, 1].

        With ``sh_degree`` the colours are SH ``[N, (deg+1)^2, 3]`` whose DC term encodes an RGB in
        [0, 1] and whose higher bands are small (|c| <= 0.05); ``channels`` is then ignored.
        """
        g = torch.Generator().manual_seed(seed)
        log_lo, log_hi = math.log(0.01 * extent), math.log(0.08 * extent)
        quats = torch.randn(n, 4, generator=g)
        quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if sh_degree is None:
            colors = torch.rand(n, channels, generator=g)
        else:
            colors = (torch.rand(n, (sh_degree + 1) ** 2, 3, generator=g) - 0.5) * 0.1
            colors[:, 0] = rgb_to_sh(torch.rand(n, 3, generator=g))
        state = cls(
            means=(torch.rand(n, 3, generator=g) * 2 - 1) * extent,
            quats=quats,
            scales=torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, 3, generator=g)),
            opacities=0.2 + 0.75 * torch.rand(n, generator=g),
            colors=colors,
            sh_degree=sh_degree,
        )
        return state if torch.device(device) == state.device else state.to(device)
