"""The rules every int8 graph obeys, whatever its source (TFLite, ONNX, built-in): each check
returns a one-line problem or None; :meth:`tvm_patchnet.graph.Graph.validate` raises on the first."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .graph import Graph, Op, Tensor

#: Largest tensor (bytes) a graph may hold: 256 MiB. Microcontrollers have at most a few MiB of
#: SRAM and tens of MiB of external RAM, so a larger tensor only comes from a corrupt file or an
#: absurd setting, and would exhaust the host before any analysis could say so.
MAX_TENSOR_BYTES = 256 << 20
#: Highest tensor rank (TFLite Micro kernels take at most 5 dimensions; 8 leaves room).
MAX_RANK = 8
#: Value range of each integer dtype; zero points must lie inside it.
DTYPE_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(1 << 15), (1 << 15) - 1),
                "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}


def printable(name: str) -> str:
    """``name`` with control characters replaced, so a message stays on one line."""
    return "".join(c if c.isprintable() else "?" for c in str(name))


def shape_problem(shape, dtype: str) -> str | None:
    """Why ``shape`` (elements) of ``dtype`` cannot be a tensor, or None: rank <= 8, every
    dimension an integer >= 1, at most :data:`MAX_TENSOR_BYTES` bytes."""
    if len(shape) > MAX_RANK:
        return f"rank {len(shape)} exceeds {MAX_RANK}"
    for k, d in enumerate(shape):
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
            return f"dimension {k} of shape {list(shape)} is {d!r}, must be an integer >= 1"
    nbytes = int(np.dtype(dtype).itemsize)
    for d in shape:
        nbytes *= int(d)
        if nbytes > MAX_TENSOR_BYTES:
            size = np.dtype(dtype).itemsize * int(np.prod([float(d) for d in shape]))
            return (f"shape {list(shape)} {dtype} is {size / (1 << 20):,.0f} MiB, over the "
                    f"{MAX_TENSOR_BYTES >> 20} MiB limit for one tensor (no microcontroller could hold it)")
    return None


def quant_problem(shape, dtype: str, scale, zero_point, axis: int) -> str | None:
    """Why the quantization ``scale`` / ``zero_point`` (arrays, one entry or one per channel
    along ``axis``) of a ``shape`` ``dtype`` tensor is invalid, or None."""
    scale = np.asarray(scale, np.float64).reshape(-1)
    zp = np.asarray(zero_point).reshape(-1) if zero_point is not None else np.zeros(scale.size, np.int64)
    if scale.size == 0:
        return "quantization has no scale"
    bad = np.flatnonzero(~(np.isfinite(scale) & (scale > 0)))
    if bad.size:
        k = int(bad[0])
        return f"scale {scale[k]:g}{f' (channel {k})' if scale.size > 1 else ''} is not a finite positive number"
    if zp.size != scale.size:
        return f"{zp.size} zero points for {scale.size} scales"
    if scale.size > 1:
        if not 0 <= axis < len(shape):
            return f"quantized dimension {axis} is outside the tensor's {len(shape)} dimensions"
        if scale.size != shape[axis]:
            return f"{scale.size} scales for {shape[axis]} channels along quantized dimension {axis}"
    lo, hi = DTYPE_RANGES.get(dtype, (None, None))
    if lo is not None:
        out = [int(z) for z in zp if not lo <= int(z) <= hi]
        if out:
            return f"zero point {out[0]} is outside the {dtype} range [{lo}, {hi}]"
    return None


def tensor_problem(t: Tensor) -> str | None:
    """Why tensor ``t`` is invalid (shape, size, quantization, constant data), or None."""
    if t.dtype not in DTYPE_RANGES and t.dtype != "float32":
        return f"unsupported dtype {t.dtype!r}"
    problem = shape_problem(t.shape, t.dtype)
    if problem is None and t.scale is None and t.dtype == "int8":
        problem = "int8 tensor without quantization parameters"
    if problem is None and t.scale is not None:
        problem = quant_problem(t.shape, t.dtype, t.scale, t.zero_point, t.quant_axis)
    if problem is None and t.const and (t.data is None or tuple(t.data.shape) != tuple(t.shape)
                                        or str(t.data.dtype) != t.dtype):
        got = "no data" if t.data is None else f"data {list(t.data.shape)} {t.data.dtype}"
        problem = f"constant has {got}, expected {list(t.shape)} {t.dtype}"
    return problem


def op_problem(g: Graph, op: Op) -> str | None:
    """Why ``op``'s inputs, attributes and output shape do not fit together, or None."""
    ins = [g.tensors[n] if n else None for n in op.inputs]
    out = g.tensors[op.outputs[0]]
    need = _ARITY.get(op.kind, 1)
    if len(ins) < need or any(t is None for t in ins[:need]):
        return f"{op.kind} needs {need} input(s), got {sum(t is not None for t in ins)}"
    if (ins[0].const if op.kind not in ("add", "mul", "concat") else all(t is None or t.const for t in ins)):
        return "the op reads no activation (a constant as its data input)"
    if op.kind not in ("quantize", "dequantize"):  # the only ops that change the activation dtype
        acts = [t for t in ins if t is not None and not t.const] + [g.tensors[n] for n in op.outputs]
        if len({t.dtype for t in acts}) > 1:
            return f"activations mix dtypes {sorted({t.dtype for t in acts})}"
    check = _OP_CHECKS.get(op.kind, _same_shape)
    return check(op, ins, out)


