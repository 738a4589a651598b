"""Walk a float Relax module (from TVM's PyTorch or ONNX frontend) into a float :class:`Graph`.

The float graph uses the int8 graph's classes and layouts (NHWC activations, OHWI conv weights,
1HW(C*M) depthwise weights, [O, I] fully-connected weights) with ``dtype="float32"``, float
weights and biases in ``Tensor.data`` and no quantization parameters. Folded here: batch norm
into the preceding conv/FC (else a 1x1 depthwise conv), constant bias adds into conv/FC biases,
zero pads into the next conv's padding, ReLU / ReLU6 / clip into the producing op as
``attrs["clamp"] = (lo, hi)`` (``attrs["act"]`` names the TFLite activation when one matches;
a clamp with nothing to fuse into becomes a 1x1 max pool). Means over H, W become
``avg_pool2d`` with the whole map as window. Constants are folded in NumPy; the constants TVM's
ONNX frontend bakes into TE kernels (Pad, old Clip) are recovered by running the kernel once.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import tvm
from tvm import relax

from ..errors import PatchnetError, UnsupportedOpsError
from ..graph import Graph, Op, Tensor
from .relax_exprs import arg_value, expr_vars, probe_call_tir, shape_of

#: Op kinds that can absorb a following clamp (ReLU, ReLU6, clip) as a fused activation.
FUSIBLE = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "mul", "avg_pool2d", "max_pool2d")
_WEIGHTED = ("conv2d", "depthwise_conv2d", "fully_connected")
_ACTS = {(0.0, math.inf): "relu", (0.0, 6.0): "relu6", (-1.0, 1.0): "relu_n1_to_1"}


def relax_to_float_graph(mod: tvm.IRModule, name: str, source: str) -> Graph:
    """Float :class:`Graph` of ``mod["main"]``; ``source`` names the model in messages.

    Raises :class:`UnsupportedOpsError` listing every Relax binding (index, op) it cannot convert.
    """
    return _Walker(mod, name, source).run()


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Relax (NCHW) shape -> graph shape: rank-4 shapes become NHWC, others are unchanged."""
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def _pool_attrs(pool, strides=(1, 1), padding=(0, 0, 0, 0)) -> dict:
    return {"pool": tuple(pool), "strides": tuple(strides), "padding": tuple(padding), "act": None, "clamp": None}


