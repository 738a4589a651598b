"""The generated C model's buffers and their lifetimes, placed in one arena (bytes) by the
static arena planner of ``tvm_patchnet.memory`` (greedy by size, or the exact MILP).

Buffers are those of :func:`tvm_patchnet.analysis.liveness.analyze` with ``in_place=False``:
every tensor its own buffer, reshapes views of their input. The TE kernels are not written to
run in place (a depthwise conv writing over its input would read overwritten values), so the
paper's in-place rule (``in_place=True``) does not apply to this C. With a patch plan, the
stage is one step (stage input -> stage output); its intermediates live in its workspace.
Each kernel's workspace (see ``c_kernels``) is a buffer alive during its own step only, keyed
``workspace_key(output tensor)``.

Graph inputs and outputs are not placed: the kernels read the caller's input and write the
caller's output directly (``tvmgen_default_run(input, output)``). Offsets are multiples of
:data:`ALIGN` bytes.
"""

from __future__ import annotations

import copy

from ..analysis.liveness import analyze
from ..graph import Graph, Op
from ..memory.arena import create
from ..patch.planner import PatchPlan

#: Byte alignment of every offset (int32 and int64 workspace data; a 16-byte arena start).
ALIGN = 16


def workspace_key(output: str) -> str:
    """Key of the workspace of the kernel that produces tensor ``output``."""
    return output + "#workspace"


def step_graph(graph: Graph, plan: PatchPlan | None = None) -> Graph:
    """``graph`` as the C model executes it: with a plan, the stage ops become one op of kind
    ``patch_stage`` from the stage input to the stage output, their intermediates gone."""
    if plan is None:
        return graph
    stage = set(plan.stage_ops)
    inner = {n for i in plan.stage_ops for n in graph.ops[i].outputs} - {plan.stage_output}
    g = copy.copy(graph)
    g.tensors = {n: t for n, t in graph.tensors.items() if n not in inner}
    first = min(stage)
    g.ops = [Op("patch_stage", "patch_stage", [plan.stage_input], [plan.stage_output]) if i == first else op
             for i, op in enumerate(graph.ops) if i == first or i not in stage]
    return g


def assign_offsets(graph: Graph, plan: PatchPlan | None = None, workspace: dict[str, int] | None = None,
                   kind: str = "greedy") -> tuple[dict[str, int], int]:
    """Arena offsets (bytes) of every placed tensor and workspace, and the arena size (bytes).

    ``workspace`` maps a tensor to the scratch bytes its producing kernel needs; a tensor that
    is absent from the result (graph inputs and outputs, and their views) is not in the arena.
    ``kind`` names the arena planner (``tvm_patchnet.memory.create``).
    """
    g = step_graph(graph, plan)
    live = analyze(g, in_place=False)
    edges = set(g.inputs) | set(g.outputs)
    planner = create(kind, alignment=ALIGN)
    members: dict[str, list[str]] = {}
    for b in live.buffers:
        if b.size and not edges & set(b.tensors):
            planner.add_buffer(f"buffer{b.id}", b.size, b.first, b.last)
            members[f"buffer{b.id}"] = b.tensors
    producer = g.producer()
    for name, size in (workspace or {}).items():
        if size:
            planner.add_buffer(workspace_key(name), size, producer[name], producer[name])
            members[workspace_key(name)] = [workspace_key(name)]
    arena = planner.plan()
    offsets = {t: arena.offsets[key] for key, tensors in members.items() for t in tensors}
    return offsets, -(-arena.arena_bytes // ALIGN) * ALIGN
