"""The execution plan: which kernel runs each op, and which buffers it uses, decided once.

The liveness analysis (the paper's rule, :mod:`tvm_patchnet.analysis.liveness`) decides which
tensors share a buffer; this module turns that decision into kernel calls, once, for everything
downstream to read rather than re-derive:

- the memory plan (:func:`tvm_patchnet.memory.plan_memory`): the allocations, kernel scratch
  (``<output>#scratch``) included;
- the Relax passes (:mod:`relay_passes`): which ``call_tir`` bindings become the patch stage,
  a conv accumulated into its residual add, an in-place depthwise conv; which get a target's
  schedules;
- the patch stage (:func:`tvm_patchnet.patch.stage.build_stage`): the same decision on one patch;
- the C code generator: one C call per step, in order, named by the step.

A step is one of:

- ``stage``: the patch stage (ops ``0..k-1`` of a patch plan) as one kernel;
- ``op``: one op, its output in its own buffer or over an input that dies there, element by
  element (add, mul); softmax's row buffers are its scratch;
- ``accumulate``: a conv and the residual add of its output, one kernel run where the conv is;
  the add's output overwrites the skip input ("the block's last conv adds into the residual
  buffer");
- ``depthwise_in_place``: a depthwise conv whose output overwrites its input (MCUNet's), one
  input channel at a time copied into a scratch plane first.

Reshapes are views: they have no step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .analysis.liveness import Liveness, analyze
from .graph import Graph
from .patch.planner import PatchPlan, patch_graph

STAGE, OP, ACCUMULATE, DEPTHWISE_IN_PLACE = "stage", "op", "accumulate", "depthwise_in_place"
#: prefix of every generated C symbol
PREFIX = "tvmgen_default_"


@dataclass(frozen=True)
class Step:
    """One kernel call: ``kind`` (see the module docstring), the graph ops it runs (by index, the
    first names it), the tensor it writes, and the allocation of its scratch (the C call's
    ``ws``; None: no scratch, or a patch stage's buffers, which the memory plan places one by one)."""

    kind: str
    ops: tuple[int, ...]
    output: str
    scratch: str | None = None
    #: the call's C name (``tvmgen_default_<op>``), unique in the model
    name: str = ""


@dataclass
class ExecutionPlan:
    """Every kernel call of ``graph`` (patched by ``patch`` if given), in call order."""

    graph: Graph
    patch: PatchPlan | None
    steps: list[Step]
    #: whole-graph liveness (paper rule): the buffers of every tensor outside the stage
    liveness: Liveness
    #: the stage as one patch runs it (:func:`~tvm_patchnet.patch.planner.patch_graph`), if patched
    stage_graph: Graph | None = None
    #: its liveness: the buffers inside the stage
    stage_liveness: Liveness | None = None
    #: the stage's ops as one patch runs them (graph op indices; ``op``, ``accumulate`` or
    #: ``depthwise_in_place``), if patched
    stage_steps: list[Step] = field(default_factory=list)

    def step_writing(self, tensor: str) -> Step | None:
        """The step whose call writes ``tensor`` (the stage's: its output only), or None."""
        return next((s for s in self.steps if s.output == tensor), None)


def plan_execution(graph: Graph, patch: PatchPlan | None = None) -> ExecutionPlan:
    """The kernel calls of ``graph``, run patch by patch per ``patch`` if given."""
    live = analyze(graph, in_place=True)
    if patch is None:
        return ExecutionPlan(graph, None, _name(_steps(graph, live, range(len(graph.ops)))), live)
    k = len(patch.stage_ops)
    pg = patch_graph(graph, patch)
    stage_live = analyze(pg, in_place=True)
    stage = Step(STAGE, tuple(patch.stage_ops), patch.stage_output, name="patch_stage")
    rest = _steps(graph, live, range(k, len(graph.ops)))
    # patch-graph op k is the stage's ops[k] (the stage is ops 0..k-1); an uneven tile's copy
    # (patch-graph op k) is part of the stage kernel, not a step
    inner = _steps(graph, stage_live, range(k))
    return ExecutionPlan(graph, patch, _name([stage, *rest]), live, pg, stage_live, inner)


def _steps(graph: Graph, live: Liveness, indices) -> list[Step]:
    consumers = graph.consumers()
    fused_add = {consumers[c][0] for c in live.accumulate}
    steps = []
    for i in indices:
        op = graph.ops[i]
        out = op.outputs[0]
        if op.kind == "reshape" or i in fused_add:
            continue
        name = c_identifier(op.name)
        if out in live.accumulate:
            add = consumers[out][0]
            steps.append(Step(ACCUMULATE, (i, add), graph.ops[add].outputs[0], name=name))
        elif i in live.scratch:
            kind = DEPTHWISE_IN_PLACE if op.kind == "depthwise_conv2d" else OP  # else softmax's rows
            steps.append(Step(kind, (i,), out, scratch_name(out), name))
        else:
            steps.append(Step(OP, (i,), out, name=name))
    return steps


def _name(steps: list[Step]) -> list[Step]:
    """Steps with their C names: ``tvmgen_default_<op>``, made unique by position when two op
    names differ only in characters C does not allow."""
    names = [PREFIX + s.name for s in steps]
    if len(set(names)) != len(names):
        names = [f"{n}_{k}" for k, n in enumerate(names)]
    return [replace(s, name=n) for s, n in zip(steps, names)]


def c_identifier(name: str) -> str:
    """``name`` with every character a C identifier cannot hold made ``_`` (op names of model files)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def scratch_name(output: str) -> str:
    """Allocation name of the scratch of the kernel that writes tensor ``output``."""
    return output + "#scratch"