_ARITY = {"conv2d": 2, "depthwise_conv2d": 2, "fully_connected": 2, "add": 2, "mul": 2}


def _ints(op: Op, key: str, n: int, low: int) -> tuple[int, ...] | str:
    v = op.attrs.get(key)
    try:
        vals = tuple(int(x) for x in v)
    except (TypeError, ValueError):
        return f"attribute {key}={v!r} is not {n} integers"
    if len(vals) != n or any(x < low for x in vals):
        return f"{key} {list(vals)} must be {n} integers >= {low}"
    return vals


def _window(op: Op, x, out, kernel, dilation) -> str | None:
    """Check strides, padding and the output's spatial size of a 2-D window over NHWC ``x``."""
    strides, pad = _ints(op, "strides", 2, 1), _ints(op, "padding", 4, 0)
    for v in (strides, pad):
        if isinstance(v, str):
            return v
    if len(x.shape) != 4 or len(out.shape) != 4:
        return f"input {list(x.shape)} and output {list(out.shape)} must be NHWC (4-D)"
    expect = [x.shape[0]]
    for k, (size, before, after) in enumerate(((x.shape[1], pad[0], pad[2]), (x.shape[2], pad[1], pad[3]))):
        eff = (kernel[k] - 1) * dilation[k] + 1
        if eff > size + before + after:
            return (f"window {kernel[0]}x{kernel[1]} (dilation {dilation[0]}x{dilation[1]}) does not fit the "
                    f"{x.shape[1]}x{x.shape[2]} input padded by {list(pad)}")
        expect.append((size + before + after - eff) // strides[k] + 1)
    if tuple(expect) != tuple(out.shape[:3]):
        return (f"output shape {list(out.shape)} disagrees with the {expect[1]}x{expect[2]} the input "
                f"{list(x.shape)}, window {kernel[0]}x{kernel[1]} and strides {list(strides)} give")
    return None


def _conv(op: Op, ins, out) -> str | None:
    x, w = ins[0], ins[1]
    if len(w.shape) != 4 or not w.const:
        return f"weights {list(w.shape)} must be a 4-D constant"
    dil = _ints(op, "dilation", 2, 1)
    if isinstance(dil, str):
        return dil
    problem = _window(op, x, out, w.shape[1:3], dil)
    if problem:
        return problem
    if op.kind == "conv2d" and w.shape[3] != x.shape[3]:
        return f"weights {list(w.shape)} take {w.shape[3]} input channels, the input has {x.shape[3]}"
    if op.kind == "depthwise_conv2d":
        m = op.attrs.get("depth_multiplier", 1)
        if w.shape[0] != 1 or not isinstance(m, (int, np.integer)) or m < 1 or w.shape[3] != x.shape[3] * m:
            return (f"depthwise weights {list(w.shape)} do not fit {x.shape[3]} input channels with "
                    f"depth multiplier {m!r}")
    return _bias_and_channels(ins, out, w.shape[0] if op.kind == "conv2d" else w.shape[3])


def _bias_and_channels(ins, out, channels: int) -> str | None:
    """Output channels, and the weights' / bias's dtype: int8 / int32 under int8 inputs, as the input's otherwise."""
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if out.shape[-1] != channels:
        return f"output has {out.shape[-1]} channels, the weights give {channels}"
    if w.dtype != x.dtype:
        return f"weights are {w.dtype}, the input {x.dtype}"
    bias_dtype = "int32" if x.dtype == "int8" else x.dtype
    if b is not None and (b.shape != (channels,) or not b.const or b.dtype != bias_dtype):
        return f"bias {list(b.shape)} {b.dtype} must be a constant of {channels} {bias_dtype} values"
    return None


def _fc(op: Op, ins, out) -> str | None:
    x, w = ins[0], ins[1]
    if len(w.shape) != 2 or not w.const:
        return f"weights {list(w.shape)} must be a 2-D constant"
    n_out, n_in = w.shape
    if x.size % n_in:
        return f"input {list(x.shape)} is not a whole number of rows of {n_in}"
    if out.shape[-1] != n_out or out.size != x.size // n_in * n_out:
        return f"output {list(out.shape)} disagrees with input {list(x.shape)} and weights {list(w.shape)}"
    return _bias_and_channels(ins, out, n_out)


def _pool(op: Op, ins, out) -> str | None:
    pool = _ints(op, "pool", 2, 1)
    if isinstance(pool, str):
        return pool
    problem = _window(op, ins[0], out, pool, (1, 1))
    if problem:
        return problem
    pad = op.attrs["padding"]
    if any(int(p) >= pool[k % 2] for k, p in enumerate(pad)):  # a window wholly in the padding
        return f"padding {list(pad)} is not smaller than the {pool[0]}x{pool[1]} pool window"
    if out.shape[3] != ins[0].shape[3]:
        return f"output has {out.shape[3]} channels, the input {ins[0].shape[3]}"
    return None


def _binary(op: Op, ins, out) -> str | None:
    try:
        shape = tuple(np.broadcast_shapes(ins[0].shape, ins[1].shape))
    except ValueError:
        return f"input shapes {list(ins[0].shape)} and {list(ins[1].shape)} do not broadcast"
    return None if shape == tuple(out.shape) else f"output shape {list(out.shape)}, the inputs give {list(shape)}"


def _same_shape(op: Op, ins, out) -> str | None:
    if op.kind == "softmax" and (not ins[0].shape or not math.isfinite(op.attrs.get("beta", 1.0))
                                 or op.attrs.get("beta", 1.0) <= 0):
        return f"softmax needs a tensor of rank >= 1 and a finite beta > 0, got beta {op.attrs.get('beta')!r}"
    if tuple(ins[0].shape) != tuple(out.shape):
        return f"output shape {list(out.shape)} differs from the input's {list(ins[0].shape)}"
    return None


def _reshape(op: Op, ins, out) -> str | None:
    return None if ins[0].size == out.size else f"reshape of {ins[0].size} values into {list(out.shape)}"


def _mean(op: Op, ins, out) -> str | None:
    rank = len(ins[0].shape)
    axes = op.attrs.get("axes", [])
    if any(not -rank <= int(a) < rank for a in axes):
        return f"mean axes {list(axes)} outside the input's {rank} dimensions"
    reduced = {int(a) % rank for a in axes}
    size = int(np.prod([d for k, d in enumerate(ins[0].shape) if k not in reduced], dtype=np.int64))
    return None if out.size == size else f"output {list(out.shape)} disagrees with the mean over axes {list(axes)}"


def _pad(op: Op, ins, out) -> str | None:
    pads = [tuple(int(v) for v in p) for p in op.attrs.get("paddings", [])]
    x = ins[0]
    if len(pads) != len(x.shape) or any(len(p) != 2 or min(p) < 0 for p in pads):
        return f"paddings {pads} must be one non-negative (before, after) pair per input dimension"
    lo, hi = DTYPE_RANGES.get(out.dtype, (-(1 << 31), (1 << 31) - 1))
    if "value" in op.attrs and not lo <= op.attrs["value"] <= hi:
        return f"fill value {op.attrs['value']} is outside {out.dtype}'s range"
    expect = tuple(d + a + b for d, (a, b) in zip(x.shape, pads, strict=True))
    return None if expect == tuple(out.shape) else f"output shape {list(out.shape)}, the padding gives {list(expect)}"


def _transpose(op: Op, ins, out) -> str | None:
    perm = [int(p) for p in op.attrs.get("perm", [])]
    if sorted(perm) != list(range(len(ins[0].shape))):
        return f"perm {perm} is not a permutation of the input's {len(ins[0].shape)} dimensions"
    expect = tuple(ins[0].shape[p] for p in perm)
    return None if expect == tuple(out.shape) else f"output shape {list(out.shape)}, the perm gives {list(expect)}"


def _resize(op: Op, ins, out) -> str | None:
    x = ins[0]
    if len(x.shape) != 4 or len(out.shape) != 4 or (x.shape[0], x.shape[3]) != (out.shape[0], out.shape[3]):
        return f"input {list(x.shape)} and output {list(out.shape)} must be NHWC with the same N and C"
    return None


def _concat(op: Op, ins, out) -> str | None:
    shapes = [t.shape for t in ins if t is not None]
    rank = len(out.shape)
    axis = int(op.attrs.get("axis", -1))
    if not -rank <= axis < rank or any(len(s) != rank for s in shapes):
        return f"axis {axis} or input ranks do not fit the {rank}-D output"
    axis %= rank
    expect = list(out.shape)
    expect[axis] = sum(s[axis] for s in shapes)
    if any(tuple(s[:axis] + s[axis + 1:]) != tuple(out.shape[:axis] + out.shape[axis + 1:]) for s in shapes) \
            or tuple(expect) != tuple(out.shape):
        return f"inputs {[list(s) for s in shapes]} do not concatenate to {list(out.shape)} along axis {axis}"
    return None


_OP_CHECKS = {
    "conv2d": _conv, "depthwise_conv2d": _conv, "fully_connected": _fc, "add": _binary, "mul": _binary,
    "avg_pool2d": _pool, "max_pool2d": _pool, "mean": _mean, "pad": _pad, "reshape": _reshape,
    "transpose": _transpose, "resize_nearest": _resize, "concat": _concat,
}
