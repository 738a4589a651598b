"""Design spaces: the knobs of the Cortex-M schedules as MetaSchedule search spaces.

A :class:`Task` is one distinct kernel of a model (steps whose workloads are structurally equal
are one task, weighted by how many steps run it). Its workload is the fast form's compute before
any schedule (the same integer arithmetic for every candidate: only loop structure changes, so
every candidate is bit-exact by construction and tests check it). The design space samples the
knobs with MetaSchedule instructions (``sample_perfect_tile``), so that the evolutionary search
can mutate a candidate's decisions and replay its trace; a post-processor then makes the part no
trace can express (the tensorized micro-kernel, whose name depends on the sampled tile).

Knobs today, per kind of step:

- convs and fully connected layers as GEMMs (``op`` steps: :mod:`~tvm_patchnet.schedules.pointwise`,
  and :mod:`~tvm_patchnet.schedules.conv` for windows gathered per pixel tile; ``accumulate``
  steps: the conv with the residual add it accumulates into, per element after it): the GEMM
  register tile, pixels x output channels (the default schedule's choice is
  :func:`~tvm_patchnet.schedules.pointwise.choose_tile`'s cost model, within a register budget;
  the tuner measures, up to :data:`MAX_ACCS` accumulators), and
  the loop order: pixel tiles outside (default) or inside the channel tiles; and how many
  times the micro-kernel's 4-step reduction loop is unrolled (:func:`unrolls`: 16 by default;
  a short reduction gains from a full unroll, a long one may lose to code size).

- depthwise convs, in place (MCUNet's) or not (:mod:`~tvm_patchnet.schedules.depthwise`): the
  interior register tile's width (outputs per tile along a row; default
  :func:`~tvm_patchnet.schedules.depthwise.tile_width`) and whether the border tiles are
  unrolled: one concrete design space per choice.

- every other kernel on its default schedule (pooling, element-wise ops, softmax, ...): how
  many iterations of its innermost output loop run unrolled (:mod:`.plain`).

The patch stage keeps its default schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..execution import ACCUMULATE, DEPTHWISE_IN_PLACE, OP, PREFIX, ExecutionPlan, Step
from ..graph import Graph
from ..schedules import conv as windows
from ..schedules import depthwise, pointwise
from ..schedules.default import KernelFunc
from . import plain

#: name of the output block of every GEMM workload (the accumulator is ``OUT + "_acc"``)
OUT = "gemm"
#: register tiles the tuner tries: up to this many pixels, channels, and accumulators (mb x nb);
#: beyond the default schedule's register budget (:data:`pointwise.MAX_TILE_ACCS`), where GCC
#: spills some operands: measured, a 3x2 tile wins over 1x4 on 15 pixels (str_ww)
MAX_PIXELS, MAX_CHANNELS, MAX_ACCS = 4, 8, 8
#: name of the residual add's block of a GEMM workload with one (then its output block)
ADD = "gemm_add"
#: name of every depthwise workload's output block
DW = "dw"
#: block annotation: a depthwise candidate's knobs, for the report
KNOBS_ATTR = "patchnet_knobs"
#: GEMM output block annotation: the micro-kernel's unroll (sampled; MetaSchedule's key, so that
#: its MutateUnroll mutates the decision; nothing else reads it: our post-processor does)
UNROLL_ATTR = "meta_schedule.unroll_explicit"


@dataclass
class Task:
    """One distinct kernel to tune: its workload and how a scheduled candidate becomes a kernel."""

    name: str
    workload: tirx.PrimFunc
    #: the steps (of the model's execution plan) that run this kernel
    steps: list[Step]
    #: per step name: the kernel's arguments (activation input, constants, output), as bound
    args: dict[str, list]
    #: "gemm" (convs, fully connected), "depthwise", or "plain" (a default-scheduled kernel: :mod:`.plain`)
    kind: str
    #: gemm: the reduction length (the micro-kernel's k)
    k: int = 0
    #: gemm over gathered windows (any other conv): the window (kernel rows, columns, channels)
    window: tuple[int, int, int] | None = None
    #: depthwise: the workload and its geometry
    dw: depthwise.Workload | None = None

    @property
    def weight(self) -> int:
        return len(self.steps)

    def space(self) -> ms.space_generator.ScheduleFn:
        """The MetaSchedule design space(s) with their post-processors."""
        if self.kind == "gemm":
            return ms.space_generator.ScheduleFn(lambda sch: _gemm_spaces(sch, self.window, self.k), sch_rules=[],
                                                 postprocs=[TensorizeGemm(self.k, self.window is not None)],
                                                 mutator_probs={ms.mutator.MutateTileSize(): 0.7,
                                                                ms.mutator.MutateUnroll(): 0.3})
        if self.kind == "plain":
            return ms.space_generator.ScheduleFn(plain.spaces, sch_rules=[], postprocs=[],
                                                 mutator_probs={ms.mutator.MutateTileSize(): 1.0})
        return ms.space_generator.ScheduleFn(lambda sch: _depthwise_spaces(self.dw, sch), sch_rules=[], postprocs=[],
                                             mutator_probs={})

    def default_schedule(self, mod: tvm.IRModule) -> s_tir.Schedule:
        """The default schedule of the workload ``mod`` as a traced schedule (a point of the
        design space): seeded into the records with its measured count, so tuning never settles
        on anything slower."""
        sch = s_tir.Schedule(mod)
        if self.kind == "plain":  # the workload is the default schedule; MetaSchedule's database
            # never returns a record whose trace is empty: one annotation makes it a trace
            sch.annotate(sch.get_child_blocks(sch.get_sblock("root"))[-1], KNOBS_ATTR, "default")
            return sch
        if self.kind == "depthwise":
            tile = depthwise.tile_width(self.dw.geo)
            sch.annotate(sch.get_sblock(self.dw.name), KNOBS_ATTR, _dw_knobs(tile, True))
            return self.dw.schedule(sch, tile)
        tiled, acc = _output(sch), sch.get_sblock(OUT + "_acc")
        mb, nb = self._default_tile(sch)
        outer, _ = pointwise.tile_gemm(sch, tiled, acc, [None, mb], [None, nb], per_channel=_tables(sch))
        if self.window is not None:
            _gather(sch, outer, self.window)
        TensorizeGemm(self.k, self.window is not None).apply(sch)
        return sch

    def _default_tile(self, sch: s_tir.Schedule) -> tuple[int, int]:
        """The default schedule's register tile (:func:`pointwise.choose_tile`'s)."""
        pixels, channels = (int(sch.get(lp).extent) for lp in sch.get_loops(_output(sch))[-2:])
        mb, nb = pointwise.choose_tile(pixels, channels)
        if self.window is not None and mb * self.k > windows.MAX_GATHER_BYTES:  # as schedules/conv.py
            mb, nb = 1, pointwise.choose_tile(1, channels)[1]
        return mb, nb

    def seed_schedule(self, mod: tvm.IRModule) -> s_tir.Schedule | None:
        """A second point measured before the search (None: none for this kind): a GEMM's
        default tile with its micro-kernel unrolled fully. The cost model cannot see an unroll
        (a C pragma inside the micro-kernel call), and a full unroll often wins on short
        reductions (measured: 10% on resnet8's 3x3 convs, 13% on ad01's 128-wide layers): the
        search then starts from the better of the two."""
        if self.kind != "gemm" or unrolls(self.k)[-1] == pointwise.UNROLL:  # (the default is the full unroll)
            return None
        sch = s_tir.Schedule(mod)
        _gemm_space(sch, self.window, self.k, False, (self._default_tile(sch), unrolls(self.k)[-1]))
        return sch if TensorizeGemm(self.k, self.window is not None).apply(sch) else None

    def kernel(self, func: tirx.PrimFunc, step: Step) -> KernelFunc:
        """A tuned candidate (a scheduled workload) as the kernel of ``step`` (one of ``steps``)."""
        if self.kind == "plain":
            return KernelFunc(func, self.args[step.name])
        if self.kind == "depthwise":
            return KernelFunc(func, self.args[step.name], (depthwise.PREAMBLE_C,))
        return KernelFunc(func, self.args[step.name], (pointwise.COMMON_C, pointwise.gemm_microkernel_c(*gemm_knobs(func))))


def tasks(execution: ExecutionPlan) -> list[Task]:
    """The model's tunable kernels, one task per distinct workload, in first-use order."""
    graph = execution.graph
    found: list[Task] = []
    for step in execution.steps:
        t = _gemm_task(graph, step) or _depthwise_task(graph, step) or _plain_task(graph, step)
        if t is None:
            continue
        same = next((f for f in found if tvm_ffi.structural_equal(f.workload, t.workload)), None)
        if same is not None:
            same.steps.append(step)
            same.args.update(t.args)
        else:
            found.append(t)
    return found


