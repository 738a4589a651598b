"""MultiplyByQuantizedMultiplier on edge values: NumPy (quant.py), TE (requant.mbqm / mbqm_const)
and an independent Python-int transcription of gemmlowp's SRDHM / RDBPOT all agree."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te

from tvm_patchnet.kernels.requant import mbqm, mbqm_const
from tvm_patchnet.quant import INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier

SHIFTS = list(range(-31, 8))


def srdhm_ref(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, on Python ints."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    v = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(v) >> 31  # C++ integer division truncates toward zero
    return q if v >= 0 else -q


def rdbpot_ref(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: mask / threshold form, on Python ints (two's complement &)."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def mbqm_ref(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot_ref(srdhm_ref(x * (1 << left), m), right)


def _edge_values() -> np.ndarray:
    vals = {0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1}
    for k in range(1, 31):
        for v in (1 << k, (1 << k) + 1, (1 << k) - 1):
            vals.update((v, -v))
    rng = np.random.default_rng(7)
    vals.update(int(v) for v in rng.integers(-(1 << 20), 1 << 20, size=48))
    vals.update(int(v) for v in rng.integers(INT32_MIN, INT32_MAX, size=16, endpoint=True))
    return np.array(sorted(vals), dtype=np.int64)


def _multipliers() -> list[int]:
    rng = np.random.default_rng(11)
    return [1 << 30, INT32_MAX] + [int(v) for v in rng.integers(1 << 30, 1 << 31, size=2)]


def _fits(x: np.ndarray, shift: int) -> np.ndarray:
    """Values whose left shift (TFLite's x * (1 << shift)) stays inside int32."""
    left = max(shift, 0)
    return (x >= INT32_MIN >> left) & (x <= INT32_MAX >> left)


def _run(prim_func, arrays: list[np.ndarray], outs: list[tuple]) -> list[np.ndarray]:
    f = tvm.compile(tvm.IRModule({"main": prim_func}), target="llvm")
    res = [tvm.runtime.tensor(np.zeros(shape, np.int32)) for shape in outs]
    f["main"](*[tvm.runtime.tensor(a) for a in arrays], *res)
    return [r.numpy() for r in res]


def test_python_reference_sanity():
    assert srdhm_ref(INT32_MIN, INT32_MIN) == INT32_MAX
    assert srdhm_ref(1 << 30, 1 << 30) == 1 << 29
    assert srdhm_ref(-1, 1 << 30) == 0 and srdhm_ref(-3, 1 << 30) == -1  # -1.5 rounds away from zero
    assert [rdbpot_ref(v, 1) for v in (-3, -2, -1, 1, 2, 3)] == [-2, -1, -1, 1, 1, 2]
    assert mbqm_ref(12345, 1 << 30, 1) == 12345


def test_numpy_matches_python_reference():
    xs = _edge_values()
    for m in _multipliers():
        for s in SHIFTS:
            x = xs[_fits(xs, s)]
            want = [mbqm_ref(int(v), m, s) for v in x]
            got = multiply_by_quantized_multiplier(x, m, s)
            assert got.tolist() == want, f"M={m} shift={s}"


def test_te_mbqm_const_matches_references():
    xs = _edge_values()
    combos = [(m, s) for m in _multipliers() for s in SHIFTS]
    xt = te.placeholder((len(xs),), "int32", name="x")

    def one(k, m, s):
        return te.compute((len(xs),), lambda i: mbqm_const(xt[i], m, s), name=f"mbqm_{k}")

    outs = [one(k, m, s) for k, (m, s) in enumerate(combos)]
    res = _run(te.create_prim_func([xt, *outs]), [xs.astype(np.int32)], [(len(xs),)] * len(outs))
    for (m, s), got in zip(combos, res):
        ok = _fits(xs, s)
        x = xs[ok]
        want = np.array([mbqm_ref(int(v), m, s) for v in x])
        assert np.array_equal(got[ok], want), f"mbqm_const M={m} shift={s}"
        assert np.array_equal(got[ok], multiply_by_quantized_multiplier(x, m, s)), f"M={m} shift={s}"


def test_te_mbqm_runtime_params_match_references():
    xs = _edge_values()
    rows = [(int(v), m, s) for m in _multipliers() for s in SHIFTS for v in xs[_fits(xs, s)]]
    x, m, s = (np.array(col, dtype=np.int32) for col in zip(*rows))
    n = len(rows)
    xt, mt, st = (te.placeholder((n,), "int32", name=nm) for nm in ("x", "m", "s"))
    out = te.compute((n,), lambda i: mbqm(xt[i], mt[i], st[i]), name="mbqm")
    (got,) = _run(te.create_prim_func([xt, mt, st, out]), [x, m, s], [(n,)])
    want = np.array([mbqm_ref(*r) for r in rows])
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} mismatches, first (x, M, shift) = {rows[bad[0]]}: {got[bad[0]]} vs {want[bad[0]]}"
    assert np.array_equal(multiply_by_quantized_multiplier(x, m, s), want)
