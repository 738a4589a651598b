"""softmax, logistic and mean, int8, bit-exact with TFLite Micro's reference kernels.

softmax (reference_ops::Softmax, quantized path; params from TFLM softmax_common.cc):
  diff = x - max(row); entries with diff < diff_min contribute nothing and output -128;
  exp(diff * beta * s_in) is gemmlowp's exp_on_negative_values on Q5.26, summed in Q12.19,
  the sum's reciprocal is GetReciprocal (one_over_one_plus_x_for_x_in_0_1) and the output
  ``RDBPOT(recip * exp, 35 - clz(sum)) - 128`` (scale 1/256, zero point -128).
logistic (reference_integer_ops::Logistic; params from TFLM logistic_common.cc):
  input in Q4.27 via MultiplyByQuantizedMultiplier, gemmlowp::logistic, RDBPOT by 23, - 128;
  inputs beyond +-input_range_radius saturate to 127 / -128.
mean (TFLM reduce_common.cc, int8): reference_ops::QuantizedMeanOrSum for every axes/keepdims
  combination and also for equal input/output quantization (checked against the installed
  TFLM; older releases divided the sum with truncation there and had a 4-D H,W special case):
  the count is folded into the multiplier, ``MBQM(sum - zp_in * n) + zp_out`` is clamped.

The per-row reductions (max, sum) are ``te`` reductions; the fixed-point math is in
``fixedpoint.py`` (one stage per gemmlowp step). NumPy references for tests are at the end.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import te, tirx
from tvm.tirx import const

from ..errors import PatchnetError
from ..graph import Graph, Op
from ..quant import multiply_by_quantized_multiplier, quantize_multiplier
from . import Lowered, register
from .fixedpoint import NumpyOps, TEOps, exp_on_negative_values, logistic, one_over_one_plus_x_for_x_in_0_1
from .indexing import ravel, unravel
from .requant import clamp_to_int8, mbqm_const

SCALED_DIFF_INTEGER_BITS = 5  # softmax: exp input is Q5.26
ACCUMULATION_INTEGER_BITS = 12  # softmax: sum of exps is Q12.19
LOGISTIC_INPUT_INTEGER_BITS = 4  # logistic: input is Q4.27


# ----------------------------------------------------------------------------- parameters
def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) as TFLM's CalculateSoftmaxParams (int8).

    PreprocessSoftmaxScaling caps ``beta * s_in * 2^26`` at 2^31 - 1 (double-rounding build) and
    QuantizeMultiplierGreaterThanOne requires it to exceed 1; diff_min is -CalculateInputRadius.
    """
    real = min(float(beta) * float(input_scale) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise PatchnetError(f"softmax: beta * input_scale = {beta * input_scale:g} is too small for TFLite's int8 path")
    mult, shift = quantize_multiplier(real)
    radius = (((1 << SCALED_DIFF_INTEGER_BITS) - 1) << (31 - SCALED_DIFF_INTEGER_BITS)) >> shift  # exact floor
    return mult, shift, -radius


def logistic_params(input_scale: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, input_range_radius) as TFLM's logistic_common.cc.

    Unlike QuantizeMultiplier there is no 2^31 carry: frexp's mantissa is rounded and cast.
    """
    real = float(input_scale) * (1 << (31 - LOGISTIC_INPUT_INTEGER_BITS))
    q, shift = math.frexp(real)
    mult = math.floor(q * (1 << 31) + 0.5)
    if mult >= 1 << 31:  # static_cast<int32_t>(2^31) in TFLM: out of range, never seen in practice
        raise PatchnetError(f"logistic: input scale {input_scale!r} rounds to a 2^31 multiplier")
    top = ((1 << LOGISTIC_INPUT_INTEGER_BITS) - 1) << (31 - LOGISTIC_INPUT_INTEGER_BITS)
    radius = top >> shift if shift >= 0 else top << -shift
    return mult, shift, radius


def mean_params(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """QuantizedMeanOrSum's (multiplier, shift) with 1/count folded in (host-side division)."""
    mult, shift = quantize_multiplier(float(input_scale) / float(output_scale))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (mult << k) // count, shift - k


# ----------------------------------------------------------------------------- softmax
def _softmax_exp(ops, x, row_max, mult: int, left_shift: int, diff_min: int):
    """Shared by the TE kernel and the NumPy reference: (x - row max, its exp in Q0.31)."""
    diff = ops.stage("diff", lambda v, m: v - m, x, row_max)
    # MultiplyByQuantizedMultiplierGreaterThanOne; diff is clamped to diff_min first so the
    # (discarded) values below it cannot overflow the shift.
    scaled = ops.stage(
        "scaled", lambda d: ops.srdhm(ops.select(d < diff_min, diff_min, d) << left_shift, mult), diff
    )
    return diff, exp_on_negative_values(ops, scaled, SCALED_DIFF_INTEGER_BITS)


@register("softmax")
def lower_softmax(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    if y.zp != -128 or np.float32(y.s) != np.float32(1.0 / 256):
        raise PatchnetError(f"op '{op.name}' (softmax): int8 output must have scale 1/256, zero point -128")
    mult, left_shift, diff_min = softmax_params(op.attrs.get("beta", 1.0), x.s)
    shape = tuple(x.shape)
    outer, depth = shape[:-1], shape[-1]
    name = op.name

    def compute(xt):
        ops = TEOps(name)
        k = te.reduce_axis((0, depth), "k")
        mx = te.compute(outer, lambda *o: te.max(xt[(*o, k)].astype("int32"), axis=k), name=name + "_max")
        xi = te.compute(shape, lambda *i: xt(*i).astype("int32"), name=name + "_in")
        mxb = te.compute(shape, lambda *i: mx(*i[:-1]), name=name + "_maxb")
        diff, ex = _softmax_exp(ops, xi, mxb, mult, left_shift, diff_min)
        term = ops.stage(
            "term", lambda d, e: ops.select(d >= diff_min, ops.rdbpot(e, ACCUMULATION_INTEGER_BITS), 0), diff, ex
        )
        k2 = te.reduce_axis((0, depth), "k2")
        total = te.compute(outer, lambda *o: te.sum(term[(*o, k2)], axis=k2), name=name + "_sum")
        # GetReciprocal: headroom_plus_one = clz(sum) = 1 + #{b < 31: sum < 2^b} (sum > 0: the
        # row max contributes exp(0) = 1); (sum << clz) - 2^31 is the Q0.31 x of 1 / (1 + x).
        hpo = te.compute(
            outer, lambda *o: sum((tirx.Select(total(*o) < const(1 << b, "int32"), 1, 0) for b in range(1, 31)), 1),
            name=name + "_clz",
        )
        def frac_of(*o):
            shifted = total(*o).astype("int64") << hpo(*o).astype("int64")
            return (shifted - const(1 << 31, "int64")).astype("int32")

        frac = te.compute(outer, frac_of, name=name + "_frac")
        recip = one_over_one_plus_x_for_x_in_0_1(ops, frac)

        def out(*i):
            o = i[:-1]
            exponent = (ACCUMULATION_INTEGER_BITS + 31 - 8) - hpo(*o)  # num_bits_over_unit + 31 - 8
            v = ops.rdbpot(ops.srdhm(recip(*o), ex(*i)), exponent) - 128
            return tirx.Select(diff(*i) >= diff_min, clamp_to_int8(v, -128, 127), const(-128, "int8"))

        return te.compute(shape, out, name=name)

    return Lowered(op.name, compute, [op.inputs[0]])


# ----------------------------------------------------------------------------- logistic
@register("logistic")
def lower_logistic(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    if y.zp != -128:
        raise PatchnetError(f"op '{op.name}' (logistic): int8 output must have zero point -128")
    mult, shift, radius = logistic_params(x.s)
    zp, name = x.zp, op.name

    def compute(xt):
        ops = TEOps(name)
        inp = te.compute(x.shape, lambda *i: xt(*i).astype("int32") - zp, name=name + "_in")
        q4 = ops.stage(  # inputs beyond the radius are replaced below; clamp them to stay in range
            "q4", lambda v: mbqm_const(tirx.max(tirx.min(v, radius - 1), 1 - radius), mult, shift), inp
        )
        sig = logistic(ops, q4, LOGISTIC_INPUT_INTEGER_BITS)

        def out(*i):
            v = clamp_to_int8(ops.rdbpot(sig(*i), 31 - 8) - 128, -128, 127)
            return tirx.Select(inp(*i) <= -radius, const(-128, "int8"),
                               tirx.Select(inp(*i) >= radius, const(127, "int8"), v))

        return te.compute(x.shape, out, name=name)

    return Lowered(op.name, compute, [op.inputs[0]])


# ----------------------------------------------------------------------------- mean
@register("mean")
def lower_mean(graph: Graph, op: Op) -> Lowered:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    rank = len(x.shape)
    axes = sorted({a % rank for a in op.attrs["axes"]})
    keep = bool(op.attrs.get("keepdims", False))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    natural = tuple(1 if d in axes else n for d, n in enumerate(x.shape) if keep or d not in axes)
    if int(np.prod(natural, dtype=np.int64)) != y.size:
        raise PatchnetError(f"op '{op.name}' (mean): output shape {list(y.shape)} does not match axes {axes}")
    mult, shift = mean_params(x.s, y.s, count)
    zp_in, zp_out, name = x.zp, y.zp, op.name

    def compute(xt):
        red = {a: te.reduce_axis((0, x.shape[a]), f"r{a}") for a in axes}

        def src(o):
            it, idx = iter(o), []
            for d in range(rank):
                if d in red:
                    idx.append(red[d])
                    if keep:
                        next(it)
                else:
                    idx.append(next(it))
            return tuple(idx)

        acc = te.compute(natural, lambda *o: te.sum(xt[src(o)].astype("int32"), axis=list(red.values())),
                         name=name + "_sum")
        res = te.compute(
            natural,
            lambda *o: clamp_to_int8(mbqm_const(acc(*o) - zp_in * count, mult, shift) + zp_out, -128, 127),
            name=name + "_mean",
        )
        if tuple(y.shape) == natural:
            return res
        flat = te.compute((y.size,), lambda f: res[unravel(f, natural)], name=name + "_flat")
        return te.compute(y.shape, lambda *i: flat[ravel(i, y.shape)], name=name)

    return Lowered(op.name, compute, [op.inputs[0]])


# ----------------------------------------------------------------------------- NumPy references
def softmax_reference(x: np.ndarray, input_scale: float, beta: float = 1.0) -> np.ndarray:
    """TFLM int8 softmax over the last axis (NumPy; same fixed-point code as the kernel)."""
    ops = NumpyOps()
    mult, left_shift, diff_min = softmax_params(beta, input_scale)
    xi = np.asarray(x, np.int64)
    diff, ex = _softmax_exp(ops, xi, xi.max(axis=-1, keepdims=True), mult, left_shift, diff_min)
    valid = diff >= diff_min
    total = np.where(valid, ops.rdbpot(ex, ACCUMULATION_INTEGER_BITS), 0).sum(axis=-1, keepdims=True)
    hpo = np.array([32 - int(s).bit_length() for s in total.reshape(-1)], np.int64).reshape(total.shape)
    recip = one_over_one_plus_x_for_x_in_0_1(ops, (total << hpo) - (1 << 31))
    exponent = np.broadcast_to(ACCUMULATION_INTEGER_BITS + 31 - 8 - hpo, ex.shape)
    v = ops.rdbpot(ops.srdhm(np.broadcast_to(recip, ex.shape), ex), exponent) - 128
    return np.where(valid, np.clip(v, -128, 127), -128).astype(np.int8)


def logistic_reference(x: np.ndarray, input_scale: float, input_zero_point: int) -> np.ndarray:
    """TFLM int8 logistic (NumPy; same fixed-point code as the kernel)."""
    ops = NumpyOps()
    mult, shift, radius = logistic_params(input_scale)
    inp = np.asarray(x, np.int64) - input_zero_point
    q4 = multiply_by_quantized_multiplier(np.clip(inp, 1 - radius, radius - 1), mult, shift)
    v = np.clip(ops.rdbpot(logistic(ops, q4, LOGISTIC_INPUT_INTEGER_BITS), 31 - 8) - 128, -128, 127)
    return np.where(inp <= -radius, -128, np.where(inp >= radius, 127, v)).astype(np.int8)
