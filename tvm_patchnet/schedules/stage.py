"""The fast compute forms and schedules of :mod:`tvm_patchnet.schedules` inside the patch stage.

The patch stage (``tvm_patchnet/patch/stage.py``, ``build_stage(..., fast=True)``, used by the C
code generator) composes its ops into one PrimFunc and computes every producer at the tile loop.
Where a fast form applies, an op's plain TE kernel is replaced by the fast one, written in the
stage's extended coordinates (``kernels/frame.py``):

- the output has the op's margins; outputs in a margin are the frame's fill (``valid``), never
  computed, as the plain kernel does;
- a stage intermediate is read at ``row + top margin``: its margins hold what padding means (the
  zero point for convolutions), so the fast form tests no tap; the stage input (full size, no
  margins) is read with the plain kernel's tests at the map's borders.

The index expressions are the plain kernel's, so TIR's region inference, and with it every
buffer the lowered stage allocates, is unchanged: the planner's buffers, checked at compile
time (``codegen.c_model._check_stage_buffers``). The fast forms' own arrays are ``local``
(registers / a few hundred bytes of stack): register tiles, packed weights, an im2col of one
pixel tile. Each builder returns None where its form does not apply, and the plain kernel
runs: see each builder.

- depthwise convs (:mod:`.depthwise`), :func:`_depthwise`: :func:`~.depthwise.depthwise_compute`
  with the frame's output guard, scheduled by :func:`~.depthwise.schedule_depthwise` over the
  op's per-tile region (channel outermost, interior register tiles); in place (MCUNet) the
  channel plane is a ``cache_read`` of the input, the scratch buffer the planner counts;
- convs (:mod:`.pointwise`, :mod:`.conv`), :func:`_gemm`: the tensorized SMLAD GEMM with TFLite
  Micro's requantization (``pn_requant``), over the input (1x1) or over windows gathered per
  pixel tile (stem, 3x3); a conv accumulated into a residual skip (liveness ``accumulate``)
  takes its add along (``pn_add`` per element, reading skip element k before writing it). The
  accumulator is blockized at the root and tensorized last (:func:`_prepare_gemm`,
  :func:`_schedule_gemm`, :func:`_finish_gemm`: why there).

Measured on qemu-m4 (executed instructions per MAC of the whole stage, plain -> fast):
MobileNetV2-w0.35 r144 2x2 patches over blocks 0..2 21.08 -> 3.85, 3x3 over 0..3 21.80 -> 4.16;
vww 3x3 over 0..2 21.48 -> 3.94; resnet8 2x2 over 0..1 11.57 -> 3.75, over 0..2 12.95 -> 3.76.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from tvm import te, tirx

from ..kernels.frame import Frame, guarded, valid
from . import conv as windows
from . import depthwise, pointwise
from .pointwise import _refresh_dependencies

#: extent standing for "no edge" in a schedule's geometry (margins hold every tap)
_UNBOUNDED = 1 << 20

#: ``pn_stage_opaque(v)``: v, hidden from the C compiler's optimizer (a window gather from a
#: stage intermediate reads margins, no test: a plain byte copy, which GCC turns into a memcpy
#: call, a runtime helper the kernels must not need); costs no instruction
OPAQUE_FN = "pn_stage_opaque"
STAGE_C = """/* ---- tvm-patchnet patch stage helpers ---- */
static inline __attribute__((always_inline)) int32_t pn_stage_opaque(int32_t v) { __asm__("" : "+r"(v)); return v; }
"""


@dataclass
class FastStageOp:
    """A fast form of one stage op: as :class:`~tvm_patchnet.kernels.Lowered` (``name`` is the
    TIR block and buffer of the output, ``compute(*te args)``, ``args`` activation names or
    constant arrays), plus its schedule and the micro-kernels its C calls.

    ``schedule(sch, block, const_names)`` runs once ``block`` (the output) is computed at the
    tile loop (the stage's last op: once the tile loops exist), before the op's producers are;
    ``const_names`` are the TIR names of the constant arguments, in order. It returns the TIR
    name of an in-place channel plane, or None. ``prepare(sch)`` (if any) runs at the root
    before the stage's tile split, ``finish(sch)`` (if any) once every block is scheduled."""

    name: str
    compute: Callable
    args: list
    schedule: Callable
    #: C texts (``static inline`` micro-kernels) its C calls
    preamble: list[str]
    #: names of the graph ops this form computes (a conv and its residual add: both)
    ops: tuple[str, ...] = ()
    #: ``prepare(sch)``: root-level steps, run before the stage's tile loops are made
    prepare: Callable | None = None
    #: ``finish(sch)``: steps run once every block of the stage is scheduled
    finish: Callable | None = None


def fast_op(graph, op, frame: Frame, stage_input: str, in_place: bool, col_starts: list[int], tile_cols: int,
            last: bool, add=None) -> FastStageOp | None:
    """The fast form of stage op ``op``, or None. ``col_starts``, ``tile_cols``: the first
    extended column of the output region of the form in every tile, and its width (the loop
    the schedule tiles); ``last``: the form writes the stage's last op (its loops are the tile
    loops themselves). ``add``: the residual add ``op`` (a conv) is accumulated into: the form
    computes both, its output is the add's (block ``add.name``)."""
    if op.kind == "depthwise_conv2d" and not last and add is None:
        return _depthwise(graph, op, frame, stage_input, in_place)
    if op.kind == "conv2d":
        return _gemm(graph, op, frame, stage_input, col_starts, tile_cols, add)
    return None


# ----------------------------------------------------------------------------- convs as GEMMs
def _gemm(graph, op, frame: Frame, stage_input: str, col_starts: list[int], tile_cols: int, add
          ) -> FastStageOp | None:
    """A conv as the tensorized GEMM of :mod:`.pointwise` (a 1x1 conv: over its input; any
    other: over its windows, gathered per pixel tile into a ``local`` array ``{name}_col`` as
    :mod:`.conv` does, padded taps holding the input zero point), requantized by
    ``pn_requant``; with ``add``, followed per element by ``pn_add`` of the residual skip.

    The accumulator ``acc`` holds the raw int8 products (the input zero point is folded into
    the bias). A stage intermediate is read in its margins (what padding means there: no test);
    the stage input (full size, no margins) is read with its taps tested against the map."""
    xn = op.inputs[0]
    g = pointwise.match_gemm(graph, op)
    one_by_one = g is not None
    g = g if one_by_one else windows.match_conv(graph, op)
    if g is None or (xn != stage_input and not frame.stored_with_margins(xn)):
        return None
    if one_by_one and xn == stage_input:  # margin outputs would read outside the input
        return None
    lits = pointwise.add_constants(graph, add) if add is not None else None
    if add is not None and lits is None:
        return None
    rq = pointwise.requant_table(g)
    yn = add.outputs[0] if add is not None else op.outputs[0]  # the tensor the form writes
    x, y = graph.t(xn), graph.t(yn)
    ext_out = frame.ext_shape(yn, y.shape)
    tile = _gemm_tile(ext_out[2], col_starts, tile_cols, g.co)
    if rq is None or tile is None or (not one_by_one and tile[0] * g.k > windows.MAX_GATHER_BYTES):
        return None
    _, h_in, w_in, cin = x.shape
    kh, kw = graph.t(op.inputs[1]).shape[1:3]
    sh, sw = op.attrs["strides"]
    dh, dw = op.attrs["dilation"]
    top, left = op.attrs["padding"][:2]
    mi, mo = frame.margin(xn), frame.margin(yn)
    # extended input row of extended output row i, tap r: i * s + r * d + row0 (kernels/conv.py)
    row0, col0 = mi[0] - top - sh * mo[0], mi[1] - left - sw * mo[1]
    guard = xn == stage_input
    if not guard and (row0 < 0 or col0 < 0):
        return None
    skip = None
    if add is not None:
        skip = next(a for a in graph.activation_inputs(add) if a != op.outputs[0])
        ms = frame.margin(skip)
        if skip == stage_input or ms[0] < mo[0] or ms[1] < mo[1]:
            return None
    _, oh, ow, _ = y.shape
    fill = tirx.const(frame.fill(yn, y.zp), "int8")
    name = add.name if add is not None else op.name

    def compute(xt, wt, qt, *skip_t):
        if one_by_one:
            def tap(b, i, j, kk):
                return xt[b, i + row0, j + col0, kk]
        else:
            def window(b, i, j, kk):
                r = i * sh + kk // (kw * cin) * dh + row0
                s = j * sw + kk // cin % kw * dw + col0
                v = xt[b, r, s, kk % cin]
                if not guard:  # a plain copy GCC would make a memcpy call: each value made opaque
                    return tirx.call_extern("int32", OPAQUE_FN, v.astype("int32")).astype("int8")
                inside = tirx.all(r >= 0, r < h_in, s >= 0, s < w_in)
                return tirx.if_then_else(inside, v, tirx.const(g.zp_in, "int8"))

            col = te.compute((*ext_out[:3], g.k), window, name=op.name + "_col")

            def tap(b, i, j, kk):
                return col[b, i, j, kk]

        r = te.reduce_axis((0, g.k), "r")
        acc = te.compute(ext_out, lambda b, i, j, c: te.sum(
            tap(b, i, j, r).astype("int32") * wt[c, r].astype("int32"), axis=r), name=op.name + "_acc")
        if add is None:
            return te.compute(ext_out, lambda b, i, j, c: guarded(
                valid(i, j, mo, oh, ow), pointwise.requant_call(g, rq, qt, c, acc[b, i, j, c]), fill), name=name)
        conv = te.compute(ext_out, lambda b, i, j, c: pointwise.requant_call(g, rq, qt, c, acc[b, i, j, c]),
                          name=op.name)
        (st,) = skip_t

        def residual(b, i, j, c):
            cv = conv[b, i, j, c].astype("int32")
            sv = st[b, i - mo[0] + ms[0], j - mo[1] + ms[1], c].astype("int32")
            a_, b_ = (cv, sv) if add.inputs[0] == op.outputs[0] else (sv, cv)
            return guarded(valid(i, j, mo, oh, ow), tirx.call_extern("int8", "pn_add", a_, b_, *lits), fill)

        return te.compute(ext_out, residual, name=name)

    state = {}

    def schedule(sch, block, const_names):
        if int(sch.get(sch.get_loops(block)[-2]).extent) != tile_cols:
            raise AssertionError(f"{name}: a tile region of {tile_cols} columns expected")
        state["depth"] = _schedule_gemm(sch, block, op.name + "_acc", *tile, const_names[1],
                                        between=(op.name,) if add else ())
        if not one_by_one:  # the windows once per pixel tile, shared by every channel tile
            col = sch.get_sblock(op.name + "_col")
            pixels = sch.get_loops(sch.get_sblock(op.name + "_acc_o"))[state["depth"] - 2]  # above qo
            sch.compute_at(col, pixels)
            windows._gather_by_tap(sch, col, (kh, kw, cin))

    def finish(sch):
        _finish_gemm(sch, op.name + "_acc", *tile, g.k, state["depth"])
        if not one_by_one:  # registers / stack, never an arena buffer (after tensorize: its intrinsic reads global)
            sch.set_scope(sch.get_sblock(op.name + "_col"), 0, "local")

    return FastStageOp(name, compute, [xn, g.w, rq.table, *([skip] if skip else [])], schedule,
                       [pointwise.COMMON_C, pointwise.gemm_microkernel_c(*tile), *([STAGE_C] if not (guard or one_by_one) else [])],
                       (op.name, add.name) if add is not None else (op.name,),
                       lambda sch: _prepare_gemm(sch, op.name + "_acc", *tile, g.k), finish)


def _gemm_tile(ext_cols: int, col_starts: list[int], tile_cols: int, co: int) -> tuple[int, int] | None:
    """Register tile (pixels, channels) of a GEMM in the stage, cheapest first (cost as
    :func:`.pointwise.choose_tile`), or None. A tile of ``mb`` > 1 pixels groups the op's
    extended columns by ``mb`` (:func:`_schedule_gemm`): every tile's region must start on a
    group (``col_starts``: extended first columns) and hold whole groups, or the regions TIR
    infers would grow past the planner's."""
    best = None
    for mb in (4, 3, 2, 1):
        if mb > 1 and (ext_cols % mb or tile_cols % mb or any(s % mb for s in col_starts)):
            continue
        for nb in (5, 4, 3, 2):
            if mb * nb > pointwise.MAX_TILE_ACCS + (mb == 1) or co % nb:
                continue
            cost = (3 * (mb + nb) + 2 * mb * nb) / (4 * mb * nb)
            if best is None or cost < best[0]:
                best = (cost, mb, nb)
    return best[1:] if best else None


def _prepare_gemm(sch, acc_name: str, mb: int, nb: int, k: int) -> None:
    """At the root, before the stage's tile loops exist: the accumulator ``acc_name`` tiled by
    mb pixels x nb channels and blockized (block ``{acc_name}_o``, tensorized by
    :func:`_finish_gemm`).

    At the root its bindings are one-to-one; under the tile loop a region with a halo (tiles
    overlap) makes them non-injective, which ``blockize`` refuses (so
    :func:`.pointwise.schedule_gemm`, which blockizes there, does not apply)."""
    acc = sch.get_sblock(acc_name)
    _, _, j, c, _ = sch.get_loops(acc)
    co, ci = sch.split(c, [None, nb])
    if mb > 1:
        jo, ji = sch.split(j, [None, mb])
        sch.reorder(jo, co, ji, ci)
        acc_o = sch.blockize(ji)
    else:  # no unit pixel loop: the intrinsic's description has none
        acc_o = sch.blockize(ci)
    sch.set_scope(acc_o, 0, "local")


def _schedule_gemm(sch, out, acc_name: str, mb: int, nb: int, table: str, between=()) -> int:
    """Tile ``out`` (at the tile loop; its last two loops pixels of a row and output channels)
    by mb pixels x nb channels and compute the accumulator prepared by :func:`_prepare_gemm`
    per tile. ``between``: elementwise blocks from the accumulator to ``out`` (per element, in
    registers); ``table``: the requantization table, copied per tile."""
    loops = sch.get_loops(out)
    qo, qi = sch.split(loops[-1], [None, nb])
    if mb > 1:
        po, pi = sch.split(loops[-2], [None, mb])
        sch.reorder(po, qo, pi, qi)
    for name in between:
        blk = sch.get_sblock(name)
        sch.compute_at(blk, qi, preserve_unit_loops=True)
        sch.set_scope(blk, 0, "local")
    acc_o = sch.get_sblock(acc_name + "_o")
    depth = len(sch.get_loops(out)) - (2 if mb > 1 else 1)  # loops down to qo
    sch.compute_at(acc_o, qo, preserve_unit_loops=True)  # its init goes under qo, not above
    reads = [r.source.name for r in sch.get(out).reads]
    if table in reads:
        cached = sch.cache_read(out, reads.index(table), "local")
        sch.compute_at(cached, qo, preserve_unit_loops=True)
        for lp in sch.get_loops(cached)[depth:]:
            sch.unroll(lp)
    for lp in sch.get_loops(out)[depth:]:
        sch.unroll(lp)
    return depth


def _finish_gemm(sch, acc_name: str, mb: int, nb: int, k: int, depth: int) -> None:
    """Once every block of the stage is in place: the accumulator's init split off and its
    update tensorized into ``pn_gemm_{mb}x{nb}``. Last, as tensorize leaves the root scope's
    dependency records stale for later ``compute_at``s, and rebuilding them (as
    :func:`.pointwise.schedule_gemm` does) fails under an uneven tile split's predicate."""
    acc_o = sch.get_sblock(acc_name + "_o")
    sch.decompose_reduction(acc_o, sch.get_loops(acc_o)[depth])  # per channel tile
    sch.tensorize(sch.get_sblock(acc_name + "_o_update"), pointwise.gemm_intrinsic(mb, nb, k))
    for lp in sch.get_loops(sch.get_sblock(acc_name + "_init"))[depth:]:  # the inner init: mb x nb stores
        sch.unroll(lp)


# ----------------------------------------------------------------------------- depthwise
def _depthwise(graph, op, frame: Frame, stage_input: str, in_place: bool) -> FastStageOp | None:
    """The fast depthwise conv, or None: reading the stage input (its borders would need the tap
    tests the partition removes; rare: the stem is a conv), a constant output, constants the
    fast requantization cannot take bit-exactly (:func:`.depthwise.fast_consts`). Register tiles
    only as wide as divide the tile region's rows (a predicated remainder under the tile loop
    breaks the root scope's dependency analysis for the producers' ``compute_at``)."""
    xn, yn = op.inputs[0], op.outputs[0]
    x, y = graph.t(xn), graph.t(yn)
    if xn == stage_input or not frame.stored_with_margins(xn) or x.shape[0] != 1:
        return None
    consts = depthwise.fast_consts(graph, op)
    if consts is None:
        return None
    mult = op.attrs.get("depth_multiplier", 1)
    if in_place and mult != 1:
        return None
    plain = depthwise.geometry(graph, op)
    if plain.act[0] >= plain.act[1]:  # a constant output: the plain kernel
        return None
    sh, sw = plain.strides
    top, left = plain.before
    mi, mo = frame.margin(xn), frame.margin(yn)
    _, oh, ow, _ = y.shape
    ext_in, ext_out = frame.ext_shape(xn, x.shape), frame.ext_shape(yn, y.shape)
    # extended input row of extended output row i, tap r: i * s + r * d + row0 (kernels/conv.py)
    row0, col0 = mi[0] - top - sh * mo[0], mi[1] - left - sw * mo[1]
    if row0 < 0 or col0 < 0:
        return None
    geo = replace(plain, in_hw=(ext_in[1] - row0, ext_in[2] - col0), out_hw=tuple(ext_out[1:3]), before=(0, 0))
    if any(geo.guards(0)) or any(geo.guards(1)):  # margins hold every tap of every computed output
        return None
    fill = frame.fill(yn, y.zp)

    def compute(xt, wt, bt, mt, et, rt):
        return depthwise.depthwise_compute(
            xt, wt, bt, mt, et, rt, geo, op.name, mult,
            src_index=lambda p, q, c: xt[0, p + row0, q + col0, c],
            out_valid=lambda i, j: valid(i, j, mo, oh, ow), fill=fill)

    def schedule(sch, block, const_names):
        src = [r.source.name for r in sch.get(block).reads]
        xbuf = next(n for n in src if n not in const_names and not n.endswith("_wpack"))
        plane = sch.cache_read(block, src.index(xbuf), "global") if in_place else None
        plane_buf = sch.get(plane).writes[0].source.name if in_place else None
        rows, cols = (int(sch.get(lp).extent) for lp in sch.get_loops(block)[-3:-1])
        # register tiles that divide the row: no predicated remainder (under the tile loop, its
        # predicate breaks the stage's producer/consumer analysis for the later compute_at's)
        tile = next(t for t in range(depthwise.tile_width(geo), 0, -1) if cols % t == 0)
        tile_geo = replace(geo, in_hw=(_UNBOUNDED, _UNBOUNDED), out_hw=(rows, cols))
        depthwise.schedule_depthwise(sch, block, tile_geo, plane, per_channel=tuple(const_names[1:]),
                                     src=plane_buf or xbuf, tile=tile)
        _refresh_dependencies(sch)
        return plane_buf

    return FastStageOp(op.name, compute, [xn, consts.weights, consts.bias, consts.mult, consts.right, consts.rnd],
                       schedule, [depthwise.PREAMBLE_C], (op.name,))
