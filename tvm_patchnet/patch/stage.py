"""The patch stage as one PrimFunc: the stage's TE kernels composed, then scheduled per patch.

Schedule (``tvm.s_tir.Schedule``), the TIR form of MCUNetV2's Figure 3(b):
1. the stage output block's rows and columns are split into ``p`` tiles each and the two tile
   loops are hoisted outermost: one iteration = one output patch;
2. every producer op, last to first, is ``compute_at`` the column-tile loop: TIR's region
   inference computes exactly the (overlapping, border-clipped) region each tile needs;
3. per op, the int32 accumulator is computed at the innermost output loop in "local" scope
   (a register, not a buffer);
4. in place where the execution plan's stage steps say (the liveness analysis' decision, paper
   rule, on one patch), so that the generated C can give the buffers one arena offset: an in-place depthwise conv runs channel by
   channel from a copy of its input channel (a ``global`` plane buffer, the scratch the
   analysis counts); a conv accumulated into a residual skip is inlined into its add, which
   then reads skip element k before writing element k. Elementwise ops need nothing: they read
   element k before writing it. With separate buffers (the Relax host build) the same schedule
   is simply correct.
Intermediates carry top/left margins (``kernels/frame.py``) so that no tile's region starts
below a buffer's origin. The stage input is read in place, full size, in its own layout: an NCHW
input reaches the NHWC ops through its TRANSPOSE, which gathers each tile's rows and columns.
Lowering then compacts every intermediate to its per-patch region; the sizes it allocates are
the planner's ``patch_shapes`` (tests read them back from the lowered TIR).

``fast=True`` (the C code generator's stage): ops with a Cortex-M fast form
(:mod:`tvm_patchnet.schedules.stage`: depthwise convs, convs as SMLAD GEMMs, a conv with the
residual add it accumulates into) use it instead of steps 3-4's plain kernel, with the same
index expressions, hence the same buffers; their C calls the micro-kernels of
``PatchedStage.preamble``. Without it (the Relax pass, the host build) every op is plain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir, te

from ..execution import ACCUMULATE, DEPTHWISE_IN_PLACE, ExecutionPlan
from ..graph import Graph
from ..kernels import lower_op
from ..kernels.frame import Frame
from .planner import PatchPlan


@dataclass
class PatchedStage:
    """The scheduled stage PrimFunc and the constants it takes after the stage input."""

    func: tvm.tirx.PrimFunc
    consts: list[np.ndarray]
    name: str
    #: TIR buffer name -> the patch-graph tensor it holds (``<out>#tile``: an uneven tile's
    #: buffer, ``<out>#scratch``: an in-place depthwise conv's channel plane)
    buffers: dict[str, str]
    #: C definitions (``static inline`` micro-kernels) the fast forms call (``fast=True``)
    preamble: tuple[str, ...] = ()


def build_stage(execution: ExecutionPlan, name: str = "patch_stage", fast: bool = False) -> PatchedStage:
    """Compose the TE kernels of the patch stage of ``execution`` (a patched plan) and schedule
    them patch by patch; which ops run in place is the execution plan's decision (its
    ``stage_steps``). ``fast``: the Cortex-M fast forms where they apply
    (:mod:`tvm_patchnet.schedules.stage`; their C calls the micro-kernels of
    ``PatchedStage.preamble``, so only for the C code generator)."""
    graph, plan = execution.graph, execution.patch
    x = graph.t(plan.stage_input)
    env = {plan.stage_input: te.placeholder(x.shape, x.dtype, name="stage_input")}
    const_phs, consts, op_names = [], [], []
    frame = Frame({**plan.margins, **_tile_padding(graph, plan)}, plan.fills)
    ops = [graph.ops[i] for i in plan.stage_ops]
    in_place_dw = {graph.ops[s.ops[0]].name for s in execution.stage_steps if s.kind == DEPTHWISE_IN_PLACE}
    # accumulated conv -> the residual add it is inlined into
    adds = {graph.ops[s.ops[0]].name: graph.ops[s.ops[1]] for s in execution.stage_steps if s.kind == ACCUMULATE}
    fast_ops, fast_consts, covered = {}, {}, set()
    for i in plan.stage_ops:
        op = graph.ops[i]
        if op.name in covered:  # a residual add computed by its conv's fast form
            continue
        fk = None
        if fast:
            from ..schedules.stage import fast_op

            add = adds.get(op.name)
            last = (add or op).name == ops[-1].name
            yn = (add or op).outputs[0]
            cols = plan.tile_hw[1] if last else plan.patch_shapes[yn][2]
            starts = [t.regions[yn].c0 + frame.margin(yn)[1] for t in plan.tiles]
            fk = fast_op(graph, op, frame, plan.stage_input, op.name in in_place_dw, starts, cols, last, add)
        low = lower_op(graph, op, frame) if fk is None else fk
        if fk is not None:
            fast_ops[fk.name] = fk
            fast_consts[fk.name] = []
            covered.update(fk.ops)
            op = graph.ops[i] if fk.name == op.name else add
        args = []
        for a in low.args:
            if isinstance(a, str):
                args.append(env[a])
            else:
                ph = te.placeholder(a.shape, str(a.dtype), name=f"{low.name}_c{len(const_phs)}")
                if fk is not None:
                    fast_consts[fk.name].append(ph.name)
                const_phs.append(ph)
                consts.append(np.ascontiguousarray(a))
                args.append(ph)
        env[op.outputs[0]] = low.compute(*args)
        op_names.append(env[op.outputs[0]].op.name)
    out = env[plan.stage_output]
    if plan.tile_buffer:
        # Uneven tiles: the last op fills whole tiles (rows/cols past the map are filled, not
        # computed) and only this copy carries the split's predicate for the short last tile.
        # Predicated readers would make TIR's compaction bound every buffer they read loosely.
        shape = graph.t(plan.stage_output).shape
        out = te.compute(shape, lambda *i: env[plan.stage_output](*i), name="stage_output_copy")
        op_names.append(out.op.name)
    func = te.create_prim_func([env[plan.stage_input], *const_phs, out]).with_attr("global_symbol", name)
    sch = s_tir.Schedule(func)
    for fk in fast_ops.values():
        if fk.prepare is not None:
            fk.prepare(sch)
    fused = {conv: add.name for conv, add in adds.items()}
    fast_schedules = {n: (lambda s, b, f=f: f.schedule(s, b, fast_consts[f.name])) for n, f in fast_ops.items()}
    planes = _schedule(sch, op_names, plan.patches, in_place_dw, fused, fast_schedules)
    for fk in fast_ops.values():
        if fk.finish is not None:
            fk.finish(sch)
    preamble = list(dict.fromkeys(p for f in fast_ops.values() for p in f.preamble))  # known once scheduled
    buffers = {op.name: op.outputs[0] for op in ops if op.name not in fused}
    if plan.tile_buffer:
        buffers[ops[-1].name] = plan.stage_output + "#tile"
    buffers.update({plane: buffers[op_name] + "#scratch" for op_name, plane in planes.items()})
    return PatchedStage(sch.mod["main"].with_attr("global_symbol", name), consts, name, buffers, tuple(preamble))


def _tile_padding(graph: Graph, plan: PatchPlan) -> dict[str, tuple[int, int, int, int]]:
    """Bottom/right margins that make every output tile whole (uneven tiles only)."""
    if not plan.tile_buffer:
        return {}
    _, h, w, _ = graph.t(plan.stage_output).shape
    th, tw = plan.tile_hw
    return {plan.stage_output: (0, 0, th * plan.patches - h, tw * plan.patches - w)}


def _schedule(sch: s_tir.Schedule, op_names: list[str], patches: int, in_place_dw: set[str],
              fused: dict[str, str], fast: dict | None = None) -> dict[str, str]:
    """Schedule the stage (see the module docstring); returns the plane buffer of each in-place
    depthwise op (op name -> TIR buffer name). ``fast[name](sch, block)``: the schedule of a fast
    form, once its output block is computed at the tile loop (returns its plane, or None)."""
    fast = fast or {}
    all_names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    out = sch.get_sblock(op_names[-1])
    b, i, j, c = sch.get_loops(out)
    io, ii = sch.split(i, factors=[patches, None])
    jo, ji = sch.split(j, factors=[patches, None])
    sch.reorder(b, io, jo, ii, ji, c)
    planes = {}
    for k, name in reversed(list(enumerate(op_names))):
        main = sch.get_sblock(name)
        if name in fused:  # its add (scheduled already) computes it element by element
            sch.compute_inline(main)
            main = sch.get_sblock(fused[name])
        elif k != len(op_names) - 1:
            sch.compute_at(main, jo, preserve_unit_loops=True)
        if name in fast:
            plane = fast[name](sch, main)
            if plane is not None:
                planes[name] = plane
            continue
        if name in in_place_dw:  # channel outermost: one input channel plane at a time
            _, oi, oj, oc = sch.get_loops(main)[-4:]
            sch.reorder(oc, oi, oj)
        for aux in [n for n in all_names if n.startswith(name + "_")]:
            blk = sch.get_sblock(aux)
            # reductions (accumulators, pooling sums): one element at a time, in a register
            sch.compute_at(blk, sch.get_loops(main)[-1], preserve_unit_loops=True)
            sch.set_scope(blk, 0, "local")
        if name in in_place_dw:
            acc = sch.get_sblock(name + "_acc")
            plane = sch.cache_read(acc, 0, "global")
            sch.compute_at(plane, sch.get_loops(main)[-3], preserve_unit_loops=True)
            planes[name] = sch.get(plane).writes[0].source.name
    return planes


def lowered_allocations(func: tvm.tirx.PrimFunc) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """Buffers the lowered ``func`` allocates: name -> (shape, dtype, scope), read back after
    TVM's own buffer compaction (the passes of the default TIR pipeline up to and including
    ``CompactBufferAllocation``)."""
    from tvm import s_tir as st

    mod = tvm.IRModule({"main": func})
    mod = tvm.transform.Sequential([
        st.transform.CanonicalizeLoop(),
        st.transform.LowerInitBlock(),
        st.transform.PlanAndUpdateBufferAllocationLocation(),
        st.transform.ConvertBlocksToOpaque(),
        st.transform.CompactBufferAllocation(),
    ])(mod)
    found = {}
    stack = [mod["main"].body]
    while stack:  # walk statement nodes through the fields that hold sub-statements
        node = stack.pop()
        for buf in getattr(node, "alloc_buffers", None) or []:
            found[buf.name] = (tuple(int(s) for s in buf.shape), str(buf.dtype), str(buf.scope()))
        for attr in ("body", "block", "then_case", "else_case"):
            child = getattr(node, attr, None)
            if isinstance(child, tvm.tirx.Stmt):
                stack.append(child)
        stack.extend(getattr(node, "seq", None) or [])
    return found