def _gemm_task(graph: Graph, step: Step) -> Task | None:
    """A conv or fully connected layer as a GEMM, alone (``op``) or with the residual add it
    accumulates into (``accumulate``: the add runs per element after the requantization, as
    :func:`~tvm_patchnet.schedules.pointwise.residual_epilogue` writes it)."""
    if step.kind not in (OP, ACCUMULATE):
        return None
    op = graph.ops[step.ops[0]]
    add = graph.ops[step.ops[1]] if step.kind == ACCUMULATE else None
    if op.kind not in ("conv2d", "fully_connected"):
        return None
    g = pointwise.match_gemm(graph, op)
    window = None
    if g is None and op.kind == "conv2d":  # any other conv: windows gathered per pixel tile
        g = windows.match_conv(graph, op)
        window = tuple(int(v) for v in graph.t(op.inputs[1]).shape[1:4]) if g is not None else None
    rq = pointwise.requant_table(g) if g is not None else None
    if rq is None:
        return None
    x, w, q, out = pointwise.gemm_te(g, rq, OUT) if window is None else windows.conv_te(graph, op, g, rq, OUT)
    extra, skip = [], []
    if add is not None:  # the add's block named ADD: equal layers of two models are one workload
        view = (g.pixels, g.co) if window is None else graph.t(add.outputs[0]).shape
        extra, out = pointwise.residual_epilogue(graph, op, replace(add, name=ADD), view)(out)
        skip = [pointwise.skip_input(graph, op, add)]
    func = te.create_prim_func([x, w, q, *extra, out])
    shape = f"{g.pixels}x{g.co}x{g.k}" if window is None else "{}x{}x{}".format(*graph.t(op.outputs[0]).shape[1:4])
    name = f"{step.name.removeprefix(PREFIX)}_{shape}" + ("" if window is None else f"_conv{window[0]}x{window[1]}") + \
        ("" if add is None else "_add")
    return Task(name, func, [step], {step.name: [op.inputs[0], g.w, rq.table, *skip, step.output]}, "gemm", k=g.k,
                window=window)


