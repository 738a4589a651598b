"""Regular convs (any kernel, stride, dilation, padding) as a tensorized GEMM over an im2col
held in registers: no scratch buffer.

For each tile of ``mb`` output pixels of one row, the ``mb`` input windows (kh * kw * C_in
values each, OHWI order, the weights' order) are gathered once into a ``local`` array (at most
:data:`MAX_GATHER_BYTES` of stack, never an arena buffer, so the liveness analysis and memory
plan are unchanged; a run's measured peak stack grows by it); padded taps are filled with the input zero point, so folding ``zp_in * sum(w)``
into the bias stays exact. Then every channel tile of the row multiplies that array with the
weight rows through the same micro-kernel and requantization as 1x1 convs
(:mod:`.pointwise`): the gather is amortized over all output channels. Small input channel
counts (the 3-channel stem) then still run at SMLAD speed, since the reduction is
kh * kw * C_in long rather than C_in. A residual block's last conv takes its add along
(:func:`accumulate_kernel`), as the 1x1 one does.
"""

from __future__ import annotations

import numpy as np
from tvm import s_tir, te, tirx

from ..graph import Graph, Op
from ..kernels.conv import _requant_consts
from .default import KernelFunc
from .pointwise import (
    COMMON_C,
    Gemm,
    choose_tile,
    gemm_microkernel_c,
    requant_call,
    requant_table,
    residual_epilogue,
    schedule_gemm,
    skip_input,
)

#: bytes of the per-tile im2col array (mb windows): stack, below the 1 KiB of a ``local`` C array
MAX_GATHER_BYTES = 1000


def match_conv(graph: Graph, op: Op) -> Gemm | None:
    """A regular int8 conv2d as a :class:`~.pointwise.Gemm` over its kh * kw * C_in windows, or None."""
    if op.kind != "conv2d":
        return None
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    if x.dtype != "int8" or y.dtype != "int8" or w.shape[3] != x.shape[3]:
        return None
    co = w.shape[0]
    weights = w.data.reshape(co, -1).astype(np.int8)
    if weights.shape[1] < 2 or weights.shape[1] > MAX_GATHER_BYTES:
        return None
    bias, mult, shift = _requant_consts(graph, op, co)
    lo, hi = op.attrs["act_range"]
    return Gemm(op.inputs[0], int(np.prod(y.shape[:3])), int(weights.shape[1]), int(co), weights,
                np.asarray(bias, np.int32), np.asarray(mult, np.int32), np.asarray(shift, np.int32),
                int(x.zp), int(y.zp), int(lo), int(hi))


def conv_te(graph: Graph, op: Op, g: Gemm, rq, name: str):
    """Placeholders (x NHWC, w [CO, kh kw C_in], q [CO, 4]) and the int8 output NHWC, through
    ``{name}_col`` (windows, zp_in where padded), ``{name}_acc`` (raw products) and ``pn_requant``."""
    xt, yt = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    _, h_in, w_in, cin = xt.shape
    kw = graph.t(op.inputs[1]).shape[2]
    sh, sw = op.attrs["strides"]
    dh, dw = op.attrs["dilation"]
    top, left = op.attrs["padding"][:2]
    x = te.placeholder(xt.shape, "int8", name="x")
    w = te.placeholder((g.co, g.k), "int8", name="w")
    q = te.placeholder(rq.table.shape, "int32", name="q")

    def window(b, i, j, kk):
        r = i * sh + kk // (kw * cin) * dh - top
        s = j * sw + kk // cin % kw * dw - left
        inside = tirx.all(r >= 0, r < h_in, s >= 0, s < w_in)
        return tirx.if_then_else(inside, x[b, r, s, kk % cin], tirx.const(g.zp_in, "int8"))

    col = te.compute((*yt.shape[:3], g.k), window, name=name + "_col")
    r = te.reduce_axis((0, g.k), "r")
    acc = te.compute(yt.shape, lambda b, i, j, c: te.sum(col[b, i, j, r].astype("int32") * w[c, r].astype("int32"),
                                                         axis=r), name=name + "_acc")
    out = te.compute(yt.shape, lambda b, i, j, c: requant_call(g, rq, q, c, acc[b, i, j, c]), name=name)
    return x, w, q, out


def op_kernel(graph: Graph, op: Op, target: str) -> KernelFunc | None:
    """A regular conv2d as a tensorized GEMM over a per-tile im2col in registers, or None."""
    built = _build(graph, op)
    if built is None:
        return None
    func, consts, preamble = built
    return KernelFunc(func, [op.inputs[0], *consts, op.outputs[0]], preamble)


def accumulate_kernel(graph: Graph, conv: Op, add: Op, target: str) -> KernelFunc | None:
    """A regular conv2d and the residual add of its output as one kernel, or None: the contract
    of :func:`tvm_patchnet.schedules.default.accumulate_kernel` (output over the skip input,
    each skip element read right before it is written; the conv reads only its own input, which
    the liveness analysis guarantees is not the skip)."""
    final = residual_epilogue(graph, conv, add, graph.t(add.outputs[0]).shape)
    built = _build(graph, conv, final)
    if built is None:
        return None
    func, consts, preamble = built
    return KernelFunc(func, [conv.inputs[0], *consts, skip_input(graph, conv, add), add.outputs[0]], preamble)


def _build(graph: Graph, op: Op, final=None):
    """(scheduled PrimFunc, [weights, requantization table], preamble) of ``op``, with an
    elementwise epilogue ``final`` (see :func:`~.pointwise.residual_epilogue`); None where the
    im2col GEMM does not apply."""
    g = match_conv(graph, op)
    rq = requant_table(g) if g is not None else None
    if rq is None:
        return None
    mb, nb = choose_tile(graph.t(op.outputs[0]).shape[2], g.co)
    if mb * g.k > MAX_GATHER_BYTES:
        mb, nb = 1, choose_tile(1, g.co)[1]
    x, w, q, out = conv_te(graph, op, g, rq, op.name)
    extra, result = final(out) if final else ([], out)
    sch = s_tir.Schedule(te.create_prim_func([x, w, q, *extra, result]))
    reads = [r.source.name for r in sch.get(sch.get_sblock(op.name)).reads]
    po, _ = schedule_gemm(sch, sch.get_sblock(result.op.name), sch.get_sblock(op.name + "_acc"), mb, nb, g.k,
                          per_channel=((op.name, reads.index("q")),))
    col = sch.get_sblock(op.name + "_col")
    sch.compute_at(col, po, preserve_unit_loops=True)  # once per pixel tile, shared by every channel tile
    sch.set_scope(col, 0, "local")
    _gather_by_tap(sch, col, graph.t(op.inputs[1]).shape[1:4])
    return sch.mod["main"], [g.w, rq.table], (COMMON_C, gemm_microkernel_c(mb, nb))


def _gather_by_tap(sch: s_tir.Schedule, col, kernel: tuple[int, int, int]) -> None:
    """Split the gather's flat window loop into (tap row, tap column, channel): the division and
    modulo indices become loop variables and the padding test depends on the tap only, so the
    C compiler hoists it out of the channel loop (unrolled when short)."""
    kh, kw, cin = (int(v) for v in kernel)
    _, _, c = sch.split(sch.get_loops(col)[-1], [kh, kw, cin])
    if cin <= 16:
        sch.unroll(c)
