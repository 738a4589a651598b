"""TE expressions for TFLite Micro's requantization, integer-only.

Everything here is int32/int64 adds, multiplies and shifts: no floating point and no 64-bit
division (a Cortex-M has no divider for it), so the same kernels emit as plain C later.

The formulas are rearranged (equal results, proved in the comments and tested against the
NumPy versions in ``tvm_patchnet.quant``) so that each reads its argument at most twice:
nested naively, the TFLite helpers read theirs three to four times each, and the expression
tree, and TIR lowering time with it, grows exponentially. ``Let`` bindings would avoid that but
trip TIR's bound analysis.
"""

from __future__ import annotations

from tvm import tirx
from tvm.tirx import const

_I32, _I64 = "int32", "int64"


def _srdhm64(x, multiplier):
    """SaturatingRoundingDoublingHighMul(x, M) as int64, for int32 ``x`` and ``M`` in [0, 2^31).

    ``ab = x * M`` has the sign of ``x`` (M > 0; for M = 0 or x = 0 both nudges give 0), so the
    nudge is chosen on ``x``. C's truncating division by 2^31 is a shift after adding
    2^31 - 1 to negative values; that bias is also chosen on the sign of ``x``, because
    ``ab + nudge`` is negative exactly when ``ab`` is (|nudge| < 2^31 <= |ab| unless ab = 0).
    The saturating case (both INT32_MIN) cannot occur with M >= 0.
    """
    ab = x.astype(_I64) * multiplier.astype(_I64)
    neg_bias = (1 - (1 << 30)) + ((1 << 31) - 1)  # nudge + truncation bias for negative ab
    bias = tirx.Select(x >= const(0, _I32), const(1 << 30, _I64), const(neg_bias, _I64))
    return (ab + bias) >> const(31, _I64)


def _rdbpot64(y, exponent):
    """RoundingDivideByPOT(y, e) on an int64 ``y`` with |y| < 2^31: round half away from zero.

    Equal to gemmlowp's mask/threshold form: (y + 2^(e-1) - [y < 0 and e > 0]) >> e.
    """
    e = exponent.astype(_I64)
    half = (const(1, _I64) << e) >> const(1, _I64)
    neg = tirx.Select(y < const(0, _I64), tirx.min(e, const(1, _I64)), const(0, _I64))
    return (y + half - neg) >> e


def mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(x, M, shift) with runtime (per-channel) M and shift; int32."""
    zero = const(0, _I32)
    shifted = x << tirx.max(shift, zero)
    return _rdbpot64(_srdhm64(shifted, multiplier), tirx.max(zero - shift, zero)).astype(_I32)


def mbqm_const(x, multiplier: int, shift: int):
    """:func:`mbqm` with compile-time multiplier and shift (per-tensor requantization)."""
    left, right = max(shift, 0), max(-shift, 0)
    if left:
        x = x << const(left, _I32)
    y = _srdhm64(x, const(multiplier, _I32))
    if right:
        half = 1 << (right - 1)
        y = (y + tirx.Select(y < const(0, _I64), const(half - 1, _I64), const(half, _I64))) >> const(right, _I64)
    return y.astype(_I32)


def clamp_to_int8(x, lo: int, hi: int):
    """Clamp an int32 expression to [lo, hi] and cast to int8."""
    return tirx.min(tirx.max(x, const(lo, _I32)), const(hi, _I32)).astype("int8")
