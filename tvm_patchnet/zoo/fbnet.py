"""FBNet-A (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable NAS", CVPR 2019).

Block list from the authors' published definition, ``fbnet_a`` in facebookresearch/mobile-vision
(``mobile_cv/arch/fbnet_v2/fbnet_modeldef_cls_fbnet.py``; the same list as ``fbnet_a`` in
``maskrcnn_benchmark/modeling/backbone/fbnet_modeldef.py``). Its 1x1 head conv has 1504 channels,
which reproduces the paper's 4.3M parameters (the 1984 of the search space's macro-architecture
would give 4.9M). The three ``skip`` blocks are omitted. The ``*_g2`` blocks use 2-group 1x1
convs; the graph has no grouped convolution, so they are built as dense 1x1 convs (+2.9M MACs,
+15k parameters). ReLU activations; expand-ratio-1 blocks have no expand conv. At 224x224 the
paper gives 249M MACs.
"""

from __future__ import annotations

from ..graph import Graph
from .blocks import build_net, mbconv
from .configs import ConvSpec, NetSpec

#: Non-skip blocks: (kernel, output channels, stride, expand ratio); the stem gives 16 channels.
_BLOCKS = (
    (3, 24, 2, 3), (3, 24, 1, 1),
    (5, 32, 2, 6), (3, 32, 1, 3), (5, 32, 1, 1), (3, 32, 1, 3),
    (5, 64, 2, 6), (5, 64, 1, 3), (5, 64, 1, 1), (5, 64, 1, 6),
    (3, 112, 1, 6), (5, 112, 1, 1), (5, 112, 1, 3), (3, 112, 1, 1),
    (5, 184, 2, 6), (5, 184, 1, 6), (5, 184, 1, 3), (5, 184, 1, 6),
    (5, 352, 1, 6),
)


def _blocks() -> tuple:
    specs, ch = [], 16
    for kernel, out, stride, expand in _BLOCKS:
        specs.append(mbconv(ch, out, kernel, stride, expand, "relu"))
        ch = out
    return tuple(specs)


FBNET_A = NetSpec("fbnet-a", 224, ConvSpec(16, 3, 2, "relu"), _blocks(), ConvSpec(1504, act="relu"))


def fbnet_a(resolution: int = 224, seed: int = 0) -> Graph:
    """Build FBNet-A as an int8 graph with random weights from ``seed``; ``resolution`` in pixels."""
    return build_net(FBNET_A, resolution, seed)
