"""Tuning (``tvm_patchnet.tune``, ``patchnet tune``): every point of the design space is
bit-exact; on qemu-m4, candidates are measured, records are JSON lines that survive a killed
run, and ``compile --tuning-records`` builds the best schedules, bit-exact on the board."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tvm

from tests.cli.test_cli import run_cli
from tests.codegen.cmodel import compile_c, run_c
from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.execution import plan_execution
from tvm_patchnet.runtime import run_graph
from tvm_patchnet.schedules import depthwise, pointwise
from tvm_patchnet.tune import space
from tvm_patchnet.tune.measure import step_graph


def _model():
    """A 3x3 conv, two 1x1 convs of different shapes, an odd pixel count (15 = 3 x 5) and one
    channel count that 5 divides, and an in-place depthwise 3x3 between them: four tasks."""
    b = GraphBuilder("pw2", (1, 3, 5, 12), seed=3)
    x = b.conv2d(b.inputs[0], 12, 3, act="relu")  # windows gathered per pixel tile
    x = b.conv2d(x, 20, 1, act="relu")
    x = b.depthwise_conv2d(x, 3)
    x = b.conv2d(x, 8, 1, act=None)
    return b.finish(x)


def _residual_model():
    """Two convs accumulated into residual buffers (``accumulate`` steps): a gathered 3x3 conv,
    then a 1x1 conv whose add has the skip first and a relu."""
    b = GraphBuilder("res", (1, 4, 6, 8), seed=5)
    x = b.conv2d(b.inputs[0], 8, 1, act="relu")
    y = b.conv2d(b.conv2d(x, 12, 1, act="relu"), 8, 3, act=None)
    x = b.add(y, x)
    y = b.conv2d(b.conv2d(x, 4, 1, act="relu"), 8, 1, act=None)
    return b.finish(b.add(x, y, act="relu"))


def _candidates(task: space.Task):
    """Every register tile x loop order of the task's design space, scheduled, with the default
    unroll; each other unroll with the first tile (an unroll is a C pragma of the micro-kernel:
    it changes no index)."""
    mod = tvm.IRModule({"main": task.workload})
    sch0 = tvm.s_tir.Schedule(mod)
    pixels, channels = (int(sch0.get(lp).extent) for lp in sch0.get_loops(space._output(sch0))[-2:])
    orders = (False, True) if task.window is None else (False,)
    for mb, nb, outer, unroll in itertools.product(range(1, space.MAX_PIXELS + 1), range(1, space.MAX_CHANNELS + 1),
                                                   orders, space.unrolls(task.k)):
        if pixels % mb or channels % nb or (unroll != pointwise.UNROLL and (mb, nb, outer) != (1, 1, False)):
            continue
        sch = tvm.s_tir.Schedule(mod)
        if unroll != pointwise.UNROLL:
            sch.annotate(sch.get_sblock(space.OUT), space.UNROLL_ATTR, unroll)
        pixel_tile, _ = pointwise.tile_gemm(sch, space._output(sch), sch.get_sblock(space.OUT + "_acc"), [None, mb],
                                            [None, nb], space._tables(sch), outer)
        if task.window is not None:
            space._gather(sch, pixel_tile, task.window)
        if space.TensorizeGemm(task.k, task.window is not None).apply(sch):  # else: outside the space (too many accumulators)
            yield (mb, nb, outer, unroll), sch.mod["main"]


def _depthwise_candidates(task: space.Task):
    mod = tvm.IRModule({"main": task.workload})
    for sch in space._depthwise_spaces(task.dw, tvm.s_tir.Schedule(mod)):
        yield space.describe(sch.mod["main"]), sch.mod["main"]


@pytest.mark.parametrize("model, kinds, n_points", [
    (_model, [("gemm", (3, 3, 12), "op"), ("gemm", None, "op"), ("depthwise", None, "depthwise_in_place"),
              ("gemm", None, "op")],
     4 + 3 + 12 + 4),  # gathered conv tiles (+ unrolls), gemm tiles x orders, depthwise tiles x borders
    (_residual_model, [("gemm", None, "op"), ("gemm", None, "op"), ("gemm", (3, 3, 12), "accumulate"),
                       ("gemm", None, "op"), ("gemm", None, "accumulate")],
     4 + 3 + 8)])  # (the accumulate steps only) a gathered conv's tiles (+ unrolls), a GEMM's tiles x orders
def test_every_tile_order_and_unroll_is_bit_exact(tmp_path, model, kinds, n_points):
    g = model()
    tasks = space.tasks(plan_execution(g))
    assert [(t.kind, t.window, t.steps[0].kind) for t in tasks] == kinds
    x = np.random.default_rng(0).integers(-128, 128, g.t(g.inputs[0]).shape, dtype=np.int8)
    trace = {g.inputs[0]: x, **run_graph(g, [x], trace=True)}
    seen = 0
    for task in tasks:
        step = task.steps[0]
        if model is _residual_model and step.kind != "accumulate":  # (op steps: as _model's)
            continue
        sub = step_graph(g, step)
        xs = [trace[n] for n in sub.inputs]
        want = run_graph(sub, xs)[0]
        points = _candidates(task) if task.kind == "gemm" else _depthwise_candidates(task)
        for knobs, func in points:
            if task.kind == "gemm":
                knobs = f"{knobs[0]}x{knobs[1]}" + (", channel tiles outer" if knobs[2] else "") + \
                    ("" if knobs[3] == pointwise.UNROLL else f", unrolled {knobs[3]}")
            assert space.describe(func) == knobs
            out = tmp_path / f"{step.name}-{len(list(tmp_path.iterdir()))}"
            emit_c(sub, str(out), tuned={step.name: task.kernel(func, step)})
            np.testing.assert_array_equal(run_c(compile_c(str(out)), sub, xs)[0], want)
            seen += 1
    assert seen >= n_points


def _plain_model():
    """Kernels on their default schedules: pooling, an add, a fully connected layer with one
    input feature, softmax."""
    b = GraphBuilder("plain", (1, 4, 6, 3), seed=7)
    x = b.max_pool2d(b.inputs[0], 2, 2)
    x = b.add(x, b.avg_pool2d(b.inputs[0], 2, 2), act="relu")
    x = b.fully_connected(b.global_avg_pool(b.conv2d(x, 1, 1)), 12)
    return b.finish(b.softmax(x))


def test_default_scheduled_kernels_unrolled_are_bit_exact(tmp_path):
    """A kernel without a fast form is a "plain" task: every unroll factor of its innermost
    output loop computes the same bytes; the default (factor 1) is its default kernel."""
    from tvm_patchnet.tune import plain

    g = _plain_model()
    tasks = [t for t in space.tasks(plan_execution(g)) if t.kind == "plain"]
    kinds = {g.ops[t.steps[0].ops[0]].kind for t in tasks}
    assert {"max_pool2d", "avg_pool2d", "add", "softmax", "fully_connected"} <= kinds, kinds
    x = np.random.default_rng(1).integers(-128, 128, g.t(g.inputs[0]).shape, dtype=np.int8)
    trace = {g.inputs[0]: x, **run_graph(g, [x], trace=True)}
    seen = 0
    for task in tasks:
        step = task.steps[0]
        sub = step_graph(g, step)
        xs = [trace[n] for n in sub.inputs]
        want = run_graph(sub, xs)[0]
        assert space.describe(task.default_schedule(tvm.IRModule({"main": task.workload})).mod["main"]) == "default"
        sch0 = tvm.s_tir.Schedule(task.workload)
        extent = int(sch0.get(plain._innermost(sch0)).extent)
        for factor in (f for f in range(2, plain.MAX_UNROLL + 1) if extent % f == 0):
            sch = tvm.s_tir.Schedule(task.workload)
            _, inner = sch.split(plain._innermost(sch), [None, factor])
            sch.unroll(inner)
            assert space.describe(sch.mod["main"]) == f"innermost loop unrolled x{factor}"
            out = tmp_path / f"{step.name}-{factor}"
            emit_c(sub, str(out), tuned={step.name: task.kernel(sch.mod["main"], step)})
            np.testing.assert_array_equal(run_c(compile_c(str(out)), sub, xs)[0], want, err_msg=f"{task.name} x{factor}")
            seen += 1
    assert seen >= len(tasks)


def _renamed(folder, names: dict) -> str:
    text = (folder / "kernels.c").read_text()
    for old, new in names.items():
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("model", [_model, _residual_model, _plain_model])
def test_the_seeded_default_is_the_default_kernel(tmp_path, model):
    """The default schedule seeded into the records emits the default kernel's C (its block
    names aside): its measured count is the default's."""
    g = model()
    for task in space.tasks(plan_execution(g)):
        step = task.steps[0]
        op, sub = g.ops[step.ops[0]], step_graph(g, step)
        func = task.default_schedule(tvm.IRModule({"main": task.workload})).mod["main"]
        if task.kind == "gemm" and task.window is None:  # (a gathered conv: the C comparison below)
            gm = pointwise.match_gemm(g, op)
            assert space.describe(func) == "{}x{}".format(*pointwise.choose_tile(gm.pixels, gm.co))
        elif task.kind == "depthwise":
            assert space.describe(func).startswith(f"tile {depthwise.tile_width(task.dw.geo)}")
        emit_c(sub, str(tmp_path / "default"))
        emit_c(sub, str(tmp_path / "seeded"), tuned={step.name: task.kernel(func, step)})
        names = {op.name: space.OUT if task.kind == "gemm" else space.DW}
        if len(step.ops) > 1:  # the residual add's block
            names = {g.ops[step.ops[1]].name: space.ADD, **names}

        assert _renamed(tmp_path / "seeded", names) == _renamed(tmp_path / "default", names)


