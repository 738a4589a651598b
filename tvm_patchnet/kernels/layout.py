"""Data movement: pad, reshape, transpose, resize nearest, concat. Values are copied, except
where input and output quantization differ (concat inputs), which TFLite requantizes."""

from __future__ import annotations

from tvm import te, tirx

from ..errors import PatchnetError
from ..graph import Graph, Op, pad_hw, pad_value
from ..quant import quantize_multiplier
from . import Lowered, register
from .frame import Frame, guarded, inside, valid
from .indexing import ravel, unravel
from .requant import clamp_to_int8, mbqm_const


@register("reshape")
def lower_reshape(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])

    def compute(xt):
        return te.compute(y.shape, lambda *i: xt[unravel(ravel(i, y.shape), x.shape)], name=op.name)

    return Lowered(op.name, compute, [op.inputs[0]])


@register("transpose")
def lower_transpose(graph: Graph, op: Op, frame: Frame | None = None) -> Lowered:
    """TFLite's TRANSPOSE (any rank); ``frame``: inside a patch stage, see :func:`_transpose_in_stage`."""
    if frame is not None:
        return _transpose_in_stage(graph, op, frame)
    y = graph.t(op.outputs[0])
    perm = op.attrs["perm"]

    def compute(xt):
        def f(*i):
            src = [None] * len(perm)
            for out_axis, in_axis in enumerate(perm):
                src[in_axis] = i[out_axis]
            return xt[tuple(src)]

        return te.compute(y.shape, f, name=op.name)

    return Lowered(op.name, compute, [op.inputs[0]])


def _transpose_in_stage(graph: Graph, op: Op, frame: Frame) -> Lowered:
    """The TRANSPOSE NCHW -> NHWC of the stage input inside a patch stage (``frame.py``): output
    (i, j, c) of the extended frame is input (c, i - top, j - left) where that lies in the map,
    the output's margin fill elsewhere. The stage input is read in place, full size, without
    margins: its indices are clamped to it on the sides where margins are (the value read at a
    clamped index is never used), so a tile gathers its own rows and columns, every channel."""
    if tuple(op.attrs["perm"]) != (0, 2, 3, 1) or frame.stored_with_margins(op.inputs[0]):
        raise PatchnetError(f"op '{op.name}' (transpose): inside a patch stage only a TRANSPOSE NCHW -> NHWC "
                            "of the stage input can run")
    xn, yn = op.inputs[0], op.outputs[0]
    y = graph.t(yn)
    _, h, w, _ = y.shape
    mo = frame.margin(yn)
    fill = tirx.const(frame.fill(yn, y.zp), "int8")

    def clamp(k, m, n):
        k = tirx.max(k, 0) if m[0] else k
        return tirx.min(k, n - 1) if m[1] else k

    def compute(xt):
        def f(b, i, j, c):
            src = xt[b, c, clamp(i - mo[0], (mo[0], mo[2]), h), clamp(j - mo[1], (mo[1], mo[3]), w)]
            return guarded(valid(i, j, mo, h, w), src, fill)

        return te.compute(frame.ext_shape(yn, y.shape), f, name=op.name)

    return Lowered(op.name, compute, [xn])


@register("pad")
def lower_pad(graph: Graph, op: Op, frame: Frame | None = None) -> Lowered:
    """TFLite's PAD (any rank); ``frame``: inside a patch stage, see :func:`_pad_in_stage`."""
    if frame is not None:
        return _pad_in_stage(graph, op, frame)
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    pads = op.attrs["paddings"]
    fill = tirx.const(pad_value(graph, op), "int8")  # PAD: the output zero point; PADV2: its constant

    def compute(xt):
        def f(*i):
            conds = [tirx.all(k >= p[0], k < p[0] + d) for k, p, d in zip(i, pads, x.shape)]
            src = tuple(tirx.max(tirx.min(k - p[0], d - 1), 0) for k, p, d in zip(i, pads, x.shape))
            return tirx.if_then_else(tirx.all(*conds), xt[src], fill)

        return te.compute(y.shape, f, name=op.name)

    return Lowered(op.name, compute, [op.inputs[0]])


