"""The tensorized GEMM kernels (1x1 convs, fully connected layers, 1x1 conv + residual add, and
other convs through an im2col in registers) equal TensorFlow Lite Micro and the plain TE kernels
bit for bit.

Fast tests emit C and build it with the host gcc (the portable fallback of the DSP helpers) and
with arm-none-eabi-gcc (the DSP path compiles warning-free, needs no runtime helper); the slow
tests run the DSP path on qemu-m4.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.codegen.cmodel import check_cortex_m4, check_sources, compile_c, run_c
from tests.conftest import tflm_trace
from tests.tflite_writer import ModelBuilder, TensorSpec, single_op_model
from tvm_patchnet.builder import GraphBuilder, same_padding
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.runtime import run_graph
from tvm_patchnet.schedules import conv, pointwise


# ------------------------------------------------------------------------------------- models
def conv1x1(rng, hw, k, co, zp_in=-3, zp_out=5, act=None, per_channel=True, extremes=False, bias_range=2000,
            out_scale=0.1, pruned=0):
    """A CONV_2D 1x1 model and one input; ``extremes``: -128 in the weights and a -128 input row;
    ``pruned``: that many channels with all-zero weights and biases of +-2^30 (as vww_96 has).
    Effective scales are 0.05 * [0.004, 0.02] / ``out_scale``."""
    w = rng.integers(-127, 128, (co, 1, 1, k), dtype=np.int8)
    x = rng.integers(-128, 128, (1, *hw, k), dtype=np.int8)
    if extremes:
        w[0, 0, 0, :] = -128
        w[-1, 0, 0, ::2] = -128
        x[0, 0, 0, :] = -128
        x[0, -1, -1, :] = 127
    s_w = rng.uniform(0.004, 0.02, co) if per_channel else np.full(co, 0.01)
    bias = rng.integers(-bias_range, bias_range + 1, co).astype(np.int64).clip(-2**31, 2**31 - 1).astype(np.int32)
    w[:pruned] = 0
    bias[:pruned] = [(-1) ** i * 2**30 for i in range(pruned)]
    q_w = {"scale": list(s_w), "zero_point": [0] * co} if per_channel else {"scale": 0.01, "zero_point": 0}
    q_b = {"scale": list(0.05 * s_w), "zero_point": [0] * co} if per_channel else {"scale": 0.0005, "zero_point": 0}
    ins = [TensorSpec(x.shape, scale=0.05, zero_point=zp_in), TensorSpec(w.shape, "int8", data=w, **q_w),
           TensorSpec(bias.shape, "int32", data=bias, **q_b)]
    out = TensorSpec((1, *hw, co), scale=out_scale, zero_point=zp_out)
    opts = {"padding": "VALID", "stride_h": 1, "stride_w": 1, "fused_activation_function": act}
    return single_op_model("CONV_2D", ins, out, opts), x


def conv_kxk(rng, hw, k, co, kernel, stride=1, dilation=1, padding="SAME", zp_in=-3, zp_out=5, act="relu6"):
    """A CONV_2D with a kernel x kernel window (the im2col path of ``schedules/conv.py``)."""
    w = rng.integers(-128, 128, (co, kernel, kernel, k), dtype=np.int8)
    x = rng.integers(-128, 128, (1, *hw, k), dtype=np.int8)
    s_w = rng.uniform(0.004, 0.02, co)
    bias = rng.integers(-2000, 2001, co).astype(np.int32)
    pads = [same_padding(n, kernel, stride, dilation) if padding == "SAME" else (0, 0) for n in hw]
    oh, ow = ((n + p[0] + p[1] - (kernel - 1) * dilation - 1) // stride + 1 for n, p in zip(hw, pads))
    ins = [TensorSpec(x.shape, scale=0.05, zero_point=zp_in),
           TensorSpec(w.shape, "int8", scale=list(s_w), zero_point=[0] * co, data=w),
           TensorSpec(bias.shape, "int32", scale=list(0.05 * s_w), zero_point=[0] * co, data=bias)]
    opts = {"padding": padding, "stride_h": stride, "stride_w": stride, "dilation_h_factor": dilation,
            "dilation_w_factor": dilation, "fused_activation_function": act}
    return single_op_model("CONV_2D", ins, TensorSpec((1, oh, ow, co), scale=0.1, zero_point=zp_out), opts), x


def fully_connected(rng, batch, n_in, n_out, zp_in=-3, zp_out=5, act=None):
    w = rng.integers(-128, 128, (n_out, n_in), dtype=np.int8)
    bias = rng.integers(-2000, 2001, n_out).astype(np.int32)
    x = rng.integers(-128, 128, (batch, n_in), dtype=np.int8)
    ins = [TensorSpec(x.shape, scale=0.05, zero_point=zp_in), TensorSpec(w.shape, "int8", scale=0.01, data=w),
           TensorSpec(bias.shape, "int32", scale=0.0005, data=bias)]
    out = TensorSpec((batch, n_out), scale=0.1, zero_point=zp_out)
    opts = {"keep_num_dims": False, "fused_activation_function": act}
    return single_op_model("FULLY_CONNECTED", ins, out, opts), x


def residual(rng, hw, c, expand, conv_first=True, act=None, kernel=1):
    """A residual tail: kernel x kernel convs c -> expand (relu6) and expand -> c (SAME
    padding), ADD with the input (the second conv and the add run as one accumulate kernel)."""
    b = ModelBuilder()
    x_spec = TensorSpec((1, *hw, c), scale=0.05, zero_point=-3)
    x_id = b.tensor(x_spec)

    def conv(inp, k, co, act, scale, zp):
        w = rng.integers(-128, 128, (co, kernel, kernel, k), dtype=np.int8)
        s_w = rng.uniform(0.004, 0.02, co)
        bias = rng.integers(-2000, 2001, co).astype(np.int32)
        wt = b.tensor(TensorSpec(w.shape, "int8", scale=list(s_w), zero_point=[0] * co, data=w))
        bt = b.tensor(TensorSpec(bias.shape, "int32", scale=list(0.05 * s_w), zero_point=[0] * co, data=bias))
        out = b.tensor(TensorSpec((1, *hw, co), scale=scale, zero_point=zp))
        b.op("CONV_2D", [inp, wt, bt], [out], {"padding": "SAME", "stride_h": 1, "stride_w": 1,
                                               "fused_activation_function": act})
        return out

    z = conv(conv(x_id, c, expand, "relu6", 0.05, -128), expand, c, None, 0.08, 2)
    o = b.tensor(TensorSpec((1, *hw, c), scale=0.1, zero_point=-1))
    b.op("ADD", [z, x_id] if conv_first else [x_id, z], [o], {"fused_activation_function": act})
    return b.finish([x_id], [o]), rng.integers(-128, 128, x_spec.shape, dtype=np.int8)


#: name -> (model builder, arguments): shapes that stress the edges
CASES = {
    "k16-co32": (conv1x1, {"hw": (4, 4), "k": 16, "co": 32}),
    "odd-pixels-odd-co": (conv1x1, {"hw": (3, 3), "k": 12, "co": 7}),
    "k-remainder": (conv1x1, {"hw": (2, 3), "k": 7, "co": 6, "act": "relu"}),
    "one-pixel": (conv1x1, {"hw": (1, 1), "k": 18, "co": 5, "act": "relu6"}),
    "k2-co1": (conv1x1, {"hw": (2, 2), "k": 2, "co": 1}),
    "k3-stem-like": (conv1x1, {"hw": (5, 4), "k": 3, "co": 8}),
    "per-tensor": (conv1x1, {"hw": (3, 4), "k": 20, "co": 10, "per_channel": False}),
    "extremes-zp-min": (conv1x1, {"hw": (2, 2), "k": 17, "co": 9, "zp_in": -128, "zp_out": -128, "extremes": True}),
    "extremes-zp-max": (conv1x1, {"hw": (3, 1), "k": 9, "co": 4, "zp_in": 127, "zp_out": 127, "extremes": True,
                                  "act": "relu"}),
    # some channels with no right shift: the general rounding form
    "no-right-shift": (conv1x1, {"hw": (2, 2), "k": 8, "co": 8, "out_scale": 0.0015}),
    # left shifts (effective scales above 1)
    "left-shift": (conv1x1, {"hw": (2, 2), "k": 6, "co": 4, "out_scale": 0.0004, "act": "relu"}),
    # right shifts above 23: the output zero point is not folded into the rounding term
    "zp-not-folded": (conv1x1, {"hw": (2, 2), "k": 16, "co": 4, "out_scale": 2e4, "zp_out": 127}),
    # channels with zero weights and huge biases: constant outputs, given small constants
    "pruned-channels": (conv1x1, {"hw": (2, 3), "k": 16, "co": 8, "pruned": 3, "act": "relu6"}),
    "pruned-per-tensor": (conv1x1, {"hw": (2, 2), "k": 8, "co": 6, "pruned": 2, "per_channel": False}),
    "relu6-zp-out-max": (conv1x1, {"hw": (2, 2), "k": 32, "co": 12, "zp_out": 120, "act": "relu6"}),
    "fc-batch1": (fully_connected, {"batch": 1, "n_in": 256, "n_out": 10}),
    "fc-batch3-odd": (fully_connected, {"batch": 3, "n_in": 13, "n_out": 3, "zp_in": 127, "zp_out": -128,
                                        "act": "relu"}),
    "fc-one-output": (fully_connected, {"batch": 1, "n_in": 5, "n_out": 1}),
    "stem-3x3-s2": (conv_kxk, {"hw": (9, 10), "k": 3, "co": 8, "kernel": 3, "stride": 2}),
    "3x3-zp-in-max": (conv_kxk, {"hw": (5, 4), "k": 16, "co": 6, "kernel": 3, "zp_in": 127, "zp_out": -128}),
    "3x3-zp-in-min-odd": (conv_kxk, {"hw": (5, 5), "k": 5, "co": 7, "kernel": 3, "zp_in": -128, "act": None}),
    "5x5-valid": (conv_kxk, {"hw": (7, 8), "k": 4, "co": 4, "kernel": 5, "padding": "VALID"}),
    "3x3-dilated": (conv_kxk, {"hw": (8, 6), "k": 2, "co": 6, "kernel": 3, "dilation": 2}),
    "3x3-one-pixel-wide-k": (conv_kxk, {"hw": (1, 1), "k": 100, "co": 4, "kernel": 3}),
    "1x1-stride-2": (conv_kxk, {"hw": (5, 6), "k": 8, "co": 4, "kernel": 1, "stride": 2, "padding": "VALID"}),
    "residual": (residual, {"hw": (3, 5), "c": 6, "expand": 24}),
    "residual-3x3": (residual, {"hw": (5, 6), "c": 8, "expand": 8, "kernel": 3}),
    "residual-3x3-skip-first": (residual, {"hw": (3, 3), "c": 5, "expand": 4, "kernel": 3, "conv_first": False,
                                           "act": "relu"}),
    "residual-skip-first-relu": (residual, {"hw": (4, 4), "c": 16, "expand": 32, "conv_first": False,
                                            "act": "relu"}),
}


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng([77, sum(map(ord, key))])


def _emit(graph, out_dir: str) -> str:
    emit_c(graph, out_dir)
    check_sources(out_dir)
    check_cortex_m4(out_dir)
    with open(os.path.join(out_dir, "kernels.c")) as f:
        return f.read()


# ------------------------------------------------------------------------------------- host
@pytest.mark.parametrize("key", list(CASES))
def test_fast_kernel_bit_exact_with_tflm(tmp_path, key):
    """Every case takes the fast path, and its host build equals TFLite Micro bit for bit."""
    make, kw = CASES[key]
    buf, x = make(_rng(key), **kw)
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    graph = load_tflite(str(path))
    src = _emit(graph, str(tmp_path / "c"))
    assert "pn_gemm_" in src and "pn_requant(" in src, "the tensorized kernel was not used"
    assert (make is residual) == ("pn_add(" in src.split("\nvoid ", 1)[1]), "the conv + add kernel was not used"
    got = run_c(compile_c(str(tmp_path / "c")), graph, x)[0]
    want = tflm_trace(buf, [x])(graph.meta["tensor_index"][graph.outputs[0]])
    assert got.reshape(want.shape).tobytes() == want.tobytes()


def test_accumulator_bound_falls_back_to_plain(tmp_path):
    """A bias near the int32 limit breaks the fast requantization's bound: the plain kernel runs."""
    buf, x = conv1x1(_rng("bound"), (2, 2), 8, 4, bias_range=2**30)
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    graph = load_tflite(str(path))
    assert pointwise.op_kernel(graph, graph.ops[0], "cortex-m4") is None
    src = _emit(graph, str(tmp_path / "c"))
    assert "pn_gemm_" not in src
    got = run_c(compile_c(str(tmp_path / "c")), graph, x)[0]
    want = tflm_trace(buf, [x])(graph.meta["tensor_index"][graph.outputs[0]])
    assert got.reshape(want.shape).tobytes() == want.tobytes()


