"""Measuring a candidate kernel on the board: MetaSchedule's builder and runner for tvm-patchnet.

A candidate is measured where it will run, through the code path the model takes:

- :class:`BoardBuilder`: the candidate (a scheduled workload) becomes the kernel of its step in a
  one-step model (:func:`step_graph`: the step's ops, their inputs as the model's inputs), emitted
  as our plain C (:func:`tvm_patchnet.codegen.emit_c` with the candidate in place of the default
  schedule) into a board project (a profile build: one mark before the kernel call, one after);
- :class:`BoardRunner`: hands it to a worker (:mod:`.workers`: local threads or the workers of
  an RPC tracker), which builds the firmware and runs it on seeded random inputs (QEMU: the
  emulated board; a Nucleo: the attached one), and returns the kernel call's own count:
  executed instructions on QEMU (exact, deterministic: one run suffices), DWT cycles on a
  Nucleo. The output is compared with the default schedule's output on the board: a candidate
  that computes anything else is a failed result.

MetaSchedule calls the count ``run_secs``: it only ranks candidates, and the XGBoost cost model
learns from these counts. A failed build or run is a result with its message (one line), never
an exception that ends the search.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import numpy as np
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.runner.runner import PyRunnerFuture

from ..errors import PatchnetError
from ..execution import Step, plan_execution
from ..graph import Graph
from .space import Task
from .workers import LocalWorkers, TrackerWorkers, one_line

#: PrimFunc attribute naming a workload's task and board (``<content hash>@<board>``): equal
#: workloads share records on one board, and a database keyed by workload keeps boards apart
TASK_ATTR = "patchnet_workload"


def workload_key(task: Task, board: str) -> str:
    return f"{tvm_ffi.structural_hash(task.workload):x}@{board}"


def step_graph(graph: Graph, step: Step) -> Graph:
    """The one-step model of ``step``: its ops, the tensors they read and write, the activations
    they read from outside as the model's inputs, the step's output as its output."""
    ops = [graph.ops[i] for i in step.ops]
    written = {n for op in ops for n in op.outputs}
    names = list(dict.fromkeys(n for op in ops for n in [*op.inputs, *op.outputs] if n))
    inputs = [n for n in names if n not in written and not graph.t(n).const]
    sub = Graph(f"{graph.name}-{step.name}", {n: graph.t(n) for n in names},
                [dataclasses.replace(op, block=0) for op in ops], inputs, [step.output])
    sub.validate()
    return sub


@dataclasses.dataclass
class _Probe:
    """What a task's candidates are measured with: its one-step model, inputs, expected output."""

    graph: Graph
    step: Step
    inputs: list[np.ndarray]
    #: the default schedule's output on the board (flat int8), once measured
    expected: np.ndarray | None


def probe(graph: Graph, task: Task, seed: int = 0) -> _Probe:
    """The one-step model of ``task``'s first step and seeded random inputs; ``expected`` is
    set by :func:`measure_defaults` (the default kernel's output on the board, which the tests
    hold bit-exact with TensorFlow Lite Micro: no host build per task)."""
    sub = step_graph(graph, task.steps[0])
    (step,) = plan_execution(sub).steps
    if step.kind != task.steps[0].kind:
        raise PatchnetError(f"{task.name}: alone, the step runs as '{step.kind}', in the model as "
                            f"'{task.steps[0].kind}'")
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, sub.t(n).shape, dtype=np.int8) for n in sub.inputs]
    return _Probe(sub, step, xs, None)


def create_candidate(probe_: _Probe, kernel, board: str, target: str, work: str) -> str:
    """Emit the one-step model with ``kernel`` (a KernelFunc, None: the default schedule) as its
    step's kernel and create the board's profile project in ``work`` (a worker builds it:
    :func:`.workers.measure_project`); returns the project folder."""
    from .. import micro, progress
    from ..codegen import emit_c

    src = os.path.join(work, "codegen")
    with progress.silenced():  # one bar for the whole tuning, not one per candidate's steps
        emit_c(probe_.graph, src, target=target, tuned={probe_.step.name: kernel} if kernel is not None else None)
    project = os.path.join(work, "project")
    micro.create_project(src, board, project, profile=True)
    return project


