"""Average and max pooling, int8 in and out with the same quantization (TFLite requires it).

Average pooling sums the valid (in-bounds) taps and divides by their count, rounding half away
from zero, exactly as TFLM's reference_integer_ops::AveragePool. Padding taps never count.
"""

from __future__ import annotations

from tvm import te, tirx

from ..graph import Graph, Op
from . import Lowered, register
from .requant import clamp_to_int8


def _window(op: Op, x_shape, y_shape):
    ph, pw = op.attrs["pool"]
    sh, sw = op.attrs["strides"]
    top, left, _, _ = op.attrs["padding"]
    return ph, pw, sh, sw, top, left, x_shape[1], x_shape[2]


@register("avg_pool2d", "max_pool2d")
def lower_pool(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    ph, pw, sh, sw, top, left, h, w = _window(op, x.shape, y.shape)
    lo, hi = op.attrs["act_range"]
    is_avg = op.kind == "avg_pool2d"

    def compute(xt):
        rh = te.reduce_axis((0, ph), "rh")
        rw = te.reduce_axis((0, pw), "rw")

        def inside(i, j):
            r, c = i * sh - top + rh, j * sw - left + rw
            return tirx.all(r >= 0, r < h, c >= 0, c < w), r, c

        def tap(b, i, j, k):
            ok, r, c = inside(i, j)
            rr = tirx.max(tirx.min(r, h - 1), 0)
            cc = tirx.max(tirx.min(c, w - 1), 0)
            return ok, xt[b, rr, cc, k].astype("int32")

        if is_avg:
            acc = te.compute(
                y.shape,
                lambda b, i, j, k: te.sum(tirx.if_then_else(tap(b, i, j, k)[0], tap(b, i, j, k)[1], 0), axis=[rh, rw]),
                name=op.name + "_sum",
            )

            def count(i, j):  # number of in-bounds taps, closed form (no reduction)
                r0, c0 = i * sh - top, j * sw - left
                nh = tirx.min(r0 + ph, h) - tirx.max(r0, 0)
                nw = tirx.min(c0 + pw, w) - tirx.max(c0, 0)
                return nh * nw

            def avg(b, i, j, k):
                s, n = acc[b, i, j, k], count(i, j)
                half = tirx.truncdiv(n, 2)
                return clamp_to_int8(
                    tirx.Select(s > 0, tirx.truncdiv(s + half, n), tirx.truncdiv(s - half, n)), lo, hi
                )

            return te.compute(y.shape, avg, name=op.name)

        mx = te.compute(
            y.shape,
            lambda b, i, j, k: te.max(tirx.if_then_else(tap(b, i, j, k)[0], tap(b, i, j, k)[1], -128), axis=[rh, rw]),
            name=op.name + "_max",
        )
        return te.compute(y.shape, lambda *i: clamp_to_int8(mx(*i), lo, hi), name=op.name)

    return Lowered(op.name, compute, [op.inputs[0]])
