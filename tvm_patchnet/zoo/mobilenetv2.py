"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's channel rounding.

Every channel count is ``_make_divisible(c * width, 8)``; the 1280-channel feature-mix conv keeps
1280 channels unless ``width > 1`` (torchvision), or is scaled too with ``keep_last_channel=False``
(tinyml's ``disable_keep_last_channel``, used for MCUNet's ``mbv2-w0.35-r144`` / ``mbv2-w0.3-r80``).
At width 1.0 and 224x224: about 300.8M MACs and 3.5M parameters.
"""

from __future__ import annotations

from ..graph import Graph
from .blocks import build_net, check_resolution, check_width, stage_blocks
from .configs import ConvSpec, NetSpec

#: Inverted residual stages (expand ratio t, output channels c, repeats n, first stride s), Table 2 of the paper.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's rounding: nearest multiple of ``divisor``, at least ``divisor``, never below 90% of ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenetv2_spec(width: float = 1.0, resolution: int = 224, keep_last_channel: bool = True) -> NetSpec:
    """The MobileNetV2 layer list for width multiplier ``width`` and default input side ``resolution`` (pixels)."""
    check_width("mobilenetv2", width)
    check_resolution("mobilenetv2", resolution)
    stem = _make_divisible(32 * width)
    rows = [(t, 3, s, n, _make_divisible(c * width), False) for t, c, n, s in _STAGES]
    last = _make_divisible(1280 * width) if width > 1.0 or not keep_last_channel else 1280
    name = "mobilenetv2" if width == 1.0 else f"mobilenetv2-w{width:g}"
    return NetSpec(name, resolution, ConvSpec(stem, 3, 2), stage_blocks(stem, rows, "relu6"), ConvSpec(last))


def mobilenetv2(width: float = 1.0, resolution: int = 224, seed: int = 0, keep_last_channel: bool = True) -> Graph:
    """Build MobileNetV2 as an int8 graph with random weights from ``seed``; ``resolution`` in pixels."""
    return build_net(mobilenetv2_spec(width, resolution, keep_last_channel), resolution, seed)
