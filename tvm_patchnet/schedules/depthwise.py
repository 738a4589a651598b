"""Depthwise convs for the Cortex-M DSP extension (Cortex-M4 / M7), bit for bit equal to the plain
TE kernel (``kernels/conv.py``) and TensorFlow Lite Micro.

The same integer arithmetic, rearranged so that few instructions are spent per MAC. Measured on
qemu-m4 (executed instructions per MAC of the whole kernel, plane copy and borders included;
default kernel -> this one): in place 3x3 s1 48x48x16 23.2 -> 2.85, 3x3 s2 48x48x48 25.3 -> 3.99,
5x5 s1 12x12x96 17.1 -> 2.98, 7x7 s1 12x12x96 14.3 -> 3.09; not in place about the same.

- **Input zero point folded into the bias**: ``sum((x - zp_in) * w) = sum(x * w) - zp_in * sum(w)``
  over *every* tap, where a padded tap reads ``zp_in`` (``if_then_else(inside, x, zp_in)``), so
  padding adds ``zp_in * w - zp_in * w = 0``, as TFLite's skipped taps do.
- **Window unrolled in the expression** (:func:`depthwise_compute`): one block per output, its
  accumulator a register. Each tap is one MAC micro-kernel with the tap's weight in one half of
  a packed int16 pair (SMLABB / SMLABT: a 3x3 window's weights fit in five registers).
- **Interior / border split** (``loop_partition`` of the rows, then of the interior rows'
  columns): in the interior the tap guards are provably true and TIR's simplifier removes them.
- **Register tiles**: interior outputs ``tile`` at a time along a row (:func:`tile_width`), the
  tile's input window copied into a ``local`` array first (``cache_read``), which the C compiler
  keeps in registers: each input value is loaded once for the tile. (Stores to the int8 output
  may alias any int8 buffer: reading the input itself, every output reloads its window.)
- **Per-channel constants once per channel**: channel loop outermost; under it the channel's
  weights packed into a ``local`` array (flash keeps the int8 weights) and the requantization
  constants copied into ``local`` arrays, which the C compiler keeps in registers.
- **Requantization in a few instructions** (:data:`PREAMBLE_C`, bit-exact): for a right shift
  ``e >= 1`` (multiplier below 0.5, the usual case) TFLite Micro's doubling high multiply is
  ``(acc * M + 2^30) >> 31`` for either sign (its nudge and C's truncation toward zero add up to
  2^30), i.e. the rounded high word of ``2 * acc * M``: one SMMULR, the kernel accumulating
  ``2 * acc`` with doubled weights and bias. Then ``(y + 2^(e-1) + zp_out * 2^e + (y >> 31)) >> e``
  (round half away from zero, the output zero point added before the shift as a multiple of
  ``2^e``) and an SSAT. Where an op has a channel with ``e = 0`` (multiplier >= 0.5), or where the
  int32 bounds cannot be proved (huge biases), the builders return None: the default kernel.

In place (MCUNet), each channel's input plane is first copied into the one-channel scratch
``ws`` (exactly :func:`~tvm_patchnet.analysis.liveness.plane_hw`, as the default kernel): the
windows then read the plane, and output channel c is written where input channel c was.

Reuse inside the patch stage: :func:`depthwise_compute` builds the fast form on any input
(``src_index``: a patch buffer with margins filled with the zero point needs no guard at all),
and :func:`schedule_depthwise` schedules its block inside any ``s_tir.Schedule``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir, te, tirx
from tvm.tirx import const

from ..analysis.liveness import plane_hw
from ..quant import requantize_params

_I32, _I64 = "int32", "int64"


# ----------------------------------------------------------------------------- constants
@dataclass
class DwConsts:
    """Per-output-channel constants of the fast form (NumPy, one entry per output channel)."""

    weights: np.ndarray  # int8 [C, kh * kw]: the weights, taps in row-major order
    bias: np.ndarray  # int32: 2 * (bias - zp_in * sum(w))
    mult: np.ndarray  # int32 M
    right: np.ndarray  # int32 e >= 1
    rnd: np.ndarray  # int32 2^(e-1) + zp_out * 2^e


def fast_consts(graph, op) -> DwConsts | None:
    """The fast form's constants, or None where it is not provably bit-exact."""
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    if x.dtype != "int8" or w.dtype != "int8" or y.dtype != "int8" or x.scale is None or y.scale is None:
        return None
    if w.zero_point is not None and np.any(w.zero_point):  # symmetric weights only (as TFLite's int8)
        return None
    oc = y.shape[3]
    s_w = np.broadcast_to(w.scale.reshape(-1), (oc,)) if w.scale.size > 1 else np.full(oc, w.s)
    mult, shift = requantize_params(x.s, s_w, y.s)
    mult, shift = np.asarray(mult, np.int64).reshape(-1), np.asarray(shift, np.int64).reshape(-1)
    if np.any(shift >= 0) or np.any(mult < 0):
        return None
    bias_name = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else None
    bias = graph.t(bias_name).data.astype(np.int64).reshape(-1) if bias_name else np.zeros(oc, np.int64)
    wt = np.asarray(w.data).reshape(w.shape[1], w.shape[2], oc).transpose(2, 0, 1).astype(np.int64)
    wsum = wt.reshape(oc, -1).sum(axis=1)
    folded = bias - int(x.zp) * wsum
    e = -shift
    rnd = (np.int64(1) << (e - 1)) + (int(y.zp) << e)
    # |acc| <= |bias| + 255 * sum|w| (the plain kernel's int32 accumulator, exact); then
    # |y| <= |acc| + 1, and y + rnd + (y >> 31) must not overflow int32. The folded bias is only
    # an intermediate: int32 wrap-around cancels, but keep it an int32 constant.
    acc_max = np.abs(bias) + 255 * np.abs(wt).reshape(oc, -1).sum(axis=1)
    lim = (1 << 31) - 1
    # The kernel accumulates 2 * acc (doubled weights and bias): it must fit int32 too.
    if np.any(2 * acc_max >= lim) or np.any(acc_max + 2 + np.abs(rnd) > lim) or \
            np.any(2 * np.abs(folded) > lim) or np.any(e > 31):
        return None
    return DwConsts(wt.reshape(oc, -1).astype(np.int8), (2 * folded).astype(np.int32), mult.astype(np.int32),
                    e.astype(np.int32), rnd.astype(np.int32))


