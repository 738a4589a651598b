"""The patch stage with the fast Cortex-M forms (``tvm_patchnet/schedules/stage.py``) equals the
plain stage, layer-by-layer execution and TensorFlow Lite Micro bit for bit.

Fast tests emit the C model twice, the stage with its fast forms (what ``emit_c`` does) and with
the plain TE kernels only, build both with the host gcc (the portable fallbacks of the DSP
helpers) and compare the outputs with each other and with the host build of the unpatched graph;
the stage's C also compiles for a Cortex-M4 warning-free without runtime helpers, and every
buffer the lowered fast stage allocates is the planner's. The slow test runs the DSP path on
qemu-m4.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.codegen.cmodel import check_cortex_m4, check_sources, compile_c, run_c
from tests.conftest import model_path, random_inputs, tflm_trace
from tests.graphs import stage_kinds_prefix
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.execution import plan_execution
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.patch.planner import plan_patches
from tvm_patchnet.patch.stage import build_stage, lowered_allocations
from tvm_patchnet.runtime import run_graph
from tvm_patchnet.schedules import default

STAGE = "tvmgen_default_patch_stage"


def _inverted_residuals(name="ir", hw=(22, 22)):
    """MobileNetV2-like: a padded stride-2 stem on the stage input, an in-place depthwise conv,
    an inverted residual block whose 1x1 projection accumulates into its skip (add inside the
    stage, not its last op), a stride-2 block, then a 1x1 conv after the stage."""
    b = GraphBuilder(name, (1, *hw, 3), seed=5)
    x = b.conv2d("input", 8, 3, stride=2)
    with b.new_block():
        x = b.depthwise_conv2d(x, 3)
        x = b.conv2d(x, 8, 1, act=None)
    with b.new_block():
        h = b.conv2d(x, 24, 1)
        h = b.depthwise_conv2d(h, 3)
        h = b.conv2d(h, 8, 1, act=None)
        x = b.add(h, x)
    with b.new_block():
        x = b.conv2d(x, 16, 1)
        x = b.depthwise_conv2d(x, 3, stride=2)
        x = b.conv2d(x, 8, 1, act=None)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


def _accumulating():
    """A residual block of two 1x1 convs whose skip is read with the add's region only (the next
    block's depthwise reads the sum with a halo): the last conv accumulates into the skip
    inside the stage (conv and add as one GEMM form, ``pn_add`` per element)."""
    b = GraphBuilder("acc", (1, 26, 26, 3), seed=7)
    x = b.conv2d("input", 8, 3, stride=2)
    with b.new_block():
        x = b.depthwise_conv2d(x, 3)
        x = b.conv2d(x, 8, 1, act=None)
    with b.new_block():
        h = b.conv2d(x, 16, 1)
        h = b.conv2d(h, 8, 1, act=None)
        x = b.add(x, h)
    with b.new_block():
        x = b.depthwise_conv2d(x, 3, stride=2)
        x = b.conv2d(x, 8, 1, act=None)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


def _odd_windows():
    """Odd, non-square maps: a VALID 5x5 stride-2 stem, a 5x5 depthwise, a regular 3x3 conv
    reading margins (its windows gathered without tests), a residual add as the stage output."""
    b = GraphBuilder("odd", (1, 29, 23, 4), seed=9)
    x = b.conv2d("input", 12, 5, stride=2, padding="valid")
    with b.new_block():
        x = b.depthwise_conv2d(x, 5)
        x = b.conv2d(x, 8, 1)
    with b.new_block():
        h = b.conv2d(x, 8, 3, act=None)
        x = b.add(h, x)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


def _stage_kinds():
    """tests/graphs.py: stride-2 stem, dilated depthwise, residual add, pools, mul (uneven tiles)."""
    b, x = stage_kinds_prefix("kinds")
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


GRAPHS = {"ir": _inverted_residuals, "ir_odd": lambda: _inverted_residuals("ir_odd", (21, 25)),
          "acc": _accumulating, "odd": _odd_windows, "kinds": _stage_kinds}

#: (graph, p, n) -> the micro-kernels the fast stage must call
CASES = {
    ("ir", 2, 4): {"pn_dw_requant", "pn_gemm_"},  # even tiles (6 -> 3, 3), stride 2 inside
    ("ir", 4, 3): {"pn_dw_requant", "pn_gemm_"},  # uneven (11 -> 3, 3, 3, 2); the add is the stage output
    ("ir_odd", 3, 4): {"pn_dw_requant", "pn_gemm_"},  # non-square, odd maps, uneven tiles
    ("acc", 2, 4): {"pn_dw_requant", "pn_gemm_", "pn_add"},  # conv accumulated into its skip
    ("acc", 3, 4): {"pn_dw_requant", "pn_gemm_", "pn_add"},
    ("odd", 3, 3): {"pn_dw_requant", "pn_gemm_"},  # 5x5 windows, a 3x3 conv gathered from margins
    ("kinds", 3, 3): {"pn_gemm_"},  # dilated depthwise (not in place), pools, mul: plain there
}


@functools.cache
def _graph(key):
    return GRAPHS[key]()


def _emit(graph, plan, out, fast: bool):
    if fast:
        return emit_c(graph, out, plan)
    plain = default.stage_kernel
    default.stage_kernel = lambda exe, schedules=None: plain(exe)
    try:
        return emit_c(graph, out, plan)
    finally:
        default.stage_kernel = plain


@pytest.mark.parametrize("key", list(CASES), ids=lambda k: f"{k[0]}-p{k[1]}-n{k[2]}")
def test_fast_stage_equals_plain_stage(tmp_path, key):
    name, p, n = key
    g = _graph(name)
    plan = plan_patches(g, p, n)
    fast_out, plain_out = str(tmp_path / "fast"), str(tmp_path / "plain")
    info = _emit(g, plan, fast_out, True)
    plain_info = _emit(g, plan, plain_out, False)
    src = info.kernels[STAGE].source
    assert all(fn in src for fn in CASES[key]), f"fast forms {CASES[key]} expected in the stage"
    assert "pn_" not in plain_info.kernels[STAGE].source
    assert info.arena_bytes == plain_info.arena_bytes  # the memory plan does not change
    check_sources(fast_out)
    check_cortex_m4(fast_out)
    fast_lib, plain_lib = compile_c(fast_out), compile_c(plain_out)
    for seed in range(2):
        x = random_inputs(g, seed)[0]
        got = run_c(fast_lib, g, x)[0]
        np.testing.assert_array_equal(got, run_c(plain_lib, g, x)[0])
        np.testing.assert_array_equal(got, run_graph(g, [x])[0])


@pytest.mark.parametrize("key", [("ir", 4, 3), ("acc", 3, 4), ("odd", 2, 3), ("kinds", 3, 3)],
                         ids=lambda k: f"{k[0]}-p{k[1]}-n{k[2]}")
def test_fast_stage_allocates_the_planner_buffers(key):
    name, p, n = key
    g = _graph(name)
    plan = plan_patches(g, p, n)
    stage = build_stage(plan_execution(g, plan), fast=True)
    assert stage.preamble
    glob = {b: s for b, (s, _, scope) in lowered_allocations(stage.func).items() if scope == "global"}
    assert {stage.buffers[b]: s for b, s in glob.items()} == plan.stage_buffers


def test_relax_stage_stays_plain():
    """build_stage without ``fast`` (the Relax pass, the host build) calls no micro-kernel."""
    g = _graph("ir")
    stage = build_stage(plan_execution(g, plan_patches(g, 2, 4)))
    assert stage.preamble == () and "call_extern" not in stage.func.script()


# ------------------------------------------------------------------------------------- qemu
@pytest.mark.slow
@pytest.mark.parametrize("name, patches, split", [("mlperftiny_ic_resnet8_quant.tflite", 2, 3),
                                                  ("mlperftiny_vww_96_int8.tflite", 3, 3)])
def test_fast_stage_on_qemu_equals_tflm(tmp_path, name, patches, split):
    """The DSP path of the fast stage (resnet8: stem and 3x3 convs as GEMMs, a conv accumulated
    into its skip; vww: in-place depthwise convs) on the emulated Cortex-M4 equals TFLite Micro."""
    from tvm_patchnet.deploy import compile_model, run_model

    path = model_path(name)
    g = load_tflite(path)
    x = np.random.default_rng(3).integers(-128, 128, size=g.t(g.inputs[0]).shape, dtype=np.int8)
    tar = str(tmp_path / "m.tar")
    compile_model(path, tar, patches=patches, split=split)
    rep = run_model(tar, x=x)
    want = tflm_trace(path, [x])(g.meta["tensor_index"][g.outputs[0]])
    assert rep.arrays()[0].reshape(want.shape).tobytes() == want.tobytes()
