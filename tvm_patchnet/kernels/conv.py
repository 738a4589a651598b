"""conv2d, depthwise conv2d and fully connected: int8 x int8 -> int32 -> requantized int8.

Layouts: input NHWC int8 (zero point zp_in), weights OHWI / 1HW(C*M) / [O, I] int8 symmetric,
bias int32. acc = bias + sum((x - zp_in) * w); out = clamp(MBQM(acc, M[c], shift[c]) + zp_out).
Padding uses zp_in, so padded taps contribute exactly zero, as in TFLite.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from ..graph import Graph, Op
from ..quant import requantize_params
from . import Lowered, register
from .requant import clamp_to_int8, mbqm


def _requant_consts(graph: Graph, op: Op, n_out: int):
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    s_w = np.broadcast_to(w.scale.reshape(-1), (n_out,)) if w.scale.size > 1 else np.full(n_out, w.s)
    m, sh = requantize_params(x.s, s_w, y.s)
    bias = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else None
    b = graph.t(bias).data.astype(np.int32) if bias else np.zeros(n_out, np.int32)
    return b.reshape(-1), m, sh


def _padded_reader(x, pad, zp: int):
    """``read(b, i, j, k)``: ``x - zp`` as int32, zero-point padded by ``pad`` (t, l, b, r).

    No padded copy is made: out-of-map taps contribute 0, as TFLite's zero-point padding.
    """
    top, left, _, _ = pad
    _, h, w, _ = x.shape
    if not any(pad):
        return lambda b, i, j, k: x[b, i, j, k].astype("int32") - zp

    def read(b, i, j, k):
        r, c = i - top, j - left
        inside = tirx.all(r >= 0, r < h, c >= 0, c < w)
        return tirx.if_then_else(inside, x[b, r, c, k].astype("int32") - zp, 0)

    return read


@register("conv2d", "depthwise_conv2d")
def lower_conv(graph: Graph, op: Op) -> Lowered:
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    sh_, sw_ = op.attrs["strides"]
    dh, dw = op.attrs["dilation"]
    pad = op.attrs["padding"]
    zp_in, zp_out = x.zp, y.zp
    lo, hi = op.attrs["act_range"]
    depthwise = op.kind == "depthwise_conv2d"
    _, oh, ow, oc = y.shape
    kh, kw = w.shape[1], w.shape[2]
    bias, mult, shift = _requant_consts(graph, op, oc)
    mul_ch = op.attrs.get("depth_multiplier", 1)

    def compute(xt, wt, bt, mt, st):
        xp = _padded_reader(xt, pad, zp_in)
        rh = te.reduce_axis((0, kh), "rh")
        rw = te.reduce_axis((0, kw), "rw")
        if depthwise:
            acc = te.compute(
                (1, oh, ow, oc),
                lambda b, i, j, c: te.sum(
                    xp(b, i * sh_ + rh * dh, j * sw_ + rw * dw, c // mul_ch)
                    * wt[0, rh, rw, c].astype("int32"),
                    axis=[rh, rw],
                ),
                name=op.name + "_acc",
            )
        else:
            rc = te.reduce_axis((0, w.shape[3]), "rc")
            acc = te.compute(
                (1, oh, ow, oc),
                lambda b, i, j, c: te.sum(
                    xp(b, i * sh_ + rh * dh, j * sw_ + rw * dw, rc)
                    * wt[c, rh, rw, rc].astype("int32"),
                    axis=[rh, rw, rc],
                ),
                name=op.name + "_acc",
            )
        return te.compute(
            (1, oh, ow, oc),
            lambda b, i, j, c: clamp_to_int8(mbqm(acc[b, i, j, c] + bt[c], mt[c], st[c]) + zp_out, lo, hi),
            name=op.name,
        )

    return Lowered(op.name, compute, [op.inputs[0], w.data, bias, mult, shift])


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
            (batch, n_in), lambda b, i: xt[_unflatten(b * n_in + i, flat)], name=op.name + "_flat"
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
        return te.compute(out_shape, lambda *i: out[_flat_index(i, out_shape, n_out)], name=op.name)

    return Lowered(op.name, compute, [op.inputs[0], w.data, bias, mult, shift])


def _unflatten(idx, shape):
    out = []
    for d in reversed(shape):
        out.append(tirx.floormod(idx, d))
        idx = tirx.floordiv(idx, d)
    return tuple(reversed(out))


def _flat_index(i, shape, inner):
    flat = 0
    for k, d in zip(i, shape):
        flat = flat * d + k
    return (tirx.floordiv(flat, inner), tirx.floormod(flat, inner))
