"""The default schedules: any op, any target, plain C (no DSP instructions).

Every op's kernel starts here; a target's fast form (:class:`tvm_patchnet.schedules.Schedules`)
replaces it where one applies. The default schedule of a TE kernel computes every intermediate
that one output element needs alone (conv/pool accumulators, requantization steps) right before
that element in ``local`` scope: a one-element C array the compiler keeps in a register, not a
buffer. Reductions are initialized once, before their reduction loops.

One builder per kind of step of the execution plan (:mod:`tvm_patchnet.execution`):
:func:`op_kernel`, :func:`depthwise_in_place_kernel`, :func:`accumulate_kernel`,
:func:`stage_kernel`; :func:`step_kernel` picks the one a step needs. Each takes the target's
``schedules`` (or None: plain) and returns a :class:`KernelFunc`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx

from ..analysis.liveness import plane_hw
from ..execution import ACCUMULATE, DEPTHWISE_IN_PLACE, STAGE, ExecutionPlan, Step
from ..graph import Graph, Op
from ..kernels import lower_op
from ..patch.stage import build_stage


@dataclass
class KernelFunc:
    """A scheduled kernel PrimFunc (buffer parameters) and what its parameters are bound to:
    activation tensor names or NumPy constants, in parameter order; the last one is the output."""

    func: tirx.PrimFunc
    args: list
    #: C definitions (``static inline`` micro-kernels) the emitted function calls, each a whole text
    preamble: tuple[str, ...] = ()
    #: the patch stage's buffers: TIR buffer name -> the allocation of the memory plan it is
    #: (``PatchedStage.buffers``); None for other kernels, whose buffers are their ``ws`` scratch
    buffers: dict[str, str] | None = None


def _placeholders(graph: Graph, args: list) -> list:
    """TE placeholders for a lowering's arguments (activations by tensor, constants by array)."""
    phs = []
    for k, a in enumerate(args):
        if isinstance(a, str):
            t = graph.t(a)
            phs.append(te.placeholder(t.shape, t.dtype, name=f"x{k}"))
        else:
            phs.append(te.placeholder(a.shape, str(a.dtype), name=f"w{k}"))
    return phs


def op_kernel(graph: Graph, op: Op, schedules=None) -> KernelFunc:
    """The TE kernel of ``op`` as a PrimFunc: a fast variant from ``schedules``
    (:mod:`tvm_patchnet.schedules`) where one applies, else the default schedule, intermediates
    in registers where possible."""
    fast = schedules.op_kernel(graph, op) if schedules else None
    if fast is not None:
        return fast
    low = lower_op(graph, op)
    phs = _placeholders(graph, low.args)
    out = low.compute(*phs)
    sch = s_tir.Schedule(te.create_prim_func([*phs, out]))
    if op.kind == "softmax":
        _rows(sch, len(graph.t(op.outputs[0]).shape) - 1)
    elif op.kind == "logistic":  # elementwise: every step of one element in registers
        _rows(sch, len(graph.t(op.outputs[0]).shape))
    else:
        _inline_copies(sch)
        _intermediates_in_registers(sch)
    return KernelFunc(init_outside_reductions(sch), [*low.args, op.outputs[0]])


def _inline_copies(sch: s_tir.Schedule) -> None:
    """Inline blocks that only move elements (a fully connected layer's flattened input view)."""
    for blk in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        body = sch.get(blk).body
        if isinstance(body, tirx.BufferStore) and isinstance(body.value, tvm.ir.TensorLoad) and \
                all(int(iv.iter_type) == 0 for iv in sch.get(blk).iter_vars):
            sch.compute_inline(blk)


