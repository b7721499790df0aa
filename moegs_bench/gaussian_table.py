"""Per-Gaussian parameters that grow and shrink together (the rows of one Gaussian set).

Every expert keeps its per-Gaussian tensors (canonical means, log-scales, embeddings,
keyframes, ...) in one :class:`GaussianTable`; the router attaches its per-Gaussian weights to the
same table. Densification appends rows and pruning removes rows from *every* tensor of the table
at once, and :func:`GaussianTable.edit_rows` carries the optimiser's per-row state (Adam moments)
along, the way 3DGS / gsplat's strategies do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from moegs_bench.errors import InputError

#: How densification treats a tensor when it clones or splits a Gaussian:
#: ``position``: the split offset is added (``[N, 3]`` or ``[N, ..., 3]``, e.g. keyframes);
#: ``log_scale``: split children get ``log(scale / 1.6)``; ``logit_opacity``: reset/prune use it;
#: ``quat``: the rotation used to place split children; ``copy``: copied unchanged.
Role = Literal["position", "log_scale", "quat", "logit_opacity", "copy"]
ROLES: tuple[str, ...] = ("position", "log_scale", "quat", "logit_opacity", "copy")


@dataclass(frozen=True)
class Column:
    """What the table knows about one tensor: its densification role and whether it is attached
    from outside the expert (router weights), which keeps it out of the expert's optimiser groups."""

    role: Role = "copy"
    attached: bool = False
    trainable: bool = True


