"""NumPy reference executor for float graphs (the output of :mod:`.torch_onnx`).

Used for calibration (:mod:`tvm_patchnet.ptq`) and to check imports against the framework.
Activations are NHWC float32; any batch size works (graph shapes say batch 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import PatchnetError
from ..graph import Graph, Op


def run_float(graph: Graph, x: np.ndarray, trace: bool = False):
    """Run ``graph`` on ``x`` (NHWC float). Returns the list of outputs, or with ``trace`` a dict
    tensor name -> value for the input and every op output."""
    vals: dict[str, np.ndarray] = {graph.inputs[0]: np.asarray(x, np.float32)}
    for op in graph.ops:
        ins = [vals[n] if n in vals else graph.t(n).data for n in op.inputs]
        fn = KERNELS.get(op.kind)
        if fn is None:
            raise PatchnetError(f"op '{op.name}' ({op.kind}): no float reference kernel")
        y = fn(op, graph, ins)
        if op.attrs.get("clamp") is not None:
            y = np.clip(y, *op.attrs["clamp"])
        vals[op.outputs[0]] = y.astype(np.float32, copy=False)
    return vals if trace else [vals[n] for n in graph.outputs]


def _taps(x: np.ndarray, kh: int, kw: int, strides, dilation, oh: int, ow: int):
    """Yield (i, j, strided window view) for every kernel tap over padded NHWC ``x``."""
    (sh, sw), (dh, dw) = strides, dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]


def _pad_hw(x: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    t, l, b, r = padding
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _out_hw(op: Op, graph: Graph) -> tuple[int, int]:
    return graph.t(op.outputs[0]).shape[1:3]


def _conv(op: Op, graph: Graph, ins):
    x, w, b = ins
    xp = _pad_hw(x, op.attrs["padding"])
    oh, ow = _out_hw(op, graph)
    out = np.zeros((x.shape[0], oh, ow, w.shape[0]), np.float32)
    for i, j, win in _taps(xp, w.shape[1], w.shape[2], op.attrs["strides"], op.attrs["dilation"], oh, ow):
        out += win @ w[:, i, j, :].T
    return out + b


def _depthwise(op: Op, graph: Graph, ins):
    x, w, b = ins
    xp = np.repeat(_pad_hw(x, op.attrs["padding"]), op.attrs["depth_multiplier"], axis=3)
    oh, ow = _out_hw(op, graph)
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), np.float32)
    for i, j, win in _taps(xp, w.shape[1], w.shape[2], op.attrs["strides"], op.attrs["dilation"], oh, ow):
        out += win * w[0, i, j, :]
    return out + b


def _pool(op: Op, graph: Graph, ins):
    """Max pool ignores padding; average pool divides by the number of real (unpadded) taps."""
    x = ins[0]
    oh, ow = _out_hw(op, graph)
    kh, kw = op.attrs["pool"]
    taps = list(_taps(_pad_hw(x, op.attrs["padding"], np.nan), kh, kw, op.attrs["strides"], (1, 1), oh, ow))
    stack = np.stack([t for _, _, t in taps])
    if op.kind == "max_pool2d":
        return np.nanmax(stack, axis=0)
    return np.nansum(stack, axis=0) / np.sum(~np.isnan(stack), axis=0)


def _softmax(op: Op, graph: Graph, ins):
    z = ins[0] * op.attrs["beta"]
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reshape(op: Op, graph: Graph, ins):
    return ins[0].reshape((ins[0].shape[0],) + graph.t(op.outputs[0]).shape[1:])


KERNELS: dict[str, Callable] = {
    "conv2d": _conv,
    "depthwise_conv2d": _depthwise,
    "fully_connected": lambda op, g, ins: ins[0].reshape(ins[0].shape[0], -1) @ ins[1].T + ins[2],
    "add": lambda op, g, ins: ins[0] + ins[1],
    "mul": lambda op, g, ins: ins[0] * ins[1],
    "avg_pool2d": _pool,
    "max_pool2d": _pool,
    "pad": lambda op, g, ins: np.pad(ins[0], op.attrs["paddings"]),
    "reshape": _reshape,
    "transpose": lambda op, g, ins: np.transpose(ins[0], op.attrs["perm"]),
    "concat": lambda op, g, ins: np.concatenate(ins, axis=op.attrs["axis"]),
    "softmax": _softmax,
    "logistic": lambda op, g, ins: 1.0 / (1.0 + np.exp(-ins[0])),
}
