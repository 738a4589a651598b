"""PatchBasedInference keeps outputs bit-identical to the unpatched int8 module, on the host.

Reference: ``to_relax(graph, trace=True)`` built once per model (every op output of the plain
per-layer module, one PrimFunc per op). Patched: ``PatchBasedInference(g2, plan)(to_relax(g2))``
where ``g2`` is the graph with the stage output added to its outputs, so that the stage output
itself is compared (a network's last layers can hide a wrong pixel), next to every graph output.
Each case also pins the tiling it claims to cover (tile heights/widths, uneven or empty tiles).
The zoo networks (random weights) take 5-8 s per build: they are marked slow.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import tvm
from tvm import relax

from relay_passes import PatchBasedInference
from tests.conftest import model_path, random_inputs
from tests.graphs import stage_kinds_prefix
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.execution import PREFIX
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.lower import to_relax
from tvm_patchnet.patch.planner import plan_patches
from tvm_patchnet.runtime import build, run_module
from tvm_patchnet.zoo import get_architecture

VWW = "mlperftiny_vww_96_int8.tflite"
RESNET8 = "mlperftiny_ic_resnet8_quant.tflite"
KWS = "mlperftiny_kws_ref_model.tflite"

STAGE = PREFIX + "patch_stage"  # the stage PrimFunc, named as its C function


def _hand_graph():
    """Every op kind a stage may hold (see tests/graphs.py), then a stride-2 depthwise block."""
    b, x = stage_kinds_prefix("hand")
    with b.new_block():
        x = b.depthwise_conv2d(x, 3, stride=2)
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


def _twins_graph():
    """Blocks 1 and 2 are the same conv (shapes, zero points, ReLU range): to_relax's BlockBuilder
    gives both ops one shared PrimFunc."""
    b = GraphBuilder("twins", (1, 16, 16, 8))
    x = b.conv2d("input", 8, 3, act="relu")
    for _ in range(2):
        with b.new_block():
            x = b.conv2d(x, 8, 3, act="relu")
    return b.finish(x)


@functools.cache
def _model(key):
    if key == "hand":
        return _hand_graph()
    if key == "twins":
        return _twins_graph()
    if key.endswith(".tflite"):
        return load_tflite(model_path(key))
    name, _, res = key.partition("@")
    return get_architecture(name, resolution=int(res) if res else None)


@functools.cache
def _reference(key):
    """(inputs, {tensor name: value of the unpatched module})."""
    g = _model(key)
    xs = random_inputs(g, seed=1)
    outs = run_module(build(to_relax(g, trace=True)), xs)
    return xs, dict(zip([o for op in g.ops for o in op.outputs], outs))


def _spans(plan, name):
    """Tile heights and widths of tensor ``name`` (the stage output: the tiles themselves)."""
    rows = sorted({(t.regions[name].r0, t.regions[name].r1) for t in plan.tiles})
    cols = sorted({(t.regions[name].c0, t.regions[name].c1) for t in plan.tiles})
    return [r1 - r0 for r0, r1 in rows], [c1 - c0 for c0, c1 in cols]


def check_patched(key, p, n, heights, widths=None):
    g = _model(key)
    xs, ref = _reference(key)
    stage_out = plan_patches(g, p, n).stage_output
    g2 = dataclasses.replace(g, outputs=[stage_out, *g.outputs])
    plan = plan_patches(g2, p, n)
    assert _spans(plan, stage_out) == (heights, heights if widths is None else widths)
    mod = PatchBasedInference(g2, plan)(to_relax(g2))
    assert STAGE in [gv.name_hint for gv in mod.get_global_vars()]
    out = run_module(build(mod), xs)
    assert len(out) == len(g2.outputs)
    expected = ref[stage_out]
    assert len(np.unique(expected)) >= 4, "degenerate stage output: the comparison would prove little"
    for name, got in zip(g2.outputs, out):
        want = ref[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{key} p={p} n={n}: {len(bad)} values of {name} differ, first at {bad[:3].tolist()}"


# (model, p, n, tile heights, tile widths if not the same); an empty trailing tile is not listed
TFLITE_CASES = [
    (VWW, 3, 3, [8, 8, 8], None),  # 24x24
    (VWW, 1, 2, [48], None),  # p = 1: the whole 48x48 map
    (VWW, 5, 3, [5, 5, 5, 5, 4], None),  # uneven
    (VWW, 5, 5, [3, 3, 3, 3], None),  # 12x12: the 5th tile row/column is empty
    (VWW, 2, 13, [2, 1], None),  # 3x3 output, 13 blocks (the dedup'd 6x6x128 blocks inside)
    (VWW, 2, 8, [3, 3], None),  # a PrimFunc shared by a stage op and a later op
    (RESNET8, 3, 2, [11, 11, 10], None),  # residual add as the stage output, uneven
    (RESNET8, 3, 3, [6, 6, 4], None),  # a residual block inside the stage, 1x1 s2 shortcut
    (RESNET8, 3, 4, [3, 3, 2], None),  # two residual blocks inside
    (RESNET8, 2, 4, [4, 4], None),
    (RESNET8, 1, 3, [16], None),
    (KWS, 2, 3, [13, 12], [3, 2]),  # 25x5 map
    (KWS, 4, 5, [7, 7, 7, 4], [2, 2, 1]),  # the 4th column tile is empty
    (KWS, 1, 2, [25], [5]),
    (KWS, 5, 1, [5] * 5, [1] * 5),
    ("hand", 3, 3, [4, 4, 2], None),
    ("hand", 2, 3, [5, 5], None),
    ("hand", 1, 2, [10], None),
    ("twins", 3, 2, [6, 6, 4], None),  # the shared PrimFunc is needed after the stage
]


@pytest.mark.parametrize("key, p, n, heights, widths", TFLITE_CASES,
                         ids=[f"{c[0].split('.')[0]}-p{c[1]}-n{c[2]}" for c in TFLITE_CASES])
def test_patched_outputs_bit_identical(key, p, n, heights, widths):
    check_patched(key, p, n, heights, widths)


ZOO_CASES = [
    ("mbv2-w0.35-r144", 3, 4, [12, 12, 12]),  # 36x36, a residual block inside
    ("mbv2-w0.35-r144", 2, 8, [5, 4]),  # 9x9, four residual blocks inside
    ("mbv2-w0.35-r144", 4, 8, [3, 3, 3]),  # 9x9, 4th tile empty
    ("mbv2-w0.35-r144", 5, 2, [15, 15, 15, 15, 12]),
    ("mbv2-w0.35-r144", 1, 3, [36]),
    ("mcunet-320kb-1mb", 3, 3, [15, 15, 14]),  # default 176x176: 44x44 output
    ("mcunet-320kb-1mb", 3, 7, [8, 8, 6]),  # 22x22, 7x7 and 5x5 depthwise convs inside
    ("mcunet-5fps", 5, 5, [3, 3, 3, 3]),
    ("mcunet-5fps", 3, 4, [8, 8, 8]),
    ("mcunet-10fps", 5, 5, [3, 3, 3, 3]),
    ("mcunet-10fps", 2, 3, [6, 6]),
]


@pytest.mark.slow
@pytest.mark.parametrize("key, p, n, heights", ZOO_CASES, ids=[f"{c[0]}-p{c[1]}-n{c[2]}" for c in ZOO_CASES])
def test_patched_outputs_bit_identical_zoo(key, p, n, heights):
    check_patched(key, p, n, heights)


# ------------------------------------------------------------------------ module structure
def _callees(bindings):
    """Names of the PrimFuncs the call_tir bindings call, in order."""
    return [b.value.args[0].name_hint for b in bindings
            if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.call_tir"]


@pytest.mark.parametrize("key, p, n, shared", [
    (VWW, 3, 3, False),
    (RESNET8, 2, 4, False),
    (KWS, 2, 2, True),  # depthwise_conv_2d_1's PrimFunc also serves ops 3, 5 and 7
    ("twins", 2, 2, True),  # conv_1's PrimFunc also serves conv_2
])
def test_patched_module_structure(key, p, n, shared):
    g = _model(key)
    plan = plan_patches(g, p, n)
    before = to_relax(g)
    after = PatchBasedInference(g, plan)(before)
    # which PrimFunc each op calls, by position: to_relax emits one binding per op, in op order
    bindings = list(before["main"].body.blocks[0].bindings)
    assert len(bindings) >= len(g.ops)
    k = len(plan.stage_ops)
    assert plan.stage_ops == list(range(k))
    stage_funcs = set(_callees(bindings[:k]))
    rest = _callees(bindings[k:])
    assert bool(stage_funcs & set(rest)) == shared

    names = {gv.name_hint: after[gv] for gv in after.get_global_vars()}
    assert isinstance(names[STAGE], tvm.tirx.PrimFunc)
    assert "global_symbol" not in names[STAGE].attrs  # private: main calls it
    # the stage ops' PrimFuncs are gone, except those a later op still calls (shared by dedup)
    assert not (stage_funcs - set(rest)) & set(names)
    assert set(names) == set(rest) | {STAGE, "main"}
    # main: one call of patch_stage on main's input, in place of the stage's k calls
    new_bindings = list(after["main"].body.blocks[0].bindings)
    assert _callees(new_bindings) == [STAGE, *rest]
    assert new_bindings[0].value.args[1].fields[0].same_as(after["main"].params[0])
    # the stage output keeps its var: the bindings after the stage are the old ones
    assert new_bindings[0].var.same_as(bindings[k - 1].var)
    assert all(a.same_as(b) for a, b in zip(new_bindings[1:], bindings[k:], strict=True))
    assert after["main"].body.body.same_as(before["main"].body.body)


def test_vww_3x3_no_longer_holds_any_stage_primfunc():
    g = _model(VWW)
    plan = plan_patches(g, 3, 3)
    after = PatchBasedInference(g, plan)(to_relax(g))
    names = {gv.name_hint for gv in after.get_global_vars()}
    stage_ops = {g.ops[i].name for i in plan.stage_ops}
    assert stage_ops == {"conv_2d_0", "depthwise_conv_2d_1", "conv_2d_2", "depthwise_conv_2d_3", "conv_2d_4"}
    assert not stage_ops & names
    assert {"depthwise_conv_2d_5", "conv_2d_6", STAGE} <= names


def test_the_example_flow_on_vww():
    # exactly the documented flow: the graph's own outputs, no extra output
    g = _model(VWW)
    xs, ref = _reference(VWW)
    out = run_module(build(PatchBasedInference(g, plan_patches(g, 3, 3))(to_relax(g))), xs)
    assert len(out) == len(g.outputs) == 1
    assert np.array_equal(out[0], ref[g.outputs[0]])
    assert np.array_equal(out[0], run_module(build(to_relax(g)), xs)[0])


def test_a_wrong_margin_fill_is_caught():
    # negative control for the harness: corrupt the margin fill the planner hands to the stage
    # (0 instead of the conv readers' zero point -128); the border pixels change and must show
    g = _model(VWW)
    xs, ref = _reference(VWW)
    stage_out = plan_patches(g, 3, 3).stage_output
    g2 = dataclasses.replace(g, outputs=[stage_out])
    plan = plan_patches(g2, 3, 3)
    assert set(plan.fills.values()) == {-128}
    plan.fills = {name: 0 for name in plan.fills}
    got = run_module(build(PatchBasedInference(g2, plan)(to_relax(g2))), xs)[0]
    assert not np.array_equal(got, ref[stage_out])