def _residual_graph(hw, c, act, conv_first):
    b = GraphBuilder("res", (1, *hw, c), seed=5)
    x = b.conv2d(b.inputs[0], c, 3, act="relu6")
    y = b.conv2d(x, c * 2, 1, act="relu6")
    y = b.conv2d(y, c, 1, act=None)
    return b.finish(b.add(y, x, act=act) if conv_first else b.add(x, y, act=act))


@pytest.mark.parametrize("hw, c, act, conv_first", [((5, 5), 6, None, True), ((4, 6), 16, "relu", False),
                                                    ((1, 1), 3, None, False)])
def test_accumulate_kernel_bit_exact(tmp_path, hw, c, act, conv_first):
    """The 1x1 conv + residual add kernel (called with its output over the skip buffer) equals
    the host build of the int8 graph; the add is fused into the conv's kernel, as C."""
    graph = _residual_graph(hw, c, act, conv_first)
    conv, add = graph.ops[2], graph.ops[3]
    kf = pointwise.accumulate_kernel(graph, conv, add, "cortex-m4")
    skip = add.inputs[1] if conv_first else add.inputs[0]
    assert kf is not None and kf.args[-2:] == [skip, add.outputs[0]]
    src = _emit(graph, str(tmp_path))
    assert src.count("pn_gemm_") >= 2 and "pn_add(" in src
    assert len([k for k in src.split("\nvoid ")[1:] if "pn_add(" in k]) == 1  # one kernel: conv and add
    lib = compile_c(str(tmp_path))
    for seed in range(2):
        x = np.random.default_rng(seed).integers(-128, 128, graph.t(graph.inputs[0]).shape, dtype=np.int8)
        np.testing.assert_array_equal(run_c(lib, graph, x)[0], run_graph(graph, [x])[0])


