"""The one lowering path, from an int8 graph to the host build and to the C code.

::

    graph --plan_execution--> ExecutionPlan     which kernel runs each op, in which buffers
    graph --to_relax--------> IRModule          one call_tir per op (the TE kernels)
      PatchBasedInference                       the patch stage's ops -> one patched PrimFunc
      KernelVariants                            in-place depthwise, conv + residual add as one
      ApplySchedules(target)                    each kernel -> the target's schedule
    IRModule --codegen.write_c_model--> C       one C call per call_tir, arena per memory plan

The passes (:mod:`relay_passes`) form one ``tvm.transform.Sequential``; every one reads the same
execution plan, as do the memory plan and the C code generator. The host build (llvm, Relax
VM: :func:`run_host`) runs the module before ApplySchedules: the very kernels and kernel
variants the C code calls, with the default schedule (fast forms call C micro-kernels, which
exist only in the emitted C). ``patchnet compile`` runs :func:`lower` with its target.
"""

from __future__ import annotations

import numpy as np
import tvm

from .execution import ExecutionPlan, plan_execution
from .graph import Graph
from .lower import to_relax
from .patch.planner import PatchPlan


def passes(execution: ExecutionPlan, target: str | None = None, tuned: dict | None = None
           ) -> tvm.transform.Sequential:
    """The pipeline's passes for ``execution``; without ``target``, the target-independent ones.
    ``tuned``: step name -> tuned kernel (:func:`tvm_patchnet.tune.tuned_kernels`)."""
    from relay_passes import ApplySchedules, KernelVariants, PatchBasedInference

    seq = []
    if execution.patch is not None:
        seq.append(PatchBasedInference(execution.graph, execution.patch, execution))
    seq.append(KernelVariants(execution))
    if target is not None:
        seq.append(ApplySchedules(execution, target, tuned))
    return tvm.transform.Sequential(seq, name="patchnet")


def lower(graph: Graph, patch: PatchPlan | None = None, target: str | None = None, tuned: dict | None = None
          ) -> tuple[tvm.IRModule, ExecutionPlan]:
    """The Relax module of ``graph`` after the pipeline (patched per ``patch``; with ``target``'s
    schedules if given, tuned kernels first), and the execution plan it follows."""
    execution = plan_execution(graph, patch)
    return passes(execution, target, tuned)(to_relax(graph)), execution


def run_host(graph: Graph, inputs: list[np.ndarray], patch: PatchPlan | None = None) -> list[np.ndarray]:
    """Run the pipeline's target-independent module on the host (llvm): the outputs the C code
    must reproduce."""
    from .runtime import build, check_inputs, run_module

    mod, _ = lower(graph, patch)
    return run_module(build(mod), check_inputs(graph, inputs))
