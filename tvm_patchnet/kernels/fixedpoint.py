"""gemmlowp fixed-point math (exp, 1/(1+x), logistic) as TFLite Micro's int8 softmax and
logistic use it, written once over two backends: NumPy (host reference) and TE (kernels).

A value is an int32 ``FixedPoint<int32, IntegerBits>`` raw integer. Each function below is the
gemmlowp template of the same name; ``ops.stage(name, fn, *xs)`` evaluates ``fn`` elementwise
on equally shaped arrays/tensors. The TE backend materializes every stage as its own
``te.compute``, so each expression reads already computed buffers and stays small: nested
gemmlowp helpers read their arguments several times and a nested tree grows exponentially
(see ``requant.py``). Everything is int32/int64 adds, multiplies, shifts and compares.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.tirx import const

from ..quant import INT32_MAX, INT32_MIN, rdbpot, srdhm

_I32, _I64 = "int32", "int64"

# exp(-2^k) in Q0.31 for the barrel shifter of exp_on_negative_values, k = -2 .. 4.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242))
_EXP_MINUS_ONE_EIGHTH = 1895147668  # exp(-1/8), Q0.31
_ONE_THIRD = 715827883  # 1/3, Q0.31
_48_OVER_17 = 1515870810  # Q2.29
_NEG_32_OVER_17 = -1010580540  # Q2.29


class NumpyOps:
    """Backend on int64 NumPy arrays holding int32 values."""

    def stage(self, name, fn, *xs):
        return np.asarray(fn(*xs), dtype=np.int64)

    @staticmethod
    def select(c, a, b):
        return np.where(c, a, b)

    @staticmethod
    def srdhm(a, b):
        return srdhm(a, b)

    @staticmethod
    def rdbpot(x, e):
        return rdbpot(x, e)

    @staticmethod
    def shl_sat(x, e: int):
        if e == 0:
            return x
        thr = (1 << (31 - e)) - 1
        return np.where(x > thr, INT32_MAX, np.where(x < -thr, INT32_MIN, np.asarray(x, np.int64) << e))

    @staticmethod
    def half_sum_max(a):
        """RoundingHalfSum(a, INT32_MAX)."""
        s = np.asarray(a, np.int64) + INT32_MAX
        return np.where(s >= 0, (s + 1) >> 1, -((1 - s) >> 1))


class TEOps:
    """Backend on TE tensors: each stage is one ``te.compute`` named ``{prefix}_{k}_{name}``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.count = 0

    def stage(self, name, fn, *ts):
        self.count += 1
        return te.compute(ts[0].shape, lambda *i: fn(*(t(*i) for t in ts)), name=f"{self.prefix}_{self.count}_{name}")

    @staticmethod
    def select(c, a, b):
        a = const(a, _I32) if isinstance(a, int) else a
        b = const(b, _I32) if isinstance(b, int) else b
        return tirx.Select(c, a, b)

    @staticmethod
    def srdhm(a, b):
        """SaturatingRoundingDoublingHighMul; with a constant ``b`` the sign test reads ``a`` only.

        (ab + nudge) has the sign of ab, so C's truncating division by 2^31 is an arithmetic
        shift after adding 2^31 - 1 to negative values; both biases are folded together.
        """
        neg_bias = (1 - (1 << 30)) + ((1 << 31) - 1)
        if isinstance(b, int):
            ab = a.astype(_I64) * const(b, _I64)
            nonneg = a >= const(0, _I32) if b >= 0 else a <= const(0, _I32)
            bias = tirx.Select(nonneg, const(1 << 30, _I64), const(neg_bias, _I64))
            return ((ab + bias) >> const(31, _I64)).astype(_I32)
        ab = a.astype(_I64) * b.astype(_I64)
        bias = tirx.Select(ab >= const(0, _I64), const(1 << 30, _I64), const(neg_bias, _I64))
        res = ((ab + bias) >> const(31, _I64)).astype(_I32)
        overflow = tirx.all(a == const(INT32_MIN, _I32), b == const(INT32_MIN, _I32))
        return tirx.Select(overflow, const(INT32_MAX, _I32), res)

    @staticmethod
    def rdbpot(x, e):
        """RoundingDivideByPOT (round half away from zero), constant or runtime ``e`` in [0, 31]."""
        y = x.astype(_I64)
        if isinstance(e, int):
            if e == 0:
                return x
            half = 1 << (e - 1)
            bias = tirx.Select(y < const(0, _I64), const(half - 1, _I64), const(half, _I64))
            return ((y + bias) >> const(e, _I64)).astype(_I32)
        e64 = e.astype(_I64)
        half = (const(1, _I64) << e64) >> const(1, _I64)
        neg = tirx.Select(y < const(0, _I64), tirx.min(e64, const(1, _I64)), const(0, _I64))
        return ((y + half - neg) >> e64).astype(_I32)

    @staticmethod
    def shl_sat(x, e: int):
        """SaturatingRoundingMultiplyByPOT<e> for e >= 0: a left shift saturating to int32."""
        if e == 0:
            return x
        thr = (1 << (31 - e)) - 1
        return tirx.Select(x > const(thr, _I32), const(INT32_MAX, _I32),
                           tirx.Select(x < const(-thr, _I32), const(INT32_MIN, _I32), x << const(e, _I32)))

    @staticmethod
    def half_sum_max(a):
        s = a.astype(_I64) + const(INT32_MAX, _I64)
        return tirx.Select(s >= const(0, _I64), (s + const(1, _I64)) >> const(1, _I64),
                           const(0, _I64) - ((const(1, _I64) - s) >> const(1, _I64))).astype(_I32)