@pytest.mark.parametrize("pixels, co, tile", [(576, 32, (2, 2)), (1, 10, (1, 5)), (9, 6, (3, 1)), (7, 4, (1, 4)),
                                              (5, 7, (1, 1))])
def test_tile_divides_the_loops(pixels, co, tile):
    mb, nb = pointwise.choose_tile(pixels, co)
    assert (mb, nb) == tile and pixels % mb == 0 and co % nb == 0 and mb * nb <= pointwise.MAX_TILE_ACCS + (mb == 1)


def test_which_builder_applies():
    """pointwise takes 1x1 stride-1 convs; conv takes other windows up to MAX_GATHER_BYTES;
    a reduction of length 1 and wider windows are left to the default schedule."""
    b = GraphBuilder("other", (1, 6, 6, 1), seed=1)
    x = b.conv2d(b.inputs[0], 4, 1)
    x = b.conv2d(x, 8, 3)
    x = b.conv2d(x, 120, 1, stride=2)
    x = b.conv2d(x, 4, 3)
    graph = b.finish(x)
    assert [pointwise.op_kernel(graph, op, "cortex-m4") is not None for op in graph.ops] == [False] * 4
    assert [conv.op_kernel(graph, op, "cortex-m4") is not None for op in graph.ops] == [False, True, True, False]


