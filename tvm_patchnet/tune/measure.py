"""Measuring a candidate kernel on the board: MetaSchedule's builder and runner for tvm-patchnet.

A candidate is measured where it will run, through the code path the model takes:

- :class:`BoardBuilder`: the candidate (a scheduled workload) becomes the kernel of its step in a
  one-step model (:func:`step_graph`: the step's ops, their inputs as the model's inputs), emitted
  as our plain C (:func:`tvm_patchnet.codegen.emit_c` with the candidate in place of the default
  schedule) and built into the board's firmware (a profile build: one mark before the kernel
  call, one after);
- :class:`BoardRunner`: runs it on seeded random inputs (QEMU: the emulated board; a Nucleo: the
  attached one) and returns the kernel call's own count: executed instructions on QEMU (exact,
  deterministic: one run suffices), DWT cycles on a Nucleo. The output is compared with the
  default schedule's output on the board: a candidate that computes anything else is a failed
  result.

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
    set by :func:`measure_default` (the default kernel's output on the board, which the tests
    hold bit-exact with TensorFlow Lite Micro: no host build per task)."""
    sub = step_graph(graph, task.steps[0])
    (step,) = plan_execution(sub).steps
    if step.kind != task.steps[0].kind:
        raise PatchnetError(f"{task.name}: alone, the step runs as '{step.kind}', in the model as "
                            f"'{task.steps[0].kind}'")
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, sub.t(n).shape, dtype=np.int8) for n in sub.inputs]
    return _Probe(sub, step, xs, None)


def measure_default(probe_: _Probe, board: str, target: str) -> int:
    """The default schedule's count for the probe's step; its output becomes the probe's
    expected output."""
    with tempfile.TemporaryDirectory(prefix="patchnet-tune-") as work:
        count, probe_.expected = _run(probe_, build_candidate(probe_, None, board, target, work))
    return count


def build_candidate(probe_: _Probe, kernel, board: str, target: str, work: str) -> str:
    """Emit the one-step model with ``kernel`` (a KernelFunc, None: the default schedule) as its
    step's kernel and build the board's profile firmware in ``work``; returns the project."""
    from .. import micro, progress
    from ..codegen import emit_c

    src = os.path.join(work, "codegen")
    with progress.silenced():  # one bar for the whole tuning, not one per candidate's steps
        emit_c(probe_.graph, src, target=target, tuned={probe_.step.name: kernel} if kernel is not None else None)
    project = os.path.join(work, "project")
    micro.create_project(src, board, project, profile=True)
    micro.build(project)
    return project


def run_candidate(probe_: _Probe, project: str) -> int:
    """The kernel call's own count on the board (instructions on QEMU, cycles on a Nucleo);
    raises PatchnetError if its output differs from the default schedule's."""
    count, got = _run(probe_, project)
    if not np.array_equal(got, probe_.expected):
        raise PatchnetError(f"{probe_.step.name}: the candidate's output differs from the default schedule's")
    return count


def _run(probe_: _Probe, project: str) -> tuple[int, np.ndarray]:
    from .. import micro

    with micro.Session(project) as s:
        s.run_each(probe_.inputs, 1)
        got = s.get_output()
        marks = s.profile()
    (count,) = marks.kernels()
    return count, got


@dataclasses.dataclass
class Bench:
    """What the builder and the runner share: the tasks and their probes by workload key
    (:data:`TASK_ATTR`), and the probe of every built, not yet run, project."""

    board: str
    target: str
    tasks: dict[str, Task]
    probes: dict[str, _Probe]
    built: dict[str, _Probe] = dataclasses.field(default_factory=dict)


@derived_object
class BoardBuilder(ms.builder.PyBuilder):
    """Builds each candidate into firmware for the bench's board (see the module docstring)."""

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
                project = build_candidate(p, b.tasks[key].kernel(func.without_attr(TASK_ATTR), p.step), b.board,
                                          b.target, work)
                b.built[project] = p
                # MetaSchedule's RemoveBuildArtifact removes the artifact's folder: work
                out.append(ms.builder.BuilderResult(project, None))
            except Exception as e:  # noqa: BLE001 - a candidate that does not build is a result, not the end
                shutil.rmtree(work, ignore_errors=True)
                out.append(ms.builder.BuilderResult(None, _one_line(e)))
        return out


@derived_object
class _Done(PyRunnerFuture):
    def __init__(self, result):
        super().__init__()
        self.r = result

    def done(self) -> bool:
        return True

    def result(self):
        return self.r


@derived_object
class BoardRunner(ms.runner.PyRunner):
    """Runs each built candidate on the board; the count is MetaSchedule's ``run_secs``."""

    def __init__(self, bench: Bench):
        super().__init__()
        self.bench = bench

    def run(self, runner_inputs):
        out = []
        for ri in runner_inputs:
            try:
                count = run_candidate(self.bench.built.pop(ri.artifact_path), ri.artifact_path)
                out.append(_Done(ms.runner.RunnerResult([float(count)], None)))
            except Exception as e:  # noqa: BLE001 - nor one that fails on the board
                out.append(_Done(ms.runner.RunnerResult(None, _one_line(e))))
        return out


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