# ----------------------------------------------------------------------------- TE
@dataclass
class Geometry:
    """One depthwise conv over an input of ``in_hw`` (plane or map), output ``out_hw``."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilation: tuple[int, int]
    before: tuple[int, int]  # padding before (top, left)
    zp_in: int
    act: tuple[int, int]

    def guards(self, axis: int) -> tuple[bool, bool]:
        """Sides (low, high) of ``axis`` where a window can read outside the input."""
        n, o, k = self.in_hw[axis], self.out_hw[axis], self.kernel[axis]
        s, d, p = self.strides[axis], self.dilation[axis], self.before[axis]
        return p > 0, (o - 1) * s - p + (k - 1) * d >= n

    def interior(self, axis: int) -> tuple[int, int]:
        """Output range [lo, hi) whose windows lie wholly inside the input along ``axis``."""
        n, o, k = self.in_hw[axis], self.out_hw[axis], self.kernel[axis]
        s, d, p = self.strides[axis], self.dilation[axis], self.before[axis]
        lo = min(o, -(-p // s))
        hi = max(lo, min(o, (n - 1 + p - (k - 1) * d) // s + 1 if n - 1 + p - (k - 1) * d >= 0 else 0))
        return lo, hi


def geometry(graph, op, in_hw=None) -> Geometry:
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    return Geometry(tuple(in_hw or x.shape[1:3]), tuple(y.shape[1:3]), tuple(w.shape[1:3]),
                    tuple(op.attrs["strides"]), tuple(op.attrs["dilation"]), tuple(op.attrs["padding"][:2]),
                    int(x.zp), tuple(op.attrs["act_range"]))


def depthwise_compute(src, wt, bt, mt, et, rt, geo: Geometry, name: str, multiplier: int = 1,
                      src_index=None, out_valid=None, fill: int = 0):
    """TE of the fast form: one block, the window unrolled in the expression (its accumulator is
    a register of that block, so the block can be partitioned into border / interior loops).
    ``src`` is read as ``src_index(p, q, c_in)`` (default: NHWC ``src[0, p, q, c_in]``) over
    ``geo.in_hw``; ``wt`` [C, kh * kw] int8, ``bt``, ``mt``, ``et``, ``rt`` the :class:`DwConsts`.
    The weights are first packed (block ``name + "_wpack"``: ``2 * w`` of taps 2k and 2k + 1 in the
    low and high int16 halves of word k; the block accumulates ``2 * acc``, see
    :data:`PREAMBLE_C`). ``out_valid(i, j)``: a condition (or None) under which output (i, j) is
    computed; elsewhere it is ``fill`` (inside a patch stage: the frame's margins, see
    ``kernels/frame.py``). Returns the int8 output [1, oh, ow, C]."""
    (kh, kw), (sh, sw), (dh, dw), (top, left) = geo.kernel, geo.strides, geo.dilation, geo.before
    (h, w), (oh, ow) = geo.in_hw, geo.out_hw
    rows, cols = geo.guards(0), geo.guards(1)
    read = src_index or (lambda p, q, c: src[0, p, q, c])
    oc, taps = wt.shape
    lo, hi = geo.act

    def pack(c, k):  # 2 * w: low half (as unsigned 16 bits) + high half * 2^16
        lo16 = tirx.bitwise_and(wt[c, 2 * k].astype(_I32) * const(2, _I32), const(0xFFFF, _I32))
        odd = wt[c, 2 * k + 1] if taps % 2 == 0 else \
            tirx.if_then_else(2 * k + 1 < taps, wt[c, tirx.min(2 * k + 1, taps - 1)], const(0, "int8"))
        return lo16 + odd.astype(_I32) * const(2 << 16, _I32)

    wp = te.compute((oc, (taps + 1) // 2), pack, name=name + "_wpack")

    def tap(acc, i, j, c, r, s):
        p, q = i * sh + r * dh - top, j * sw + s * dw - left
        conds = ([p >= 0] if rows[0] else []) + ([p < h] if rows[1] else []) + \
            ([q >= 0] if cols[0] else []) + ([q < w] if cols[1] else [])
        v = read(p, q, c // multiplier if multiplier > 1 else c)
        if conds:
            v = tirx.if_then_else(tirx.all(*conds), v, const(geo.zp_in, "int8"))
        t = r * kw + s
        return tirx.call_extern(_I32, MAC_HI_FN if t % 2 else MAC_LO_FN, acc, v.astype(_I32), wp[c, t // 2])

    def out(b, i, j, c):
        acc = bt[c]
        for r in range(kh):
            for s in range(kw):
                acc = tap(acc, i, j, c, r, s)
        value = requant_fast(acc, mt[c], et[c], rt[c], lo, hi)
        cond = out_valid(i, j) if out_valid is not None else None
        return value if cond is None else tirx.if_then_else(cond, value, const(fill, "int8"))

    return te.compute((1, oh, ow, oc), out, name=name)


#: micro-kernels (``static inline`` C in the kernel's preamble): requantization, and one MAC with
#: the low / high int16 half of a packed weight pair (SMLABB / SMLABT: the window's weights stay
#: packed two to a register, so a 3x3 window's nine fit in five registers)
REQUANT_FN, MAC_LO_FN, MAC_HI_FN = "pn_dw_requant", "pn_dw_mac_lo", "pn_dw_mac_hi"
PREAMBLE_C = """#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

