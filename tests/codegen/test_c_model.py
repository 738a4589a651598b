"""The emitted C model compiles warning-free and computes exactly what the host kernels compute.

Each case writes the C (``emit_c``), compiles it with the host gcc into a shared library, calls
``tvmgen_default_run`` through ctypes and compares the output, bit for bit, with ``run_graph``
(the Relax VM build of the same TE kernels) and, for the shared TFLite models, with TensorFlow
Lite Micro; the sources are also compiled for a Cortex-M4 (see ``cmodel.py``).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tests.codegen.cmodel import check_cortex_m4, check_sources, compile_c, run_c
from tests.conftest import SHARED_MODELS, model_path, random_inputs, tflm_trace
from tvm_patchnet.analysis.liveness import analyze, softmax_scratch_bytes
from tvm_patchnet.analysis.profile import profile
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.codegen.c_kernels import emit_kernels
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.graph import Graph
from tvm_patchnet.patch import plan_patches
from tvm_patchnet.runtime import run_graph
from tvm_patchnet.schedules.default import op_kernel
from tvm_patchnet.zoo import get_architecture


def _truncate(graph: Graph, n_ops: int) -> Graph:
    """The first ``n_ops`` ops of ``graph``, the last one's output as the graph output."""
    ops = graph.ops[:n_ops]
    keep = set(graph.inputs) | {n for op in ops for n in op.inputs + op.outputs if n}
    return Graph(graph.name, {n: t for n, t in graph.tensors.items() if n in keep}, ops, list(graph.inputs),
                 [ops[-1].outputs[0]], dict(graph.meta))


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_bit_exact(name, tmp_path):
    path = model_path(name)
    graph = load_tflite(path)
    out = str(tmp_path)
    info = emit_c(graph, out)
    check_sources(out)
    lib = compile_c(out)
    x0, x1 = random_inputs(graph, 0)[0], random_inputs(graph, 1)[0]
    got = run_c(lib, graph, x0)[0]
    np.testing.assert_array_equal(got, run_graph(graph, [x0])[0])
    tflm = tflm_trace(path, [x0])(graph.meta["tensor_index"][graph.outputs[0]])
    np.testing.assert_array_equal(got.reshape(tflm.shape), tflm)
    # no state survives a call: another input, then the first one again
    run_c(lib, graph, x1)
    np.testing.assert_array_equal(run_c(lib, graph, x0)[0], got)
    with open(os.path.join(out, "model.h")) as f:
        header = f.read()
    for macro, value in (("INPUT", x0.nbytes), ("OUTPUT", got.nbytes), ("ARENA", info.arena_bytes)):
        assert f"#define TVMGEN_{macro}_BYTES {value}\n" in header
    # the arena that runs bit-exactly (kernels in place) is the profiler's figure, to the byte
    assert info.arena_bytes == profile(graph).peak_bytes
    check_cortex_m4(out)


@pytest.mark.parametrize("shape", [(1, 10), (1, 5, 12), (2, 3, 7)])
def test_softmax_scratch_is_what_the_kernel_allocates(shape):
    b = GraphBuilder("sm", shape)
    g = b.finish(b.softmax("input"))
    kernel = emit_kernels({"sm": op_kernel(g, g.ops[0]).func})["sm"]
    assert kernel.workspace_bytes == softmax_scratch_bytes(g, g.ops[0]) == analyze(g).scratch[0]


def test_in_place_kernels_share_offsets(tmp_path):
    """MobileNetV2-w0.35 layer by layer: every in-place depthwise conv writes over its input and
    every projection conv adds into its block's skip buffer, at the same arena offsets."""
    g = get_architecture("mbv2-w0.35-r144")
    info = emit_c(g, str(tmp_path))
    live, off = analyze(g), info.offsets
    dw = [op for i, op in enumerate(g.ops) if i in live.scratch and op.kind == "depthwise_conv2d"]
    assert len(dw) >= 10 and all(off[op.outputs[0]] == off[op.inputs[0]] for op in dw)
    assert len(live.accumulate) >= 5 and all(off[c] == off[s] for c, s in live.accumulate.items())
    assert info.arena_bytes == profile(g).peak_bytes == 290_304


def test_vww_patched_stage_bit_exact(tmp_path):
    """vww, 3x3 patches over blocks 0..2: the stage output itself (graph cut two ops after the
    stage) and the whole network's output."""
    full = load_tflite(model_path("mlperftiny_vww_96_int8.tflite"))
    plan = plan_patches(full, 3, 3)
    for graph in (_truncate(full, len(plan.stage_ops) + 2), full):
        out = str(tmp_path / graph.outputs[0].replace("/", "_")[:40])
        info = emit_c(graph, out, plan_patches(graph, 3, 3))
        check_sources(out)
        x = random_inputs(graph, 0)[0]
        np.testing.assert_array_equal(run_c(compile_c(out), graph, x)[0], run_graph(graph, [x])[0])
    stage = info.kernels["tvmgen_default_patch_stage"]
    # the per-patch buffers are views of the arena (ws) at the memory plan's offsets, each the
    # size of its allocation; the C holds only scalars and small register tiles (under 1 KiB:
    # packed weights, an im2col of one pixel tile), never a feature map
    placed = {(a.offset, a.size) for a in info.memory.allocations}
    assert stage.workspace and set(stage.workspace.values()) <= placed
    assert stage.prototype.endswith("uint8_t* ws);") and info.calls[0] == stage.name
    assert all(int(n) <= 1000 for n in re.findall(r"\w+\[(\d+)\];", stage.source))
    assert sum(b for _, b in stage.workspace.values()) == plan.workspace_bytes
    check_cortex_m4(out)


@pytest.mark.slow
def test_mbv2_patched_bit_exact(tmp_path):
    graph = get_architecture("mbv2-w0.35-r144")
    out = str(tmp_path)
    emit_c(graph, out, plan_patches(graph, 3, 4))
    check_sources(out)
    x = random_inputs(graph, 0)[0]
    np.testing.assert_array_equal(run_c(compile_c(out), graph, x)[0], run_graph(graph, [x])[0])
    check_cortex_m4(out)
