"""Build int8 graphs op by op: built-in architectures and quantized float models use this.

The builder draws int8 weights and real-valued biases from a seeded generator (every tensor is
checked against the graph's size limit before anything is allocated); ``finish()``
then calibrates like post-training quantization: it runs the network once in float (NumPy, the
reference kernels of ``frontend.float_exec``) on a seeded input, fake-quantizing every
activation, and takes each activation's scale and zero point from its observed range. So a
built-in architecture that was never trained still has int8 activations spread over many
levels, and can be profiled, compiled and run bit-exactly with meaningful numbers.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .errors import PatchnetError
from .graph import Graph, Op, Tensor
from .graph_checks import shape_problem
from .quant import act_range


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding (before, after) along one axis."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def conv_out(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    eff = (kernel - 1) * dilation + 1
    return (size + before + after - eff) // stride + 1


class GraphBuilder:
    """Append ops to an int8 graph; every method returns the name of the output tensor.

    ``padding`` arguments take "same" (TFLite SAME), "valid", or explicit (top, left, bottom,
    right) element counts. Block numbers: call :meth:`next_block` before each block's first op
    (the stem conv is block 0).
    """

    def __init__(self, name: str, input_shape: tuple[int, ...], seed: int = 0, input_scale: float = 1 / 128):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.name = name
        self.block = 0
        self._count: dict[str, int] = {}
        inp = self._tensor("input", tuple(input_shape), scale=input_scale, zp=0)
        self.inputs = [inp]

    # ------------------------------------------------------------------ helpers
    def next_block(self) -> int:
        """Start a new block (call before its first op) unless the current one is still empty."""
        if any(op.block == self.block for op in self.ops):
            self.block += 1
        return self.block

    @contextmanager
    def new_block(self):
        self.next_block()
        yield self.block

    def _uniq(self, base: str) -> str:
        k = self._count.get(base, 0)
        self._count[base] = k + 1
        return f"{base}_{k}"

    def _check(self, name: str, shape, dtype: str) -> None:
        """Refuse a tensor the graph could not hold (:data:`~tvm_patchnet.graph_checks.MAX_TENSOR_BYTES`)
        before anything of that size is allocated."""
        problem = shape_problem(tuple(int(s) for s in shape), dtype)
        if problem:
            raise PatchnetError(f"{self.name}: tensor '{name}': {problem}")

    def _tensor(self, name, shape, dtype="int8", scale=None, zp=0, data=None, axis=0) -> str:
        self._check(name, shape, dtype)
        self.tensors[name] = Tensor(
            name,
            tuple(int(s) for s in shape),
            dtype,
            None if scale is None else np.atleast_1d(np.asarray(scale, dtype=np.float32)),
            None if scale is None else np.atleast_1d(np.asarray(zp, dtype=np.int32)),
            axis,
            data,
            data is not None,
        )
        return name

    def _op(self, kind, inputs, out_shape, out_scale, out_zp=0, attrs=None, base=None) -> str:
        name = self._uniq(base or kind)
        out = self._tensor(name + ":out", out_shape, scale=out_scale, zp=out_zp)
        self.ops.append(Op(name, kind, list(inputs), [out], dict(attrs or {}), self.block))
        return out

    def _weights(self, name, shape, fan_in, per_channel_axis=0) -> tuple[str, np.ndarray]:
        self._check(name, shape, "int8")
        data = self.rng.integers(-127, 128, size=shape, dtype=np.int8)
        n = shape[per_channel_axis]
        # Real weights with a std of ~1/sqrt(fan_in) (He-style): outputs keep the size of the
        # inputs, so ReLU6 layers neither saturate nor die; calibration then sets the scales.
        unit = 1.0 / (_INT8_STD * np.sqrt(fan_in))
        scale = (unit * (0.75 + 0.5 * self.rng.random(n))).astype(np.float32)
        return self._tensor(name, shape, "int8", scale, np.zeros(n, np.int32), data, axis=per_channel_axis), scale

    def _bias(self, name, n) -> str:
        # int32 values and scale (s_in * s_w) are set by calibration, from a real-valued bias
        return self._tensor(name, (n,), "int32", np.ones(n, np.float32), np.zeros(n, np.int32),
                            np.zeros(n, np.int32))

    @staticmethod
    def _resolve_padding(padding, h, w, kh, kw, sh, sw, dh, dw):
        if padding == "same":
            t, b = same_padding(h, kh, sh, dh)
            l, r = same_padding(w, kw, sw, dw)
            return (t, l, b, r)
        if padding == "valid":
            return (0, 0, 0, 0)
        return tuple(int(p) for p in padding)

    def _window(self, x, kernel, stride, dilation, padding):
        """Geometry of a windowed op on NHWC ``x``: ((kh, kw), strides, dilation, padding, (n, oh, ow), c)."""
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        dh, dw = _pair(dilation)
        n, h, w, c = self.tensors[x].shape
        pad = self._resolve_padding(padding, h, w, kh, kw, sh, sw, dh, dw)
        oh, ow = conv_out(h, kh, sh, dh, pad[0], pad[2]), conv_out(w, kw, sw, dw, pad[1], pad[3])
        return (kh, kw), (sh, sw), (dh, dw), pad, (n, oh, ow), c

    # ---------------------------------------------------------------------- ops
    def conv2d(self, x, out_ch, kernel, stride=1, dilation=1, padding="same", act="relu6") -> str:
        """Regular convolution, OHWI weights; ``kernel``/``stride``/``dilation`` int or pair."""
        (kh, kw), (sh, sw), (dh, dw), pad, (n, oh, ow), c = self._window(x, kernel, stride, dilation, padding)
        name = self._uniq("conv")
        wt, _ = self._weights(name + ":w", (out_ch, kh, kw, c), kh * kw * c)
        b = self._bias(name + ":b", out_ch)
        return self._conv_like("conv2d", name, x, wt, b, (n, oh, ow, out_ch),
                               {"strides": (sh, sw), "dilation": (dh, dw), "padding": pad}, act)

    def depthwise_conv2d(self, x, kernel, stride=1, dilation=1, padding="same", act="relu6", multiplier=1) -> str:
        """Depthwise convolution, 1HW(C*M) weights."""
        (kh, kw), (sh, sw), (dh, dw), pad, (n, oh, ow), c = self._window(x, kernel, stride, dilation, padding)
        oc = c * multiplier
        name = self._uniq("dwconv")
        wt, _ = self._weights(name + ":w", (1, kh, kw, oc), kh * kw, per_channel_axis=3)
        b = self._bias(name + ":b", oc)
        attrs = {"strides": (sh, sw), "dilation": (dh, dw), "padding": pad, "depth_multiplier": multiplier}
        return self._conv_like("depthwise_conv2d", name, x, wt, b, (n, oh, ow, oc), attrs, act)

    def _conv_like(self, kind, name, x, wt, b, out_shape, attrs, act) -> str:
        out = self._tensor(name + ":out", out_shape, scale=1.0)
        attrs["act"] = act
        self.ops.append(Op(name, kind, [x, wt, b], [out], attrs, self.block))
        return out

    def fully_connected(self, x, n_out, act=None) -> str:
        t = self.tensors[x]
        n_in = t.shape[-1]
        name = self._uniq("fc")
        wt, s_w = self._weights(name + ":w", (n_out, n_in), n_in)
        self.tensors[wt].scale = s_w[:1]  # per-tensor, as TFLite FC expects
        self.tensors[wt].zero_point = np.zeros(1, np.int32)
        b = self._bias(name + ":b", n_out)
        out = self._tensor(name + ":out", (t.size // n_in, n_out), scale=1.0)
        self.ops.append(Op(name, "fully_connected", [x, wt, b], [out], {"act": act}, self.block))
        return out

    def add(self, a, b, act=None) -> str:
        return self._op("add", [a, b], self.tensors[a].shape, 1.0, 0, {"act": act})

    def mul(self, a, b, act=None) -> str:
        shape = tuple(np.broadcast_shapes(self.tensors[a].shape, self.tensors[b].shape))
        return self._op("mul", [a, b], shape, 1.0, 0, {"act": act})

    def logistic(self, x) -> str:
        return self._op("logistic", [x], self.tensors[x].shape, 1 / 256, -128)

    def global_avg_pool(self, x) -> str:
        """Average over H and W (an AVERAGE_POOL_2D with the whole map as window), NHWC out."""
        _n, h, w, _c = self.tensors[x].shape
        return self.avg_pool2d(x, (h, w), (1, 1), "valid")

    def avg_pool2d(self, x, pool, stride, padding="valid") -> str:
        return self._pool("avg_pool2d", x, pool, stride, padding)

    def max_pool2d(self, x, pool, stride, padding="valid") -> str:
        return self._pool("max_pool2d", x, pool, stride, padding)

    def _pool(self, kind, x, pool, stride, padding) -> str:
        t = self.tensors[x]
        (ph, pw), strides, _, pad, (n, oh, ow), c = self._window(x, pool, stride, 1, padding)
        attrs = {"pool": (ph, pw), "strides": strides, "padding": pad, "act": None}
        return self._op(kind, [x], (n, oh, ow, c), t.s, t.zp, attrs)

    def reshape(self, x, shape) -> str:
        t = self.tensors[x]
        return self._op("reshape", [x], tuple(shape), t.s, t.zp)

    def softmax(self, x) -> str:
        return self._op("softmax", [x], self.tensors[x].shape, 1 / 256, -128, {"beta": 1.0})

    def finish(self, outputs: list[str] | str) -> Graph:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        g = Graph(self.name, self.tensors, self.ops, list(self.inputs), outputs)
        g.validate()  # shapes and sizes, before calibration allocates the activations
        _calibrate(g, self.rng)
        g.validate()  # the calibrated scales, zero points and biases
        return g


_INT8_STD = 74.0  # std of a uniform int8 value, in levels

#: ops whose int8 output must keep its input's quantization (TFLite requires it)
_SAME_QUANT = ("avg_pool2d", "max_pool2d", "reshape")
#: ops with a fixed int8 output quantization (TFLite's), scale and zero point
_FIXED_QUANT = {"softmax": (1 / 256, -128), "logistic": (1 / 256, -128)}


def _calibrate(g: Graph, rng: np.random.Generator) -> None:
    """Set activation scales / zero points, biases and clamps from one float run (see module doc)."""
    from .frontend.float_exec import KERNELS

    x = g.t(g.inputs[0])
    q = rng.integers(-128, 128, size=x.shape)
    vals = {x.name: ((q - x.zp) * x.s).astype(np.float32)}
    for op in g.ops:
        out = g.t(op.outputs[0])
        ins = [vals[n] if n in vals else _real_weights(g.t(n)) for n in op.inputs if n]
        has_bias = op.kind in ("conv2d", "depthwise_conv2d", "fully_connected")
        if has_bias:  # run without bias, then draw a bias on the scale of the channel's output
            ins[2] = np.zeros(out.shape[-1], np.float32)
        y = KERNELS[op.kind](op, g, ins).astype(np.float32)
        if has_bias:
            bias = (rng.normal(size=out.shape[-1]) * 0.3 * (y.reshape(-1, y.shape[-1]).std(axis=0) + 1e-6))
            y = y + bias.astype(np.float32)
        act = op.attrs.get("act")
        y = np.maximum(y, 0) if act == "relu" else np.clip(y, 0, 6) if act == "relu6" else y
        if op.kind in _SAME_QUANT:
            scale, zp = g.t(op.inputs[0]).s, g.t(op.inputs[0]).zp
        elif op.kind in _FIXED_QUANT:
            scale, zp = _FIXED_QUANT[op.kind]
        else:
            scale, zp = _range_quant(float(y.min()), float(y.max()))
        out.scale = np.array([scale], np.float32)
        out.zero_point = np.array([zp], np.int32)
        if has_bias:
            b = g.t(op.inputs[2])
            s_in = g.t(op.inputs[0]).s
            b.scale = (s_in * g.t(op.inputs[1]).scale).astype(np.float32).reshape(-1)
            b.zero_point = np.zeros(b.scale.size, np.int32)  # one per scale (per tensor for FC)
            b.data = np.round(bias / np.broadcast_to(b.scale, bias.shape)).astype(np.int32)
        if op.kind not in _FIXED_QUANT:
            op.attrs["act_range"] = act_range(act, float(out.scale[0]), zp)
        s = float(out.scale[0])  # fake-quantize, so later ranges see int8 rounding and clamping
        vals[out.name] = ((np.clip(np.round(y / s) + zp, -128, 127) - zp) * s).astype(np.float32)


def _real_weights(t: Tensor) -> np.ndarray:
    """Dequantized weights of a constant (per-channel scale along its quantized axis)."""
    shape = [1] * t.data.ndim
    if t.scale.size > 1:
        shape[t.quant_axis] = -1
    return (t.data.astype(np.float32) * t.scale.reshape(shape)).astype(np.float32)


def _range_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))