static inline int32_t pn_dw_requant(int32_t acc2, int32_t mult, int32_t right, int32_t rnd) {
  /* TFLite Micro's MultiplyByQuantizedMultiplier(acc, mult, -right) + zero point, saturated to
     int8, for right >= 1 and acc2 = 2 * acc: the doubling high multiply is
     (acc * mult + 2^30) >> 31 for either sign, i.e. the rounded high word of acc2 * mult
     (SMMULR); the division by 2^right rounds half away from zero;
     rnd = 2^(right-1) + zp_out * 2^right. */
#if defined(__ARM_FEATURE_DSP)
  int32_t y;
  __asm__("smmulr %0, %1, %2" : "=r"(y) : "r"(acc2), "r"(mult));
  return __ssat((y + rnd + (y >> 31)) >> right, 8);
#else
  int32_t y = (int32_t)(((int64_t)acc2 * mult + (1LL << 31)) >> 32);
  int32_t z = (y + rnd + (y >> 31)) >> right;
  return z < -128 ? -128 : z > 127 ? 127 : z;
#endif
}

static inline int32_t pn_dw_mac_lo(int32_t acc, int32_t x, int32_t wpair) {
#if defined(__ARM_FEATURE_DSP)
  return __smlabb(x, wpair, acc);
#else
  return acc + x * (int32_t)(int16_t)(wpair & 0xffff);
#endif
}