def _depthwise_task(graph: Graph, step: Step) -> Task | None:
    op = graph.ops[step.ops[0]]
    if op.kind != "depthwise_conv2d" or step.kind not in (OP, DEPTHWISE_IN_PLACE):
        return None
    in_place = step.kind == DEPTHWISE_IN_PLACE
    if in_place and graph.t(op.outputs[0]).shape[3] != graph.t(op.inputs[0]).shape[3]:
        return None
    w = depthwise.workload(graph, op, in_place, name=DW)
    if w is None:
        return None
    (kh, kw), sh = w.geo.kernel, w.geo.strides[0]
    _, h, wd, c = graph.t(op.inputs[0]).shape
    name = f"{step.name.removeprefix(PREFIX)}_dw{kh}x{kw}s{sh}_{h}x{wd}x{c}" + ("_in_place" if in_place else "")
    return Task(name, w.func, [step], {step.name: w.args}, "depthwise", dw=w)


def _plain_task(graph: Graph, step: Step) -> Task | None:
    found = plain.workload(graph, step)
    if found is None:
        return None
    func, args = found
    return Task(f"{step.name.removeprefix(PREFIX)}_{graph.ops[step.ops[0]].kind}", func, [step], {step.name: args},
                "plain")


def unrolls(k: int) -> tuple[int, ...]:
    """The micro-kernel unrolls to try for a reduction of ``k`` (``k // 4`` 4-step iterations):
    4 to 64 below that and the full unroll, the default (:data:`pointwise.UNROLL`) always."""
    steps = k // 4
    return tuple(sorted({u for u in (4, 8, 16, 32, 64) if u < steps} | {pointwise.UNROLL} |
                        ({steps} if steps > pointwise.UNROLL else set())))


