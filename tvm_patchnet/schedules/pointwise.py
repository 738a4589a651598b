"""1x1 convs and fully connected layers as an int8 GEMM for the Cortex-M DSP extension.

A 1x1 conv (stride 1, no padding) over P = H * W pixels and a fully connected layer over P
batch rows are the same product: ``out[p, c] = requant(bias[c] + sum_k (x[p, k] - zp_in) * w[c, k])``
with K input and CO output channels. The fast kernel computes it as:

- the input zero point folded into the bias at compile time (``bias' = bias - zp_in * sum_k w``:
  exact, a 1x1 conv has no padded taps), so the inner loop multiplies raw int8 values;
- the pixels x channels loop nest tiled by a register block of ``mb`` pixels x ``nb`` channels
  (:func:`choose_tile`); each tile's K-long reduction is tensorized into one ``static inline``
  micro-kernel (SXTB16 + SMLAD: two 16-bit MACs per instruction, :func:`gemm_microkernel_c`)
  that keeps the mb x nb int32 accumulators in registers;
- TFLite Micro's requantization per output in ``static inline`` C (:data:`COMMON_C`), with
  SMMULR (one instruction for SaturatingRoundingDoublingHighMul) and a three-instruction
  rounding shift where every channel shifts right; its per-channel constants (:func:`requant_table`)
  are copied once per tile;
- a residual add fused after the conv (:func:`accumulate_kernel`) as ``pn_add``, TFLite
  Micro's int8 add with literal constants, per element in registers.

:mod:`.conv` reuses all of it for convs with larger windows (an im2col per pixel tile held in
registers).

Bit-exactness with the plain TE kernel rests on two compile-time facts, checked by
:func:`requant_table` (the builder returns None otherwise): every ``acc + bias'`` (shifted left by
the channel's left shift) lies in (-2^29, 2^29), so neither the doubling SMMULR needs nor the
rounding add can overflow, and multipliers are non-negative.

:func:`schedule_gemm` applies the tiling and tensorization to a block inside any schedule whose
last two spatial loops are pixels and output channels (reuse in the patch stage: see its
docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

from ..graph import Graph, Op
from ..kernels import lower_op
from ..kernels.conv import _requant_consts
from ..kernels.elementwise import ADD_LEFT_SHIFT, add_multipliers
from ..quant import multiply_by_quantized_multiplier
from .default import KernelFunc

#: |acc + bias'| (after the left shift) must stay below this for the fast requantization (see module doc)
ACC_BOUND = 1 << 29
#: register budget of a tile: accumulators (mb * nb) plus the unpacked operands must fit in r0-r12;
#: a one-pixel tile (fully connected, batch 1) keeps one pixel's operands only and takes one more
MAX_TILE_ACCS = 4
#: the micro-kernel's 4-step loop unrolled this many times by default: 16 steps (64 MACs per
#: accumulator) remove most of the loop overhead without growing code past the flash budget
#: (the tuner measures others: ``tune.space``)
UNROLL = 16


# ----------------------------------------------------------------------------- what applies
@dataclass(frozen=True)
class Gemm:
    """One pointwise op as a GEMM: ``x`` is [pixels, k] int8 (a graph tensor), ``w`` [co, k] int8."""

    x: str  # input tensor name
    pixels: int  # P: output pixels (1x1 conv) or batch rows (fully connected)
    k: int  # reduction length (input channels)
    co: int  # output channels
    w: np.ndarray  # [co, k] int8
    bias: np.ndarray  # [co] int32, before folding the input zero point
    mult: np.ndarray  # [co] int32 multiplier (TFLite's QuantizeMultiplier)
    shift: np.ndarray  # [co] int32 shift (> 0: left, < 0: right)
    zp_in: int
    zp_out: int
    lo: int  # fused activation clamp, int8 values
    hi: int


def match_gemm(graph: Graph, op: Op) -> Gemm | None:
    """``op`` as a :class:`Gemm`: a conv2d with a 1x1 kernel, stride 1 and no padding, or a fully
    connected layer with symmetric weights; None for anything else."""
    if op.kind == "conv2d":
        w = graph.t(op.inputs[1])
        if w.shape[1:3] != (1, 1) or tuple(op.attrs["strides"]) != (1, 1) or any(op.attrs["padding"]):
            return None
        n, h, wd, co = graph.t(op.outputs[0]).shape
        pixels, weights = n * h * wd, w.data.reshape(co, -1)
    elif op.kind == "fully_connected":
        w = graph.t(op.inputs[1])
        if w.zero_point is not None and np.any(np.asarray(w.zero_point) != 0):
            return None  # sum_k x * zp_w is a runtime term: the plain kernel handles it
        co = w.shape[0]
        pixels, weights = graph.t(op.inputs[0]).size // w.shape[1], w.data.reshape(co, -1)
    else:
        return None
    if graph.t(op.inputs[0]).dtype != "int8" or graph.t(op.outputs[0]).dtype != "int8":
        return None
    if weights.shape[1] < 2:  # blockize drops a unit reduction loop: no intrinsic matches (nor pays off)
        return None
    bias, mult, shift = _requant_consts(graph, op, co)
    lo, hi = op.attrs["act_range"]
    return Gemm(op.inputs[0], int(pixels), int(weights.shape[1]), int(co), weights.astype(np.int8),
                np.asarray(bias, np.int32), np.asarray(mult, np.int32), np.asarray(shift, np.int32),
                int(graph.t(op.inputs[0]).zp), int(graph.t(op.outputs[0]).zp), int(lo), int(hi))


@dataclass(frozen=True)
class Requant:
    """Per-channel requantization constants for ``pn_requant`` (:data:`COMMON_C`).

    ``table`` [co, 4] int32. Fast form (every channel shifts right by r >= 1):
    ``{2 bias', M, 2^(r-1) + zp_out 2^r, r}``, the output zero point folded into the rounding
    term (``zp_arg`` = 0) where that cannot overflow, else ``{2 bias', M, 2^(r-1), r}`` and
    ``zp_arg`` = zp_out. General form: ``{2 bias', M, left shift, right shift}``.
    ``bias' = bias - zp_in * sum_k w``: the input zero point folded in (exact for 1x1 convs).
    """

    table: np.ndarray
    fast: bool
    zp_arg: int


def requant_table(g: Gemm) -> Requant | None:
    """The :class:`Requant` of ``g``, or None when the accumulator bound of the module docstring
    does not hold or a multiplier is negative (the plain kernel is then used)."""
    g = _constant_channels(g)
    w64 = g.w.astype(np.int64)
    folded = g.bias.astype(np.int64) - g.zp_in * w64.sum(axis=1)
    left = np.maximum(g.shift.astype(np.int64), 0)
    right = np.maximum(-g.shift.astype(np.int64), 0)
    reach = (np.abs(folded) + 128 * np.abs(w64).sum(axis=1)) << left  # max |acc + bias'| << left
    if np.any(reach >= ACC_BOUND) or np.any(g.mult < 0):
        return None
    mult = g.mult.astype(np.int64)
    if not np.all(right >= 1):
        return Requant(np.stack([2 * folded, mult, left, right], axis=1).astype(np.int32), False, g.zp_out)
    half = np.left_shift(1, right - 1)
    # |y| <= 2^29 (SMMULR halves |2 x| < 2^30): the rounding add stays in int32 with the zero point
    with_zp = half + (g.zp_out << right)
    if np.all(ACC_BOUND + np.abs(with_zp) < (1 << 31)):
        return Requant(np.stack([2 * folded, mult, with_zp, right], axis=1).astype(np.int32), True, 0)
    return Requant(np.stack([2 * folded, mult, half, right], axis=1).astype(np.int32), True, g.zp_out)


def _constant_channels(g: Gemm) -> Gemm:
    """``g`` with each channel whose weights are all zero (a constant output) given small
    constants with the same output. Pruned networks park biases of +-2^30 there (vww_96's
    later 1x1 convs), beyond the fast requantization's bound: bias 4 d, multiplier 2^30 (one
    half) and one right shift give exactly d = the channel's output minus the output zero point.
    Only channels without a left shift (the plain kernel shifts an int32 left, which may wrap)."""
    dead = ~g.w.any(axis=1) & (g.shift <= 0)
    if not dead.any():
        return g
    out = np.clip(multiply_by_quantized_multiplier(g.bias, g.mult, g.shift) + g.zp_out, g.lo, g.hi)
    d = (out - g.zp_out).astype(np.int64)
    return replace(g, bias=np.where(dead, 4 * d, g.bias).astype(np.int32),
                   mult=np.where(dead, 1 << 30, g.mult).astype(np.int32),
                   shift=np.where(dead, -1, g.shift).astype(np.int32))


def choose_tile(pixels: int, co: int) -> tuple[int, int]:
    """Register block (pixels, channels) that divides the loop extents, cheapest first.

    Executed instructions per 4 reduction steps of an mb x nb tile: mb + nb loads, 2 (mb + nb)
    SXTB16 and 2 mb nb SMLAD, so 2 x 2 costs 1.25 per MAC, 1 x 5 1.4, 1 x 4 1.44, 1 x 2 1.63,
    1 x 1 2 (measured on qemu-m4: GCC keeps 2 x 2 and 1 x 5 tiles in registers).
    Exact division keeps every tile full (no predicated remainder that tensorize cannot match).
    """
    best = None
    for mb in (4, 3, 2, 1):
        for nb in (5, 4, 3, 2, 1):
            if mb * nb > MAX_TILE_ACCS + (mb == 1) or pixels % mb or co % nb:
                continue
            cost = (3 * (mb + nb) + 2 * mb * nb) / (4 * mb * nb)
            if best is None or cost < best[0]:
                best = (cost, mb, nb)
    return best[1], best[2]


# ----------------------------------------------------------------------------- TE
def gemm_te(g: Gemm, rq: Requant, name: str):
    """Placeholders (x [P, K], w [CO, K], q [CO, 4]) and the requantized int8 output [P, CO].

    The output block calls ``pn_requant`` (:data:`COMMON_C`) on each accumulator."""
    x = te.placeholder((g.pixels, g.k), "int8", name="x")
    w = te.placeholder((g.co, g.k), "int8", name="w")
    q = te.placeholder(rq.table.shape, "int32", name="q")
    r = te.reduce_axis((0, g.k), "r")
    acc = te.compute((g.pixels, g.co), lambda p, c: te.sum(x[p, r].astype("int32") * w[c, r].astype("int32"), axis=r),
                     name=name + "_acc")

    out = te.compute((g.pixels, g.co), lambda p, c: requant_call(g, rq, q, c, acc[p, c]), name=name)
    return x, w, q, out


def requant_call(g: Gemm, rq: Requant, q, c, acc):
    """``pn_requant`` of accumulator ``acc`` for output channel ``c`` (table ``q``, a placeholder).
    A column equal for every channel (per-tensor weights: M and the shifts) is passed as a
    literal: no load, and shifts by an immediate."""
    def param(j):
        uniform = j > 0 and bool(np.all(rq.table[:, j] == rq.table[0, j]))
        return tirx.const(int(rq.table[0, j]), "int32") if uniform else q[c, j]

    return tirx.call_extern("int8", "pn_requant", acc, *[param(j) for j in range(4)], rq.zp_arg, g.lo, g.hi,
                            int(rq.fast))


# ----------------------------------------------------------------------------- tensor intrinsic
_INTRINSICS: set[str] = set()


def microkernel_name(mb: int, nb: int, unroll: int = UNROLL) -> str:
    """``pn_gemm_{mb}x{nb}``, ``_u{unroll}`` after it for another unroll than the default."""
    return f"pn_gemm_{mb}x{nb}" + ("" if unroll == UNROLL else f"_u{unroll}")


def gemm_intrinsic(mb: int, nb: int, k: int, unroll: int = UNROLL) -> str:
    """Register (once) and name the tensor intrinsic ``C[mb, nb] += A[mb, k] . B[nb, k]^T``
    (int8 in, int32 accumulators in ``local`` scope), implemented by
    :func:`microkernel_name` ``(mb, nb, unroll)``. A and B rows may be strided (pixels and
    channels of the enclosing buffers)."""
    name = f"patchnet_gemm_{mb}x{nb}x{k}" + ("" if unroll == UNROLL else f"_u{unroll}")
    fn = microkernel_name(mb, nb, unroll)
    if name in _INTRINSICS:
        return name

    # Blockize drops unit loops: a 1-pixel or 1-channel tile's description has no loop over that axis.
    desc = {(True, True): _desc_2d, (True, False): _desc_rows, (False, True): _desc_cols,
            (False, False): _desc_dot}[(mb > 1, nb > 1)](mb, nb, k)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int32()
        sb = T.int32()
        sc = T.int32()
        A = T.match_buffer(a, (mb, k), "int8", offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (nb, k), "int8", offset_factor=1, strides=[sb, 1])
        C = T.match_buffer(c, (mb, nb), "int32", offset_factor=1, strides=[sc, 1], scope="local")
        with T.sblock("root"):
            T.reads(C[0:mb, 0:nb], A[0:mb, 0:k], B[0:nb, 0:k])
            T.writes(C[0:mb, 0:nb])
            T.evaluate(T.call_extern("int32", fn, A.access_ptr("r"), B.access_ptr("r"),
                                     C.access_ptr("rw"), sa, sb, sc, k))

    s_tir.TensorIntrin.register(name, desc, impl, override=True)
    _INTRINSICS.add(name)
    return name


def _desc_2d(mb: int, nb: int, k: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (mb, k), "int8", offset_factor=1)
        B = T.match_buffer(b, (nb, k), "int8", offset_factor=1)
        C = T.match_buffer(c, (mb, nb), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:mb, 0:nb], A[0:mb, 0:k], B[0:nb, 0:k])
            T.writes(C[0:mb, 0:nb])
            for i, j, kk in T.grid(mb, nb, k):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                    C[vi, vj] = C[vi, vj] + T.Cast("int32", A[vi, vk]) * T.Cast("int32", B[vj, vk])

    return desc


def _desc_rows(mb: int, nb: int, k: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (mb, k), "int8", offset_factor=1)
        B = T.match_buffer(b, (1, k), "int8", offset_factor=1)
        C = T.match_buffer(c, (mb, 1), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:mb, 0:1], A[0:mb, 0:k], B[0:1, 0:k])
            T.writes(C[0:mb, 0:1])
            for i, kk in T.grid(mb, k):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, kk])
                    C[vi, 0] = C[vi, 0] + T.Cast("int32", A[vi, vk]) * T.Cast("int32", B[0, vk])

    return desc


def _desc_cols(mb: int, nb: int, k: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (1, k), "int8", offset_factor=1)
        B = T.match_buffer(b, (nb, k), "int8", offset_factor=1)
        C = T.match_buffer(c, (1, nb), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:1, 0:nb], A[0:1, 0:k], B[0:nb, 0:k])
            T.writes(C[0:1, 0:nb])
            for j, kk in T.grid(nb, k):
                with T.sblock("update"):
                    vj, vk = T.axis.remap("SR", [j, kk])
                    C[0, vj] = C[0, vj] + T.Cast("int32", A[0, vk]) * T.Cast("int32", B[vj, vk])

    return desc


def _desc_dot(mb: int, nb: int, k: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (1, k), "int8", offset_factor=1)
        B = T.match_buffer(b, (1, k), "int8", offset_factor=1)
        C = T.match_buffer(c, (1, 1), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:1, 0:1], A[0:1, 0:k], B[0:1, 0:k])
            T.writes(C[0:1, 0:1])
            for kk in T.serial(k):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [kk])
                    C[0, 0] = C[0, 0] + T.Cast("int32", A[0, vk]) * T.Cast("int32", B[0, vk])

    return desc


# ----------------------------------------------------------------------------- schedule
def schedule_gemm(sch: s_tir.Schedule, out_block, acc_block, mb: int, nb: int, k: int,
                  per_channel: tuple[tuple[str, int], ...] = ()):
    """Tile ``out_block`` by mb pixels x nb channels and tensorize ``acc_block`` per tile;
    returns the pixel-tile and channel-tile loops (where per-pixel-tile operands can be placed).

    ``out_block``'s last two loops must be pixels and output channels (extents divisible by mb
    and nb), ``acc_block`` (``acc[.., p, c] = sum_k x[.., p, k] * w[c, k]``, k innermost) its
    producer, and every block between them (requantization steps, a residual add's operands)
    elementwise: those are computed per element in registers. ``per_channel``: (block name,
    read index) of per-channel constant tables, copied once per tile so the C compiler keeps
    them in registers across the tile's int8 stores (which may alias them).

    Reuse inside another schedule (e.g. the patch stage, one PrimFunc with producers computed
    at a tile loop): once the conv's output and accumulator blocks are computed at the tile
    loop, and before the conv's own producers are (they must find the accumulator under the
    tile loop), pass both blocks; the enclosing loops stay, only the last two loops of
    ``out_block`` are split. A 4-D NHWC block (b, i, j, c) tiles along j (pixels of one row; the
    micro-kernel's row stride is the channel count), so mb must divide the tile's row width.
    The accumulator must be the raw product (the input zero point folded into a bias, no
    padding guards), as :func:`gemm_te` writes it. ``tests/schedules/test_pointwise.py`` runs
    this on a 4-D conv under a row-tile loop.
    """
    po, co = tile_gemm(sch, out_block, acc_block, [None, mb], [None, nb], per_channel)
    tensorize_gemm(sch, acc_block, mb, nb, k, _depth(sch, co))
    return po, co


def tile_gemm(sch: s_tir.Schedule, out_block, acc_block, pixel_factors, channel_factors,
              per_channel: tuple[tuple[str, int], ...] = (), channels_outer: bool = False):
    """The loop half of :func:`schedule_gemm`: ``out_block``'s last two loops split by
    ``pixel_factors`` / ``channel_factors`` (``[outer, inner]``: ints, or a tuner's sampled
    factors), the accumulator per tile in ``local`` scope, the elementwise blocks per element,
    per-channel tables copied per channel tile; :func:`tensorize_gemm` then makes the tile one
    micro-kernel call. ``channels_outer``: the channel-tile loop outside the pixel-tile loop
    (the tables loaded once per channel tile, for every pixel tile; default: inside). Returns
    the outer and inner tile loops."""
    loops = sch.get_loops(out_block)
    p, c = loops[-2], loops[-1]
    po, pi = sch.split(p, pixel_factors)
    co, ci = sch.split(c, channel_factors)
    outer, inner = (co, po) if channels_outer else (po, co)
    sch.reorder(outer, inner, pi, ci)
    _elementwise_in_registers(sch, out_block, acc_block, ci)
    sch.compute_at(acc_block, inner)
    sch.set_scope(acc_block, 0, "local")
    # after the accumulation (compute_at inserts before the first consumer): loaded after the
    # micro-kernel, the constants do not hold registers during the reduction
    for name, idx in per_channel:
        cached = sch.cache_read(sch.get_sblock(name), idx, "local")
        sch.compute_at(cached, co, preserve_unit_loops=True)
        for lp in sch.get_loops(cached)[_depth(sch, co):]:
            sch.unroll(lp)
    for lp in (pi, ci):
        sch.unroll(lp)
    return outer, inner


def tensorize_gemm(sch: s_tir.Schedule, acc_block, mb: int, nb: int, k: int, depth: int,
                   unroll: int = UNROLL) -> None:
    """The accumulator tile under the first ``depth`` loops (down to the channel-tile loop) as
    one ``pn_gemm_{mb}x{nb}`` call (:func:`microkernel_name`); its init unrolled (mb x nb stores)."""
    tile = sch.get_loops(acc_block)[depth:]
    init = sch.decompose_reduction(acc_block, tile[0])
    sch.tensorize(tile[0], gemm_intrinsic(mb, nb, k, unroll))
    for lp in sch.get_loops(init)[depth:]:
        sch.unroll(lp)
    _refresh_dependencies(sch)


def _refresh_dependencies(sch: s_tir.Schedule) -> None:
    """Tensorize leaves the root scope's producer/consumer records pointing at the replaced
    accumulator block: a later ``compute_at`` of the conv's producer (the patch stage places
    producers after consumers) would fail. Replacing the root block rebuilds them."""
    root = sch.get_sblock("root")
    sch.annotate(root, "patchnet_refresh", 1)
    sch.unannotate(sch.get_sblock("root"), "patchnet_refresh")


def _depth(sch: s_tir.Schedule, loop) -> int:
    """Number of loops from the root down to and including ``loop``."""
    n, sref = 0, sch.get_sref(loop)
    while sref is not None and isinstance(sref.stmt, tirx.For):
        n, sref = n + 1, sref.parent
    return n


def _elementwise_in_registers(sch: s_tir.Schedule, out_block, acc_block, loop) -> None:
    """Compute every block between ``acc_block`` and ``out_block`` under ``loop`` (one element
    per iteration), in ``local`` scope: consumers first, so each lands where its consumer is."""
    acc_name = sch.get(acc_block).name_hint
    between = []
    frontier = [out_block]
    while frontier:
        blk = frontier.pop()
        for prod in sch.get_producers(blk):
            if sch.get(prod).name_hint != acc_name and all(not sch.get(prod).same_as(sch.get(b)) for b in between):
                between.append(prod)
                frontier.append(prod)
    for blk in between:
        sch.compute_at(blk, loop, preserve_unit_loops=True)
        sch.set_scope(blk, 0, "local")


# ----------------------------------------------------------------------------- C micro-kernels
#: Helpers every pointwise kernel calls: DSP instructions (ACLE or inline asm on a Cortex-M with
#: the DSP extension, plain C elsewhere, so the same kernels.c also builds on a host), and the
#: requantization. Written once at the top of kernels.c.
COMMON_C = r"""/* ---- tvm-patchnet pointwise GEMM helpers (SXTB16 / SMLAD / SMMULR) ---- */
#include <string.h>
#define PN_INLINE static inline __attribute__((always_inline))
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
/* halfwords = sign-extended bytes 0 and 2 */
PN_INLINE int32_t pn_sx_even(uint32_t x) { return (int32_t)__sxtb16((int8x4_t)x); }
/* halfwords = sign-extended bytes 1 and 3 (SXTB16's built-in rotation: one instruction) */
PN_INLINE int32_t pn_sx_odd(uint32_t x) { int32_t r; __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x)); return r; }
PN_INLINE int32_t pn_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
/* (a * b + 2^31) >> 32 */
PN_INLINE int32_t pn_smmulr(int32_t a, int32_t b) { int32_t r; __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b)); return r; }
PN_INLINE int32_t pn_ssat8(int32_t v) { return __ssat(v, 8); }
/* GCC would hoist the loads of an unrolled reduction above earlier steps and spill registers:
   one empty barrier per 4-step keeps each step's loads next to its MACs */
