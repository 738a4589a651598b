"""The fast depthwise kernels (``tvm_patchnet/schedules/depthwise.py``: in place, channel by channel
from the scratch plane, and writing their own output) equal TensorFlow Lite Micro and the plain
TE kernels bit for bit.

Fast tests emit C and build it with the host gcc (the portable fallback of the DSP helper) and
with arm-none-eabi-gcc (the DSP path compiles warning-free, needs no runtime helper); the slow
test runs the DSP path on qemu-m4.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.codegen.cmodel import check_cortex_m4, check_sources, compile_c, run_c
from tests.conftest import tflm_trace
from tests.tflite_writer import ModelBuilder, TensorSpec, single_op_model
from tvm_patchnet.analysis.liveness import plane_hw
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.quant import rdbpot, srdhm
from tvm_patchnet.runtime import run_graph
from tvm_patchnet.schedules import depthwise


# ------------------------------------------------------------------------------------- models
def _out_hw(hw, k, s, d, padding):
    if padding == "SAME":
        return tuple(-(-n // s) for n in hw)
    return tuple((n - (k - 1) * d - 1) // s + 1 for n in hw)


def dw_model(rng, hw, c, k, s=1, d=1, padding="SAME", mult=1, zp_in=-3, zp_out=5, act="relu6", s_out=0.03,
             extremes=False, with_add=False, bias_range=2000, per_tensor=False, batch=1):
    """A DEPTHWISE_CONV_2D model (per-channel weights) and one input. ``extremes``: -128 weights
    and a -128 input row; ``with_add``: the input is added to the output afterwards, so it stays
    alive and the depthwise cannot run in place (the ``op_kernel`` variant); ``per_tensor``: one
    weight scale for all channels."""
    s_in, oc = 0.05, c * mult
    w = rng.integers(-127, 128, size=(1, k, k, oc), dtype=np.int8)
    x = rng.integers(-128, 128, size=(batch, *hw, c), dtype=np.int8)
    if extremes:
        w[0, 0, :, :] = -128
        x[0, 0] = -128
    s_w = np.full(oc, 0.011) if per_tensor else rng.uniform(0.004, 0.02, size=oc)
    bias = rng.integers(-bias_range, bias_range + 1, size=oc).astype(np.int32)
    oh, ow = _out_hw(hw, k, s, d, padding)
    opts = {"padding": padding, "stride_h": s, "stride_w": s, "dilation_h_factor": d, "dilation_w_factor": d,
            "depth_multiplier": mult, "fused_activation_function": act}
    ins = [TensorSpec((batch, *hw, c), scale=s_in, zero_point=zp_in),
           TensorSpec(w.shape, "int8", data=w, scale=s_w[0] if per_tensor else list(s_w),
                      zero_point=0 if per_tensor else [0] * oc, quant_axis=3),
           TensorSpec(bias.shape, "int32", data=bias, scale=s_in * s_w[0] if per_tensor else list(s_in * s_w),
                      zero_point=0 if per_tensor else [0] * oc)]
    out = TensorSpec((batch, oh, ow, oc), scale=s_out, zero_point=zp_out)
    if not with_add:
        return single_op_model("DEPTHWISE_CONV_2D", ins, out, opts), x
    assert (oh, ow, oc) == (*hw, c), "with_add needs an output shaped as the input"
    b = ModelBuilder()
    ids = [b.tensor(t) for t in ins]
    y = b.tensor(out)
    b.op("DEPTHWISE_CONV_2D", ids, [y], opts)
    z = b.tensor(TensorSpec((1, *hw, c), scale=0.06, zero_point=1))
    b.op("ADD", [ids[0], y], [z], {"fused_activation_function": None})
    return b.finish([ids[0]], [z]), x


def _emit_run(tmp_path, buf, x, name="m"):
    """Emit C, build it on the host and run it; returns (graph, output, TFLite Micro's output,
    kernels.c)."""
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    g = load_tflite(str(path))
    out = str(tmp_path / name)
    emit_c(g, out)
    check_sources(out)
    got = run_c(compile_c(out), g, x)[0]
    want = tflm_trace(buf, [x])(g.meta["tensor_index"][g.outputs[0]])
    with open(os.path.join(out, "kernels.c")) as f:
        return g, got.reshape(want.shape), want, f.read()


def _variant(src: str) -> str:
    """Which depthwise kernel ``kernels.c`` holds: fast in place / fast op / default."""
    if depthwise.REQUANT_FN not in src:
        return "default"
    return "in_place" if "_plane" in src else "op"


# ------------------------------------------------------------------------------------- requant
def test_requant_formula_equals_tflite_micro():
    """The micro-kernel's arithmetic (portable form) equals MultiplyByQuantizedMultiplier + zero
    point on edge and random accumulators, multipliers and shifts."""
    rng = np.random.default_rng(0)
    acc = np.concatenate([np.arange(-70000, 70000, 7), rng.integers(-(1 << 29), 1 << 29, 20000),
                          [-(1 << 30) + 1, (1 << 30) - 1, -1, 0, 1]]).astype(np.int64)
    for m in [1 << 30, (1 << 31) - 1, 1518500250, 1073741825, *rng.integers(1 << 30, 1 << 31, 6)]:
        for e in [1, 2, 5, 9, 17, 31]:
            for zp in [-128, 0, 5, 127]:
                rnd = (1 << (e - 1)) + (zp << e)
                if abs(rnd) + (1 << 30) >= 1 << 31:
                    continue
                y = (2 * acc * int(m) + (1 << 31)) >> 32  # SMMULR(2 * acc, m)
                got = (y + rnd + (y >> 31)) >> e
                want = rdbpot(srdhm(acc, int(m)), e) + zp
                assert np.array_equal(got, want), (m, e, zp)


# ------------------------------------------------------------------------------------- host C
IN_PLACE_CASES = {
    # name: (hw, c, k, s, d, padding, extra)
    "3x3_same_odd_c": ((9, 8), 5, 3, 1, 1, "SAME", {}),
    "3x3_s2_same_even": ((8, 10), 3, 3, 2, 1, "SAME", {}),
    "3x3_s2_same_odd": ((7, 9), 3, 3, 2, 1, "SAME", {"act": None}),
    "3x3_s2_valid_even": ((8, 8), 4, 3, 2, 1, "VALID", {"act": "relu"}),
    "5x5_same": ((7, 6), 7, 5, 1, 1, "SAME", {"zp_in": 127, "zp_out": -128}),
    "5x5_s2_same": ((9, 9), 3, 5, 2, 1, "SAME", {"zp_in": -128, "zp_out": 127, "act": None}),
    "7x7_same": ((9, 8), 3, 7, 1, 1, "SAME", {"act": "relu_n1_to_1", "s_out": 0.005}),
    "7x7_s2_same": ((10, 11), 2, 7, 2, 1, "SAME", {}),
    "3x3_dilation2": ((9, 7), 3, 3, 1, 2, "SAME", {}),
    "3x3_dilation2_valid": ((9, 7), 3, 3, 1, 2, "VALID", {"act": None}),
    "1px_output_valid": ((3, 3), 5, 3, 1, 1, "VALID", {}),
    "1px_input_same": ((1, 1), 3, 3, 1, 1, "SAME", {}),
    "window_larger_than_map": ((2, 3), 3, 5, 1, 1, "SAME", {}),
    "extremes": ((6, 5), 3, 3, 1, 1, "SAME", {"extremes": True, "zp_in": 127, "zp_out": -128, "act": None}),
    "extremes_low_zp": ((6, 5), 3, 3, 2, 1, "SAME", {"extremes": True, "zp_in": -128, "zp_out": 127, "act": None}),
    # wide rows: interior outputs in register tiles (4 at stride 1, 3 for a 7x7 at stride 2)
    "wide_3x3": ((5, 22), 3, 3, 1, 1, "SAME", {"tiled": True}),
    "wide_3x3_valid_odd": ((4, 23), 1, 3, 1, 1, "VALID", {"tiled": True, "zp_in": 127}),
    "wide_5x5_dilation2": ((9, 25), 2, 5, 1, 2, "SAME", {"extremes": True}),  # dilated: no tiles
    "wide_5x5": ((9, 25), 2, 5, 1, 1, "SAME", {"tiled": True, "extremes": True}),
    "per_tensor_weights": ((7, 13), 5, 3, 1, 1, "SAME", {"tiled": True, "per_tensor": True, "act": "relu"}),
    "narrow_3x3_3px": ((4, 5), 3, 3, 1, 1, "VALID", {"tiled": True}),  # one tile of the 3 outputs
    "wide_7x7_s2": ((9, 37), 3, 7, 2, 1, "SAME", {"tiled": True, "act": None}),
    "wide_7x7_s2_valid": ((8, 36), 2, 7, 2, 1, "VALID", {"tiled": True, "zp_out": -128}),
}


@pytest.mark.parametrize("key", list(IN_PLACE_CASES))
def test_in_place_equals_tflite_micro(tmp_path, key):
    hw, c, k, s, d, padding, extra = IN_PLACE_CASES[key]
    tiled = extra.pop("tiled", False)
    buf, x = dw_model(np.random.default_rng([7, len(key)]), hw, c, k, s, d, padding, **extra)
    g, got, want, src = _emit_run(tmp_path, buf, x)
    assert _variant(src) == "in_place", "the fast in-place kernel was not used"
    assert ("_plane_local" in src) == tiled, "interior register tiles where (and only where) expected"
    assert got.tobytes() == want.tobytes()
    np.testing.assert_array_equal(got, run_graph(g, [x])[0].reshape(want.shape))


OP_CASES = {
    # depth multiplier > 1: never in place
    "mult2_3x3_same": ((7, 8), 3, 3, 1, 1, "SAME", {"mult": 2}),
    "mult3_3x3_s2": ((9, 6), 1, 3, 2, 1, "SAME", {"mult": 3, "zp_in": 127}),
    "mult2_5x5_valid_1px": ((5, 5), 2, 5, 1, 1, "VALID", {"mult": 2, "extremes": True}),
    "mult2_dilation2": ((8, 9), 3, 3, 1, 2, "SAME", {"mult": 2, "act": None}),
    # multiplier 1, input still alive afterwards (added to the output)
    "alive_3x3": ((8, 7), 5, 3, 1, 1, "SAME", {"with_add": True}),
    "alive_7x7_extremes": ((6, 9), 3, 7, 1, 1, "SAME", {"with_add": True, "extremes": True, "zp_in": -128}),
    "alive_wide_3x3": ((4, 21), 3, 3, 1, 1, "SAME", {"with_add": True, "tiled": True}),
    "mult2_wide_7x7_s2": ((8, 33), 2, 7, 2, 1, "SAME", {"mult": 2, "tiled": True}),
}


@pytest.mark.parametrize("key", list(OP_CASES))
def test_op_kernel_equals_tflite_micro(tmp_path, key):
    hw, c, k, s, d, padding, extra = OP_CASES[key]
    tiled = extra.pop("tiled", False)
    buf, x = dw_model(np.random.default_rng([8, len(key)]), hw, c, k, s, d, padding, **extra)
    g, got, want, src = _emit_run(tmp_path, buf, x)
    assert _variant(src) == "op", "the fast op kernel was not used"
    if tiled:
        assert "x_local" in src, "interior register tiles expected"
    assert got.tobytes() == want.tobytes()
    np.testing.assert_array_equal(got, run_graph(g, [x])[0].reshape(want.shape))


def test_random_shapes_equal_plain_kernels(tmp_path):
    """Seeded random geometries (explicit padding on every side included) through the graph
    builder: every depthwise runs fast (in place or not), equal to the host build of the plain
    TE kernels."""
    rng = np.random.default_rng(11)
    b = GraphBuilder("dw_random", (1, 11, 10, 3), seed=3)
    x = b.depthwise_conv2d("input", 3, 1, 1, (1, 0, 2, 1), act=None)  # explicit, uneven padding
    x = b.depthwise_conv2d(x, 5, 2, 1, "same", multiplier=2)
    x = b.depthwise_conv2d(x, 3, 1, 2, (2, 2, 2, 2), act="relu")
    x = b.depthwise_conv2d(x, 3, 2, 1, (0, 1, 1, 0))
    x = b.depthwise_conv2d(x, 1, 1, 1, "valid")
    g = b.finish(x)
    out = str(tmp_path / "c")
    info = emit_c(g, out)
    check_sources(out)
    with open(os.path.join(out, "kernels.c")) as f:
        src = f.read()
    assert src.count(depthwise.REQUANT_FN + "(") >= 5
    lib = compile_c(out)
    for seed in range(3):
        xin = rng.integers(-128, 128, size=g.t(g.inputs[0]).shape, dtype=np.int8)
        if seed == 2:
            xin[:] = -128
        np.testing.assert_array_equal(run_c(lib, g, xin)[0], run_graph(g, [xin])[0])
    assert len(info.calls) == 5


def test_cortex_m4_build_without_helpers(tmp_path):
    """The DSP path (SMMULR) compiles for a Cortex-M4 with every warning an error and needs no
    runtime helper."""
    buf, _ = dw_model(np.random.default_rng(1), (8, 8), 3, 3, 2)
    path = tmp_path / "m.tflite"
    path.write_bytes(buf)
    out = str(tmp_path / "c")
    emit_c(load_tflite(str(path)), out)
    check_cortex_m4(out)


@pytest.mark.parametrize("extra", [{"s_out": 0.0005}, {"batch": 2}])
def test_falls_back_where_not_provably_exact(tmp_path, extra):
    """A multiplier >= 0.5 (left shift) has no fast form, and the fast form is for one image: the
    default kernel, still exact."""
    buf, x = dw_model(np.random.default_rng(2), (6, 6), 3, 3, **extra)
    _, got, want, src = _emit_run(tmp_path, buf, x)
    assert _variant(src) == "default"
    assert got.tobytes() == want.tobytes()


def test_in_place_scratch_is_the_plane(tmp_path):
    """The fast in-place kernel's scratch is exactly the liveness rule's plane (the codegen
    refuses any other size; checked here directly too)."""
    from tvm_patchnet.codegen.c_kernels import emit_kernels

    for hw, k, s, padding in [((8, 8), 3, 2, "VALID"), ((9, 7), 5, 1, "SAME"), ((10, 10), 3, 2, "SAME")]:
        buf, _ = dw_model(np.random.default_rng(3), hw, 3, k, s, padding=padding)
        path = tmp_path / "m.tflite"
        path.write_bytes(buf)
        g = load_tflite(str(path))
        op = g.ops[0]
        kf = depthwise.in_place_kernel(g, op, "cortex-m4")
        (ck,) = emit_kernels({"k": kf.func}).values()
        rows, cols = plane_hw(g, op)
        assert ck.workspace_bytes == rows * cols


# ------------------------------------------------------------------------------------- qemu-m4
@pytest.mark.slow
def test_on_qemu_equals_tflite_micro(tmp_path):
    """Both variants with the DSP path on the emulated Cortex-M4, against TFLite Micro."""
    from tvm_patchnet.deploy import compile_model, run_model

    for name, (hw, c, k, s, extra) in {"in_place": ((12, 11), 5, 3, 2, {}),
                                       "in_place_tiled": ((7, 21), 3, 3, 1, {"zp_in": -128, "zp_out": -128}),
                                       "op": ((9, 14), 3, 5, 1, {"with_add": True, "extremes": True})}.items():
        buf, x = dw_model(np.random.default_rng(4), hw, c, k, s, **extra)
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(buf)
        tar = str(tmp_path / f"{name}.tar")
        compile_model(str(path), tar)
        rep = run_model(tar, x=x, check=True)
        g = load_tflite(str(path))
        want = tflm_trace(buf, [x])(g.meta["tensor_index"][g.outputs[0]])
        (got,) = rep.arrays()
        assert rep.reference_match and got.reshape(want.shape).tobytes() == want.tobytes(), name
