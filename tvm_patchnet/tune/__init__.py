"""Auto-tuning on the board: MetaSchedule with its XGBoost cost model over our schedules' knobs.

::

    tasks = space.tasks(plan_execution(graph, patch))   distinct tunable kernels, weighted by use
    MetaSchedule tune_tasks:                            gradient task scheduler, evolutionary search,
      design space   space.Task.space()                   XGBModel cost model
      builder        measure.BoardBuilder              candidate -> our C -> board firmware
      runner         measure.BoardRunner               executed instructions (QEMU) / cycles (Nucleo)
      database       records (JSON lines)              appended as results arrive: nothing lost on a kill
    compile --tuning-records: tuned_kernels()          best record per kernel, default schedule otherwise

Records are MetaSchedule's JSON database: ``RECORDS.jsonl`` (one line per measured candidate:
its trace, count, workload index, target) and ``RECORDS.workloads.jsonl`` beside it (the workloads).
They are keyed by workload (a kernel's structure and constants' shapes, not its model) and board
(the workload carries ``<hash>@<board>``: MetaSchedule's database looks records up by workload
only): records of one model help another with the same layers, records of two boards never mix. Tuning again with the same records resumes:
the search starts from the best measured candidates.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field

import tvm
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from .. import progress
from ..errors import PatchnetError
from ..execution import plan_execution
from ..graph import Graph
from ..patch.planner import PatchPlan
from ..schedules import pointwise
from . import space
from .measure import TASK_ATTR, Bench, BoardBuilder, BoardRunner, measure_defaults, measure_seeds, probe, workload_key
from .workers import LocalWorkers, TrackerWorkers, parse_address

__all__ = ["TaskResult", "TuneReport", "tune_model", "tuned_kernels"]


@dataclass
class TaskResult:
    """One tuned kernel: counts are the board's (QEMU: executed instructions) for one call."""

    name: str
    steps: list[str]
    default_count: int | None
    best_count: int | None
    #: the best schedule's knobs (``2x2, channel tiles outer``), None without a result
    best_schedule: str | None
    trials: int


@dataclass
class TuneReport:
    board: str
    records: str
    trials: int
    seconds: float
    tasks: list[TaskResult] = field(default_factory=list)
    #: who measured the candidates (``2 local workers``)
    workers: str = ""
    #: measured before the search, beside ``trials``: default schedules, and seeds (:meth:`.space.Task.seed_schedule`)
    defaults: int = 0
    seeds: int = 0
    #: trials the search measured: ``trials``, or fewer when the design spaces ran out of new candidates
    trials_run: int = 0

    @property
    def default_total(self) -> int:
        """Instructions of every tuned step under the default schedules (one run of the model)."""
        return sum((t.default_count or 0) * len(t.steps) for t in self.tasks)

    @property
    def best_total(self) -> int:
        return sum((t.best_count or t.default_count or 0) * len(t.steps) for t in self.tasks)


def records_paths(records: str) -> tuple[str, str]:
    """(workloads file, tuning-records file) of ``records`` (``tune.jsonl``)."""
    if not records.endswith(".jsonl"):
        raise PatchnetError(f"--records {records}: a .jsonl file (its workloads go beside it)")
    return records[: -len(".jsonl")] + ".workloads.jsonl", records


def _database(records: str, create: bool) -> ms.database.JSONDatabase:
    workloads, path = records_paths(records)
    if not create and not os.path.exists(path):
        raise PatchnetError(f"{records}: no such tuning records (make them with 'patchnet tune')")
    folder = os.path.dirname(os.path.abspath(path))
    if create:
        os.makedirs(folder, exist_ok=True)
    # loading replays the traces: their tensor intrinsics must exist (a candidate made in this
    # process registers its own, gemm_intrinsic being lazy)
    if os.path.exists(path):
        with open(path) as f:
            for mb, nb, k, u in set(re.findall(r"patchnet_gemm_(\d+)x(\d+)x(\d+)(?:_u(\d+))?", f.read())):
                pointwise.gemm_intrinsic(int(mb), int(nb), int(k), int(u or pointwise.UNROLL))
    try:
        return ms.database.JSONDatabase(path_workload=workloads, path_tuning_record=path, allow_missing=create)
    except (RuntimeError, ValueError) as e:  # TVM's reader: its C++ trace as the message
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise PatchnetError(f"{records}: not tuning records from 'patchnet tune' ({why})") from None