def measure_defaults(bench: Bench) -> dict[str, int]:
    """Each task's default schedule measured by the bench's workers: its count (by workload
    key); its output becomes the probe's expected output."""
    results = _measure_all(bench, dict.fromkeys(bench.probes), "measuring the default schedules")
    counts = {}
    for key, r in results.items():
        counts[key], bench.probes[key].expected = r.result()  # a default that fails on the board is an error
    return counts


def measure_seeds(bench: Bench, funcs: dict) -> dict[str, int | None]:
    """The count of each scheduled workload in ``funcs`` (by workload key; :meth:`Task.seed_schedule`),
    checked against the default's output; None for one that fails (a result, not an error)."""
    results = _measure_all(bench, {k: bench.tasks[k].kernel(f, bench.probes[k].step) for k, f in funcs.items()},
                           "measuring the seeds")
    return {k: None if r.exception() else r.result()[0] for k, r in results.items()}


def _measure_all(bench: Bench, kernels: dict, desc: str) -> dict:
    """Futures of :func:`.workers.measure_project` for ``kernels`` (by workload key; None: the
    default schedule, whose output is not compared), all measured at once by the bench's workers."""
    from .. import progress

    futures, works = {}, []
    with progress.task(desc, len(kernels), "kernels") as advance:
        try:
            for key, kernel in kernels.items():
                p = bench.probes[key]
                works.append(tempfile.mkdtemp(prefix="patchnet-tune-"))
                project = create_candidate(p, kernel, bench.board, bench.target, works[-1])
                futures[key] = bench.workers.submit(project, p.inputs, None if kernel is None else p.expected,
                                                    p.step.name)
            for f in futures.values():
                f.exception()  # waits
                advance()
        finally:
            for w in works:
                shutil.rmtree(w, ignore_errors=True)
    return futures


@dataclasses.dataclass
class Bench:
    """What the builder and the runner share: the tasks and their probes by workload key
    (:data:`TASK_ATTR`), and the probe of every built, not yet run, project."""

    board: str
    target: str
    tasks: dict[str, Task]
    probes: dict[str, _Probe]
    #: where candidates are built and run (:mod:`.workers`)
    workers: LocalWorkers | TrackerWorkers
    built: dict[str, _Probe] = dataclasses.field(default_factory=dict)


@derived_object
class BoardBuilder(ms.builder.PyBuilder):
    """Emits each candidate's C into a board project (the workers build it: make runs where
    the board is)."""

    def __init__(self, bench: Bench):
        super().__init__()
        self.bench = bench

    def build(self, build_inputs):
        b, out = self.bench, []
        for bi in build_inputs:
            work = tempfile.mkdtemp(prefix="patchnet-tune-")
            try:
                func = bi.mod["main"]
                key = str(func.attrs[TASK_ATTR])
                p = b.probes[key]
                project = create_candidate(p, b.tasks[key].kernel(func.without_attr(TASK_ATTR), p.step), b.board,
                                          b.target, work)
                b.built[project] = p
                # MetaSchedule's RemoveBuildArtifact removes the artifact's folder: work
                out.append(ms.builder.BuilderResult(project, None))
            except Exception as e:  # noqa: BLE001 - a candidate that does not build is a result, not the end
                shutil.rmtree(work, ignore_errors=True)
                out.append(ms.builder.BuilderResult(None, one_line(e)))
        return out


@derived_object
class _Pending(PyRunnerFuture):
    """A candidate on its way through a worker; its count is MetaSchedule's ``run_secs``."""

    def __init__(self, future):
        super().__init__()
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self):
        try:
            return ms.runner.RunnerResult([float(self.future.result()[0])], None)
        except Exception as e:  # noqa: BLE001 - a candidate that fails on the board is a result
            return ms.runner.RunnerResult(None, one_line(e))


@derived_object
class BoardRunner(ms.runner.PyRunner):
    """Hands each candidate to the bench's workers (all of a batch at once: each worker takes
    one at a time)."""

    def __init__(self, bench: Bench):
        super().__init__()
        self.bench = bench

    def run(self, runner_inputs):
        out = []
        for ri in runner_inputs:
            p = self.bench.built.pop(ri.artifact_path)
            out.append(_Pending(self.bench.workers.submit(ri.artifact_path, p.inputs, p.expected, p.step.name)))
        return out