class GaussianTable(nn.Module):
    """Named per-Gaussian tensors with one shared row count ``N``.

    Trainable columns are ``nn.Parameter``; others (e.g. a static/dynamic flag) are buffers. All
    are saved in ``state_dict``; :meth:`load_state_dict` resizes the table to the saved row count.
    """

    def __init__(self) -> None:
        super().__init__()
        self.columns: dict[str, Column] = {}
        self._n: int | None = None
        self.version = 0  # bumped by every row edit (caches keyed on rows compare it)

    # ------------------------------------------------------------------ building
    def add(self, name: str, value: Tensor, *, role: Role = "copy", attached: bool = False,
            trainable: bool = True) -> None:
        """Add a column ``value`` (``[N, ...]``); ``N`` must match the other columns."""
        if name in self.columns or hasattr(self, name) and name not in self.columns:
            raise InputError(f"GaussianTable: column {name!r} already exists or shadows an attribute")
        if role not in ROLES:
            raise InputError(f"GaussianTable.add({name!r}): role {role!r} is not one of {ROLES}")
        if not isinstance(value, Tensor) or value.dim() == 0:
            raise InputError(f"GaussianTable.add({name!r}): expected a tensor [N, ...], got {value!r}")
        if self._n is not None and value.shape[0] != self._n:
            raise InputError(
                f"GaussianTable.add({name!r}): expected {self._n} rows like the other columns, "
                f"got {tuple(value.shape)}"
            )
        self._n = value.shape[0]
        self.columns[name] = Column(role, attached, trainable)
        self._set(name, value.detach().clone())

    def _set(self, name: str, value: Tensor) -> None:
        col = self.columns[name]
        if col.trainable:
            self._parameters[name] = nn.Parameter(value, requires_grad=True)
        else:
            self._buffers[name] = value
            self._non_persistent_buffers_set.discard(name)

    def remove(self, name: str) -> None:
        """Drop a column (e.g. detach the router's weights)."""
        if name not in self.columns:
            raise InputError(f"GaussianTable: no column {name!r}")
        del self.columns[name]
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self._n or 0

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.columns:
            raise InputError(f"GaussianTable: no column {name!r}; columns are {sorted(self.columns)}")
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def names(self, *, attached: bool | None = None, role: Role | None = None) -> list[str]:
        return [
            k for k, c in self.columns.items()
            if (attached is None or c.attached == attached) and (role is None or c.role == role)
        ]

    def items(self) -> Iterator[tuple[str, Tensor]]:
        for name in self.columns:
            yield name, getattr(self, name)

    def nbytes(self, *, attached: bool | None = False) -> int:
        """Bytes of the columns (by default the expert's own, not what the router attached)."""
        return sum(t.numel() * t.element_size() for k, t in self.items() if k in self.names(attached=attached))

    # ------------------------------------------------------------------ row edits
    @torch.no_grad()
    def edit_rows(self, keep: Tensor | None = None, new_rows: Mapping[str, Tensor] | None = None,
                  optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        """Keep the rows where ``keep`` ([N] bool) is true, then append ``new_rows`` (every column).

        Optimiser state that has the column's shape (Adam's moments) follows the kept rows; new
        rows start with zero state. ``optimizers`` are updated to hold the new parameters.
        """
        n = len(self)
        if keep is not None:
            if keep.dtype != torch.bool or keep.shape != (n,):
                raise InputError(f"GaussianTable.edit_rows: keep must be a bool [{n}] mask, got {keep.dtype} "
                                 f"{tuple(keep.shape)}")
        new_rows = dict(new_rows or {})
        if new_rows and set(new_rows) != set(self.columns):
            missing, extra = set(self.columns) - set(new_rows), set(new_rows) - set(self.columns)
            raise InputError(f"GaussianTable.edit_rows: new rows must give every column (missing "
                             f"{sorted(missing)}, unknown {sorted(extra)})")
        m = {t.shape[0] for t in new_rows.values()}
        if len(m) > 1:
            raise InputError(f"GaussianTable.edit_rows: new rows disagree on their count {sorted(m)}")
        optimizers = list(optimizers)
        for name, old in list(self.items()):
            add = new_rows.get(name)
            if add is not None and add.shape[1:] != old.shape[1:]:
                raise InputError(f"GaussianTable.edit_rows: new rows of {name!r} are {tuple(add.shape)}, "
                                 f"the column is {tuple(old.shape)}")

            def edit(t: Tensor, fill: Tensor | None) -> Tensor:
                kept = t if keep is None else t[keep]
                return kept if fill is None else torch.cat([kept, fill.to(t)], 0)

            new = edit(old.data, add)
            if isinstance(old, nn.Parameter):
                param = nn.Parameter(new, requires_grad=old.requires_grad)
                for opt in optimizers:
                    _swap_in_optimizer(opt, old, param, lambda s: edit(s, None if add is None else
                                                                      torch.zeros_like(add, dtype=s.dtype)))
                self._parameters[name] = param
            else:
                self._buffers[name] = new
        self._n = next(iter(t.shape[0] for _, t in self.items()), 0)
        self.version += 1

    # ------------------------------------------------------------------ (de)serialisation
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):  # noqa: D401 - torch hook
        # Resize every column to the saved row count first, so checkpoints with a different N load.
        for name in self.columns:
            saved = state_dict.get(prefix + name)
            cur = getattr(self, name)
            if saved is not None and saved.shape != cur.shape:
                if saved.shape[1:] != cur.shape[1:]:
                    error_msgs.append(f"column {prefix + name}: saved {tuple(saved.shape)}, model has "
                                      f"{tuple(cur.shape)} (a different configuration?)")
                    continue
                self._set(name, torch.zeros_like(saved, dtype=cur.dtype, device=cur.device))
                self._n = saved.shape[0]
                self.version += 1
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        cols = ", ".join(f"{k}{list(t.shape[1:])}" for k, t in self.items())
        return f"N={len(self)}: {cols}"


def _swap_in_optimizer(opt: torch.optim.Optimizer, old: Tensor, new: nn.Parameter, edit) -> None:
    """Replace ``old`` by ``new`` in ``opt``; per-row state tensors are edited like the rows."""
    for group in opt.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                state = opt.state.pop(old, None)
                if state is not None:
                    opt.state[new] = {
                        k: edit(v) if isinstance(v, Tensor) and v.shape == old.shape else v
                        for k, v in state.items()
                    }
                return
