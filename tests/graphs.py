"""Small hand-built int8 graphs shared by tests: every op kind a patch stage may hold."""

from __future__ import annotations

from tvm_patchnet.builder import GraphBuilder


def stage_kinds_prefix(name: str) -> tuple[GraphBuilder, str]:
    """Blocks 0..2 on a 20x20x3 input (10x10 maps; p = 3 gives uneven tiles of 4, 4, 2): a
    stride-2 conv, a dilated depthwise conv with a residual add, padded max and average pooling
    and an elementwise mul. Returns the builder (block 2 still open) and the last tensor."""
    b = GraphBuilder(name, (1, 20, 20, 3))
    x = b.conv2d("input", 8, 3, stride=2)
    with b.new_block():
        h = b.depthwise_conv2d(x, 3, dilation=2)
        h = b.conv2d(h, 8, 1, act=None)
        x = b.add(h, x)
    with b.new_block():
        m = b.max_pool2d(x, 3, 1, "same")
        a = b.avg_pool2d(m, 3, 1, "same")
        x = b.mul(a, m)
    return b, x
