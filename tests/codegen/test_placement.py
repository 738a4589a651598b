"""The C model's arena placement: buffers alive at the same time never share a byte."""

from __future__ import annotations

import pytest

from tests.conftest import model_path
from tvm_patchnet.analysis.liveness import analyze
from tvm_patchnet.codegen.placement import ALIGN, assign_offsets, step_graph, workspace_key
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.patch import plan_patches


@pytest.mark.parametrize("patched", [False, True])
def test_live_buffers_are_disjoint(patched):
    graph = load_tflite(model_path("mlperftiny_vww_96_int8.tflite"))
    plan = plan_patches(graph, 3, 3) if patched else None
    g = step_graph(graph, plan)
    workspace = {op.outputs[0]: 100 + 8 * k for k, op in enumerate(g.ops) if op.kind != "reshape"}
    offsets, arena = assign_offsets(graph, plan, workspace)
    live = analyze(g, in_place=False)
    producer = g.producer()
    spans = {}  # name -> (buffer id, offset, bytes, first step, last step); views share a buffer id
    for b in live.buffers:
        for n in b.tensors:
            if n in offsets:
                spans[n] = (b.id, offsets[n], b.size, b.first, b.last)
    for n, size in workspace.items():
        spans[workspace_key(n)] = (workspace_key(n), offsets[workspace_key(n)], size, producer[n], producer[n])
    assert set(spans) == set(offsets)
    # graph input and output are the caller's buffers, not the arena's
    assert graph.inputs[0] not in offsets and graph.outputs[0] not in offsets
    items = list(spans.items())
    for k, (a, (ida, oa, sa, fa, la)) in enumerate(items):
        assert oa % ALIGN == 0 and oa + sa <= arena
        for b, (idb, ob, sb, fb, lb) in items[k + 1:]:
            if ida != idb and fa <= lb and fb <= la:
                assert oa + sa <= ob or ob + sb <= oa, f"{a} and {b} overlap while both alive"
