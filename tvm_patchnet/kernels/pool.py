"""Average and max pooling, int8 in and out with the same quantization (TFLite requires it).

Average pooling sums the in-map taps and divides by their count, rounding half away from
zero, exactly as TFLM's reference_integer_ops::AveragePool; padded taps never count. Inside a
patch stage (``frame.py``) the input margin holds 0 (average) or -128 (max), so taps in the
top/left padding need no guard: they add nothing / never win.
"""

from __future__ import annotations

from tvm import te, tirx

from ..graph import Graph, Op
from . import Lowered, register
from .frame import NO_FRAME, Frame, both, guarded, tap_guard, valid
from .requant import clamp_to_int8


@register("avg_pool2d", "max_pool2d")
def lower_pool(graph: Graph, op: Op, frame: Frame = NO_FRAME) -> Lowered:
    xn, yn = op.inputs[0], op.outputs[0]
    x, y = graph.t(xn), graph.t(yn)
    ph, pw = op.attrs["pool"]
    sh, sw = op.attrs["strides"]
    top, left = op.attrs["padding"][:2]
    _, h, w, _ = x.shape
    _, oh, ow, _ = y.shape
    lo, hi = op.attrs["act_range"]
    is_avg = op.kind == "avg_pool2d"
    mo, mi = frame.margin(yn), frame.margin(xn)
    out_shape = frame.ext_shape(yn, y.shape)
    fill = tirx.const(frame.fill(yn, y.zp), "int8")
    row0, col0 = mi[0] - top - sh * mo[0], mi[1] - left - sw * mo[1]
    rows = (row0 < 0, (oh - 1) * sh + ph - top > h + mi[2])
    cols = (col0 < 0, (ow - 1) * sw + pw - left > w + mi[3])
    empty = 0 if is_avg else -128

    def compute(xt):
        rh = te.reduce_axis((0, ph), "rh")
        rw = te.reduce_axis((0, pw), "rw")

        def tap(b, i, j, k):
            r, c = i * sh + rh + row0, j * sw + rw + col0
            cond = both(valid(i, j, mo, oh, ow), tap_guard(r, c, h, w, rows, cols))
            return guarded(cond, xt[b, r, c, k].astype("int32"), empty)

        red = te.sum if is_avg else te.max
        acc = te.compute(out_shape, lambda b, i, j, k: red(tap(b, i, j, k), axis=[rh, rw]),
                         name=op.name + ("_sum" if is_avg else "_max"))

        def count(i, j):  # in-map taps of output (i, j) (original coordinates), closed form
            r0, c0 = (i - mo[0]) * sh - top, (j - mo[1]) * sw - left
            nh = tirx.min(r0 + ph, h) - tirx.max(r0, 0)
            nw = tirx.min(c0 + pw, w) - tirx.max(c0, 0)
            return tirx.max(nh * nw, 1)

        def out(b, i, j, k):
            s = acc[b, i, j, k]
            if is_avg:
                n = count(i, j)
                half = tirx.truncdiv(n, 2)
                s = tirx.Select(s > 0, tirx.truncdiv(s + half, n), tirx.truncdiv(s - half, n))
            return guarded(valid(i, j, mo, oh, ow), clamp_to_int8(s, lo, hi), fill)

        return te.compute(out_shape, out, name=op.name)

    return Lowered(op.name, compute, [xn])
