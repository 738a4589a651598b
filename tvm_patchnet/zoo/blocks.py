"""Build int8 graphs from :class:`~tvm_patchnet.zoo.configs.NetSpec` block lists.

Block numbering (the profiler and the patch planner rely on it): the stem conv is block 0, each
MBConv block (its expand, depthwise, SE and project convs and its residual add) is one block, the
1x1 feature-mix conv is its own block and the classifier (global average pool, reshape, fully
connected; logits, no softmax) is the last block. All convs use SAME padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real

from ..builder import GraphBuilder
from ..errors import PatchnetError
from ..graph import Graph
from .configs import MBBlockSpec, NetSpec

#: Smallest input side (pixels): the networks downsample 32x, so the last feature map stays >= 1x1.
MIN_RESOLUTION = 32
#: Largest input side (pixels). A 1024x1024 RGB int8 input alone is 3 MiB, more than any
#: microcontroller's SRAM; MCUNet-class models use 48-480. Building the largest setting
#: (MobileNetV2, width 4, 1024x1024) takes about 20 s and 2.5 GB of host memory.
MAX_RESOLUTION = 1024
#: Largest width multiplier (published MobileNetV2 variants stop at 1.4).
MAX_WIDTH = 4.0


def check_resolution(arch: str, resolution: object) -> int:
    """Return ``resolution`` (input side, pixels) or raise a one-line :class:`PatchnetError`."""
    if (isinstance(resolution, bool) or not isinstance(resolution, Integral)
            or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise PatchnetError(f"{arch}: resolution must be an integer >= {MIN_RESOLUTION} and <= {MAX_RESOLUTION} "
                            f"pixels, got {resolution!r}")
    return int(resolution)


def check_width(arch: str, width: object) -> float:
    """Return ``width`` (channel multiplier) or raise a one-line :class:`PatchnetError`."""
    if (isinstance(width, bool) or not isinstance(width, Real) or not math.isfinite(width)
            or not 0 < width <= MAX_WIDTH):
        raise PatchnetError(f"{arch}: width must be a finite number > 0 and <= {MAX_WIDTH:g}, got {width!r}")
    return float(width)


def mbconv(in_ch: int, out_ch: int, kernel: int, stride: int, expand: float, act: str, se: int = 0) -> MBBlockSpec:
    """An MBConv spec with ``mid_ch = round(in_ch * expand)`` and a shortcut wherever one fits."""
    mid = in_ch if expand == 1 else round(in_ch * expand)
    return MBBlockSpec(in_ch, out_ch, kernel, stride, expand, mid, se, act, stride == 1 and in_ch == out_ch)


def stage_blocks(
    in_ch: int, stages: Iterable[tuple[float, int, int, int, int, bool]], act: str, se_ratio: float = 0.25
) -> tuple[MBBlockSpec, ...]:
    """Expand stage rows ``(expand, kernel, stride, repeats, out_ch, se)`` into MBConv specs.

    The first block of a stage takes the stage stride, the rest stride 1. With ``se`` the squeeze
    width is ``max(1, int(block in_ch * se_ratio))`` (MnasNet / EfficientNet convention).
    """
    blocks = []
    for expand, kernel, stride, repeats, out_ch, se in stages:
        for r in range(repeats):
            squeeze = max(1, int(in_ch * se_ratio)) if se else 0
            blocks.append(mbconv(in_ch, out_ch, kernel, stride if r == 0 else 1, expand, act, squeeze))
            in_ch = out_ch
    return tuple(blocks)


def build_net(spec: NetSpec, resolution: int | None = None, seed: int = 0) -> Graph:
    """Build ``spec`` for a ``resolution`` x ``resolution`` RGB input (default: the spec's own).

    Weights are random int8 drawn from ``seed`` (see :class:`GraphBuilder`).
    """
    res = check_resolution(spec.name, spec.resolution if resolution is None else resolution)
    b = GraphBuilder(spec.name, (1, res, res, 3), seed=seed)
    stem = spec.first_conv
    x = b.conv2d(b.inputs[0], stem.out_ch, stem.kernel, stem.stride, act=stem.act)
    for blk in spec.blocks:
        with b.new_block():
            x = _mbconv_ops(b, x, blk)
    if spec.feature_mix is not None:
        mix = spec.feature_mix
        with b.new_block():
            x = b.conv2d(x, mix.out_ch, mix.kernel, mix.stride, act=mix.act)
    with b.new_block():
        x = b.global_avg_pool(x)
        x = b.reshape(x, (1, b.tensors[x].shape[-1]))
        x = b.fully_connected(x, spec.classifier)
    return b.finish(x)


def _mbconv_ops(b: GraphBuilder, x: str, s: MBBlockSpec) -> str:
    h = x if s.expand == 1 else b.conv2d(x, s.mid_ch, 1, act=s.act)
    h = b.depthwise_conv2d(h, s.kernel, s.stride, act=s.act)
    if s.se:
        h = _squeeze_excite(b, h, s.se)
    h = b.conv2d(h, s.out_ch, 1, act=None)
    return b.add(h, x) if s.shortcut else h


def _squeeze_excite(b: GraphBuilder, x: str, squeeze: int) -> str:
    """Global average pool -> 1x1 conv (ReLU) -> 1x1 conv -> logistic -> broadcast mul with ``x``."""
    ch = b.tensors[x].shape[-1]
    s = b.global_avg_pool(x)
    s = b.conv2d(s, squeeze, 1, act="relu")
    s = b.conv2d(s, ch, 1, act=None)
    return b.mul(x, b.logistic(s))
