"""PatchBasedInference: run the first ``n`` blocks of an int8 network patch by patch.

Precondition: a Relax module built by :func:`tvm_patchnet.lower.to_relax` (one ``call_tir`` per
int8-graph op, each binding's var named after its tensor) and a
:class:`~tvm_patchnet.patch.PatchPlan` for the same graph.

Rewrite: the ``call_tir`` bindings of the plan's stage (blocks ``0..n-1``) are replaced by one
``call_tir`` of a single PrimFunc, built by :func:`tvm_patchnet.patch.stage.build_stage`: an
outer loop over the ``p x p`` output tiles with the stage's producer chain computed under it,
intermediates compacted to patch size by lowering, writing one full-size output buffer. The
rest of ``main`` is untouched; the stage's old PrimFuncs are removed.

Invariant: outputs are bit-identical to the unpatched module (the same TE kernels compute
every value; tests check it). The first pass of the pipeline (:mod:`tvm_patchnet.pipeline`).
"""

from __future__ import annotations

import tvm

from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.execution import STAGE, ExecutionPlan, plan_execution
from tvm_patchnet.graph import Graph
from tvm_patchnet.patch.planner import PatchPlan
from tvm_patchnet.schedules.default import stage_kernel

from .steps import rewrite_steps


@tvm.transform.module_pass(opt_level=0, name="PatchBasedInference")
class PatchBasedInference:
    """Replace the plan's patch stage in ``main`` by one patched PrimFunc
    (``tvmgen_default_patch_stage``). ``execution``: the execution plan of ``graph`` and ``plan``
    the rest of the pipeline reads (default: made here)."""

    def __init__(self, graph: Graph, plan: PatchPlan, execution: ExecutionPlan | None = None):
        self.execution = execution or plan_execution(graph, plan)
        if self.execution.graph is not graph or self.execution.patch is not plan:
            raise PatchnetError("PatchBasedInference: the execution plan is of another graph or patch plan")

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        exe = self.execution
        stage = [s for s in exe.steps if s.kind == STAGE]
        return rewrite_steps(mod, exe, stage, lambda s: stage_kernel(exe))
