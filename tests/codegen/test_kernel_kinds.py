"""Every op kind through the C generator: single-op TFLite models against TensorFlow Lite Micro,
and one built graph with the kinds the shared models lack (mul, logistic, concat, pools), run
layer by layer and patch by patch, against ``run_graph``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.codegen.cmodel import check_sources, compile_c, run_c
from tests.conftest import random_inputs, tflm_trace
from tests.graphs import stage_kinds_prefix
from tests.kernels.test_ops_vs_tflm import CASES, _rng
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.patch import plan_patches
from tvm_patchnet.runtime import run_graph


@pytest.mark.parametrize("key", list(CASES))
def test_single_op_bit_exact_with_tflm(tmp_path, key):
    """Every case, two-input ops and float32 edges (quantize, dequantize) included; float
    outputs equal TFLite Micro's bit for bit."""
    buf, inputs = CASES[key](_rng(key))
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    graph = load_tflite(str(path))
    out = str(tmp_path / "c")
    emit_c(graph, out)
    float_edges = any(graph.t(n).dtype == "float32" for n in graph.inputs + graph.outputs)
    check_sources(out, float_edges)
    got = run_c(compile_c(out), graph, inputs)[0]
    want = tflm_trace(buf, inputs)(graph.meta["tensor_index"][graph.outputs[0]])
    assert got.dtype == want.dtype and got.reshape(want.shape).tobytes() == want.tobytes()


def _kinds_graph():
    """The patch-stage kinds of tests/graphs.py (blocks 0..2), then logistic, concat of two
    scales, global pooling, FC, softmax."""
    b, x = stage_kinds_prefix("kinds")
    with b.new_block():
        s = b.logistic(x)
        t = b.tensors[x]
        x = b._op("concat", [x, s], (1, 10, 10, 16), t.s, t.zp, {"axis": 3})
        x = b.reshape(b.global_avg_pool(x), (1, 16))
        x = b.softmax(b.fully_connected(x, 10))
    return b.finish(x)


@pytest.mark.parametrize("patches", [None, 2, 3])
def test_built_graph_bit_exact(tmp_path, patches):
    graph = _kinds_graph()
    plan = plan_patches(graph, patches, 3) if patches else None
    emit_c(graph, str(tmp_path), plan)
    check_sources(str(tmp_path))
    x = random_inputs(graph, 0)[0]
    np.testing.assert_array_equal(run_c(compile_c(str(tmp_path)), graph, x)[0], run_graph(graph, [x])[0])