def _pad_in_stage(graph: Graph, op: Op, frame: Frame) -> Lowered:
    """A PAD over H and W inside a patch stage (``frame.py``): output (i, j) of the extended
    frame is input (i - top, j - left) of the map where that lies in the input map, the PAD's
    fill (:func:`~tvm_patchnet.graph.pad_value`) elsewhere in the output map, and the output's margin fill
    outside it. Reads happen only inside the input map. An intermediate input's margins hold
    every tile's region (the planner's), so its indices need no clamping; the stage input is
    read in place, without margins, so its indices are clamped to it (the value read at a
    clamped index is never used)."""
    xn, yn = op.inputs[0], op.outputs[0]
    x, y = graph.t(xn), graph.t(yn)
    top, left, bottom, right = pad_hw(op)
    _, h, w, _ = x.shape
    _, oh, ow, _ = y.shape
    mo, mi = frame.margin(yn), frame.margin(xn)
    value = tirx.const(pad_value(graph, op), "int8")
    fill = tirx.const(frame.fill(yn, y.zp), "int8")
    in_place = not frame.stored_with_margins(xn)  # the stage input

    def compute(xt):
        def f(b, i, j, c):
            r, s = i - mo[0] - top, j - mo[1] - left  # input map position of output (i, j)
            cond = inside(r, s, h, w, (top > 0, bottom > 0), (left > 0, right > 0))
            if in_place:
                src = xt[b, tirx.max(tirx.min(r, h - 1), 0), tirx.max(tirx.min(s, w - 1), 0), c]
            else:
                src = xt[b, r + mi[0], s + mi[1], c]
            return guarded(valid(i, j, mo, oh, ow), guarded(cond, src, value), fill)

        return te.compute(frame.ext_shape(yn, y.shape), f, name=op.name)

    return Lowered(op.name, compute, [xn])


@register("resize_nearest")
def lower_resize(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    _, ih, iw, _ = x.shape
    _, oh, ow, _ = y.shape
    align = op.attrs.get("align_corners", False)
    half = op.attrs.get("half_pixel_centers", False)

    def src(o, in_size, out_size):
        # TFLite ResizeNearestNeighbor: scale = in/out (or (in-1)/(out-1) with align_corners),
        # offset 0.5 with half_pixel_centers, then floor (round with align_corners). Done here
        # in exact rational integer arithmetic to stay free of floating point.
        num, den = (in_size - 1, out_size - 1) if align and out_size > 1 else (in_size, out_size)
        if half and align:
            v = tirx.truncdiv((2 * o + 1) * num + den, 2 * den)  # round((o + 0.5) * scale)
        elif half:
            v = tirx.truncdiv((2 * o + 1) * num, 2 * den)  # floor((o + 0.5) * scale)
        elif align:
            v = tirx.truncdiv(2 * o * num + den, 2 * den)  # round(o * scale)
        else:
            v = tirx.truncdiv(o * num, den)
        return tirx.min(v, in_size - 1)

    def compute(xt):
        return te.compute(
            y.shape, lambda b, i, j, c: xt[b, src(i, ih, oh), src(j, iw, ow), c], name=op.name
        )

    return Lowered(op.name, compute, [op.inputs[0]])


@register("concat")
def lower_concat(graph: Graph, op: Op) -> Lowered:
    ins = [graph.t(n) for n in op.inputs]
    y = graph.t(op.outputs[0])
    axis = op.attrs["axis"] % len(y.shape)
    offsets = [0]
    for t in ins:
        offsets.append(offsets[-1] + t.shape[axis])
    rq = [quantize_multiplier(float(t.s) / float(y.s)) for t in ins]

    def compute(*xts):
        def f(*i):
            val = None
            for k in range(len(xts)):
                idx = list(i)
                idx[axis] = tirx.max(i[axis] - offsets[k], 0)
                t = ins[k]
                if t.s == y.s and t.zp == y.zp:
                    v = xts[k][tuple(idx)]
                else:
                    v = clamp_to_int8(mbqm_const(xts[k][tuple(idx)].astype("int32") - t.zp, *rq[k]) + y.zp, -128, 127)
                val = v if val is None else tirx.if_then_else(i[axis] >= offsets[k], v, val)
            return val

        return te.compute(y.shape, f, name=op.name)

    return Lowered(op.name, compute, list(op.inputs))
