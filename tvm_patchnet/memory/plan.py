"""Place every activation of an int8 graph in one static arena, from the liveness analysis.

Each tensor is its own allocation (bytes, lifetime in op indices ``first..last``, -1 = graph
input) with the span :func:`~tvm_patchnet.analysis.liveness.analyze` gives it; tensors that share a
liveness buffer (in-place depthwise, residual accumulation, reshape views) are placed at one
offset (``host``). An in-place stride-2 depthwise conv thus occupies its input's size until it
runs and its smaller output's size after, exactly as the liveness counts it, so the arena can
reach the liveness peak (:meth:`ArenaPlanner.lower_bound`). The greedy planner may land above it;
:attr:`MemoryPlan.note` then says by how much, and ``kind="milp"`` closes the gap where it can.

Patched (``plan`` given), ops ``0..k-1`` are the patch stage, replayed once per tile with the same
buffers, so one tile is planned: the stage tensors at their patch sizes with the intra-patch
spans of the planner's ``_patch_graph`` liveness. The stage output is full size and lives from
the first tile's input (tiles 2.. load and run while it holds the earlier tiles' results) to its last use
in the rest of the network, whose tensors keep their whole-graph spans.

The stage input, three ways (``input_mode``): ``"patch"`` counts one input patch in the arena,
as the patch planner does (an image produced patch by patch: camera lines, JPEG MCUs);
``"full"`` keeps the whole input in the arena through the stage; ``"none"`` leaves it out: the
firmware feeds the input into its own buffer (microTVM AOT passes inputs outside the workspace),
which then costs :attr:`MemoryPlan.input_bytes` besides the arena. Unpatched graphs know
``"full"`` (the default: the input is in the arena, as the profiler counts it) and ``"none"``.

Kernel scratch the liveness counts (an in-place depthwise conv's channel plane, softmax's row
buffers) is an allocation ``<output>#scratch`` alive during its op. Code generation
(``tvm_patchnet.codegen``) places every tensor, patch buffer and scratch at these offsets, with
``input_mode="full"``: the arena it emits is this plan's.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field, replace

from ..errors import PatchnetError
from ..execution import ExecutionPlan, Step, plan_execution
from ..graph import Graph
from ..patch.planner import PatchPlan
from .arena import DEFAULT_ALIGNMENT, ArenaPlanner, create


@dataclass
class Allocation:
    """One tensor in the arena: ``size`` bytes at ``offset``, alive for ops ``first..last``;
    ``host`` is the tensor whose offset it shares (None: its own)."""

    name: str
    size: int
    first: int
    last: int
    offset: int = 0
    host: str | None = None


@dataclass
class MemoryPlan:
    """The arena of a graph (bytes). ``peak_bytes`` is the figure the profiler (unpatched) or the
    patch planner (patched) reports, which ``arena_bytes`` should equal; ``lower_bound_bytes`` is the
    liveness peak of exactly these allocations at the alignment (what no placement can beat)."""

    model: str
    kind: str
    alignment: int
    arena_bytes: int
    peak_bytes: int
    lower_bound_bytes: int
    optimal: bool
    input_mode: str
    input_bytes: int
    allocations: list[Allocation]
    #: arena when the whole input is in it / when the input is fed into its own buffer
    arena_bytes_full_input: int = 0
    arena_bytes_no_input: int = 0
    note: str = ""
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def gap_bytes(self) -> int:
        """Bytes above the reported peak (0: the arena reaches it)."""
        return self.arena_bytes - self.peak_bytes

    def summary(self) -> str:
        s = (f"{self.model}: {self.kind} arena {self.arena_bytes:,} B, reported peak {self.peak_bytes:,} B"
             f" ({'reached' if not self.gap_bytes else f'{self.gap_bytes:+,} B'}), lower bound "
             f"{self.lower_bound_bytes:,} B{', optimal' if self.optimal else ''}; full input "
             f"{self.arena_bytes_full_input:,} B, input outside {self.arena_bytes_no_input:,} + "
             f"{self.input_bytes:,} B")
        return s + (f" [{self.note}]" if self.note else "")


def plan_memory(graph: Graph, plan: PatchPlan | None = None, kind: str = "greedy",
                alignment: int = DEFAULT_ALIGNMENT, input_mode: str | None = None,
                execution: ExecutionPlan | None = None, **options) -> MemoryPlan:
    """Plan the arena of ``graph`` (patched by ``plan`` if given) with planner ``kind``
    (``greedy``, ``milp``, ``linear``; ``options`` go to the planner). ``input_mode`` defaults to
    ``"patch"`` with a plan, ``"full"`` without; the other modes' arenas are planned too.
    ``execution``: the kernel calls whose buffers are placed (the code generator passes the one it
    emits; default: :func:`~tvm_patchnet.execution.plan_execution` of ``graph`` and ``plan``)."""
    exe = execution or plan_execution(graph, plan)
    if exe.graph is not graph or exe.patch is not plan:
        raise PatchnetError("plan_memory: the execution plan is of another graph or patch plan")
    modes = ("patch", "full", "none") if plan is not None else ("full", "none")
    mode = input_mode or modes[0]
    if mode not in modes:
        raise PatchnetError(f"input_mode '{mode}' does not apply here; choose one of {', '.join(modes)}")
    results = {}
    for m in modes:
        allocs = _allocations(exe, m)
        planner = create(kind, alignment, **options)
        results[m] = _place(planner, allocs), allocs
    (arena, allocs) = results[mode]
    for a in allocs:
        a.offset = arena.offsets[a.name]
    peak = plan.peak_bytes if plan is not None else exe.liveness.peak_bytes  # = profile's
    note = arena.note
    if arena.arena_bytes > peak:
        bound = arena.lower_bound_bytes
        why = "alignment" + ("; the stage output alive over every tile" if plan is not None else "")
        note = (note + "; " if note else "") + (
            f"arena {arena.arena_bytes - peak:,} B above the reported peak: {max(bound - peak, 0):,} B in the "
            f"liveness bound ({why}), {arena.arena_bytes - bound:,} B of packing")
    return MemoryPlan(
        model=graph.name, kind=kind, alignment=alignment, arena_bytes=arena.arena_bytes, peak_bytes=peak,
        lower_bound_bytes=arena.lower_bound_bytes, optimal=arena.optimal, input_mode=mode,
        input_bytes=sum(graph.t(n).nbytes for n in graph.inputs), allocations=allocs,
        arena_bytes_full_input=results["full"][0].arena_bytes, arena_bytes_no_input=results["none"][0].arena_bytes,
        note=note, offsets=dict(arena.offsets),
    )


def _place(planner: ArenaPlanner, allocs: list[Allocation]):
    for a in allocs:  # hosts come first: allocations are listed in liveness buffer order
        planner.add_buffer(a.name, a.size, a.first, a.last, a.host)
    return planner.plan()


def _allocations(exe: ExecutionPlan, mode: str) -> list[Allocation]:
    """Every tensor and kernel scratch the arena holds, with its span and host, for one input mode."""
    graph, plan, full = exe.graph, exe.patch, exe.liveness
    if plan is None:
        kept = {n: graph.t(n).nbytes for n in full.span if mode != "none" or n not in graph.inputs}
        return _from_liveness(full, kept, exe.steps)
    k = len(plan.stage_ops)
    stage_in, stage_out = plan.stage_input, plan.stage_output
    if full.span[stage_in][1] >= k:
        raise PatchnetError(f"{graph.name}: the input '{stage_in}' is read after the patch stage; "
                            "patch-based inference needs it only in the stage")
    patch = exe.stage_liveness
    pg = exe.stage_graph
    sizes = {n: pg.t(n).nbytes for n in patch.span if n != stage_out and (mode != "none" or n != stage_in)}
    if mode == "full":  # the whole input, alive through every tile's reads of it
        sizes[stage_in] = graph.t(stage_in).nbytes
    # A tile may overwrite its own input patch in place, never the whole input: others read its halo.
    stage = _from_liveness(patch, sizes, exe.stage_steps, solo={stage_in} if mode == "full" else set())
    stage = [replace(a, first=-1, last=k - 1) if a.name == stage_in and mode == "full"
             # the copy out of an uneven tile's buffer (patch graph op k) ends stage op k - 1
             else replace(a, first=min(a.first, k - 1), last=min(a.last, k - 1)) for a in stage]
    # The rest: whole-graph tensors alive after the stage. The stage output holds the earlier
    # tiles' results while a later tile loads its input (-1) and runs.
    rest = {n for n, (_, last) in full.span.items() if last >= k and (n == stage_out or full.span[n][0] >= k)}
    out = _from_liveness(full, {n: graph.t(n).nbytes for n in rest}, exe.steps[1:])
    return stage + [replace(a, first=-1) if a.name == stage_out else a for a in out]


def _from_liveness(live, sizes: dict[str, int], steps: list[Step], solo: Container[str] = ()) -> list[Allocation]:
    """Allocations of the tensors in ``sizes`` (bytes) with their liveness spans, then the scratch
    of ``steps``; the first tensor of each liveness buffer hosts the others, except ``solo``
    tensors, which share with nothing."""
    out, hosts = [], {}
    for b in live.buffers:
        for n in b.tensors:
            if n not in sizes:
                continue
            first, last = live.span[n]
            out.append(Allocation(n, sizes[n], first, last, host=None if n in solo else hosts.get(b.id)))
            if n not in solo:
                hosts.setdefault(b.id, n)
    for s in steps:
        if s.scratch is not None:
            i = s.ops[0]
            out.append(Allocation(s.scratch, live.scratch[i], i, i))
    return out
