"""Small int8 TFLite models whose input is NCHW, turned NHWC by a leading TRANSPOSE (issue 8).

Built with :class:`tests.pad_models.Net` (seeded random int8 weights, scales that keep
activations spread over many int8 levels). PyTorch -> TFLite exports often start this way.
"""

from __future__ import annotations

from tests.pad_models import Net

#: TRANSPOSE perm that moves channels last: NCHW -> NHWC
TO_NHWC = (0, 2, 3, 1)


def nchw_model() -> bytes:
    """(1, 3, 32, 32) NCHW -> TRANSPOSE -> CONV 3x3 s2 SAME (16x16x16) | DW -> CONV 1x1 (16x16x24) |
    DW s2 -> CONV 1x1 (8x8x32) | DW -> CONV 1x1 (8x8x32) | DW s2 -> CONV 1x1 (4x4x48) | MEAN ->
    FULLY_CONNECTED. Blocks as marked by |: the TRANSPOSE joins the stem's block 0."""
    n = Net((1, 3, 32, 32), seed=21)
    n.transpose(TO_NHWC).conv(16, 3, 2, act="relu")
    n.dw(3, 1).conv(24, 1)
    n.dw(3, 2).conv(32, 1)
    n.dw(3, 1).conv(32, 1)
    n.dw(3, 2).conv(48, 1)
    return n.mean_head().finish()
