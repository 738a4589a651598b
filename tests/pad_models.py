"""Small int8 TFLite models with explicit PAD ops, built with ``tests/tflite_writer.py``.

:class:`Net` appends layers to one subgraph, with seeded random int8 weights (per-channel
scales) and output scales chosen so that activations spread over many int8 levels. The models:

- :func:`stem_model`: an MCUNet / TinyEngine-style stem, PAD((0,1),(0,1)) -> CONV_2D stride 2
  VALID -> DEPTHWISE -> PAD((1,1),(1,1)) -> DEPTHWISE stride 2 VALID -> CONV, then a small
  head: every PAD folds into the convolution after it;
- :func:`avg_pool_model`: PADs before VALID AVERAGE_POOL_2Ds (one on the input, one on an
  intermediate): not foldable (TFLite's average pool divides by the count of in-map taps);
- :func:`plane_model`: a stride-2 VALID depthwise conv on an even input, whose last row and
  column the kernel never reads.
"""

from __future__ import annotations

import numpy as np

from tests.tflite_writer import ModelBuilder, TensorSpec


class Net:
    """A chain of layers on one activation (``self.x``: tensor id, shape, scale, zero point)."""

    def __init__(self, shape: tuple, seed: int, scale: float = 0.02, zero_point: int = -5):
        self.b = ModelBuilder()
        self.rng = np.random.default_rng(seed)
        self.input = self.b.tensor(TensorSpec(shape, scale=scale, zero_point=zero_point, name="input"))
        self.x, self.shape, self.scale, self.zp = self.input, tuple(shape), scale, zero_point
        self.spread = 74.0  # standard deviation of x - zero point, in int8 steps (uniform input)
        self.n = 0

    def _out(self, shape, scale, zp, kind) -> int:
        self.n += 1
        t = self.b.tensor(TensorSpec(tuple(shape), scale=scale, zero_point=zp, name=f"{kind}_{self.n}"))
        self.x, self.shape, self.scale, self.zp = t, tuple(shape), scale, zp
        return t

    def _const(self, data, dtype, **q) -> int:
        data = np.asarray(data)
        self.n += 1
        return self.b.tensor(TensorSpec(data.shape, dtype, data=data, name=f"const_{self.n}", **q))

    def _weights(self, shape, axis: int, fan_in: int):
        n_out = shape[axis]
        w = self.rng.integers(-127, 128, size=shape, dtype=np.int8)
        s_w = self.rng.uniform(0.004, 0.02, size=n_out)
        bias = self.rng.integers(-3000, 3000, size=n_out).astype(np.int32)
        wid = self._const(w, "int8", scale=list(s_w), zero_point=[0] * n_out, quant_axis=axis)
        bid = self._const(bias, "int32", scale=list(self.scale * s_w), zero_point=[0] * n_out)
        # the accumulator's standard deviation, about spread * 73 * sqrt(fan_in) units of s_in * s_w,
        # becomes 40 int8 steps of the output
        out_scale = float(self.scale * np.median(s_w) * self.spread * 73 * np.sqrt(fan_in) / 40)
        self.spread = 40.0
        return wid, bid, out_scale

    @staticmethod
    def _size(n, k, s, padding):
        return -(-n // s) if padding == "SAME" else (n - k) // s + 1

    def conv(self, c_out: int, k: int, stride: int = 1, padding: str = "SAME", act: str | None = None):
        _, h, w, c = self.shape
        wid, bid, s_out = self._weights((c_out, k, k, c), 0, k * k * c)
        x = self.x
        y = self._out((1, self._size(h, k, stride, padding), self._size(w, k, stride, padding), c_out), s_out,
                      -128 if act else 3, "conv")
        self.b.op("CONV_2D", [x, wid, bid], [y], {"padding": padding, "stride_h": stride, "stride_w": stride,
                                                  "fused_activation_function": act})
        return self

    def dw(self, k: int = 3, stride: int = 1, padding: str = "SAME", act: str | None = None):
        _, h, w, c = self.shape
        wid, bid, s_out = self._weights((1, k, k, c), 3, k * k)
        x = self.x
        y = self._out((1, self._size(h, k, stride, padding), self._size(w, k, stride, padding), c), s_out,
                      -128 if act else 2, "dw")
        self.b.op("DEPTHWISE_CONV_2D", [x, wid, bid], [y], {"padding": padding, "stride_h": stride,
                                                            "stride_w": stride, "depth_multiplier": 1,
                                                            "fused_activation_function": act})
        return self

    def pad(self, top: int, bottom: int, left: int, right: int, channels: tuple = (0, 0), quant=None,
            value: int | None = None):
        """PAD (fill: the zero point), or PADV2 filling ``value``; ``quant`` = (scale, zero point)
        of the output if not the input's."""
        _, h, w, c = self.shape
        pads = self._const(np.array([[0, 0], [top, bottom], [left, right], list(channels)], np.int32), "int32")
        x = self.x
        scale, zp = quant or (self.scale, self.zp)
        y = self._out((1, h + top + bottom, w + left + right, c + sum(channels)), scale, zp, "pad")
        if value is None:
            self.b.op("PAD", [x, pads], [y])
        else:
            fill = self._const(np.array([value], np.int8), "int8", scale=scale, zero_point=zp)
            self.b.op("PADV2", [x, pads, fill], [y])
        return self

    def state(self) -> tuple:
        """The current activation, to :meth:`resume` from (a fork)."""
        return self.x, self.shape, self.scale, self.zp, self.spread

    def resume(self, state: tuple):
        self.x, self.shape, self.scale, self.zp, self.spread = state
        return self

    def pool(self, kind: str, k: int, stride: int = 1, padding: str = "VALID"):
        _, h, w, c = self.shape
        x = self.x
        y = self._out((1, self._size(h, k, stride, padding), self._size(w, k, stride, padding), c), self.scale,
                      self.zp, "pool")
        self.b.op(kind, [x], [y], {"padding": padding, "stride_h": stride, "stride_w": stride,
                                   "filter_height": k, "filter_width": k, "fused_activation_function": None})
        self.spread /= k  # the mean of k * k values
        return self

    def head(self, classes: int = 10):
        """Global average pool, flatten, fully connected."""
        _, h, w, c = self.shape
        self.pool("AVERAGE_POOL_2D", h)
        shape = self._const(np.array([1, c], np.int32), "int32")
        x = self.x
        flat = self._out((1, c), self.scale, self.zp, "flat")
        self.b.op("RESHAPE", [x, shape], [flat], {"new_shape": [1, c]})
        w = self.rng.integers(-127, 128, size=(classes, c), dtype=np.int8)
        wid = self._const(w, "int8", scale=0.01, zero_point=0)
        bid = self._const(self.rng.integers(-500, 500, size=classes).astype(np.int32), "int32",
                          scale=self.scale * 0.01, zero_point=0)
        y = self._out((1, classes), float(self.scale * 0.01 * 60 * np.sqrt(c)), 0, "fc")
        self.b.op("FULLY_CONNECTED", [flat, wid, bid], [y], {"fused_activation_function": None})
        return self

    def transpose(self, perm: tuple):
        """TRANSPOSE by ``perm`` (same quantization)."""
        x = self.x
        pid = self._const(np.array(perm, np.int32), "int32")
        self._out(tuple(self.shape[p] for p in perm), self.scale, self.zp, "transpose")
        self.b.op("TRANSPOSE", [x, pid], [self.x])
        return self

    def mean_head(self, classes: int = 10):
        """MEAN over H and W (keep_dims false: [1, C]), fully connected."""
        _, h, w, c = self.shape
        axes = self._const(np.array([1, 2], np.int32), "int32")
        x = self.x
        # the mean of h * w values, its spread sqrt(h * w) times smaller, requantized to 30 steps
        scale = float(self.scale * self.spread / np.sqrt(h * w) / 30)
        self.spread = 30.0
        mean = self._out((1, c), scale, self.zp, "mean")
        self.b.op("MEAN", [x, axes], [mean], {"keep_dims": False})
        w_fc = self.rng.integers(-127, 128, size=(classes, c), dtype=np.int8)
        wid = self._const(w_fc, "int8", scale=0.01, zero_point=0)
        bid = self._const(self.rng.integers(-500, 500, size=classes).astype(np.int32), "int32",
                          scale=self.scale * 0.01, zero_point=0)
        y = self._out((1, classes), float(self.scale * 0.01 * 60 * np.sqrt(c)), 0, "fc")
        self.b.op("FULLY_CONNECTED", [mean, wid, bid], [y], {"fused_activation_function": None})
        return self

    def finish(self, outputs: list | None = None) -> bytes:
        """The model; its outputs: ``outputs`` (tensor ids), or the current activation."""
        return self.b.finish([self.input], outputs or [self.x])


def stem_model() -> bytes:
    """64x64x3 -> PAD -> CONV s2 VALID (32x32x16) | DW -> PAD -> DW s2 VALID -> CONV 1x1 (16x16x24) |
    PAD -> DW s2 VALID -> CONV 1x1 (8x8x32) | head (global average pool, reshape, fully
    connected). The three PADs fold: 12 ops -> 9, blocks as marked by |."""
    n = Net((1, 64, 64, 3), seed=11)
    n.pad(0, 1, 0, 1).conv(16, 3, 2, "VALID")
    n.dw(3, 1, "SAME").pad(1, 1, 1, 1).dw(3, 2, "VALID").conv(24, 1, act=None)
    n.pad(1, 1, 1, 1).dw(3, 2, "VALID").conv(32, 1)
    return n.head().finish()


def avg_pool_model() -> bytes:
    """48x48x3 -> PAD -> AVG_POOL 3x3 VALID -> CONV s2 (24x24x16) | PAD(0, 2) -> AVG_POOL 3x3 SAME
    -> CONV 1x1 -> DW s2 -> CONV 1x1 (12x12x24) | head. No PAD folds: 11 ops. The first PAD reads
    the patch stage's input (read in place, no margins); the second feeds a padded average pool,
    so inside a patch stage its output's margins hold 0 (what that padding means to the pool)."""
    n = Net((1, 48, 48, 3), seed=12)
    n.pad(1, 1, 1, 1).pool("AVERAGE_POOL_2D", 3).conv(16, 3, 2)
    n.pad(0, 2, 0, 2).pool("AVERAGE_POOL_2D", 3, 1, "SAME").conv(16, 1).dw(3, 2).conv(24, 1)
    return n.head().finish()


def plane_model() -> bytes:
    """40x40x3 -> CONV s1 (40x40x8) | DW 3x3 s2 VALID on 40x40 (reads rows and columns 0..38) ->
    CONV 1x1 (19x19x16) | head. No PAD."""
    n = Net((1, 40, 40, 3), seed=13)
    n.conv(8, 3, 1)
    n.dw(3, 2, "VALID").conv(16, 1)
    return n.head().finish()


def dw_first_model() -> bytes:
    """24x24x8 -> DW 3x3 SAME as the first op, reading the model's input | CONV 1x1 | DW s2 |
    CONV 1x1 | head. No PAD. Inside a patch stage the input is the caller's buffer: the first
    depthwise conv cannot run in place over it."""
    n = Net((1, 24, 24, 8), seed=17)
    n.dw(3, 1, "SAME", act="relu").conv(16, 1)
    n.dw(3, 2, "SAME").conv(16, 1)
    return n.head().finish()
