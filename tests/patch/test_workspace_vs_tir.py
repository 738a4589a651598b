"""What the lowered patch-stage PrimFunc really allocates equals the planner's per-patch figures.

The stage PrimFunc (``build_stage``) is lowered by TVM's own passes; its buffers are read back
three ways, none of which uses the planner: ``lowered_allocations`` (after buffer compaction),
the TVMScript text of the lowered function, and ``tvm.s_tir.analysis.calculate_allocated_bytes``.
Buffers are named after the TE op that writes them, which ``build_stage`` names after the graph
op (``lower_op`` -> ``Lowered.name`` = ``op.name``); reductions get a ``<op>_acc`` / ``_sum`` /
``_max`` block that ``set_scope`` turns into a ``<...>_local`` register.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir

from tests.conftest import model_path
from tests.graphs import stage_kinds_prefix
from tvm_patchnet.execution import plan_execution
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.patch.planner import plan_patches
from tvm_patchnet.patch.stage import build_stage, lowered_allocations
from tvm_patchnet.zoo import get_architecture

_REDUCING = ("conv2d", "depthwise_conv2d", "avg_pool2d", "max_pool2d")


def _uneven_graph():
    """10x10 stage output, p = 3 -> tiles of 4, 4, 2 (see tests/graphs.py)."""
    b, x = stage_kinds_prefix("uneven")
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


def _graph(key):
    if key == "uneven":
        return _uneven_graph()
    if key.endswith(".tflite"):
        return load_tflite(model_path(key))
    return get_architecture(key)


#: (graph, p, n) whose lowered stage allocates exactly the planner's buffers
CASES = [
    ("mlperftiny_vww_96_int8.tflite", 3, 3),
    ("mlperftiny_vww_96_int8.tflite", 6, 3),
    ("mlperftiny_ic_resnet8_quant.tflite", 4, 2),  # residual add (the stage output) in the stage
    ("mlperftiny_ic_resnet8_quant.tflite", 1, 4),  # p = 1: three residual blocks, margins only
    ("mlperftiny_kws_ref_model.tflite", 5, 5),  # 25x5 map, 5x1 tiles
    ("mbv2-w0.35-r144", 3, 4),
    ("mbv2-w0.35-r144", 5, 2),  # uneven: 72 -> 15,15,15,15,12
    ("mcunet-320kb-1mb", 4, 3),
    ("uneven", 3, 2),  # uneven: 10 -> 4,4,2, dilated depthwise + residual add
    ("uneven", 2, 2),
]

#: settings that once compacted loosely: uneven tiles under the split predicate, skip tensors
#: with two readers in the stage (see patch/stage.py and kernels/frame.py)
HARD_CASES = [
    ("mlperftiny_vww_96_int8.tflite", 5, 3),  # uneven: 24 -> 5,5,5,5,4
    ("mlperftiny_kws_ref_model.tflite", 4, 5),  # uneven, an empty column tile
    ("mlperftiny_ic_resnet8_quant.tflite", 3, 2),  # uneven: 32 -> 11,11,10
    ("uneven", 3, 3),  # uneven: 10 -> 4,4,2
    ("mlperftiny_ic_resnet8_quant.tflite", 2, 3),  # even; skip with two readers
    ("mbv2-w0.35-r144", 3, 8),  # even (9 -> 3,3,3); skips with two readers
    ("uneven", 2, 3),  # even (10 -> 5,5); skip with two readers
]


def _compact_and_lower(func):
    """The passes ``lowered_allocations`` runs, then LowerOpaqueBlock: allocations become
    statements that ``calculate_allocated_bytes`` and the TVMScript printer see."""
    mod = tvm.IRModule({"main": func})
    return tvm.transform.Sequential([
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerOpaqueBlock(),
    ])(mod)


_ALLOC = re.compile(r"(\w+) = T\.alloc_(buffer|local)\(\(([\d, ]+)\), \"(\w+)\"")


def _script_allocations(mod):
    """name -> (shape, dtype, kind) parsed from the TVMScript of the lowered function."""
    found = {}
    for name, kind, shape, dtype in _ALLOC.findall(mod.script()):
        found[name] = (tuple(int(s) for s in shape.replace(" ", "").split(",") if s), dtype, kind)
    return found


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0].split('.')[0]}-p{c[1]}-n{c[2]}")
def case(request):
    key, p, n = request.param
    g = _graph(key)
    plan = plan_patches(g, p, n)
    stage = build_stage(plan_execution(g, plan))
    return g, plan, stage


def test_global_buffers_have_the_planner_patch_shapes(case):
    g, plan, stage = case
    allocs = lowered_allocations(stage.func)
    glob = {k: v for k, v in allocs.items() if v[2] == "global"}
    _, expected, total = _global_shapes(g, plan)
    assert {k: v[0] for k, v in glob.items()} == expected
    _check_by_hand(g, plan, {k: v[0] for k, v in glob.items()}, stage.buffers)
    assert total == plan.workspace_bytes
    assert {v[1] for v in glob.values()} <= {"int8"}
    assert set(allocs) - set(glob) == {k for k, v in allocs.items() if v[2] == "local"}  # nothing else
    # the stage input and output are parameters, never allocated
    params = [p.name for p in stage.func.params]
    assert params[0] == "stage_input" and len(params) == 2 + len(stage.consts)


def test_local_buffers_are_single_int32_accumulators(case):
    g, plan, stage = case
    local = {k: v for k, v in lowered_allocations(stage.func).items() if v[2] == "local"}
    assert local, "every stage has at least one reduction"
    for name, (shape, dtype, _) in local.items():
        assert shape == (1, 1, 1, 1) and dtype == "int32", name
    owners = sorted(re.sub(r"_(acc|sum|max)_local$", "", name) for name in local)
    reducing = sorted(g.ops[i].name for i in plan.stage_ops if g.ops[i].kind in _REDUCING)
    assert owners == reducing  # one register per conv / pooling op, none for add / mul


def test_global_bytes_sum_to_the_planner_workspace(case):
    _, plan, stage = case
    glob = [v for v in lowered_allocations(stage.func).values() if v[2] == "global"]
    assert sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype, _ in glob) == plan.workspace_bytes


def test_tvmscript_of_the_lowered_function_shows_the_same_allocations(case):
    # an independent reading: parse the printed lowered function, not lowered_allocations' walker
    stage = case[2]
    parsed = _script_allocations(_compact_and_lower(stage.func))
    walked = lowered_allocations(stage.func)
    assert {k: v[:2] for k, v in parsed.items()} == {k: v[:2] for k, v in walked.items()}
    assert {k: {"buffer": "global", "local": "local"}[v[2]] for k, v in parsed.items()} == \
        {k: v[2] for k, v in walked.items()}


def test_calculate_allocated_bytes_agrees(case):
    # calculate_allocated_bytes needs the allocations as statements (after LowerOpaqueBlock);
    # on the scheduled PrimFunc (blocks' alloc_buffers) it reports nothing
    _, plan, stage = case
    per_scope = s_tir.analysis.calculate_allocated_bytes(_compact_and_lower(stage.func))["main"]
    # every intermediate is allocated at once under the tile loops; the accumulators, and the
    # channel planes of in-place depthwise convs (inside their channel loops), one at a time
    planes = [int(np.prod(s)) for n, s in plan.stage_buffers.items() if n.endswith("#scratch")]
    at_once = plan.workspace_bytes - sum(planes) + max(planes, default=0)
    assert dict(per_scope) == {"global": at_once, "local": 4}


def _global_shapes(g, plan):
    """(lowered global buffer shapes, planner shapes of the same buffers, lowered global bytes)."""
    stage = build_stage(plan_execution(g, plan))
    allocs = lowered_allocations(stage.func)
    glob = {k: v[0] for k, v in allocs.items() if v[2] == "global"}
    expected = {b: plan.stage_buffers[t] for b, t in stage.buffers.items() if t != plan.stage_output}
    return glob, expected, sum(int(np.prod(s)) for s in glob.values())


def _expected_by_hand(g, plan):
    """The planner's stage buffers from its patch shapes and these rules: an intermediate's
    buffer is its patch; a conv accumulated into a residual skip has none; an in-place depthwise
    conv adds its input channel's plane; an uneven last op writes a whole-tile buffer."""
    ops = [g.ops[i] for i in plan.stage_ops]
    out = {op.name: plan.patch_shapes[op.outputs[0]] for op in ops if op.outputs[0] != plan.stage_output}
    if plan.tile_buffer:
        out[ops[-1].name] = (1, *plan.tile_hw, g.t(plan.stage_output).shape[3])
    return out


