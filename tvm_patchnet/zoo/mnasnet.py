"""MnasNet-A1 (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019).

Layers from Figure 7(a) of the paper, details from the reference TensorFlow implementation
(``tensorflow/tpu`` ``mnasnet_models.py``, ``mnasnet_a1``): ReLU activations, squeeze-and-
excitation with ``int(block input channels * 0.25)`` squeeze channels, 1x1 head conv to 1280.
At 224x224 the paper gives 312M MACs and 3.9M parameters.
"""

from __future__ import annotations

from ..graph import Graph
from .blocks import build_net, stage_blocks
from .configs import ConvSpec, NetSpec

#: (expand ratio, kernel, first stride, repeats, output channels, SE); the first row is SepConv 3x3.
_STAGES = (
    (1, 3, 1, 1, 16, False),
    (6, 3, 2, 2, 24, False),
    (3, 5, 2, 3, 40, True),
    (6, 3, 2, 4, 80, False),
    (6, 3, 1, 2, 112, True),
    (6, 5, 2, 3, 160, True),
    (6, 3, 1, 1, 320, False),
)

MNASNET_A1 = NetSpec(
    "mnasnet", 224, ConvSpec(32, 3, 2, "relu"), stage_blocks(32, _STAGES, "relu"), ConvSpec(1280, act="relu")
)


def mnasnet_a1(resolution: int = 224, seed: int = 0) -> Graph:
    """Build MnasNet-A1 as an int8 graph with random weights from ``seed``; ``resolution`` in pixels."""
    return build_net(MNASNET_A1, resolution, seed)