def exp_on_interval_between_negative_one_quarter_and_0_excl(ops, a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor expansion around -1/8."""
    x = ops.stage("x", lambda v: v + (1 << 28), a)
    x2 = ops.stage("x2", lambda v: ops.srdhm(v, v), x)
    x3 = ops.stage("x3", lambda p, v: ops.srdhm(p, v), x2, x)
    x4 = ops.stage("x4", lambda p: ops.srdhm(p, p), x2)
    poly = ops.stage(  # x^4/24 + x^3/6 + x^2/2
        "poly", lambda q4, q3, q2: ops.rdbpot(ops.srdhm(ops.rdbpot(q4, 2) + q3, _ONE_THIRD) + q2, 1), x4, x3, x2
    )
    return ops.stage("expq", lambda v, p: _EXP_MINUS_ONE_EIGHTH + ops.srdhm(p + v, _EXP_MINUS_ONE_EIGHTH), x, poly)


def exp_on_negative_values(ops, a, integer_bits: int):
    """exp(a) for a <= 0 given as Q(integer_bits); result Q0.31."""
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    amq = ops.stage("amq", lambda v: (v & (quarter - 1)) - quarter, a)  # a mod 1/4 - 1/4
    r0 = ops.stage("rescale0", lambda v: ops.shl_sat(v, integer_bits), amq)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(ops, r0)
    rem = ops.stage("rem", lambda m, v: m - v, amq, a)
    for k, mult in _EXP_BARREL:
        if integer_bits > k:
            bit = 1 << (frac + k)
            result = ops.stage(
                f"barrel{k + 2}",
                lambda res, rm, bit=bit, mult=mult: ops.select((rm & bit) != 0, ops.srdhm(res, mult), res),
                result, rem,
            )
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = ops.stage("clamp", lambda res, v: ops.select(v < clamp, 0, res), result, a)
    return ops.stage("exp", lambda res, v: ops.select(v == 0, INT32_MAX, res), result, a)


def one_over_one_plus_x_for_x_in_0_1(ops, a):
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out: three Newton-Raphson steps."""
    hd = ops.stage("halfden", lambda v: ops.half_sum_max(v), a)
    x = ops.stage("nr0", lambda h: _48_OVER_17 + ops.srdhm(h, _NEG_32_OVER_17), hd)
    for k in range(3):  # F2::One() is 1 << 29
        one_minus = ops.stage(f"nr{k}_err", lambda h, v: (1 << 29) - ops.srdhm(h, v), hd, x)
        x = ops.stage(f"nr{k + 1}", lambda v, m: v + ops.shl_sat(ops.srdhm(v, m), 2), x, one_minus)
    return ops.stage("recip", lambda v: ops.shl_sat(v, 1), x)


def logistic(ops, a, integer_bits: int):
    """gemmlowp::logistic: 1 / (1 + exp(-a)) for ``a`` in Q(integer_bits); result Q0.31."""
    neg_abs = ops.stage("negabs", lambda v: ops.select(v > 0, 0 - v, v), a)
    pos = one_over_one_plus_x_for_x_in_0_1(ops, exp_on_negative_values(ops, neg_abs, integer_bits))
    return ops.stage(
        "logistic", lambda v, p: ops.select(v == 0, 1 << 30, ops.select(v > 0, p, INT32_MAX - p)), a, pos
    )