def test_hand_computed_workspace_of_the_uneven_graph():
    g = _uneven_graph()
    plan = plan_patches(g, 3, 2)
    # Stage = blocks 0-1, output add_0 10x10, tiles of 4, 4, 2 rows. Middle tile (rows 4..8):
    # add, conv_1 (1x1), dwconv_0: 4..8 (4 rows); conv_0: the add's 4..8 and the 3x3 dilation-2
    # depthwise's (pad 2) 4-2 .. 7-2+4+1 = 2..10 -> 8 rows. Top tile: -2..6 (8), bottom: 6..12 (6).
    assert plan.tile_hw == (4, 4)
    # Margins hold what whole tiles reach (the last op computes the bottom tile 8..12 whole):
    # add, conv_1, dwconv_0 8..12 (2 past the map); conv_0 the depthwise's 6..14 (4 past).
    assert plan.margins == {"conv_0:out": (2, 2, 4, 4), "dwconv_0:out": (0, 0, 2, 2), "conv_1:out": (0, 0, 2, 2)}
    # uneven tiles: plus the 4x4 tile buffer the last op (add) writes before the copy
    assert plan.tile_buffer == 4 * 4 * 8
    # Nothing runs in place: the skip conv_0 lives on past dwconv_0, and its 8x8 patch differs
    # from conv_1's 4x4 one, so conv_1 cannot add into it.
    assert plan.workspace_bytes == 8 * (8 * 8 + 4 * 4 + 4 * 4 + 4 * 4) == 896
    glob, _, total = _global_shapes(g, plan)
    assert glob == {"conv_0": (1, 8, 8, 8), "dwconv_0": (1, 4, 4, 8), "conv_1": (1, 4, 4, 8), "add_0": (1, 4, 4, 8)}
    assert total == 896


