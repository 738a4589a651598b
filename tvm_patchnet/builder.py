"""Build int8 graphs op by op: built-in architectures and quantized float models use this.

Without real weights (``weights=None``) the builder draws int8 weights from a seeded generator
and picks activation scales that keep int8 values spread out, so a built-in architecture can be
profiled, compiled and run bit-exactly even though it was never trained.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from .graph import Graph, Op, Tensor
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

    def _tensor(self, name, shape, dtype="int8", scale=None, zp=0, data=None, axis=0) -> str:
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
        data = self.rng.integers(-127, 128, size=shape, dtype=np.int8)
        n = shape[per_channel_axis]
        # Uniform int8 weights and inputs have a std of ~74 levels; this weight scale gives
        # each layer a gain near 1, so activation scales stay put through a deep network.
        unit = _OUT_STD / (_INT8_STD * _INT8_STD * math.sqrt(fan_in))
        scale = (unit * (0.75 + 0.5 * self.rng.random(n))).astype(np.float32)
        return self._tensor(name, shape, "int8", scale, np.zeros(n, np.int32), data, axis=per_channel_axis), scale

    def _bias(self, name, n, s_in, s_w) -> str:
        data = self.rng.integers(-2000, 2000, size=(n,)).astype(np.int32)
        return self._tensor(name, (n,), "int32", s_in * s_w, np.zeros(n, np.int32), data)

    @staticmethod
    def _resolve_padding(padding, h, w, kh, kw, sh, sw, dh, dw):
        if padding == "same":
            t, b = same_padding(h, kh, sh, dh)
            l, r = same_padding(w, kw, sw, dw)
            return (t, l, b, r)
        if padding == "valid":
            return (0, 0, 0, 0)
        return tuple(int(p) for p in padding)

    def _out_scale(self, s_in: float, s_w: np.ndarray, fan_in: int) -> float:
        # Output std in real units over the int8 std we aim for (~_OUT_STD levels).
        return float(s_in * float(np.mean(s_w)) * _INT8_STD * _INT8_STD * math.sqrt(fan_in) / _OUT_STD)

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
        wt, s_w = self._weights(name + ":w", (out_ch, kh, kw, c), kh * kw * c)
        s_in = self.tensors[x].s
        b = self._bias(name + ":b", out_ch, s_in, s_w)
        return self._conv_like("conv2d", name, x, wt, b, (n, oh, ow, out_ch), s_w, kh * kw * c,
                               {"strides": (sh, sw), "dilation": (dh, dw), "padding": pad}, act)

    def depthwise_conv2d(self, x, kernel, stride=1, dilation=1, padding="same", act="relu6", multiplier=1) -> str:
        """Depthwise convolution, 1HW(C*M) weights."""
        (kh, kw), (sh, sw), (dh, dw), pad, (n, oh, ow), c = self._window(x, kernel, stride, dilation, padding)
        oc = c * multiplier
        name = self._uniq("dwconv")
        wt, s_w = self._weights(name + ":w", (1, kh, kw, oc), kh * kw, per_channel_axis=3)
        s_in = self.tensors[x].s
        b = self._bias(name + ":b", oc, s_in, s_w)
        attrs = {"strides": (sh, sw), "dilation": (dh, dw), "padding": pad, "depth_multiplier": multiplier}
        return self._conv_like("depthwise_conv2d", name, x, wt, b, (n, oh, ow, oc), s_w, kh * kw, attrs, act)

    def _conv_like(self, kind, name, x, wt, b, out_shape, s_w, fan_in, attrs, act) -> str:
        s_out = self._out_scale(self.tensors[x].s, s_w, fan_in)
        zp = -128 if act in ("relu", "relu6") else 0
        out = self._tensor(name + ":out", out_shape, scale=s_out, zp=zp)
        attrs["act"] = act
        attrs["act_range"] = act_range(act, s_out, zp)
        self.ops.append(Op(name, kind, [x, wt, b], [out], attrs, self.block))
        return out

    def fully_connected(self, x, n_out, act=None) -> str:
        t = self.tensors[x]
        n_in = t.shape[-1]
        name = self._uniq("fc")
        wt, s_w = self._weights(name + ":w", (n_out, n_in), n_in)
        s_w = np.full(n_out, float(s_w[0]), np.float32)  # per-tensor, as TFLite FC expects
        self.tensors[wt].scale = s_w[:1]
        self.tensors[wt].zero_point = np.zeros(1, np.int32)
        b = self._bias(name + ":b", n_out, t.s, s_w)
        s_out = self._out_scale(t.s, s_w, n_in)
        zp = -128 if act in ("relu", "relu6") else 0
        out = self._tensor(name + ":out", (t.size // n_in, n_out), scale=s_out, zp=zp)
        self.ops.append(Op(name, "fully_connected", [x, wt, b], [out],
                           {"act": act, "act_range": act_range(act, s_out, zp)}, self.block))
        return out

    def add(self, a, b, act=None) -> str:
        ta, tb = self.tensors[a], self.tensors[b]
        s_out = max(ta.s, tb.s) * 1.5
        return self._op("add", [a, b], ta.shape, s_out, 0, {"act": act, "act_range": act_range(act, s_out, 0)})

    def mul(self, a, b, act=None) -> str:
        ta, tb = self.tensors[a], self.tensors[b]
        shape = tuple(np.broadcast_shapes(ta.shape, tb.shape))
        s_out = ta.s * tb.s * 128.0
        return self._op("mul", [a, b], shape, s_out, 0, {"act": act, "act_range": act_range(act, s_out, 0)})

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
        attrs = {"pool": (ph, pw), "strides": strides, "padding": pad, "act": None, "act_range": (-128, 127)}
        return self._op(kind, [x], (n, oh, ow, c), t.s, t.zp, attrs)

    def reshape(self, x, shape) -> str:
        t = self.tensors[x]
        return self._op("reshape", [x], tuple(shape), t.s, t.zp)

    def softmax(self, x) -> str:
        return self._op("softmax", [x], self.tensors[x].shape, 1 / 256, -128, {"beta": 1.0})

    def finish(self, outputs: list[str] | str) -> Graph:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        g = Graph(self.name, self.tensors, self.ops, list(self.inputs), outputs)
        g.validate()
        return g


_INT8_STD = 74.0  # std of a uniform int8 value, in levels
_OUT_STD = 40.0  # std we aim for at each op output, in levels


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))