@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_tune_then_compile_with_records_is_bit_exact_on_the_board(tmp_path):
    from tvm_patchnet.deploy import compile_model, run_model
    from tvm_patchnet.tune import tune_model

    g = _model()
    records = tmp_path / "tune.jsonl"
    rep = tune_model(g, "qemu-m4", trials=8, records=str(records))
    assert len(rep.tasks) == 4 and all(0 < t.best_count <= t.default_count for t in rep.tasks), rep
    assert (rep.defaults, rep.seeds) == (4, 1), rep  # the gathered conv's full unroll (27 steps) is the one seed
    lines = records.read_text().splitlines()
    assert len(lines) >= 4 + 1 + 2 and all(json.loads(ln) for ln in lines)  # the defaults, the seed, then trials
    # again: it resumes from the records (the best so far stays), the defaults are not seeded twice
    rep2 = tune_model(g, "qemu-m4", trials=4, records=str(records), workers=2)  # two at a time
    assert all(b.best_count <= a.best_count for a, b in zip(rep.tasks, rep2.tasks))
    assert rep2.seeds == 0  # recorded already
    assert len(records.read_text().splitlines()) > len(lines)
    from tvm_patchnet.tune import _database, _workload

    db = _database(str(records), create=False)
    for task in space.tasks(plan_execution(g)):  # each default schedule recorded once
        mod = _workload(task, "qemu-m4")
        default = task.default_schedule(mod).trace.as_python()
        recs = db.get_top_k(db.commit_workload(mod), 1 << 20)
        assert sum(r.trace.as_python() == default for r in recs) == 1, task.name
    from tvm_patchnet.tune import tuned_kernels

    assert tuned_kernels(g, None, "qemu-m7", str(records))[1:] == (0, 4)  # another board's records: none apply
    res = compile_model(g, str(tmp_path / "m.tar"), tuning_records=str(records))
    assert res.metadata["tuning"] == {"records": "tune.jsonl", "tuned": 4, "tunable": 4}
    assert run_model(str(tmp_path / "m.tar"), check=True).reference_match


