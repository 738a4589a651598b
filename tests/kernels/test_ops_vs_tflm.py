"""Every kernel kind on single-op TFLite models, every op output bit-exact with TFLite Micro."""

from __future__ import annotations

import numpy as np
import pytest

import tvm_patchnet.kernels.softmax  # noqa: F401  (registers softmax, mean, logistic)
from tests.conftest import tflm_trace
from tests.tflite_writer import TensorSpec, single_op_model
from tvm_patchnet.builder import same_padding
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.runtime import run_graph

RNG_SEED = 1234


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng([RNG_SEED, sum(map(ord, key))])


def _i8(rng, shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def _act(shape, scale, zp=0):
    return TensorSpec(tuple(shape), scale=scale, zero_point=zp)


def _const(data, dtype="int32", **q):
    data = np.asarray(data)
    return TensorSpec(data.shape, dtype, data=data, **q)


# ------------------------------------------------------------------------------------- cases
def softmax_case(shape, scale, beta, zp=3):
    def make(rng):
        buf = single_op_model("SOFTMAX", [_act(shape, scale, zp)], _act(shape, 1 / 256, -128), {"beta": beta})
        return buf, [_i8(rng, shape)]

    return make


def mean_case(axes, keep, s_in, s_out, zp_in=5, zp_out=-3, shape=(1, 5, 6, 8)):
    def make(rng):
        red = [a % len(shape) for a in axes]
        out = tuple(1 if d in red else n for d, n in enumerate(shape) if keep or d not in red)
        buf = single_op_model("MEAN", [_act(shape, s_in, zp_in), _const(axes)], _act(out, s_out, zp_out),
                              {"keep_dims": keep})
        return buf, [_i8(rng, shape)]

    return make


def logistic_case(scale, zp):
    def make(rng):
        x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 4, 16)  # every input value
        return single_op_model("LOGISTIC", [_act(x.shape, scale, zp)], _act(x.shape, 1 / 256, -128)), [x]

    return make


def binary_case(op, a_shape, b_shape, sa, sb, so, act=None):
    def make(rng):
        out = np.broadcast_shapes(a_shape, b_shape)
        buf = single_op_model(op, [_act(a_shape, sa, 7), _act(b_shape, sb, -9)], _act(out, so, 2),
                              {"fused_activation_function": act})
        return buf, [_i8(rng, a_shape), _i8(rng, b_shape)]

    return make