def _skip_stock_intrinsics() -> None:
    """TuneContext imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` parses TVM's stock
    tensor intrinsics of other targets (CUDA, x86, Hexagon, ...: 576 TVMScript functions, 45 s on
    a 2-core machine) that our design spaces never use (theirs: ``pointwise.gemm_intrinsic``).
    Unless it is loaded already, the package is registered without running that ``__init__``;
    its submodules still import on demand (``__path__`` is the real one)."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules[name] = pkg


def _workload(task: space.Task, board: str) -> tvm.IRModule:
    """The task's workload as MetaSchedule's database keys it: with its board."""
    return tvm.IRModule({"main": task.workload.with_attr(TASK_ATTR, workload_key(task, board))})


def tune_model(graph: Graph, board: str = "qemu-m4", trials: int = 32, records: str = "tune.jsonl",
               patch: PatchPlan | None = None, seed: int = 0, workers: int = 1,
               rpc_tracker: str | None = None, rpc_key: str | None = None) -> TuneReport:
    """Tune ``graph``'s kernels (patched per ``patch``) on ``board`` for ``trials`` measured
    candidates in all, appending every result to ``records``. Returns each kernel's default and
    best counts (measured on the board). Candidates are built and run by ``workers`` threads
    here, or with ``rpc_tracker`` (``HOST:PORT``) by every worker registered there under
    ``rpc_key`` (default: the board's name; see :mod:`.workers`)."""
    from ..deploy import resolve_target_board

    target, board = resolve_target_board(None, board)
    if trials < 1:
        raise PatchnetError(f"--trials must be >= 1, got {trials}")
    tasks = space.tasks(plan_execution(graph, patch))
    report = TuneReport(board, records, trials, 0.0)
    if not tasks:
        return report
    start = time.monotonic()
    pool = TrackerWorkers(*parse_address(rpc_tracker), rpc_key or board) if rpc_tracker else LocalWorkers(workers)
    try:
        _tune(graph, board, target, tasks, trials, records, seed, pool, report)
    finally:
        pool.close()
    report.workers = str(pool)
    report.seconds = time.monotonic() - start
    return report


def _tune(graph, board, target, tasks, trials, records, seed, pool, report) -> None:
    db = _database(records, create=True)
    by_key = {workload_key(t, board): t for t in tasks}
    bench = Bench(board, target, by_key, {k: probe(graph, t, seed) for k, t in by_key.items()}, pool)
    defaults = measure_defaults(bench)
    tvm_target = space.target_of(board)
    _skip_stock_intrinsics()
    for key, t in by_key.items():
        _seed_default(db, t, board, tvm_target, defaults[key])
    report.defaults = len(defaults)
    report.seeds = _seed_more(db, bench, board, tvm_target)
    contexts = [ms.TuneContext(mod=_workload(t, board), target=tvm_target, space_generator=t.space(),
                               search_strategy=ms.search_strategy.EvolutionarySearch(
                                   population_size=32, init_measured_ratio=0.5, init_min_unmeasured=8,
                                   genetic_num_iters=3, genetic_max_fail_count=8),
                               task_name=t.name, rand_state=seed + i, num_threads=1).clone()
                for i, t in enumerate(tasks)]
    with tempfile.TemporaryDirectory(prefix="patchnet-tune-") as work, \
            progress.task(f"tuning {len(tasks)} kernels on {board}", trials, "trials") as advance:
        counted = _Progress(advance)
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=[float(t.weight) for t in tasks], work_dir=work, max_trials_global=trials,
            # every kernel gets a share in the scheduler's first round, then the gains decide
            num_trials_per_iter=max(2, min(8, trials // len(tasks))), builder=BoardBuilder(bench),
            runner=BoardRunner(bench),
            database=db, cost_model=ms.cost_model.XGBModel(num_warmup_samples=4),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), counted],
            task_scheduler="gradient")
    report.trials_run = counted.n
    for key, t in by_key.items():
        recs = db.get_top_k(db.commit_workload(_workload(t, board)), 1 << 20)  # every valid result, best first
        best = _replay(db, t, board)
        report.tasks.append(TaskResult(t.name, [s.name for s in t.steps], defaults[key],
                                       int(recs[0].run_secs[0].value) if recs else None,
                                       space.describe(best) if best is not None else None, len(recs)))


def _seed_default(db, task: space.Task, board: str, target, count: int) -> None:
    """Record the default schedule with its measured count (once per workload and board)."""
    mod = _workload(task, board)
    sch = task.default_schedule(mod)
    if not _recorded(db, mod, sch):
        _commit(db, mod, sch, count, target)


def _seed_more(db, bench: Bench, board: str, target) -> int:
    """Measure and record each task's :meth:`~.space.Task.seed_schedule` (once per workload and
    board: a resumed tuning has it already); returns how many were measured."""
    seeds = {}
    for key, t in bench.tasks.items():
        mod = _workload(t, board)
        sch = t.seed_schedule(mod)
        if sch is not None and not _recorded(db, mod, sch):
            seeds[key] = (sch, mod)
    counts = measure_seeds(bench, {k: sch.mod["main"].without_attr(TASK_ATTR) for k, (sch, _) in seeds.items()})
    for key, (sch, mod) in seeds.items():
        if counts[key] is not None:
            _commit(db, mod, sch, counts[key], target)
    return len(seeds)


def _recorded(db, mod: tvm.IRModule, sch: s_tir.Schedule) -> bool:
    trace = sch.trace.as_python()
    return any(r.trace.as_python() == trace for r in db.get_top_k(db.commit_workload(mod), 1 << 20))


def _commit(db, mod: tvm.IRModule, sch: s_tir.Schedule, count: int, target) -> None:
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), [float(count)], target,
                                                     ms.arg_info.ArgInfo.from_prim_func(mod["main"])))


def _replay(db, task: space.Task, board: str):
    """The best record's schedule of ``task`` (None: no record for this board)."""
    sch = db.query_schedule(_workload(task, board), space.target_of(board), "main")
    return None if sch is None else sch.mod["main"].without_attr(TASK_ATTR)


def tuned_kernels(graph: Graph, patch: PatchPlan | None, board: str, records: str) -> tuple[dict, int, int]:
    """(step name -> tuned kernel, kernels tuned, kernels tunable) from ``records`` for ``board``:
    the best record of each tunable kernel; kernels without one keep the default schedule."""
    db = _database(records, create=False)
    tasks = space.tasks(plan_execution(graph, patch))
    out, n = {}, 0
    for t in tasks:
        func = _replay(db, t, board)
        if func is None:
            continue
        n += 1
        out.update({s.name: t.kernel(func, s) for s in t.steps})
    return out, n, len(tasks)


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Advances the progress bar by each batch of measured candidates, and counts them (``n``)."""

    def __init__(self, advance):
        super().__init__()
        self.advance, self.n = advance, 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        self.n += len(runner_results)
        self.advance(len(runner_results))