# ------------------------------------------------------------------------------------- qemu
@pytest.mark.slow
@pytest.mark.parametrize("key", ["k16-co32", "odd-pixels-odd-co", "k-remainder", "extremes-zp-min", "no-right-shift",
                                 "fc-batch1", "residual-skip-first-relu", "stem-3x3-s2", "3x3-zp-in-max",
                                 "residual-3x3"])
def test_dsp_path_on_qemu_equals_tflm(tmp_path, key):
    """The SMLAD/SMMULR path on the emulated Cortex-M4 equals TFLite Micro and the host build."""
    from tvm_patchnet.deploy import compile_model, run_model

    make, kw = CASES[key]
    buf, x = make(_rng(key), **kw)
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    graph = load_tflite(str(path))
    tar = str(tmp_path / "m.tar")
    compile_model(str(path), tar)
    rep = run_model(tar, x=x, check=True)
    assert rep.reference_match is True
    want = tflm_trace(buf, [x])(graph.meta["tensor_index"][graph.outputs[0]])
    assert rep.arrays()[0].reshape(want.shape).tobytes() == want.tobytes()


# ------------------------------------------------------------------------------------- reuse
def test_schedule_gemm_inside_a_tile_loop(tmp_path):
    """schedule_gemm on a 4-D NHWC 1x1 conv whose producer and consumer are computed per tile of
    2 rows (the patch stage's structure): the C equals NumPy."""
    import ctypes
    import subprocess

    from tvm import s_tir, te, tirx

    from tvm_patchnet.codegen.c_kernels import emit_kernels

    h, w_, k, co = 6, 4, 9, 6
    x = te.placeholder((1, h, w_, k), "int8", name="x")
    w = te.placeholder((co, k), "int8", name="w")
    mid = te.compute(x.shape, lambda *i: x(*i) + tirx.const(1, "int8"), name="mid")
    r = te.reduce_axis((0, k), "r")
    acc = te.compute((1, h, w_, co), lambda b, i, j, c: te.sum(
        mid[b, i, j, r].astype("int32") * w[c, r].astype("int32"), axis=r), name="acc")
    out = te.compute(acc.shape, lambda *i: (acc(*i) >> 4).astype("int8"), name="out")
    out2 = te.compute(acc.shape, lambda *i: out(*i) + tirx.const(1, "int8"), name="out2")
    sch = s_tir.Schedule(te.create_prim_func([x, w, out2]))
    tile = sch.split(sch.get_loops(sch.get_sblock("out2"))[1], [None, 2])[0]
    sch.compute_at(sch.get_sblock("out"), tile)
    sch.compute_at(sch.get_sblock("acc"), tile)
    pointwise.schedule_gemm(sch, sch.get_sblock("out"), sch.get_sblock("acc"), 2, 2, k)
    sch.compute_at(sch.get_sblock("mid"), tile)
    kern = emit_kernels({"tiled": sch.mod["main"]})["tiled"]
    src = tmp_path / "tiled.c"
    src.write_text("#include <stdint.h>\n" + pointwise.COMMON_C + pointwise.gemm_microkernel_c(2, 2) + kern.source)
    so = tmp_path / "tiled.so"
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(so), str(src)],
                   check=True)
    rng = np.random.default_rng(3)
    xv = rng.integers(-128, 128, (1, h, w_, k), dtype=np.int8)
    wv = rng.integers(-128, 128, (co, k), dtype=np.int8)
    got = np.zeros((1, h, w_, co), np.int8)
    ws = np.zeros(kern.workspace_bytes, np.uint8)
    ptrs = [a.ctypes.data_as(ctypes.c_void_p) for a in (xv, wv, got, ws)]
    ctypes.CDLL(str(so)).tiled(*ptrs[: 3 + bool(kern.workspace_bytes)])
    m = (xv.astype(np.int16) + 1).astype(np.int8).astype(np.int32)
    want = ((np.einsum("bijk,ck->bijc", m, wv.astype(np.int32)) >> 4).astype(np.int8) + np.int8(1)).astype(np.int8)
    np.testing.assert_array_equal(got, want)
