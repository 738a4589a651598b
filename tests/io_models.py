"""TFLite models with the graph edges real deployments have, built with ``tests/tflite_writer.py``:
float32 inputs and outputs (QUANTIZE first op, DEQUANTIZE last op), several outputs, several
inputs. Scales are deliberately not round decimals: C that prints a scale inexactly (seven
digits) computes other values than TensorFlow Lite Micro.

Input scales are float32 values whose seven-digit text parses to a neighbour (1 / 57.7: 1.733102e-02
is not 0.017331022...).

Each builder takes a seeded ``numpy.random.Generator`` and returns (the .tflite bytes, inputs in
the model's order)."""

from __future__ import annotations

import numpy as np

from tests.tflite_writer import ModelBuilder, TensorSpec


def _act(shape, scale, zp=0, name=""):
    return TensorSpec(tuple(shape), "int8", scale=scale, zero_point=zp, name=name)


class _Net:
    """A ModelBuilder with layer helpers that make their own seeded weights (per-channel int8,
    int32 biases of scale s_in * s_w)."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.b, self.specs = rng, ModelBuilder(), {}

    def tensor(self, spec: TensorSpec) -> int:
        i = self.b.tensor(spec)
        self.specs[i] = spec
        return i

    def _weights(self, shape, n_out, s_in, axis=0) -> tuple[int, int]:
        w = self.rng.integers(-127, 128, size=shape, dtype=np.int8)
        s_w = self.rng.uniform(0.004, 0.02, size=n_out)
        bias = self.rng.integers(-3000, 3000, size=n_out).astype(np.int32)
        return (self.tensor(TensorSpec(w.shape, "int8", list(s_w), [0] * n_out, w, axis)),
                self.tensor(TensorSpec(bias.shape, "int32", list(s_in * s_w), [0] * n_out, bias)))

    def conv(self, x: int, c_out: int, k: int, stride: int, scale: float, zp: int, act="relu6",
             depthwise: bool = False) -> int:
        n, h, w, c_in = self.specs[x].shape
        s_in = self.specs[x].scale
        if depthwise:
            wt, bias = self._weights((1, k, k, c_out), c_out, s_in, axis=3)
        else:
            wt, bias = self._weights((c_out, k, k, c_in), c_out, s_in)
        oh, ow = (-(-d // stride) for d in (h, w))  # SAME
        y = self.tensor(_act((n, oh, ow, c_out), scale, zp))
        opts = {"padding": "SAME", "stride_h": stride, "stride_w": stride, "fused_activation_function": act}
        if depthwise:
            opts["depth_multiplier"] = c_out // c_in
        self.b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, wt, bias], [y], opts)
        return y

    def fc(self, x: int, n_out: int, scale: float, zp: int) -> int:
        s_in, n_in = self.specs[x].scale, self.specs[x].shape[-1]
        wt, bias = self._weights((n_out, n_in), n_out, s_in)
        y = self.tensor(_act((1, n_out), scale, zp))
        self.b.op("FULLY_CONNECTED", [x, wt, bias], [y], {"keep_num_dims": False})
        return y

    def global_pool(self, x: int) -> int:
        """Average over H and W, as a [1, C] tensor (MEAN keeps no dims)."""
        spec = self.specs[x]
        axes = self.tensor(TensorSpec((2,), "int32", data=np.array([1, 2], np.int32)))
        y = self.tensor(_act((1, spec.shape[-1]), spec.scale, spec.zero_point))
        self.b.op("MEAN", [x, axes], [y], {"keep_dims": False})
        return y

    def reshape(self, x: int, shape) -> int:
        spec = self.specs[x]
        target = self.tensor(TensorSpec((len(shape),), "int32", data=np.array(shape, np.int32)))
        y = self.tensor(_act(shape, spec.scale, spec.zero_point))
        self.b.op("RESHAPE", [x, target], [y], {"new_shape": list(shape)})
        return y

    def quantize(self, x: int, scale: float, zp: int) -> int:
        y = self.tensor(_act(self.specs[x].shape, scale, zp))
        self.b.op("QUANTIZE", [x], [y])
        return y

    def dequantize(self, x: int) -> int:
        y = self.tensor(TensorSpec(self.specs[x].shape, "float32"))
        self.b.op("DEQUANTIZE", [x], [y])
        return y

    def add(self, a: int, b: int, scale: float, zp: int) -> int:
        y = self.tensor(_act(self.specs[a].shape, scale, zp))
        self.b.op("ADD", [a, b], [y], {"fused_activation_function": None})
        return y


#: float32 scales of the QUANTIZE ops, none of which survives seven significant digits
S_IMAGE, S_DEPTH = float(np.float32(1 / 57.7)), float(np.float32(1 / 83.3))


def _float_input(rng, shape, scale: float, zp: int) -> np.ndarray:
    """Floats over the quantized range and a little beyond (saturation), with exact halfway points
    between two levels (round half away from zero) and signed zeros."""
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    x = rng.uniform(lo - 4 * scale, hi + 4 * scale, size=shape).astype(np.float32)
    k = rng.integers(-100, 100, size=8)
    x.flat[:8] = ((k + 0.5) * np.float32(scale)).astype(np.float32)
    x.flat[8:10] = [0.0, -0.0]
    return x


def float_edges(rng: np.random.Generator) -> tuple[bytes, list[np.ndarray]]:
    """float32 [1, 12, 12, 3] -> QUANTIZE -> conv s2 -> depthwise -> conv 1x1 -> mean -> FC ->
    DEQUANTIZE -> float32 [1, 10]."""
    n = _Net(rng)
    x = n.tensor(TensorSpec((1, 12, 12, 3), "float32", name="image"))
    q = n.quantize(x, S_IMAGE, -3)
    h = n.conv(q, 8, 3, 2, 0.0412779, -17)
    h = n.conv(h, 8, 3, 1, 0.0388411, -21, depthwise=True)
    h = n.conv(h, 12, 1, 1, 0.0521133, 4, act=None)
    y = n.dequantize(n.fc(n.global_pool(h), 10, 0.0937171, 6))
    return n.b.finish([x], [y]), [_float_input(rng, (1, 12, 12, 3), S_IMAGE, -3)]


def three_heads(rng: np.random.Generator) -> tuple[bytes, list[np.ndarray]]:
    """A detection-head-like model: int8 [1, 16, 16, 3] -> a conv trunk -> three outputs: a conv
    (boxes, [1, 8, 8, 4]), a conv + reshape (classes, [1, 128, 3]), and mean + FC + DEQUANTIZE
    (a float32 [1, 5] summary). The outputs are listed in another order than they are made."""
    n = _Net(rng)
    x = n.tensor(_act((1, 16, 16, 3), 0.0231547, 5))
    t = n.conv(x, 8, 3, 2, 0.0378127, -9)
    t = n.conv(t, 8, 3, 1, 0.0419361, -12, depthwise=True)
    boxes = n.conv(t, 4, 1, 1, 0.0612373, 3, act=None)
    classes = n.reshape(n.conv(t, 6, 1, 1, 0.0571919, -2, act=None), (1, 128, 3))
    summary = n.dequantize(n.fc(n.global_pool(t), 5, 0.0713311, 1))
    rng_x = rng.integers(-128, 128, size=(1, 16, 16, 3), dtype=np.int8)
    return n.b.finish([x], [classes, boxes, summary]), [rng_x]


def two_inputs(rng: np.random.Generator) -> tuple[bytes, list[np.ndarray]]:
    """Two branches added: int8 [1, 8, 8, 4] -> conv, and float32 [1, 8, 8, 2] -> QUANTIZE ->
    conv; ADD, then a conv -> int8 [1, 8, 8, 6]."""
    n = _Net(rng)
    a = n.tensor(_act((1, 8, 8, 4), 0.0297311, -6, name="frame"))
    f = n.tensor(TensorSpec((1, 8, 8, 2), "float32", name="depth"))
    ha = n.conv(a, 8, 3, 1, 0.0451247, -8)
    hb = n.conv(n.quantize(f, S_DEPTH, 11), 8, 3, 1, 0.0402233, -14)
    y = n.conv(n.add(ha, hb, 0.0633389, -20), 6, 1, 1, 0.0548817, 7, act=None)
    xa = rng.integers(-128, 128, size=(1, 8, 8, 4), dtype=np.int8)
    return n.b.finish([a, f], [y]), [xa, _float_input(rng, (1, 8, 8, 2), S_DEPTH, 11)]


def quantize_dequantize(rng: np.random.Generator) -> tuple[bytes, list[np.ndarray]]:
    """float32 [1, 16, 16, 4] -> QUANTIZE -> DEQUANTIZE -> float32: every rounding of both edge
    kernels visible in the output (halfway points, saturation, signed zeros)."""
    n = _Net(rng)
    x = n.tensor(TensorSpec((1, 16, 16, 4), "float32", name="signal"))
    y = n.dequantize(n.quantize(x, S_IMAGE, -3))
    inp = _float_input(rng, (1, 16, 16, 4), S_IMAGE, -3)
    k = np.arange(10, 522)
    inp.flat[k] = (((k % 256) - 128 + 3 + 0.5) * np.float32(S_IMAGE)).astype(np.float32)  # every level's halfway
    return n.b.finish([x], [y]), [inp]


IO_MODELS = {"float-edges": float_edges, "three-heads": three_heads, "two-inputs": two_inputs,
             "quantize-dequantize": quantize_dequantize}
