"""add, mul, quantize (float->int8 and int8->int8) and dequantize, as TFLite Micro computes them.

add (TFLM add_common): both inputs are rescaled to a common 2*max(s1, s2) scale with a
20-bit left shift, summed, and requantized; mul multiplies offset inputs and requantizes by
s1*s2/s_out. Broadcasting follows NumPy (SE blocks multiply [1,1,1,C] by [1,H,W,C]).
"""

from __future__ import annotations

from tvm import te, tirx

from ..graph import Graph, Op
from ..quant import quantize_multiplier
from . import Lowered, register
from .frame import NO_FRAME, Frame, guarded, valid
from .requant import clamp_to_int8, mbqm_const

ADD_LEFT_SHIFT = 20  # TFLM's left shift for int8 add


def _broadcast_index(idx, in_shape, out_shape, mi=(0, 0, 0, 0), mo=(0, 0, 0, 0)):
    """Index into ``in_shape`` for output index ``idx`` under NumPy broadcasting; with patch
    margins (NHWC), rows/cols shift from the output's extended frame to the input's."""
    lead = len(out_shape) - len(in_shape)
    shift = {1: mi[0] - mo[0], 2: mi[1] - mo[1]} if len(in_shape) == 4 else {}
    return tuple(
        0 if d == 1 and out_shape[lead + k] != 1 else idx[lead + k] + shift.get(k, 0) for k, d in enumerate(in_shape)
    )


def _elementwise(graph: Graph, op: Op, frame: Frame, body) -> Lowered:
    """An elementwise op over its two inputs; ``body(va, vb)`` gets int32 offset values."""
    an, bn, yn = op.inputs[0], op.inputs[1], op.outputs[0]
    a, b, y = graph.t(an), graph.t(bn), graph.t(yn)
    mo = frame.margin(yn)
    out_shape = frame.ext_shape(yn, y.shape)
    fill = tirx.const(frame.fill(yn, y.zp), "int8")

    def compute(at, bt):
        def f(*i):
            va = at[_broadcast_index(i, a.shape, y.shape, frame.margin(an), mo)].astype("int32") - a.zp
            vb = bt[_broadcast_index(i, b.shape, y.shape, frame.margin(bn), mo)].astype("int32") - b.zp
            inside = valid(i[1], i[2], mo, y.shape[1], y.shape[2]) if len(i) == 4 else None
            return guarded(inside, body(va, vb), fill)

        return te.compute(out_shape, f, name=op.name)

    return Lowered(op.name, compute, [an, bn])


def add_multipliers(graph: Graph, op: Op) -> tuple[int, int, int, int, int, int]:
    """TFLite's int8 ADD rescaling, ``(m1, s1, m2, s2, mo, so)``: each input shifted left by
    ``ADD_LEFT_SHIFT`` and scaled by (m1, s1) / (m2, s2) to twice the larger input scale, their
    sum scaled by (mo, so) to the output's (multipliers and shifts as QuantizeMultiplier's)."""
    a, b, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    twice_max = 2.0 * max(float(a.s), float(b.s))
    m1, s1 = quantize_multiplier(float(a.s) / twice_max)
    m2, s2 = quantize_multiplier(float(b.s) / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * float(y.s)))
    return m1, s1, m2, s2, mo, so


@register("add")
def lower_add(graph: Graph, op: Op, frame: Frame = NO_FRAME) -> Lowered:
    y = graph.t(op.outputs[0])
    m1, s1, m2, s2, mo, so = add_multipliers(graph, op)
    lo, hi = op.attrs["act_range"]

    def body(va, vb):
        sa = mbqm_const(va << ADD_LEFT_SHIFT, m1, s1)
        sb = mbqm_const(vb << ADD_LEFT_SHIFT, m2, s2)
        return clamp_to_int8(mbqm_const(sa + sb, mo, so) + y.zp, lo, hi)

    return _elementwise(graph, op, frame, body)


@register("mul")
def lower_mul(graph: Graph, op: Op, frame: Frame = NO_FRAME) -> Lowered:
    a, b, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    m, s = quantize_multiplier(float(a.s) * float(b.s) / float(y.s))
    lo, hi = op.attrs["act_range"]
    return _elementwise(graph, op, frame, lambda va, vb: clamp_to_int8(mbqm_const(va * vb, m, s) + y.zp, lo, hi))


@register("quantize")
def lower_quantize(graph: Graph, op: Op, frame: Frame = NO_FRAME) -> Lowered:
    xn, yn = op.inputs[0], op.outputs[0]
    x, y = graph.t(xn), graph.t(yn)
    mo = frame.margin(yn)
    out_shape = frame.ext_shape(yn, y.shape)
    fill = tirx.const(frame.fill(yn, y.zp), "int8")
    if x.dtype == "int8":  # requantize: TFLM Requantize, MBQM(x - zp_in) + zp_out
        m, s = quantize_multiplier(float(x.s) / float(y.s))

        def value(v):
            return clamp_to_int8(mbqm_const(v.astype("int32") - x.zp, m, s) + y.zp, -128, 127)
    else:
        inv = float(y.s)

        def value(v):  # graph edge only: float32 in. TFLite: round(x / scale) half away from zero
            q = (v / tirx.const(inv, "float32")).astype("float64")
            r = tirx.if_then_else(q >= 0, tirx.floor(q + 0.5), -tirx.floor(-q + 0.5))
            r = tirx.min(tirx.max(r, tirx.const(-1e9, "float64")), tirx.const(1e9, "float64"))
            return clamp_to_int8(r.astype("int32") + y.zp, -128, 127)

    def compute(xt):
        def f(*i):
            inside = valid(i[1], i[2], mo, y.shape[1], y.shape[2]) if len(i) == 4 else None
            return guarded(inside, value(xt[_broadcast_index(i, x.shape, y.shape, frame.margin(xn), mo)]), fill)

        return te.compute(out_shape, f, name=op.name)

    return Lowered(op.name, compute, [xn])


@register("dequantize")
def lower_dequantize(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    scale = float(x.s)

    def compute(xt):  # graph edge only: float32 out, (x - zp) * scale in double as TFLM
        return te.compute(
            y.shape,
            lambda *i: ((xt(*i).astype("int32") - x.zp).astype("float64") * tirx.const(scale, "float64")).astype(
                "float32"
            ),
            name=op.name,
        )

    return Lowered(op.name, compute, [op.inputs[0]])
