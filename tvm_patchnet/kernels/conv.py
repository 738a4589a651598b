"""conv2d, depthwise conv2d and fully connected: int8 x int8 -> int32 -> requantized int8.

Layouts: input NHWC int8 (zero point zp_in), weights OHWI / 1HW(C*M) / [O, I] int8 symmetric,
bias int32. acc = bias + sum((x - zp_in) * w); out = clamp(MBQM(acc, M[c], shift[c]) + zp_out).
Padded taps contribute exactly zero, as in TFLite: they are skipped, or (inside a patch stage,
see ``frame.py``) read from a margin filled with zp_in.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from ..graph import Graph, Op
from ..quant import requantize_params
from . import Lowered, register
from .frame import NO_FRAME, Frame, both, guarded, tap_guard, valid
from .indexing import ravel, unravel
from .requant import clamp_to_int8, mbqm


def _requant_consts(graph: Graph, op: Op, n_out: int):
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    s_w = np.broadcast_to(w.scale.reshape(-1), (n_out,)) if w.scale.size > 1 else np.full(n_out, w.s)
    m, sh = requantize_params(x.s, s_w, y.s)
    bias = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else None
    b = graph.t(bias).data.astype(np.int32) if bias else np.zeros(n_out, np.int32)
    return b.reshape(-1), m, sh


@register("conv2d", "depthwise_conv2d")
def lower_conv(graph: Graph, op: Op, frame: Frame = NO_FRAME) -> Lowered:
    xn, yn = op.inputs[0], op.outputs[0]
    x, w, y = graph.t(xn), graph.t(op.inputs[1]), graph.t(yn)
    sh_, sw_ = op.attrs["strides"]
    dh, dw = op.attrs["dilation"]
    top, left = op.attrs["padding"][:2]
    zp_in, zp_out = x.zp, y.zp
    lo, hi = op.attrs["act_range"]
    depthwise = op.kind == "depthwise_conv2d"
    _, oh, ow, oc = y.shape
    _, h_in, w_in, c_in = x.shape
    kh, kw = w.shape[1], w.shape[2]
    bias, mult, shift = _requant_consts(graph, op, oc)
    mul_ch = op.attrs.get("depth_multiplier", 1)
    mo, mi = frame.margin(yn), frame.margin(xn)
    fill = tirx.const(frame.fill(yn, zp_out), "int8")
    out_shape = frame.ext_shape(yn, y.shape)
    # Input row of output row i, tap r (both extended): i * s + r * d + row0.
    row0, col0 = mi[0] - top - sh_ * mo[0], mi[1] - left - sw_ * mo[1]
    # Sides where padding can reach outside the input's storage (never inside a patch stage,
    # whose margins cover it): there taps are skipped, as TFLite's zero-point padding adds 0.
    rows = (row0 < 0, (oh - 1) * sh_ + (kh - 1) * dh - top >= h_in + mi[2])
    cols = (col0 < 0, (ow - 1) * sw_ + (kw - 1) * dw - left >= w_in + mi[3])

    def compute(xt, wt, bt, mt, st):
        rh = te.reduce_axis((0, kh), "rh")
        rw = te.reduce_axis((0, kw), "rw")
        rc = te.reduce_axis((0, c_in), "rc")

        def tap(b, i, j, c):
            r, s = i * sh_ + rh * dh + row0, j * sw_ + rw * dw + col0
            cin, wv = (c // mul_ch, wt[0, rh, rw, c]) if depthwise else (rc, wt[c, rh, rw, rc])
            val = (xt[b, r, s, cin].astype("int32") - zp_in) * wv.astype("int32")
            return guarded(both(valid(i, j, mo, oh, ow), tap_guard(r, s, h_in, w_in, rows, cols)), val, 0)

        axes = [rh, rw] if depthwise else [rh, rw, rc]
        acc = te.compute(out_shape, lambda b, i, j, c: te.sum(tap(b, i, j, c), axis=axes), name=op.name + "_acc")

        def out(b, i, j, c):
            v = clamp_to_int8(mbqm(acc[b, i, j, c] + bt[c], mt[c], st[c]) + zp_out, lo, hi)
            return guarded(valid(i, j, mo, oh, ow), v, fill)

        return te.compute(out_shape, out, name=op.name)

    return Lowered(op.name, compute, [xn, w.data, bias, mult, shift])


@register("fully_connected")
def lower_fc(graph: Graph, op: Op) -> Lowered:
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    n_out, n_in = w.shape
    zp_in, zp_out = x.zp, y.zp
    zp_w = w.zp
    lo, hi = op.attrs["act_range"]
    bias, mult, shift = _requant_consts(graph, op, n_out)
    batch = x.size // n_in
    out_shape = y.shape

    def compute(xt, wt, bt, mt, st):
        flat = xt.shape
        xf = te.compute(
            (batch, n_in), lambda b, i: xt[unravel(b * n_in + i, flat)], name=op.name + "_flat"
        ) if len(flat) != 2 else xt
        r = te.reduce_axis((0, n_in), "r")
        acc = te.compute(
            (batch, n_out),
            lambda b, o: te.sum((xf[b, r].astype("int32") - zp_in) * (wt[o, r].astype("int32") - zp_w), axis=r),
            name=op.name + "_acc",
        )
        out = te.compute(
            (batch, n_out),
            lambda b, o: clamp_to_int8(mbqm(acc[b, o] + bt[o], mt[o], st[o]) + zp_out, lo, hi),
            name=op.name + ("_2d" if tuple(out_shape) != (batch, n_out) else ""),
        )
        if tuple(out_shape) == (batch, n_out):
            return out
        return te.compute(out_shape, lambda *i: out[unravel(ravel(i, out_shape), (batch, n_out))], name=op.name)

    return Lowered(op.name, compute, [op.inputs[0], w.data, bias, mult, shift])