def _gemm_spaces(sch: s_tir.Schedule, window, k: int) -> list[s_tir.Schedule]:
    """Pixel tiles outside or inside channel tiles (the requantization tables loaded per tile or
    once per channel tile), two design spaces (:func:`_gemm_space`). A gathered conv
    (``window``) keeps pixel tiles outside (its windows are gathered once per pixel tile)."""
    return [_gemm_space(sch.copy(), window, k, outer) for outer in ((False, True) if window is None else (False,))]


def _gemm_space(s: s_tir.Schedule, window, k: int, channels_outer: bool, decisions=None) -> s_tir.Schedule:
    """The register tile sampled (pixels x channels, at most :data:`MAX_ACCS` accumulators) and
    the micro-kernel's unroll (:func:`unrolls`); ``decisions`` (tile, unroll): these choices
    instead of random ones (a seed). The micro-kernel call is :class:`TensorizeGemm`'s."""
    tiled, acc = _output(s), s.get_sblock(OUT + "_acc")
    p, c = s.get_loops(tiled)[-2:]
    (mb, nb), unroll = decisions or ((None, None), None)
    fp = s.sample_perfect_tile(p, n=2, max_innermost_factor=MAX_PIXELS, decision=_split(s, p, mb))
    fc = s.sample_perfect_tile(c, n=2, max_innermost_factor=MAX_CHANNELS, decision=_split(s, c, nb))
    u = unrolls(k)
    if len(u) > 1:  # MutateUnroll fails on a one-choice decision, and on a constant: no annotation is the default
        s.annotate(s.get_sblock(OUT), UNROLL_ATTR, s.sample_categorical(
            list(u), [1 / len(u)] * len(u), decision=None if unroll is None else u.index(unroll)))
    outer, _ = pointwise.tile_gemm(s, tiled, acc, fp, fc, per_channel=_tables(s), channels_outer=channels_outer)
    if window is not None:
        _gather(s, outer, window)
    return s