#define PN_STEP_BARRIER() __asm__ volatile("" ::: "memory")
#else
PN_INLINE int32_t pn_sx_pair(uint32_t x) {
  return (int32_t)(((uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xffu)) | ((uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xffu) << 16));
}
PN_INLINE int32_t pn_sx_even(uint32_t x) { return pn_sx_pair(x); }
PN_INLINE int32_t pn_sx_odd(uint32_t x) { return pn_sx_pair(x >> 8); }
PN_INLINE int32_t pn_smlad(int32_t a, int32_t b, int32_t acc) {
  int32_t lo = (int32_t)(int16_t)(a & 0xffff) * (int32_t)(int16_t)(b & 0xffff);
  int32_t hi = (int32_t)(int16_t)((uint32_t)a >> 16) * (int32_t)(int16_t)((uint32_t)b >> 16);
  return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
PN_INLINE int32_t pn_smmulr(int32_t a, int32_t b) { return (int32_t)(((int64_t)a * b + 0x80000000LL) >> 32); }
PN_INLINE int32_t pn_ssat8(int32_t v) { return v < -128 ? -128 : (v > 127 ? 127 : v); }
#define PN_STEP_BARRIER() ((void)0)
#endif
PN_INLINE uint32_t pn_ld32(const int8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
/* saturate to int8, then the fused activation: constant tests, only a real clamp costs instructions */
PN_INLINE int8_t pn_clamp8(int32_t v, int32_t lo, int32_t hi)
{
  v = pn_ssat8(v);
  if (lo > -128 && v < lo) v = lo;
  if (hi < 127 && v > hi) v = hi;
  return (int8_t)v;
}

/* TFLite Micro's MultiplyByQuantizedMultiplier(acc + bias, M, shift) + zero point, clamped to
   [lo, hi]; exact when |acc + bias| << left < 2^29 and M >= 0 (checked when the model compiles).
   bias2 = 2 bias, as SaturatingRoundingDoublingHighMul(x, M) = floor((x M + 2^30) / 2^31)
   = SMMULR(2 x, M) and 2 acc + bias2 is one instruction (add with a shifted operand).
   fast != 0: every channel shifts right by p3 = r >= 1, p2 = 2^(r-1) (+ zp 2^r when the
   zero point is folded in, zp = 0); RoundingDivideByPOT is then (y + 2^(r-1) - [y < 0]) >> r.
   Otherwise p2, p3 = left, right shift (gemmlowp's mask and threshold form). */
PN_INLINE int8_t pn_requant(int32_t acc, int32_t bias2, int32_t m, int32_t p2, int32_t p3,
                            int32_t zp, int32_t lo, int32_t hi, int32_t fast)
{
  int32_t x2 = (int32_t)((uint32_t)acc << 1) + bias2, z;
  if (fast) {
    int32_t y = pn_smmulr(x2, m);
    z = (y + p2 + (y >> 31)) >> p3;
  } else {
    int32_t y = pn_smmulr((int32_t)((uint32_t)x2 << p2), m);
    int32_t mask = (int32_t)((1u << p3) - 1u);
    int32_t threshold = (mask >> 1) + (y < 0);
    z = (y >> p3) + ((y & mask) > threshold);
  }
  return pn_clamp8(z + zp, lo, hi);
}

/* MultiplyByQuantizedMultiplier(x, M, shift) with literal M >= 0, left, right shifts, exact when
   |x << left| < 2^29: every step folds to immediates. */
PN_INLINE int32_t pn_mbqm_lit(int32_t x, int32_t m, int32_t left, int32_t right)
{
  int32_t y = pn_smmulr((int32_t)((uint32_t)x << (left + 1)), m);
  return right ? (y + (1 << (right - 1)) + (y >> 31)) >> right : y;
}

/* TFLite Micro's int8 ADD of a and b (zero points za, zb; both rescaled after a 2^20 left
   shift, summed, requantized to zero point zy, clamped to [lo, hi]), every constant a literal. */
PN_INLINE int8_t pn_add(int32_t a, int32_t b, int32_t za, int32_t ma, int32_t ra, int32_t zb, int32_t mb,
                        int32_t rb, int32_t mo, int32_t lo_shift, int32_t ro, int32_t zy, int32_t lo, int32_t hi)
{
  int32_t sa = pn_mbqm_lit((int32_t)((uint32_t)(a - za) << 20), ma, 0, ra);
  int32_t sb = pn_mbqm_lit((int32_t)((uint32_t)(b - zb) << 20), mb, 0, rb);
  return pn_clamp8(pn_mbqm_lit(sa + sb, mo, lo_shift, ro) + zy, lo, hi);
}
"""


def gemm_microkernel_c(mb: int, nb: int, unroll: int = UNROLL) -> str:
    """``pn_gemm_{mb}x{nb}(a, b, c, sa, sb, sc, k)`` (:func:`microkernel_name`):
    ``c[i * sc + j] += sum_k a[i * sa + k] * b[j * sb + k]`` for i < mb, j < nb, as
    ``static inline`` C; its 4-step loop unrolled ``unroll`` times.

    Four reduction steps at a time: one 32-bit load per row, SXTB16 splits it into even and odd
    bytes (both operands alike, so (a0, a2).(b0, b2) + (a1, a3).(b1, b3) is the 4-term dot
    product and no repacking is needed), two SMLADs per accumulator. The last k % 4 steps are
    scalar. ``k`` is a constant at every call (the intrinsic passes it), so once inlined the
    loop is unrolled by GCC and the strides fold into load offsets.
    """
    rows = [f"a{i}" for i in range(mb)]
    cols = [f"b{j}" for j in range(nb)]
    accs = [[f"c{i}{j}" for j in range(nb)] for i in range(mb)]
    signature = (f"PN_INLINE int32_t {microkernel_name(mb, nb, unroll)}(const int8_t *a, const int8_t *b, int32_t *c, int32_t sa, "
                 "int32_t sb, int32_t sc, int32_t k_len)")
    lines = [signature, "{"]
    lines += [f"  const int8_t *a{i} = a + {i} * sa;" for i in range(mb)]
    lines += [f"  const int8_t *b{j} = b + {j} * sb;" for j in range(nb)]
    lines += [f"  int32_t {accs[i][j]} = c[{i} * sc + {j}];" for i in range(mb) for j in range(nb)]
    # (void): a one-row operand leaves its stride unused
    lines += ["  int32_t k = 0;", "  (void)sa; (void)sb;", f"#pragma GCC unroll {unroll}",
              "  for (; k + 4 <= k_len; k += 4) {", "    PN_STEP_BARRIER();"]
    for v in rows + cols:
        lines.append(f"    uint32_t {v}w = pn_ld32({v} + k);")
        lines.append(f"    int32_t {v}e = pn_sx_even({v}w), {v}o = pn_sx_odd({v}w);")
    for i in range(mb):
        for j in range(nb):
            c = accs[i][j]
            lines.append(f"    {c} = pn_smlad(a{i}e, b{j}e, {c}); {c} = pn_smlad(a{i}o, b{j}o, {c});")
    lines += ["  }", "  for (; k < k_len; k++) {"]
    for i in range(mb):
        for j in range(nb):
            lines.append(f"    {accs[i][j]} += (int32_t)a{i}[k] * (int32_t)b{j}[k];")
    lines += ["  }"]
    lines += [f"  c[{i} * sc + {j}] = {accs[i][j]};" for i in range(mb) for j in range(nb)]
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- kernels
def _gemm_kernel(g: Gemm, name: str, final=None):
    """The scheduled GEMM of ``g``: (PrimFunc, constant args, preamble), or None when the fast
    requantization does not apply. ``final(out) -> (extra placeholders, output tensor)`` adds an
    elementwise epilogue (the residual add) after the requantized output."""
    rq = requant_table(g)
    if rq is None:
        return None
    x, w, q, out = gemm_te(g, rq, name)
    extra, result = final(out) if final else ([], out)
    sch = s_tir.Schedule(te.create_prim_func([x, w, q, *extra, result]))
    mb, nb = choose_tile(g.pixels, g.co)
    reads = [r.source.name for r in sch.get(sch.get_sblock(name)).reads]
    schedule_gemm(sch, sch.get_sblock(result.op.name), sch.get_sblock(name + "_acc"), mb, nb, g.k,
                  per_channel=((name, reads.index("q")),))
    return sch.mod["main"], [g.w, rq.table], (COMMON_C, gemm_microkernel_c(mb, nb))


def op_kernel(graph: Graph, op: Op, target: str) -> KernelFunc | None:
    """A 1x1 conv (stride 1, no padding) or fully connected layer as a tensorized GEMM, or None."""
    g = match_gemm(graph, op)
    built = _gemm_kernel(g, op.name) if g is not None else None
    if built is None:
        return None
    func, consts, preamble = built
    return KernelFunc(func, [g.x, *consts, op.outputs[0]], preamble)


def accumulate_kernel(graph: Graph, conv: Op, add: Op, target: str) -> KernelFunc | None:
    """A 1x1 conv and the residual add of its output in one kernel (the contract of
    :func:`tvm_patchnet.schedules.default.accumulate_kernel`: callable with the output over the
    skip input; each element of skip is read right before the same element is written), or None.
    The add runs per element in registers after the tile's requantized conv output
    (:func:`residual_epilogue`)."""
    g = match_gemm(graph, conv)
    if g is None or conv.kind != "conv2d":
        return None
    built = _gemm_kernel(g, conv.name, residual_epilogue(graph, conv, add, (g.pixels, g.co)))
    if built is None:
        return None
    func, consts, preamble = built
    return KernelFunc(func, [g.x, *consts, skip_input(graph, conv, add), add.outputs[0]], preamble)


def skip_input(graph: Graph, conv: Op, add: Op) -> str:
    """The residual add's operand that is not the conv's output."""
    return next(a for a in graph.activation_inputs(add) if a != conv.outputs[0])


def residual_epilogue(graph: Graph, conv: Op, add: Op, shape: tuple[int, ...]):
    """``final(conv_out) -> ([skip placeholder], add output)`` over ``shape`` (a view of the
    tensors: [P, CO] or NHWC): ``pn_add`` (:data:`COMMON_C`, literal constants) where
    :func:`add_constants` applies, else the plain TE add on views of its tensors."""
    lits = add_constants(graph, add)
    if lits is not None:
        conv_first = add.inputs[0] == conv.outputs[0]

        def final(conv_out):
            skip_ph = te.placeholder(shape, "int8", name="skip")

            def body(*i):
                a, b = (conv_out(*i), skip_ph(*i)) if conv_first else (skip_ph(*i), conv_out(*i))
                return tirx.call_extern("int8", "pn_add", a.astype("int32"), b.astype("int32"), *lits)

            return [skip_ph], te.compute(shape, body, name=add.name)

        return final
    views = {n: replace(graph.t(n), shape=shape) for n in (conv.outputs[0], skip_input(graph, conv, add), add.outputs[0])}
    add_low = lower_op(replace(graph, tensors={**graph.tensors, **views}), add)

    def final(conv_out):
        skip_ph = te.placeholder(shape, "int8", name="skip")
        return [skip_ph], add_low.compute(*[conv_out if a == conv.outputs[0] else skip_ph for a in add_low.args])

    return final


def add_constants(graph: Graph, add: Op) -> list[int] | None:
    """``pn_add``'s literal arguments after a and b (zero points, multipliers, shifts, clamp),
    computed as :func:`tvm_patchnet.kernels.elementwise.lower_add` does; None where its bound
    (every ``pn_mbqm_lit`` input below 2^29 in magnitude) or sign assumptions do not hold."""
    a, b, y = graph.t(add.inputs[0]), graph.t(add.inputs[1]), graph.t(add.outputs[0])
    m1, s1, m2, s2, mo, so = add_multipliers(graph, add)
    lo, hi = add.attrs["act_range"]
    # |a - za| <= 255, so |(a - za) 2^20| < 2^28; each rescaled input is at most half of that
    # (ratio <= 1/2), their sum below 2^28 + 2: shifted left by so it must stay below 2^29
    if s1 > 0 or s2 > 0 or so > 0 or min(m1, m2, mo) < 0 or ADD_LEFT_SHIFT != 20:
        return None
    return [int(a.zp), m1, -s1, int(b.zp), m2, -s2, mo, max(so, 0), -so, int(y.zp), int(lo), int(hi)]
