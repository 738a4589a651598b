"""Reading values and shapes out of Relax expressions (for the float-graph walker)."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax

from ..errors import PatchnetError


def expr_vars(e) -> list:
    """Relax variables an expression reads directly."""
    if isinstance(e, relax.Var):
        return [e]
    if isinstance(e, relax.Tuple):
        return [v for f in e.fields for v in expr_vars(f)]
    if isinstance(e, relax.TupleGetItem):
        return expr_vars(e.tuple_value)
    if isinstance(e, relax.Call):
        return [v for a in e.args for v in expr_vars(a)]
    return []


def shape_of(e) -> tuple[tuple[int, ...], str]:
    """Static shape and dtype of a Relax tensor expression."""
    ty = e.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise PatchnetError(f"value '{e}' has no static tensor shape (dynamic shapes are not supported)")
    return tuple(int(s) for s in ty.shape), str(ty.dtype)


def arg_value(e):
    """Value of a non-variable Relax argument: constant tensor -> array, scalar -> float,
    shape -> tuple; anything else is returned as is."""
    if isinstance(e, tvm.ir.GenericConst):
        return e.value.numpy()
    if isinstance(e, relax.ShapeExpr):
        return tuple(int(v) for v in e.values)
    if isinstance(getattr(e, "value", None), (int, float)):
        return float(e.value)
    return e


def probe_call_tir(mod: tvm.IRModule, call, fn: str, out_shape: tuple[int, ...]):
    """Recover the constants TVM baked into a TE kernel by running it once on probe input.

    ``pad`` -> ([(before, after)] per axis, pad value); one-input ``maximum``/``minimum`` -> bound.
    """
    in_shape, _ = shape_of(call.args[1].fields[0])
    prim = mod[call.args[0]].with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": prim}), target="llvm")
    fill = {"pad": np.nan, "maximum": -3e38, "minimum": 3e38}[fn]
    x = tvm.runtime.tensor(np.full(in_shape, fill, np.float32))
    y = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    lib["main"](x, y)
    out = y.numpy()
    if fn != "pad":
        return float(out.reshape(-1)[0])
    copied = np.isnan(out)
    pads = []
    for ax in range(out.ndim):
        idx = np.nonzero(copied.any(axis=tuple(i for i in range(out.ndim) if i != ax)))[0]
        pads.append((int(idx[0]), int(out.shape[ax] - idx[-1] - 1)))
    if copied.sum() != np.prod(in_shape):  # edge / reflect padding copies input values outward
        return pads, math.nan
    return pads, float(out[~copied].reshape(-1)[0]) if (~copied).any() else 0.0