@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_a_killed_tune_keeps_every_record(capsys, tmp_path):
    from tests.conftest import model_path

    model = model_path("mlperftiny_kws_ref_model.tflite")
    records = tmp_path / "tune.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tvm_patchnet.cli.main", "tune", model, "--trials", "200",
                             "--records", str(records)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (not records.exists() or len(records.read_text().splitlines()) < 6) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "patchnet tune: interrupted", err
    lines = records.read_text().splitlines()
    assert len(lines) >= 6 and all(json.loads(ln) for ln in lines)  # whole lines only
    code, out, _ = run_cli(capsys, "compile", model, "--tuning-records", str(records), "-o", str(tmp_path / "k.tar"))
    m = re.search(r"(\d+) of (\d+) tunable kernels tuned", out)
    assert code == 0 and m and m.group(1) == m.group(2), out  # each has its seeded default at least


def test_bad_records_are_one_line(capsys, tmp_path):
    """A records file that is not MetaSchedule's, or none at all: one line, no archive written."""
    g_path = str(tmp_path / "m.tar")
    (tmp_path / "bad.jsonl").write_text("garbage\n")
    (tmp_path / "bad.workloads.jsonl").write_text("junk\n")
    from tests.cli.test_cli import _one_line_error
    from tests.conftest import model_path

    model = model_path("mlperftiny_kws_ref_model.tflite")
    line = _one_line_error(capsys, "compile", model, "--tuning-records", str(tmp_path / "bad.jsonl"), "-o", g_path)
    assert "bad.jsonl: not tuning records from 'patchnet tune'" in line
    line = _one_line_error(capsys, "compile", model, "--tuning-records", str(tmp_path / "none.jsonl"), "-o", g_path)
    assert "no such tuning records" in line
    assert "a .jsonl file" in _one_line_error(capsys, "tune", model, "--records", str(tmp_path / "t.txt"))
    assert not (tmp_path / "m.tar").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_tune_through_an_rpc_tracker_and_two_workers_on_loopback(capsys, tmp_path):
    """TVM's tracker and two ``patchnet micro serve`` workers: the candidates are measured by
    both, the records are written here, and they compile."""
    from tests.conftest import model_path
    from tvm_patchnet.tune.workers import registered

    model = model_path("mlperftiny_kws_ref_model.tflite")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1), "--silent"])]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the tracker is up
            try:
                registered("127.0.0.1", port, "qemu-m4")
                break
            except Exception:  # noqa: BLE001 - not yet listening
                time.sleep(0.5)
        for i, log in enumerate(logs):
            procs.append(subprocess.Popen([sys.executable, "-m", "tvm_patchnet.cli.main", "micro", "serve", "--tracker",
                                           f"127.0.0.1:{port}", "--key", "qemu-m4", "--port", str(_free_port())],
                                          stdout=log.open("w"), stderr=subprocess.STDOUT))
        while registered("127.0.0.1", port, "qemu-m4") < 2 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.5)
        records = tmp_path / "tune.jsonl"
        code, out, err = run_cli(capsys, "tune", model, "--trials", "8", "--records", str(records), "--rpc-tracker",
                                 f"127.0.0.1:{port}")
        assert code == 0 and "on 2 workers of 127.0.0.1" in out, (out, err)
        served = [re.findall(r"tvmgen_default_\w+: [\d,]+", log.read_text()) for log in logs]
        assert all(served) and sum(map(len, served)) >= 6 + 8, served  # the 6 defaults, then the trials
        assert len(records.read_text().splitlines()) >= 6 + 8
        code, out, _ = run_cli(capsys, "compile", model, "--tuning-records", str(records), "-o", str(tmp_path / "k.tar"))
        assert code == 0 and "6 of 6 tunable kernels tuned" in out, out
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_worker_options_are_one_line(capsys):
    from tests.cli.test_cli import _one_line_error
    from tests.conftest import model_path

    model = model_path("tflm_hello_world_int8.tflite")
    port = _free_port()
    line = _one_line_error(capsys, "tune", model, "--rpc-tracker", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}: no RPC tracker answers" in line and "python -m tvm.exec.rpc_tracker" in line
    assert "give HOST:PORT" in _one_line_error(capsys, "tune", model, "--rpc-tracker", "localhost")
    assert "--rpc-key needs --rpc-tracker" in _one_line_error(capsys, "tune", model, "--rpc-key", "qemu-m4")
    assert "--workers must be >= 1" in _one_line_error(capsys, "tune", model, "--workers", "0")
    assert "no RPC tracker answers" in _one_line_error(capsys, "micro", "serve", "--tracker", f"127.0.0.1:{port}")
