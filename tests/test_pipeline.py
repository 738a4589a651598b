"""The one lowering path (``tvm_patchnet.pipeline``): the passes in order, every one reading the
same execution plan as the memory plan and the C code generator; the host build of the
target-independent module equals the unpatched int8 model bit for bit."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from relay_passes import KernelVariants
from relay_passes.steps import PREAMBLE_ATTR, callee
from tests.conftest import model_path, random_inputs
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.execution import ACCUMULATE, DEPTHWISE_IN_PLACE, OP, STAGE, plan_execution
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.lower import to_relax
from tvm_patchnet.memory import plan_memory
from tvm_patchnet.patch.planner import plan_patches
from tvm_patchnet.pipeline import lower, passes, run_host
from tvm_patchnet.runtime import run_graph

VWW = "mlperftiny_vww_96_int8.tflite"
RESNET8 = "mlperftiny_ic_resnet8_quant.tflite"


@functools.cache
def _model(name):
    return load_tflite(model_path(name))


def _calls(mod):
    return [(b.var.name, callee(b.value)) for b in mod["main"].body.blocks[0].bindings if callee(b.value) is not None]


def test_pass_order():
    g = _model(RESNET8)
    exe = plan_execution(g, plan_patches(g, 2, 2))
    assert [p.info.name for p in passes(exe, "cortex-m4").passes] == \
        ["PatchBasedInference", "KernelVariants", "ApplySchedules"]
    assert [p.info.name for p in passes(plan_execution(g)).passes] == ["KernelVariants"]


@pytest.mark.parametrize("name, split", [(RESNET8, None), (RESNET8, 2), (VWW, None), (VWW, 3)])
def test_host_module_is_bit_exact(name, split):
    """The target-independent module (in-place variants, patch stage) on llvm = the unpatched
    module of one call_tir per op."""
    g = _model(name)
    plan = plan_patches(g, 2, split) if split else None
    xs = random_inputs(g, 3)
    np.testing.assert_array_equal(run_host(g, xs, plan)[0], run_graph(g, xs)[0])


@pytest.mark.parametrize("name, kind", [(RESNET8, ACCUMULATE), (VWW, DEPTHWISE_IN_PLACE)])
def test_kernel_variants_follow_the_execution_plan(name, kind):
    g = _model(name)
    exe = plan_execution(g)
    before = to_relax(g)
    after = KernelVariants(exe)(before)
    steps = [s for s in exe.steps if s.kind == kind]
    assert steps
    calls = dict(_calls(after))
    for s in steps:  # one call per step, bound to its output, under a step's C name (equal kernels: one)
        assert calls[s.output].name_hint in {t.name for t in steps}
        assert all(g.ops[i].outputs[0] not in calls for i in s.ops if g.ops[i].outputs[0] != s.output)
    # an accumulated conv's binding is gone: one call fewer per accumulation
    assert len(_calls(after)) == len(_calls(before)) - (len(steps) if kind == ACCUMULATE else 0)


def test_apply_schedules_makes_one_call_per_step():
    g = _model(VWW)
    plan = plan_patches(g, 2, 3)
    mod, exe = lower(g, plan, "cortex-m4")
    calls = _calls(mod)
    assert [name for name, _ in calls] == [s.output for s in exe.steps]
    assert exe.steps[0].kind == STAGE and calls[0][1].name_hint == "tvmgen_default_patch_stage"
    # every function but main is a called kernel; the fast ones carry their micro-kernels
    names = {gv.name_hint for gv in mod.get_global_vars()} - {"main"}
    assert names == {gv.name_hint for _, gv in calls}
    assert any(PREAMBLE_ATTR in mod[gv].attrs for _, gv in calls)


def test_memory_plan_scratch_is_the_execution_plan_s():
    g = _model(VWW)
    for plan in (None, plan_patches(g, 2, 3)):
        exe = plan_execution(g, plan)
        mem = plan_memory(g, plan, input_mode="full", execution=exe)
        scratch = {a.name for a in mem.allocations if a.name.endswith("#scratch")}
        assert scratch == {s.scratch for s in [*exe.steps, *exe.stage_steps] if s.scratch}
        assert {s.kind for s in exe.steps} <= {STAGE, OP, DEPTHWISE_IN_PLACE, ACCUMULATE}


def test_execution_plan_of_another_plan_is_refused():
    g = _model(VWW)
    with pytest.raises(PatchnetError, match="another graph or patch plan"):
        plan_memory(g, plan_patches(g, 2, 3), execution=plan_execution(g))