def _rows(sch: s_tir.Schedule, row_dims: int) -> None:
    """One row at a time: every intermediate computed under the output's row loop, per-row values
    (softmax's max, sum, reciprocal) in registers, per-element values in row buffers (softmax's
    are read by the sum and again by the output). ``row_dims``: the leading axes that index a
    row (all of them: one element at a time, every value in registers)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    out = blocks[-1]
    full = [int(s) for s in sch.get(out).writes[0].source.ty.shape]
    for blk in reversed(blocks[:-1]):  # consumers first
        sch.compute_at(blk, sch.get_loops(out)[row_dims - 1], preserve_unit_loops=True)
        if row_dims == len(full) or [int(s) for s in sch.get(blk).writes[0].source.ty.shape] != full:
            sch.set_scope(blk, 0, "local")


def depthwise_in_place_kernel(graph: Graph, op: Op, schedules=None) -> KernelFunc:
    """A depthwise conv that may be called with its output over its input (MCUNet's in-place
    depthwise): channel by channel, the part of the input channel the windows read is first
    copied into a scratch plane (``ws``, :func:`~tvm_patchnet.analysis.liveness.plane_hw` rows x
    columns, the liveness rule's), then the output channel is computed from the plane. Output
    channel c is stored only where input channel c was, which is already copied: other channels
    are untouched. Needs one output channel per input channel. ``schedules``: as ``op_kernel``."""
    fast = schedules.depthwise_in_place_kernel(graph, op) if schedules else None
    if fast is not None:
        return fast
    xn, x = op.inputs[0], graph.t(op.inputs[0])
    rows, cols = plane_hw(graph, op)
    # The windows read rows 0..rows-1 and columns 0..cols-1 only: the conv is lowered on that
    # crop, an explicit stage whose size is the rule's, not what buffer compaction infers.
    crop = replace(graph, tensors={**graph.tensors, xn: replace(x, shape=(x.shape[0], rows, cols, x.shape[3]))})
    low = lower_op(crop, op)
    phs = _placeholders(graph, low.args)
    plane_t = te.compute(crop.t(xn).shape, lambda *i: phs[0](*i), name=op.name + "_plane")
    out = low.compute(plane_t, *phs[1:])
    sch = s_tir.Schedule(te.create_prim_func([*phs, out]))
    blk = sch.get_sblock(out.op.name)
    b, i, j, c = sch.get_loops(blk)
    sch.reorder(b, c, i, j)
    _intermediates_in_registers(sch)
    sch.compute_at(sch.get_sblock(op.name + "_plane"), sch.get_loops(blk)[1])
    return KernelFunc(init_outside_reductions(sch), [*low.args, op.outputs[0]])


def accumulate_kernel(graph: Graph, conv: Op, add: Op, schedules=None) -> KernelFunc:
    """``conv`` and the residual ``add`` of its output as one kernel that may be called with the
    add's output over the skip input ("the block's last conv adds into the residual buffer"):
    each output element's conv accumulator and requantization are computed in registers, then
    added to skip element k, which is read before element k is written. ``schedules``: as
    ``op_kernel``."""
    fast = schedules.accumulate_kernel(graph, conv, add) if schedules else None
    if fast is not None:
        return fast
    cl, al = lower_op(graph, conv), lower_op(graph, add)
    conv_phs = _placeholders(graph, cl.args)
    conv_out = cl.compute(*conv_phs)
    skip = next(a for a in al.args if a != conv.outputs[0])
    skip_ph = te.placeholder(graph.t(skip).shape, graph.t(skip).dtype, name="skip")
    out = al.compute(*[conv_out if a == conv.outputs[0] else skip_ph for a in al.args])
    sch = s_tir.Schedule(te.create_prim_func([*conv_phs, skip_ph, out]))
    _intermediates_in_registers(sch)
    return KernelFunc(init_outside_reductions(sch), [*cl.args, skip, add.outputs[0]])


def stage_kernel(execution: ExecutionPlan, schedules=None) -> KernelFunc:
    """The patch stage PrimFunc of ``execution`` (already scheduled patch by patch); its
    ``buffers`` say which memory-plan allocation each TIR buffer is (``PatchedStage.buffers``).
    ``schedules``: as ``op_kernel``; with them the stage's ops take their fast forms where they
    apply (:mod:`tvm_patchnet.schedules.stage`), the micro-kernels in ``KernelFunc.preamble``."""
    plan = execution.patch
    stage = build_stage(execution, fast=schedules is not None)
    func = init_outside_reductions(s_tir.Schedule(stage.func))
    return KernelFunc(func, [plan.stage_input, *stage.consts, plan.stage_output], stage.preamble, stage.buffers)


def _intermediates_in_registers(sch: s_tir.Schedule) -> None:
    """Compute each intermediate element right where its only consumer uses it, in ``local``
    scope, when the consumer reads one element per iteration and iterates once per element
    (so nothing is recomputed): conv and pool accumulators, requantization chains. Row-wide
    values (softmax's max and sum) and values read twice stay buffers (the workspace)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for blk in reversed(blocks[:-1]):  # consumers first: each is at its final place already
        consumers = sch.get_consumers(blk)
        if len(consumers) != 1:
            continue
        cons = consumers[0]
        buf = sch.get(blk).writes[0].source
        loops = sch.get_loops(cons)
        iters = int(np.prod([int(sch.get(lp).extent) for lp in loops], dtype=np.int64))
        reads = [r for r in sch.get(cons).reads if r.source.same_as(buf)]
        reduces = any(int(iv.iter_type) != 0 for iv in sch.get(cons).iter_vars)
        single = all(int(rg.extent) == 1 for r in reads for rg in r.region)
        if reduces or not single or iters != int(np.prod([int(s) for s in buf.ty.shape], dtype=np.int64)):
            continue
        sch.compute_at(blk, loops[-1], preserve_unit_loops=True)
        sch.set_scope(blk, 0, "local")


def init_outside_reductions(sch: s_tir.Schedule) -> tirx.PrimFunc:
    """Initialize each reduction once, before its reduction loops, instead of under a
    first-iteration test inside them: fewer branches, and no accumulator that C compilers
    think "may be used uninitialized". TE puts a block's reduction loops innermost. (Tensorized
    accumulators of fast forms are initialized already: they have no ``init`` left.)"""
    blocks: list = []
    tvm_ffi.structural_walk(sch.mod["main"].body, (s_tir.SBlock, lambda b: blocks.append(b.name_hint)))
    for name in blocks:
        blk = sch.get_sblock(name)
        n_red = sum(int(iv.iter_type) != 0 for iv in sch.get(blk).iter_vars)
        if n_red and sch.get(blk).init is not None:
            sch.decompose_reduction(blk, sch.get_loops(blk)[-n_red])
    return sch.mod["main"]


def step_kernel(execution: ExecutionPlan, step: Step, schedules=None) -> KernelFunc:
    """The kernel of one step of ``execution``, fast where ``schedules`` has a form for it."""
    graph = execution.graph
    op = graph.ops[step.ops[0]]
    if step.kind == STAGE:
        return stage_kernel(execution, schedules)
    if step.kind == ACCUMULATE:
        return accumulate_kernel(graph, op, graph.ops[step.ops[1]], schedules)
    if step.kind == DEPTHWISE_IN_PLACE:
        return depthwise_in_place_kernel(graph, op, schedules)
    return op_kernel(graph, op, schedules)
