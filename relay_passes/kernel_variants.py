"""KernelVariants and ApplySchedules: the kernels the C code runs, in the Relax module.

``KernelVariants(execution)``: where the execution plan (:mod:`tvm_patchnet.execution`) runs an
op in place, its ``call_tir`` becomes the kernel that may: a depthwise conv that copies one input
channel into a plane before overwriting it, a conv and the residual add of its output as one
kernel that reads skip element k before writing element k. Same integers, one binding fewer per
accumulation; target-independent (the host build runs it on llvm, buffers apart).

``ApplySchedules(execution, target)``: every step's kernel becomes the target's schedule
(:func:`tvm_patchnet.schedules.create`): fast forms (SMLAD GEMMs, unrolled depthwise windows,
the fast patch stage) where they apply, the default schedule elsewhere. Their micro-kernels are
C text (the PrimFunc's ``patchnet_preamble`` attribute): the result is for the C code
generator only. Runs after PatchBasedInference and KernelVariants.
"""

from __future__ import annotations

import tvm

from tvm_patchnet import progress, schedules
from tvm_patchnet.execution import ACCUMULATE, DEPTHWISE_IN_PLACE, ExecutionPlan
from tvm_patchnet.schedules.default import step_kernel

from .steps import rewrite_steps


@tvm.transform.module_pass(opt_level=0, name="KernelVariants")
class KernelVariants:
    """Rewrite the in-place steps of ``execution`` (accumulate, in-place depthwise) as one
    ``call_tir`` each of their plain kernel."""

    def __init__(self, execution: ExecutionPlan):
        self.execution = execution

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        exe = self.execution
        steps = [s for s in exe.steps if s.kind in (ACCUMULATE, DEPTHWISE_IN_PLACE)]
        return rewrite_steps(mod, exe, steps, lambda s: step_kernel(exe, s))


@tvm.transform.module_pass(opt_level=0, name="ApplySchedules")
class ApplySchedules:
    """Give every step of ``execution`` its ``target`` schedule (one of
    :data:`tvm_patchnet.schedules.KNOWN_TARGETS`); ``tuned``: step name -> the kernel tuning
    chose for it (:mod:`tvm_patchnet.tune`), used instead."""

    def __init__(self, execution: ExecutionPlan, target: str, tuned: dict | None = None):
        self.execution = execution
        self.schedules = schedules.create(target)
        self.tuned = tuned or {}

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        exe = self.execution
        with progress.task("scheduling kernels", len(exe.steps), "kernels") as advance:
            def kernel(step):
                kf = self.tuned.get(step.name) or step_kernel(exe, step, self.schedules)
                advance()
                return kf

            return rewrite_steps(mod, exe, exe.steps, kernel, keep_funcs=False)
