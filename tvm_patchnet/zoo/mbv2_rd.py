"""MbV2-RD: MobileNetV2 with its receptive field redistributed (MCUNetV2, Sec. 3.2, Figure 4, Table 1).

The paper's text does not give Figure 4's block list. What it says, and what is inferred here:

From the paper:
- the per-patch stage uses smaller kernels and fewer blocks, and the per-layer stage gets more
  blocks, for the same level of accuracy (Sec. 3.2). The Figure 9 analysis adds that per-patch
  kernels are small: 1x1 and 3x3;
- Table 1, at 224x224 with 4x4 patches: the input patch shrinks from 75x75 to 63x63, the
  patch-stage overhead from +42% to +18%, the overall overhead from +10% to +3%, the patch
  stage costs 73M MACs (MbV2: 130M), and the peak stays at 172kB (8x below 1372kB).

Inferred (the smallest change to MobileNetV2 that matches all of those figures):
- the patch stage still ends at the first 28x28 block (stride 8, 32 channels): its output is the
  same 25,088 B buffer, and the per-layer peak after it (a 32->192->32 block at 28x28,
  176,400 B = 172kB: its in-place depthwise conv beside the skip) is unchanged;
- a 63x63 patch for a 7x7 output tile means a stage receptive field of 63 - 6 * 8 = 15 pixels
  (MbV2: 75 - 48 = 27). The stem (3x3, stride 2) and the two stride-2 3x3 depthwise convs give
  3 + 2*2 + 2*4 = 15 on their own, so every other spatial kernel leaves the stage: the MB1 block
  becomes 1x1 ("smaller kernels") and the stride-1 MB6 block at 56x56 is removed ("fewer
  blocks"). The stage is then blocks 0..3, so its split is n = 4 where MbV2's is n = 5, at the
  same feature map;
- this stage costs 62.3M MACs per layer and, counting every patch at its full, unclipped size
  as the paper's patch-stage column does, 73.7M patched (+18.3%): Table 1's 73M and +18%. This
  is the evidence that the per-patch half matches Figure 4;
- the per-layer stage gains one MB6 3x3 block at 28x28 (32 channels, 4 blocks instead of 3) and
  one at 7x7 (160 channels, 4 instead of 3). That restores the MACs (298.3M against MbV2's
  300.8M: the two removed stage pieces cost 28.9M, the two added blocks 26.5M) and raises the
  network's receptive field from 491 to 559 pixels. Which later stages Figure 4 lengthens is a
  guess; no Table 1 figure depends on it beyond the total MACs.

Result at 224x224, 4x4 patches, n = 4: input patch 63x63, peak 176,400 B (1,404,928 B per
layer, 8.0x), overall MAC overhead 2.8% with regions clipped at the map borders.
Channels follow :mod:`~tvm_patchnet.zoo.mobilenetv2` (torchvision rounding for ``width``).
"""

from __future__ import annotations

from ..graph import Graph
from .blocks import build_net, check_resolution, check_width, stage_blocks
from .configs import ConvSpec, NetSpec
from .mobilenetv2 import _make_divisible

#: (expand ratio, kernel, first stride, repeats, output channels); MobileNetV2 rows 1, 2, 3, 7 changed.
_STAGES = ((1, 1, 1, 1, 16), (6, 3, 2, 1, 24), (6, 3, 2, 4, 32), (6, 3, 2, 4, 64), (6, 3, 1, 3, 96),
           (6, 3, 2, 4, 160), (6, 3, 1, 1, 320))


def mbv2_rd_spec(width: float = 1.0, resolution: int = 224) -> NetSpec:
    """The MbV2-RD layer list for width multiplier ``width`` and default input side ``resolution`` (pixels)."""
    check_width("mbv2-rd", width)
    check_resolution("mbv2-rd", resolution)
    stem = _make_divisible(32 * width)
    rows = [(t, k, s, n, _make_divisible(c * width), False) for t, k, s, n, c in _STAGES]
    last = _make_divisible(1280 * width) if width > 1.0 else 1280
    name = "mbv2-rd" if width == 1.0 else f"mbv2-rd-w{width:g}"
    return NetSpec(name, resolution, ConvSpec(stem, 3, 2), stage_blocks(stem, rows, "relu6"), ConvSpec(last))


def mbv2_rd(width: float = 1.0, resolution: int = 224, seed: int = 0) -> Graph:
    """Build MbV2-RD as an int8 graph with random weights from ``seed``; ``resolution`` in pixels."""
    return build_net(mbv2_rd_spec(width, resolution), resolution, seed)