class _Walker:
    """Translate ``main``'s bindings in order. Handlers ``_op_<relax op>`` return False when
    they cannot convert a call; the walk goes on so that every unsupported op is reported."""

    def __init__(self, mod: tvm.IRModule, name: str, source: str):
        self.mod = relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))
        self.name, self.source = name, source
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.env: dict = {}  # relax var -> tensor name | np.ndarray (constant) | tuple
        self.uses: Counter = Counter()
        self.unsupported: list[tuple[int, str]] = []
        self.index = 0
        self.count: Counter = Counter()

    def run(self) -> Graph:
        func = self.mod["main"]
        bindings = [b for blk in func.body.blocks for b in blk.bindings]
        self.uses.update(v for e in [b.value for b in bindings] + [func.body.body] for v in expr_vars(e))
        if len(func.params) != 1:
            raise PatchnetError(f"{self.source}: expected one input tensor, found {len(func.params)}")
        shape, dtype = shape_of(func.params[0])
        if dtype != "float32" or len(shape) != 4:
            raise PatchnetError(f"{self.source}: input must be a float32 NCHW image batch, got {dtype} {shape}")
        self.env[func.params[0]] = self._tensor("input", nhwc(shape))
        for self.index, b in enumerate(bindings):
            self._bind(b.var, b.value)
        if self.unsupported:
            raise UnsupportedOpsError(f"{self.source} (Relax IR)", self.unsupported)
        out = self._value(func.body.body)
        outputs = list(out) if isinstance(out, tuple) else [out]
        if not all(isinstance(o, str) for o in outputs):
            raise PatchnetError(f"{self.source}: every model output must be a computed tensor")
        g = Graph(self.name, self.tensors, self.ops, ["input"], outputs)
        g.validate()
        return g

    # ------------------------------------------------------------------ plumbing
    def _value(self, e):
        """Walker value of an expression: tensor name, constant array, scalar or tuple."""
        if isinstance(e, relax.Tuple):
            return tuple(self._value(f) for f in e.fields)
        return self.env[e] if e in self.env else arg_value(e)

    def _bind(self, var, value) -> None:
        if isinstance(value, relax.TupleGetItem):
            self.env[var] = self._value(value.tuple_value)[value.index]
            return
        if not isinstance(value, relax.Call):
            self.env[var] = self._value(value)
            return
        args = [self._value(a) for a in value.args]
        op_name = value.op.name
        if op_name in _CONST_OPS and not any(isinstance(a, str) for a in args):
            self.env[var] = np.asarray(_CONST_OPS[op_name](value, args))
            return
        handler = getattr(self, "_op_" + op_name.removeprefix("relax.").replace(".", "_"), None)
        if handler is None or not handler(var, value, args):
            if op_name == "relax.call_tir":
                op_name = "call_tir:" + value.args[0].name_hint.rstrip("0123456789")
            self.unsupported.append((self.index, op_name))
            self.env[var] = self._tensor(f"unsupported_{self.index}", nhwc(shape_of(var)[0]))

    def _tensor(self, name: str, shape, data: np.ndarray | None = None) -> str:
        data = None if data is None else np.ascontiguousarray(data, np.float32)
        self.tensors[name] = Tensor(name, tuple(int(s) for s in shape), "float32", data=data, const=data is not None)
        return name

    def _emit(self, var, kind: str, inputs: list[str], attrs: dict, origin: str, shape=None) -> str:
        """Append an op; its output is the value of ``var`` (shape from ``var`` unless given)."""
        name = f"{kind}_{self.count[kind]}"
        self.count[kind] += 1
        out = self._tensor(name + ":out", shape if shape is not None else nhwc(shape_of(var)[0]))
        self.ops.append(Op(name, kind, inputs, [out], attrs, origin=f"op {self.index} ({origin})"))
        if var is not None:
            self.env[var] = out
        return out

    def _producer(self, expr, kinds: tuple[str, ...], act_free: bool = True) -> Op | None:
        """The op producing ``expr`` if it may be rewritten in place (single use, kind in ``kinds``)."""
        name = self.env.get(expr)
        if not isinstance(name, str) or self.uses[expr] != 1:
            return None
        op = next((o for o in reversed(self.ops) if name in o.outputs), None)
        if op is None or op.kind not in kinds or (act_free and op.attrs.get("clamp") is not None):
            return None
        return op

    def _weighted(self, var, kind: str, x: str, wt: np.ndarray, attrs: dict, origin: str, shape=None) -> bool:
        n_out = wt.shape[3] if kind == "depthwise_conv2d" else wt.shape[0]
        k = self.count[kind]
        wn = self._tensor(f"{kind}_{k}:w", wt.shape, wt)
        bn = self._tensor(f"{kind}_{k}:b", (n_out,), np.zeros(n_out, np.float32))
        self._emit(var, kind, [x, wn, bn], attrs, origin, shape)
        return True

    # --------------------------------------------------------------- conv / fc
    def _op_nn_conv2d(self, var, call, args) -> bool:
        (x, w), at = args, call.attrs
        if not isinstance(x, str) or not isinstance(w, np.ndarray) or (at.data_layout, at.kernel_layout) != (
                "NCHW", "OIHW"):
            return False
        groups, cin = int(at.groups), self.tensors[x].shape[3]
        pad = [int(p) for p in at.padding]
        src = self._producer(call.args[0], ("pad",))
        if src is not None and src.attrs["paddings"][3] == (0, 0):  # fold a spatial zero pad
            (pt, pb), (pl, pr) = src.attrs["paddings"][1:3]
            pad = [pad[0] + pt, pad[1] + pl, pad[2] + pb, pad[3] + pr]
            self.ops.remove(src)
            del self.tensors[src.outputs[0]]
            x = src.inputs[0]
        attrs = {"strides": tuple(int(s) for s in at.strides), "dilation": tuple(int(d) for d in at.dilation),
                 "padding": tuple(pad), "act": None, "clamp": None}
        if groups == 1:
            return self._weighted(var, "conv2d", x, w.transpose(0, 2, 3, 1), attrs, call.op.name)
        if groups == cin and w.shape[1] == 1:
            attrs["depth_multiplier"] = w.shape[0] // cin
            return self._weighted(var, "depthwise_conv2d", x, w.transpose(1, 2, 3, 0), attrs, call.op.name)
        return False

    def _op_matmul(self, var, call, args) -> bool:
        x, w = args
        if not isinstance(x, str) or not isinstance(w, np.ndarray) or w.ndim != 2 or len(self.tensors[x].shape) != 2:
            return False
        return self._weighted(var, "fully_connected", x, w.T, {"act": None, "clamp": None}, call.op.name)

    def _op_nn_batch_norm(self, var, call, args) -> bool:
        x, gamma, beta, mean, variance = args
        if not isinstance(x, str) or int(call.attrs.axis) != 1:
            return False
        scale = gamma / np.sqrt(variance + float(call.attrs.epsilon))
        shift = beta - mean * scale
        op = self._producer(call.args[0], _WEIGHTED)
        if op is None:
            if len(self.tensors[x].shape) != 4:
                return False
            attrs = {"strides": (1, 1), "dilation": (1, 1), "padding": (0, 0, 0, 0), "act": None, "clamp": None,
                     "depth_multiplier": 1}
            self._weighted(None, "depthwise_conv2d", x, scale.reshape(1, 1, 1, -1), attrs, call.op.name,
                           self.tensors[x].shape)
            op = self.ops[-1]
            scale = np.ones_like(scale)
        w, b = self.tensors[op.inputs[1]], self.tensors[op.inputs[2]]
        w.data = w.data * (scale if op.kind == "depthwise_conv2d" else scale.reshape(-1, *[1] * (w.data.ndim - 1)))
        b.data = (b.data * scale + shift).astype(np.float32)
        self.env[var] = (op.outputs[0], mean, variance)
        return True

    # ------------------------------------------------------------ elementwise
    def _binary(self, var, call, args, kind: str) -> bool:
        (a, a_expr), (b, _) = sorted(zip(args, call.args), key=lambda p: not isinstance(p[0], str))
        if not isinstance(a, str):
            return False
        if isinstance(b, str):
            self._emit(var, kind, [a, b], {"act": None, "clamp": None}, call.op.name)
            return True
        # A constant operand: only a per-channel bias add on a conv/FC (folded) is supported, as
        # the int8 kernels take two activations. A dummy from an unsupported op is passed on.
        op = self._producer(a_expr, _WEIGHTED)
        bias = _channel_vector(np.asarray(b), len(shape_of(var)[0]))
        if not a.startswith("unsupported_"):
            if kind != "add" or op is None or bias is None:
                return False
            self.tensors[op.inputs[2]].data = self.tensors[op.inputs[2]].data + bias
        self.env[var] = a
        return True

    def _op_add(self, var, call, args) -> bool:
        return self._binary(var, call, args, "add")

    def _op_multiply(self, var, call, args) -> bool:
        return self._binary(var, call, args, "mul")

    def _op_sigmoid(self, var, call, args) -> bool:
        if isinstance(args[0], str):
            self._emit(var, "logistic", [args[0]], {}, call.op.name)
        return isinstance(args[0], str)

    def _op_nn_softmax(self, var, call, args) -> bool:
        rank = len(shape_of(var)[0])
        if not isinstance(args[0], str) or int(call.attrs.axis) % rank != (1 if rank == 4 else rank - 1):
            return False
        self._emit(var, "softmax", [args[0]], {"beta": 1.0}, call.op.name)
        return True

    # -------------------------------------------------------------- clamps
    def _clamp(self, var, x_expr, x, lo: float, hi: float, origin: str) -> bool:
        if not isinstance(x, str):
            return False
        op = self._producer(x_expr, FUSIBLE, act_free=False)
        if op is None:
            if len(self.tensors[x].shape) != 4:
                return False
            self._emit(var, "max_pool2d", [x], _pool_attrs((1, 1)), origin)
            op = self.ops[-1]
        old = op.attrs["clamp"] or (-math.inf, math.inf)
        clamp = (max(old[0], lo), min(old[1], hi))
        op.attrs.update(clamp=clamp, act=_ACTS.get(clamp))
        self.env[var] = op.outputs[0]
        return True

    def _op_nn_relu(self, var, call, args) -> bool:
        return self._clamp(var, call.args[0], args[0], 0.0, math.inf, call.op.name)

    def _op_clip(self, var, call, args) -> bool:
        return self._clamp(var, call.args[0], args[0], float(args[1]), float(args[2]), call.op.name)

    def _op_call_tir(self, var, call, args) -> bool:
        """TE kernels from TVM's ONNX frontend: Clip as maximum/minimum, Pad as pad."""
        fn = call.args[0].name_hint.rstrip("0123456789")  # TVM numbers repeated kernels: maximum1
        ins = args[1]
        if not isinstance(ins[0], str) or fn not in ("maximum", "minimum", "pad") or len(ins) > 2:
            return False
        if len(ins) == 2:
            if not isinstance(ins[1], np.ndarray) or ins[1].size != 1:
                return False
            bound = float(ins[1].reshape(-1)[0])
        else:
            bound = probe_call_tir(self.mod, call, fn, shape_of(var)[0])
        if fn == "pad":
            return self._pad(var, ins[0], *bound, origin="call_tir:pad")
        lo, hi = (bound, math.inf) if fn == "maximum" else (-math.inf, bound)
        return self._clamp(var, call.args[1].fields[0], ins[0], lo, hi, f"call_tir:{fn}")

    # --------------------------------------------------------- pad / pools
    def _pad(self, var, x: str, pads: list[tuple[int, int]], value: float, origin: str) -> bool:
        """Zero padding of H, W, C only: int8 pads with the zero point, which stands for 0.0."""
        if len(pads) != 4 or pads[0] != (0, 0) or value != 0.0:
            return False
        self._emit(var, "pad", [x], {"paddings": [pads[0], pads[2], pads[3], pads[1]]}, origin)
        return True

    def _op_nn_pad(self, var, call, args) -> bool:
        if str(call.attrs.pad_mode) != "constant" or not isinstance(args[0], str):
            return False
        w = [int(p) for p in call.attrs.pad_width]
        return self._pad(var, args[0], list(zip(w[0::2], w[1::2])), float(call.attrs.pad_value), call.op.name)

    def _pool(self, var, call, args, kind: str) -> bool:
        x, at = args[0], call.attrs
        if not isinstance(x, str) or at.layout != "NCHW" or any(int(d) != 1 for d in at.dilation):
            return False
        n, h, w, c = self.tensors[x].shape
        (kh, kw), (sh, sw) = [int(k) for k in at.pool_size], [int(s) for s in at.strides]
        t, l, b, r = pad = [int(p) for p in at.padding]
        oh, ow = shape_of(var)[0][2:]
        b += max(0, (oh - 1) * sh + kh - (h + t + b))  # ceil_mode: windows past the bottom/right
        r += max(0, (ow - 1) * sw + kw - (w + l + r))
        if kind == "avg_pool2d" and bool(at.count_include_pad) and any(pad):  # padding counts: pad explicitly
            x = self._emit(None, "pad", [x], {"paddings": [(0, 0), (t, pad[2]), (l, pad[3]), (0, 0)]},
                           call.op.name, (n, h + t + pad[2], w + l + pad[3], c))
            t, l, b, r = 0, 0, b - pad[2], r - pad[3]
        self._emit(var, kind, [x], _pool_attrs((kh, kw), (sh, sw), (t, l, b, r)), call.op.name)
        return True

    def _op_nn_max_pool2d(self, var, call, args) -> bool:
        return self._pool(var, call, args, "max_pool2d")

    def _op_nn_avg_pool2d(self, var, call, args) -> bool:
        return self._pool(var, call, args, "avg_pool2d")

    def _op_mean(self, var, call, args) -> bool:
        x = args[0]
        if not isinstance(x, str) or len(self.tensors[x].shape) != 4 or sorted(
                int(a) % 4 for a in call.attrs.axis) != [2, 3]:
            return False
        n, h, w, c = self.tensors[x].shape
        if bool(call.attrs.keepdims):
            self._emit(var, "avg_pool2d", [x], _pool_attrs((h, w)), call.op.name)
        else:
            y = self._emit(None, "avg_pool2d", [x], _pool_attrs((h, w)), call.op.name, (n, 1, 1, c))
            self._emit(var, "reshape", [y], {}, call.op.name)
        return True

    def _op_reshape(self, var, call, args) -> bool:
        x = args[0]
        if not isinstance(x, str):
            return False
        src, dst = self.tensors[x].shape, nhwc(shape_of(var)[0])
        if len(dst) == 4 and dst[1] * dst[2] > 1:
            return False
        if len(src) == 4 and src[1] * src[2] > 1:  # flatten in NCHW order, as the float model does
            n, h, w, c = src
            x = self._emit(None, "transpose", [x], {"perm": (0, 3, 1, 2)}, call.op.name, (n, c, h, w))
        self._emit(var, "reshape", [x], {}, call.op.name)
        return True

    def _op_astype(self, var, call, args) -> bool:
        if not isinstance(args[0], str) or str(call.attrs.dtype) != "float32":
            return False
        self.env[var] = args[0]
        return True


