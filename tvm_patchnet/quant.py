"""TFLite Micro's int8 fixed-point arithmetic ("double rounding"), host side.

Only integer multipliers and shifts reach the kernels; this module computes them from the
float scales exactly as TFLite Micro does (``QuantizeMultiplier``), and gives NumPy versions
of the runtime helpers for tests and calibration. The TE versions live in
``tvm_patchnet.kernels.requant``.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real`` -> (multiplier in [2^30, 2^31), shift), ``real ~= M * 2^(shift - 31)``.

    Mirrors tflite::QuantizeMultiplier (frexp, round half away from zero, 2^31 carry,
    underflow below 2^-31 to zero).
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = int(_round_half_away(q * (1 << 31)))
    if m == (1 << 31):
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m, shift


def quantize_multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel :func:`quantize_multiplier`; returns int32 arrays (multiplier, shift)."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(real, dtype=np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], dtype=np.int32), np.array([p[1] for p in pairs], dtype=np.int32))


def _round_half_away(x: float) -> float:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int32 arrays (NumPy, int64 inside)."""
    a64 = np.asarray(a, dtype=np.int64)
    b64 = np.asarray(b, dtype=np.int64)
    ab = a64 * b64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    res = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C's truncating division by 2^31
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    return np.where(overflow, INT32_MAX, res).astype(np.int64)


def rdbpot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """RoundingDivideByPOT (round half away from zero), NumPy."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def multiply_by_quantized_multiplier(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplier (NumPy): ``x * M * 2^(shift-31)``, rounded twice."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.asarray(x, dtype=np.int64) * (np.int64(1) << left)
    return rdbpot(srdhm(x, m), right)


def requantize_params(s_in: float, s_w: np.ndarray, s_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) for ``s_in * s_w[c] / s_out``, computed in double."""
    eff = float(s_in) * np.asarray(s_w, dtype=np.float64).reshape(-1) / float(s_out)
    return quantize_multipliers(eff)


def act_range(act: str | None, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp range of a fused activation ("relu", "relu6", "relu_n1_to_1" or None)."""
    lo, hi = -128, 127

    def q(v: float) -> int:  # TFLite rounds the float32 quotient
        return zero_point + int(_round_half_away(float(np.float32(v) / np.float32(scale))))

    if act == "relu":
        lo = max(lo, q(0.0))
    elif act == "relu6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif act == "relu_n1_to_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    elif act is not None:
        raise ValueError(f"unknown fused activation '{act}'")
    return lo, hi