def pool_case(op, hw, k, s, padding):
    def make(rng):
        oh, ow = ((-(-n // s)) if padding == "SAME" else (n - k) // s + 1 for n in hw)
        opts = {"padding": padding, "stride_h": s, "stride_w": s, "filter_height": k, "filter_width": k}
        buf = single_op_model(op, [_act((1, *hw, 5), 0.08, -4)], _act((1, oh, ow, 5), 0.08, -4), opts)
        return buf, [_i8(rng, (1, *hw, 5))]

    return make


def pad_case(rng):
    pads = [[0, 0], [1, 2], [2, 1], [0, 0]]
    buf = single_op_model("PAD", [_act((1, 3, 4, 2), 0.1, -6), _const(pads)], _act((1, 6, 7, 2), 0.1, -6))
    return buf, [_i8(rng, (1, 3, 4, 2))]


def transpose_case(perm):
    def make(rng):
        shape = (1, 3, 4, 5)
        buf = single_op_model("TRANSPOSE", [_act(shape, 0.1, 1), _const(perm)],
                              _act(tuple(shape[p] for p in perm), 0.1, 1))
        return buf, [_i8(rng, shape)]

    return make


def resize_case(align, half, hw=(3, 4), out=(6, 8)):
    def make(rng):
        buf = single_op_model("RESIZE_NEAREST_NEIGHBOR", [_act((1, *hw, 3), 0.1, 2), _const(out)],
                              _act((1, *out, 3), 0.1, 2), {"align_corners": align, "half_pixel_centers": half})
        return buf, [_i8(rng, (1, *hw, 3))]

    return make


def concat_case(scales, zps, axis=3):
    def make(rng):
        shapes = [(1, 3, 2, 4), (1, 3, 2, 3)] if axis == 3 else [(1, 2, 2, 4), (1, 3, 2, 4)]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        ins = [_act(s, sc, z) for s, sc, z in zip(shapes, scales, zps)]
        buf = single_op_model("CONCATENATION", ins, _act(out, scales[-1], zps[-1]),
                              {"axis": axis, "fused_activation_function": None})
        return buf, [_i8(rng, s) for s in shapes]

    return make


def quantize_float_case(rng):
    shape = (1, 4, 4, 3)
    buf = single_op_model("QUANTIZE", [TensorSpec(shape, "float32")], _act(shape, 0.02, -10))
    x = (rng.standard_normal(shape) * 1.5).astype(np.float32)
    x.flat[:4] = [0.01, -0.01, 0.03, 100.0]  # halfway points and saturation
    return buf, [x]


def requantize_case(rng):
    shape = (1, 4, 4, 3)
    return single_op_model("QUANTIZE", [_act(shape, 0.05, 3)], _act(shape, 0.031, -7)), [_i8(rng, shape)]


def dequantize_case(rng):
    shape = (1, 4, 4, 3)
    return single_op_model("DEQUANTIZE", [_act(shape, 0.037, -5)], TensorSpec(shape, "float32")), [_i8(rng, shape)]


def _weights(rng, shape, n_out, s_in, axis=0):
    w = rng.integers(-127, 128, size=shape, dtype=np.int8)
    s_w = rng.uniform(0.004, 0.02, size=n_out)
    bias = rng.integers(-2000, 2000, size=n_out).astype(np.int32)
    return (_const(w, "int8", scale=list(s_w), zero_point=[0] * n_out, quant_axis=axis),
            _const(bias, "int32", scale=list(s_in * s_w), zero_point=[0] * n_out))


def conv_case(rng):
    s_in, hw, k, s, d, c_in, c_out = 0.05, (9, 9), 3, 2, 2, 4, 6
    w, b = _weights(rng, (c_out, k, k, c_in), c_out, s_in)
    pads = [same_padding(n, k, s, d) for n in hw]
    oh, ow = ((n + p[0] + p[1] - (k - 1) * d - 1) // s + 1 for n, p in zip(hw, pads))
    opts = {"padding": "SAME", "stride_h": s, "stride_w": s, "dilation_h_factor": d, "dilation_w_factor": d,
            "fused_activation_function": "relu6"}
    buf = single_op_model("CONV_2D", [_act((1, *hw, c_in), s_in, -2), w, b], _act((1, oh, ow, c_out), 0.04, -20), opts)
    return buf, [_i8(rng, (1, *hw, c_in))]


def depthwise_case(rng):
    s_in, c_in, mult = 0.05, 3, 2
    w, b = _weights(rng, (1, 3, 3, c_in * mult), c_in * mult, s_in, axis=3)
    opts = {"padding": "VALID", "stride_h": 1, "stride_w": 2, "depth_multiplier": mult}
    buf = single_op_model("DEPTHWISE_CONV_2D", [_act((1, 6, 7, c_in), s_in, 4), w, b], _act((1, 4, 3, 6), 0.03, 1),
                          opts)
    return buf, [_i8(rng, (1, 6, 7, c_in))]


def fc_case(rng):
    s_in, n_in, n_out = 0.05, 20, 7
    w = rng.integers(-127, 128, size=(n_out, n_in), dtype=np.int8)
    bias = rng.integers(-2000, 2000, size=n_out).astype(np.int32)
    ins = [_act((1, 2, 2, 5), s_in, -3), _const(w, "int8", scale=0.01, zero_point=0),
           _const(bias, "int32", scale=s_in * 0.01, zero_point=0)]
    buf = single_op_model("FULLY_CONNECTED", ins, _act((1, n_out), 0.1, 5), {"keep_num_dims": False})
    return buf, [_i8(rng, (1, 2, 2, 5))]


CASES = {
    "softmax-2d": softmax_case((1, 10), 0.1, 1.0),
    "softmax-2d-beta": softmax_case((1, 100), 0.02, 2.0),
    "softmax-2d-small-scale": softmax_case((2, 37), 0.003, 0.7),
    "softmax-4d": softmax_case((1, 3, 4, 12), 0.05, 1.0),
    "softmax-4d-large-scale": softmax_case((1, 2, 2, 16), 1.7, 1.0),
    "softmax-capped-multiplier": softmax_case((1, 16), 40.0, 1.0),
    "mean-hw-keepdims": mean_case([1, 2], True, 0.1, 0.05),
    "mean-hw": mean_case([2, 1], False, 0.1, 0.07),
    "mean-hw-same-quant": mean_case([1, 2], True, 0.1, 0.1, 5, 5),
    "mean-w": mean_case([2], False, 0.07, 0.03),
    "mean-last-axis-same-quant": mean_case([-1], True, 0.1, 0.1, 5, 5),
    "logistic": logistic_case(0.1, 3),
    "logistic-fine": logistic_case(0.02, -10),
    "logistic-coarse": logistic_case(0.5, 0),
    "add": binary_case("ADD", (1, 4, 4, 8), (1, 4, 4, 8), 0.05, 0.11, 0.09),
    "add-broadcast-relu": binary_case("ADD", (1, 4, 4, 8), (1, 1, 1, 8), 0.2, 0.03, 0.1, "relu"),
    "mul-se": binary_case("MUL", (1, 1, 1, 8), (1, 4, 4, 8), 1 / 256, 0.05, 0.04),
    "avg-pool-same": pool_case("AVERAGE_POOL_2D", (7, 7), 3, 2, "SAME"),
    "avg-pool-same-clip": pool_case("AVERAGE_POOL_2D", (6, 5), 4, 2, "SAME"),
    "avg-pool-valid": pool_case("AVERAGE_POOL_2D", (7, 8), 3, 2, "VALID"),
    "max-pool-same": pool_case("MAX_POOL_2D", (7, 6), 3, 2, "SAME"),
    "max-pool-valid": pool_case("MAX_POOL_2D", (7, 7), 2, 2, "VALID"),
    "pad": pad_case,
    "transpose-hw": transpose_case([0, 2, 1, 3]),
    "transpose-nchw": transpose_case([0, 3, 1, 2]),
    "resize-x2": resize_case(False, False),
    "resize-x2-align-corners": resize_case(True, False),
    "resize-x2-half-pixel": resize_case(False, True),
    "resize-odd": resize_case(False, True, (3, 5), (7, 9)),
    "concat-channels": concat_case([0.05, 0.05], [3, 3]),
    "concat-axis1": concat_case([0.2, 0.2], [-4, -4], axis=1),
    "quantize-float": quantize_float_case,
    "quantize-int8": requantize_case,
    "dequantize": dequantize_case,
    "conv2d-dilation2-stride2": conv_case,
    "depthwise-multiplier2": depthwise_case,
    "fully-connected-4d-input": fc_case,
}

def _params():
    out = []
    for key, make in CASES.items():
        out.append(pytest.param(key, make, id=key))
    return out


def check_every_op(tmp_path, buf: bytes, inputs: list[np.ndarray]) -> None:
    """Run the model through tvm-patchnet and TFLite Micro; every op output must be identical."""
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    graph = load_tflite(str(path))
    ours = run_graph(graph, inputs, trace=True)
    ref = tflm_trace(buf, inputs)
    for op in graph.ops:
        out = op.outputs[0]
        want = ref(graph.meta["tensor_index"][out])
        got = ours[out].reshape(want.shape)
        assert got.dtype == want.dtype, f"{op.origin}: dtype {got.dtype}, TFLM {want.dtype}"
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)[:4]
            pairs = ", ".join(f"{tuple(int(v) for v in i)}: {got[tuple(i)]} vs {want[tuple(i)]}" for i in bad)
            n = int(np.sum(got != want))
            pytest.fail(f"{op.origin} ({op.kind}): {n}/{got.size} values differ; ours vs TFLM at {pairs}")
        assert len(np.unique(want)) > 1, f"{op.origin}: TFLM output is constant, the case tests nothing"


@pytest.mark.parametrize(("key", "make"), _params())
def test_op_bit_exact_with_tflm(tmp_path, key, make):
    buf, inputs = make(_rng(key))
    check_every_op(tmp_path, buf, inputs)


def test_numpy_references_match_tflm():
    """The NumPy softmax / logistic references (same fixed-point code) agree with TFLM too."""
    from tvm_patchnet.kernels.softmax import logistic_reference, softmax_reference

    rng = _rng("numpy")
    for scale, beta in ((0.1, 1.0), (0.004, 1.5), (2.5, 0.5)):
        x = _i8(rng, (3, 40))
        buf = single_op_model("SOFTMAX", [_act(x.shape, scale, 0)], _act(x.shape, 1 / 256, -128), {"beta": beta})
        assert np.array_equal(softmax_reference(x, np.float32(scale), np.float32(beta)), tflm_trace(buf, [x])(1))
    for scale, zp in ((0.07, -3), (0.3, 20)):
        x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
        buf = single_op_model("LOGISTIC", [_act(x.shape, scale, zp)], _act(x.shape, 1 / 256, -128))
        assert np.array_equal(logistic_reference(x, np.float32(scale), zp), tflm_trace(buf, [x])(1))


# int8 CONCATENATION with inputs of different scales: TFLite Micro (and TFLite) refuse the model in
# Prepare (input scale / zero point must equal the output's), so there is no golden output; the
# project's kernel requantizes such inputs like TFLM's Requantize, checked against NumPy here.
def _concat_diff_scales():
    rng = _rng("concat-diff")
    shapes, scales, zps = [(1, 3, 2, 4), (1, 3, 2, 3)], [0.05, 0.1], [3, -4]
    ins = [_act(s, sc, z) for s, sc, z in zip(shapes, scales, zps)]
    buf = single_op_model("CONCATENATION", ins, _act((1, 3, 2, 7), 0.07, 2), {"axis": 3})
    return buf, [_i8(rng, s) for s in shapes], scales, zps


def test_concat_different_scales_rejected_by_tflm():
    buf, xs, _, _ = _concat_diff_scales()
    with pytest.raises(RuntimeError):
        tflm_trace(buf, xs)


def test_concat_different_scales_requantizes(tmp_path):
    from tvm_patchnet.quant import multiply_by_quantized_multiplier, quantize_multiplier

    buf, xs, scales, zps = _concat_diff_scales()
    path = tmp_path / "concat.tflite"
    path.write_bytes(buf)
    got = run_graph(load_tflite(str(path)), xs)[0]
    want = []
    for x, s, z in zip(xs, scales, zps):
        m, sh = quantize_multiplier(float(np.float32(s)) / float(np.float32(0.07)))
        want.append(np.clip(multiply_by_quantized_multiplier(x.astype(np.int64) - z, m, sh) + 2, -128, 127))
    assert np.array_equal(got, np.concatenate(want, axis=3).astype(np.int8))