# ------------------------------------------------------------------ Relax helpers
_CONST_OPS = {  # ops on constants only, folded in NumPy: (call, argument values) -> array
    "relax.reshape": lambda c, a: a[0].reshape(a[1]),
    "relax.permute_dims": lambda c, a: np.transpose(a[0], None if c.attrs.axes is None else
                                                    [int(i) for i in c.attrs.axes]),
    "relax.isnan": lambda c, a: np.isnan(a[0]),
    "relax.where": lambda c, a: np.where(a[0], a[1], a[2]),
    "relax.astype": lambda c, a: np.asarray(a[0]).astype(str(c.attrs.dtype)),
    "relax.add": lambda c, a: np.add(a[0], a[1]),
    "relax.subtract": lambda c, a: np.subtract(a[0], a[1]),
    "relax.multiply": lambda c, a: np.multiply(a[0], a[1]),
    "relax.divide": lambda c, a: np.divide(a[0], a[1]),
    "relax.sqrt": lambda c, a: np.sqrt(a[0]),
}


def _channel_vector(b: np.ndarray, rank: int) -> np.ndarray | None:
    """``b`` as a per-channel vector if it only varies along the channel axis, else None."""
    if b.ndim > rank:
        return None
    full = b.reshape((1,) * (rank - b.ndim) + b.shape)
    ch = 1 if rank == 4 else rank - 1
    if any(s != 1 for i, s in enumerate(full.shape) if i != ch):
        return None
    return full.reshape(-1).astype(np.float32)