static inline int32_t pn_dw_mac_hi(int32_t acc, int32_t x, int32_t wpair) {
#if defined(__ARM_FEATURE_DSP)
  return __smlabt(x, wpair, acc);
#else
  return acc + x * (wpair >> 16);
#endif
}
"""


def requant_fast(acc, mult, right, rnd, lo: int, hi: int):
    """TFLite Micro's requantization of int32 ``acc`` for a right shift >= 1, zero point and clamp
    included (see the module doc): a call of the requantization micro-kernel (saturates to
    int8), then the rest of the clamp."""
    z = tirx.call_extern(_I32, REQUANT_FN, acc, mult, right, rnd)
    if lo > -128:
        z = tirx.max(z, const(lo, _I32))
    if hi < 127:
        z = tirx.min(z, const(hi, _I32))
    return z.astype("int8")


# ----------------------------------------------------------------------------- schedule
def schedule_depthwise(sch: s_tir.Schedule, out_block, geo: Geometry, plane_block=None, per_channel=(),
                       src: str | None = None, tile: int = 2, border_unroll_taps: int = 49):
    """Schedule the fast form's block ``out_block`` (:func:`depthwise_compute`) inside ``sch``:

    - its channel loop outermost (of its last four loops: batch, row, column, channel), the
      ``plane_block`` (if any) computed under it, row by row with the columns unrolled;
    - the channel's packed weights (block ``..._wpack``) computed under it into a ``local``
      array, and the read buffers named in ``per_channel`` (the requantization constants)
      copied into ``local`` arrays under it;
    - the output rows and columns split into border and interior loops (``loop_partition``:
      the interior's tap guards simplify away);
    - interior outputs ``tile`` at a time along a row: the input window of the tile (buffer
      ``src``) copied into a ``local`` register tile first, so each input value is loaded once
      for the tile's outputs (stores to an int8 output may alias any int8 buffer, so without
      the copy the compiler reloads the window for each output). The tile's outputs are
      unrolled there, and in the border loops for windows of at most ``border_unroll_taps``
      taps: every copy holds the whole window (qemu-m4, in place, 12x12x96: unrolled borders
      5x5 2.98 / 7x7 3.09 instructions per MAC and 5.9 / 12.6 KB of code; not unrolled 3.95 /
      4.15 and 3.8 / 8.0 KB; 3x3 s1 48x48x16: 2.5 KB either way).
    """
    b, i, j, c = sch.get_loops(out_block)[-4:]
    sch.reorder(c, b, i, j)
    if plane_block is not None:
        sch.compute_at(plane_block, c, preserve_unit_loops=True)
        cols = [lp for lp in sch.get_loops(plane_block)[1:] if int(sch.get(lp).extent) > 1][-1:]
        if cols:
            n = int(sch.get(cols[0]).extent)
            if n <= 64:  # whole rows: a load and a store per element, constant offsets
                sch.unroll(cols[0])
            elif n % 4 == 0:
                sch.unroll(sch.split(cols[0], [None, 4])[1])
    packs = [blk for blk in sch.get_producers(out_block) if sch.get(blk).name_hint.endswith("_wpack")]
    for blk in packs:  # the packed weights of the channel: registers
        sch.compute_at(blk, c, preserve_unit_loops=True)
        sch.set_scope(blk, 0, "local")
        sch.unroll(sch.get_loops(blk)[-1])
    for buf in per_channel:
        reads = [r.source.name for r in sch.get(out_block).reads]
        if buf not in reads:  # e.g. a clamp range of one value: the output is a constant
            continue
        cache = sch.cache_read(out_block, reads.index(buf), "local")
        sch.compute_at(cache, c, preserve_unit_loops=True)
    name = sch.get(out_block).name_hint
    (ilo, ihi), (jlo, jhi) = geo.interior(0), geo.interior(1)
    oh, ow = geo.out_hw
    tile = max(1, min(tile, ow)) if src is not None else 1
    # columns in tiles first (the loop must start at 0): a tile's outputs share their window
    if tile > 1:
        sch.split(sch.get_loops(out_block)[-1], [None, tile])
    lead = -3 if tile > 1 else -2  # the row loop, counted from the innermost
    rows = [p for p in (ilo, ihi - ilo, oh - ihi) if p > 0]
    if len(rows) > 1:
        sch.loop_partition(sch.get_loops(out_block)[lead], rows[:-1])
    tiled, small = None, geo.kernel[0] * geo.kernel[1] <= border_unroll_taps
    if ihi > ilo:
        mid = _block_over(sch, name, ilo, ihi - ilo, lead)
        mid_name = sch.get(mid).name_hint
        a, b, n = -(-jlo // tile), jhi // tile, -(-ow // tile)  # tiles wholly inside: [a, b)
        cols = [p for p in (a, b - a, n - b) if p > 0] if b > a else [n]
        if len(cols) > 1:
            sch.loop_partition(sch.get_loops(mid)[lead + 1], cols[:-1])
        if tile > 1 and b > a:
            blk = _block_over(sch, mid_name, a, b - a, -2)
            tiled = sch.get(blk).name_hint
            reads = [r.source.name for r in sch.get(blk).reads]
            if src in reads:
                win = sch.cache_read(blk, reads.index(src), "local")
                sch.compute_at(win, sch.get_loops(blk)[-2], preserve_unit_loops=True)
                for lp in sch.get_loops(win)[len(sch.get_loops(blk)) - 1:]:
                    sch.unroll(lp)
    if tile > 1:  # the tile's outputs unrolled (in the border too, where windows differ, only if small)
        for blk in _blocks(sch, name):
            loops = sch.get_loops(blk)
            if loops and int(sch.get(loops[-1]).extent) == tile and (sch.get(blk).name_hint == tiled or small):
                sch.unroll(loops[-1])
    return sch


def _blocks(sch, prefix: str) -> list:
    """The output blocks ``prefix...`` (the copies a ``loop_partition`` made)."""
    import tvm_ffi

    names: list = []
    tvm_ffi.structural_walk(sch.mod["main"].body, (s_tir.SBlock, lambda bl: names.append(bl.name_hint)))
    return [sch.get_sblock(n) for n in names if n.startswith(prefix) and "_plane" not in n and
            not n.endswith(("_common", "_partition", "_local", "_wpack"))]


def _block_over(sch, prefix: str, lo: int, n: int, axis: int):
    """The block (of a ``loop_partition``) named ``prefix...`` whose loop ``axis`` (counted from the
    innermost; a partition's loops start at its partition block) covers [lo, lo + n)."""
    for blk in _blocks(sch, prefix):
        loops = sch.get_loops(blk)
        if len(loops) >= -axis and (int(sch.get(loops[axis]).min), int(sch.get(loops[axis]).extent)) == (lo, n):
            return blk
    raise ValueError(f"no block {prefix}* over [{lo}, {lo + n}) on axis {axis}")


# ----------------------------------------------------------------------------- builders
def tile_width(geo: Geometry) -> int:
    """Outputs per interior tile along a row. Measured on qemu-m4 (instructions per MAC, in-place
    3x3 s1 48x48x16 / 3x3 s2 48x48x48 / 7x7 s2 24x24x32, tiles 1 .. 4): stride 1 gains up to a
    tile of 4 (3.28 -> 2.85 at 3x3); at stride 2 a 3x3 tile of 2 already spills its 15-value
    window (3.99 -> 4.81), while a 7x7 tile of 3 still gains (3.27 -> 2.97). Not for dilated
    windows, and the tile's window stays small (it is meant to live in registers)."""
    kw, dw, sw = geo.kernel[1], geo.dilation[1], geo.strides[1]
    if dw > 1:  # dilated: neighbouring outputs share few window columns
        return 1
    tile = 4 if sw == 1 else 1 if kw <= 3 else 3
    while tile > 1 and not tile_fits(geo, tile):
        tile -= 1
    return tile


def tile_fits(geo: Geometry, tile: int) -> bool:
    """A tile's window is a register tile, not an array: at most 256 values."""
    (kh, kw), (dh, _), sw = geo.kernel, geo.dilation, geo.strides[1]
    return ((kh - 1) * dh + 1) * ((tile - 1) * sw + kw) <= 256


@dataclass
class Workload:
    """A depthwise conv's fast form before any schedule: the PrimFunc, the arguments it is
    called with (input, constants, output), its geometry, and the names the schedule needs."""

    func: tvm.tirx.PrimFunc
    args: list
    geo: Geometry
    name: str
    in_place: bool

    def schedule(self, sch: s_tir.Schedule, tile: int | None = None, border_unroll_taps: int = 49) -> s_tir.Schedule:
        """:func:`schedule_depthwise` of this workload (``tile``: default :func:`tile_width`)."""
        return schedule_depthwise(sch, sch.get_sblock(self.name), self.geo,
                                  sch.get_sblock(self.name + "_plane") if self.in_place else None,
                                  per_channel=("bias", "mult", "right", "rnd"),
                                  src=(self.name + "_plane") if self.in_place else "x",
                                  tile=tile_width(self.geo) if tile is None else tile,
                                  border_unroll_taps=border_unroll_taps)


def workload(graph, op, in_place: bool, name: str | None = None) -> Workload | None:
    """The fast form's workload of depthwise ``op`` (blocks named ``name``, default the op's), or
    None where the fast form does not apply."""
    xn, yn = op.inputs[0], op.outputs[0]
    x = graph.t(xn)
    if len(x.shape) != 4 or x.shape[0] != 1:  # one image (the fast form's batch is 1)
        return None
    consts = fast_consts(graph, op)
    if consts is None:
        return None
    name = name or op.name
    mult = op.attrs.get("depth_multiplier", 1)
    in_hw = plane_hw(graph, op) if in_place else x.shape[1:3]
    geo = geometry(graph, op, in_hw)
    if min(in_hw) < 1 or geo.act[0] >= geo.act[1]:  # a constant output reads nothing: no plane
        return None
    oc = consts.weights.shape[0]
    xt = te.placeholder(x.shape, "int8", name="x")
    wt = te.placeholder(consts.weights.shape, "int8", name="w")
    bt, mt, et, rt = (te.placeholder((oc,), _I32, name=n) for n in ("bias", "mult", "right", "rnd"))
    plane = te.compute((1, *in_hw, x.shape[3]), lambda b, p, q, c: xt[b, p, q, c],
                       name=name + "_plane") if in_place else None
    out = depthwise_compute(plane if in_place else xt, wt, bt, mt, et, rt, geo, name, mult)
    return Workload(te.create_prim_func([xt, wt, bt, mt, et, rt, out]),
                    [xn, consts.weights, consts.bias, consts.mult, consts.right, consts.rnd, yn], geo, name, in_place)


def _build(graph, op, in_place: bool):
    from .default import KernelFunc

    w = workload(graph, op, in_place)
    if w is None:
        return None
    sch = w.schedule(s_tir.Schedule(w.func))
    return KernelFunc(sch.mod["main"], w.args, (PREAMBLE_C,))


def op_kernel(graph, op, target):
    """A depthwise conv writing its own output buffer, or None (default kernel)."""
    return _build(graph, op, in_place=False)


def in_place_kernel(graph, op, target):
    """MCUNet's in-place depthwise (the default kernel's contract and scratch plane), or None."""
    if graph.t(op.outputs[0]).shape[3] != graph.t(op.inputs[0]).shape[3]:
        return None
    return _build(graph, op, in_place=True)