def _split(sch: s_tir.Schedule, loop, inner: int | None) -> list[int] | None:
    return None if inner is None else [int(sch.get(loop).extent) // inner, inner]


def _gather(sch: s_tir.Schedule, pixel_tile, window) -> None:
    """A gathered conv's windows once per pixel tile, by tap (as :mod:`.schedules.conv`)."""
    col = sch.get_sblock(OUT + "_col")
    # unit loops kept: a replayed trace with another sampled tile must find as many loops
    sch.compute_at(col, pixel_tile, preserve_unit_loops=True)
    windows._gather_by_tap(sch, col, window)


def gemm_knobs(func: tirx.PrimFunc) -> tuple[int, int, int]:
    """(pixels, channels, unroll) of a scheduled GEMM workload: its register tile (the extents
    of its output block's two innermost loops) and its micro-kernel's unroll."""
    sch = s_tir.Schedule(func)
    mb, nb = (int(sch.get(lp).extent) for lp in sch.get_loops(_output(sch))[-2:])
    return mb, nb, _unroll(sch)


def _unroll(sch: s_tir.Schedule) -> int:
    return int(sch.get(sch.get_sblock(OUT)).annotations.get(UNROLL_ATTR, pointwise.UNROLL))


def _output(sch: s_tir.Schedule):
    """The block that writes a GEMM workload's output, tiled by the schedule: the residual
    add's (:data:`ADD`) where there is one, else the GEMM's (:data:`OUT`)."""
    names: list = []
    tvm_ffi.structural_walk(sch.mod["main"].body, (s_tir.SBlock, lambda b: names.append(b.name_hint)))
    return sch.get_sblock(ADD if ADD in names else OUT)


def _tables(sch: s_tir.Schedule) -> tuple[tuple[str, int], ...]:
    """The per-channel requantization table's read (block, index), copied once per channel tile."""
    reads = [r.source.name for r in sch.get(sch.get_sblock(OUT)).reads]
    return ((OUT, reads.index("q")),)


def _depthwise_spaces(w: depthwise.Workload, sch: s_tir.Schedule) -> list[s_tir.Schedule]:
    """One design space per interior tile width (outputs per register tile along a row, 1 to 4
    where the window fits in registers) and per border treatment (tiles unrolled or looped):
    concrete schedules, measured one by one (nothing to sample inside them)."""
    spaces = []
    for tile in range(1, 5):
        if not depthwise.tile_fits(w.geo, tile) or (tile > 1 and w.geo.dilation[1] > 1):
            continue
        for unrolled in ((True, False) if tile > 1 else (True,)):
            s = sch.copy()
            s.annotate(s.get_sblock(w.name), KNOBS_ATTR, _dw_knobs(tile, unrolled))
            spaces.append(w.schedule(s, tile, 49 if unrolled else 0))
    return spaces


def _dw_knobs(tile: int, unrolled: bool) -> str:
    return f"tile {tile}" + ("" if tile == 1 else ", borders unrolled" if unrolled else ", borders looped")


def describe(func: tirx.PrimFunc) -> str:
    """A candidate's knobs: a depthwise conv's as annotated (``tile 2, borders unrolled``); a
    GEMM's read from its loops: ``2x2`` (the register tile), ``, channel tiles outer`` when the
    outer tile loop runs over channels (the output block's last axis), ``, unrolled 36``
    for another micro-kernel unroll than the default; a default-scheduled kernel's: :func:`.plain.describe`."""
    knobs: list = []
    names: list = []

    def visit(b: s_tir.SBlock) -> None:
        knobs.append(b.annotations.get(KNOBS_ATTR))
        names.append(b.name_hint)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    if any(knobs):
        return str(next(k for k in knobs if k))
    if OUT not in names:
        return plain.describe(func)
    sch = s_tir.Schedule(func)
    tiled = _output(sch)
    loops = sch.get_loops(tiled)
    mb, nb, unroll = gemm_knobs(func)
    outer = len(loops) >= 4 and _binds(func, sch.get(tiled).name_hint, -1, sch.get(loops[-4]).loop_var)
    return f"{mb}x{nb}" + (", channel tiles outer" if outer else "") + \
        ("" if unroll == pointwise.UNROLL else f", unrolled {unroll}")


def _binds(func: tirx.PrimFunc, block: str, axis: int, var: tirx.Var) -> bool:
    """Whether ``block``'s iteration axis ``axis`` is bound to an expression of loop ``var``."""
    realizes: list = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlockRealize,
                                        lambda r: realizes.append(r) if r.block.name_hint == block else None))
    found: list = []
    tvm_ffi.structural_walk(realizes[0].iter_values[axis], (tirx.Var, lambda v: found.append(v.same_as(var))))
    return any(found)


@derived_object
class TensorizeGemm(ms.postproc.PyPostproc):
    """The sampled tile's accumulator as one ``pn_gemm_{mb}x{nb}`` call; a tile of more than
    :data:`MAX_ACCS` accumulators, or a gathered window of more than ``MAX_GATHER_BYTES``, is
    rejected."""

    def __init__(self, k: int, gathered: bool = False):
        super().__init__()
        self.k, self.gathered = k, gathered

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, sch: s_tir.Schedule) -> bool:
        loops = sch.get_loops(_output(sch))
        mb, nb = (int(sch.get(lp).extent) for lp in loops[-2:])
        if mb * nb > MAX_ACCS or (self.gathered and mb * self.k > windows.MAX_GATHER_BYTES):
            return False
        pointwise.tensorize_gemm(sch, sch.get_sblock(OUT + "_acc"), mb, nb, self.k, len(loops) - 2, _unroll(sch))
        if self.gathered:  # registers / stack, never an arena buffer (after tensorize: its intrinsic reads global)
            sch.set_scope(sch.get_sblock(OUT + "_col"), 0, "local")
        return True

    def clone(self) -> TensorizeGemm:
        return TensorizeGemm(self.k, self.gathered)


def target_of(board: str) -> tvm.target.Target:
    """The target of tuning records: MetaSchedule needs an llvm target (it refuses ``c``): the
    core's, the board among its keys (the records are kept apart per board by the workload's
    key, ``measure.TASK_ATTR``)."""
    from ..archive.layout import TARGET_BOARDS

    core = next(t for t, boards in TARGET_BOARDS.items() if board in boards)
    return tvm.target.Target({"kind": "llvm", "mtriple": "thumbv7em-none-eabi", "mcpu": core, "mattr": ["+dsp"],
                              "num-cores": 1, "keys": ["arm_cpu", "cpu", f"patchnet-{board}"]})