def test_hand_computed_workspace_of_the_uneven_graph_with_pooling():
    g = _uneven_graph()
    plan = plan_patches(g, 3, 3)
    # Stage output mul_0 10x10, tiles 4,4,2. Rows of the middle tile (4..8), unclipped:
    # mul, avg pool 4..8 (4); max pool out: the mul's 4..8 and the 3x3 SAME avg pool's 3..9 -> 6;
    # add (read by the 3x3 SAME max pool): 2..10 -> 8; conv_1 (1x1), dwconv_0: 8; conv_0: the
    # add's 2..10 and the 3x3 dilation-2 depthwise's (pad 2) 0..12 -> 12. The top tile (-4..8 for
    # conv_0) has the same sizes, the bottom one (2 rows) smaller ones.
    assert plan.tile_hw == (4, 4)
    assert plan.patch_shapes["avg_pool2d_0:out"] == (1, 4, 4, 8)
    assert plan.patch_shapes["max_pool2d_0:out"] == (1, 6, 6, 8)
    assert plan.patch_shapes["add_0:out"] == (1, 8, 8, 8)
    assert plan.patch_shapes["conv_1:out"] == (1, 8, 8, 8)
    assert plan.patch_shapes["dwconv_0:out"] == (1, 8, 8, 8)
    assert plan.patch_shapes["conv_0:out"] == (1, 12, 12, 8)
    assert plan.workspace_bytes == 8 * (16 + 36 + 3 * 64 + 144 + 16)  # + the 4x4 tile buffer (mul)
    glob, _, total = _global_shapes(g, plan)
    assert glob == {"conv_0": (1, 12, 12, 8), "dwconv_0": (1, 8, 8, 8), "conv_1": (1, 8, 8, 8),
                    "add_0": (1, 8, 8, 8), "max_pool2d_0": (1, 6, 6, 8), "avg_pool2d_0": (1, 4, 4, 8),
                    "mul_0": (1, 4, 4, 8)}
    assert total == plan.workspace_bytes


@pytest.mark.parametrize("key, p, n", HARD_CASES)
def test_lowered_buffers_match_the_plan_hard_cases(key, p, n):
    g = _graph(key)
    plan = plan_patches(g, p, n)
    glob, expected, total = _global_shapes(g, plan)
    assert glob == expected
    assert total == plan.workspace_bytes
    _check_by_hand(g, plan, glob, build_stage(plan_execution(g, plan)).buffers)


def _check_by_hand(g, plan, glob, names):
    """``glob``: lowered buffer shapes; ``names``: what build_stage says each buffer holds."""
    hand = _expected_by_hand(g, plan)
    assert {b: glob[b] for b in hand if b in glob} == {b: s for b, s in hand.items() if b in glob}
    ops = {g.ops[i].name: g.ops[i] for i in plan.stage_ops}
    consumers = g.consumers()
    for b in set(hand) - set(glob):  # accumulated into a residual skip: a conv read by one add
        assert ops[b].kind == "conv2d" and [g.ops[c].kind for c in consumers[ops[b].outputs[0]]] == ["add"], b
    for b in set(glob) - set(hand):  # the channel plane of an in-place depthwise conv
        written = names[b].removesuffix("#scratch").removesuffix("#tile")
        owner = next(o for o in ops.values() if o.outputs[0] == written)
        assert owner.kind == "depthwise_conv2d" and names[b].endswith("#scratch")
        assert glob[b] == (1, *plan.patch_shapes[owner.inputs[0]][1:3], 1), b
