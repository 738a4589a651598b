"""Row-major index arithmetic shared by the kernels (reshapes, flattening)."""

from __future__ import annotations

from tvm import tirx


def ravel(idx, shape):
    """Flat row-major offset of index tuple ``idx`` in ``shape``."""
    flat = 0
    for k, d in zip(idx, shape):
        flat = flat * d + k
    return flat


def unravel(flat, shape) -> tuple:
    """Index tuple in ``shape`` of flat row-major offset ``flat``."""
    out = []
    for d in reversed(shape):
        out.append(tirx.floormod(flat, d))
        flat = tirx.floordiv(flat, d)
    return tuple(reversed(out))
