"""The design space of kernels without a Cortex-M fast form: their default schedule, unrolled.

Every op that runs on its default schedule (:mod:`tvm_patchnet.schedules.default`: pooling,
element-wise ops, softmax, a fully connected layer with one input feature, a conv outside the
fast requantization's bound, ...) is tunable too: its workload is the default-scheduled kernel,
and the knob is how many iterations of its output's innermost loop run unrolled (a sampled
factor: the loop split by it, the inner loop unrolled; factor 1 is the default). Unrolling
changes no index or arithmetic: every candidate is bit-exact.
"""

from __future__ import annotations

import tvm_ffi
from tvm import s_tir, tirx

from ..execution import OP, Step
from ..graph import Graph
from ..schedules import KNOWN_TARGETS, create
from ..schedules.default import op_kernel

#: the largest unroll factor tried
MAX_UNROLL = 16


def workload(graph: Graph, step: Step) -> tuple[tirx.PrimFunc, list] | None:
    """(the default-scheduled kernel, its arguments) of an ``op`` step that runs on its default
    schedule on every known target, with a loop to unroll; None otherwise."""
    if step.kind != OP:
        return None
    op = graph.ops[step.ops[0]]
    if create(KNOWN_TARGETS[0]).op_kernel(graph, op) is not None:
        return None
    kf = op_kernel(graph, op)
    if kf.preamble or _innermost(s_tir.Schedule(kf.func)) is None:
        return None
    return kf.func, kf.args


def _innermost(sch: s_tir.Schedule):
    """The output block's innermost loop of more than one iteration, or None."""
    out = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    loops = [lp for lp in sch.get_loops(out) if int(sch.get(lp).extent) > 1]
    return loops[-1] if loops else None


def spaces(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
    """The innermost output loop split by a sampled factor (up to :data:`MAX_UNROLL`), the inner
    loop unrolled."""
    loop = _innermost(sch)
    inner = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=MAX_UNROLL)
    _, i = sch.split(loop, inner)
    sch.unroll(i)
    return [sch]


def describe(func: tirx.PrimFunc) -> str:
    """``innermost loop unrolled x8``, or ``default`` (nothing unrolled)."""
    unrolled: list = []
    tvm_ffi.structural_walk(func.body, (tirx.For, lambda f: unrolled.append(int(f.extent))
                                        if f.kind == tirx.ForKind.UNROLLED and int(f.extent) > 1 else None))
    return f"innermost loop unrolled x{max(unrolled)}" if unrolled else "default"
