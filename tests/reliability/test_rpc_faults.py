"""RPC under injected faults (faults.py): every run returns the reference output or fails with a
one-line PatchnetError (a MicroError), never a wrong output and never another exception.

The stand-in models here consume their input in place, as a real model's arena may: a second
run on the same arena gives input + 2, so a retried RUN that ran twice shows as a wrong output.
The real firmware runs on QEMU for the reproductions of issue 15 (defect 3: a retried RUN ran
again on consumed input; defect 4: a hung board waited 600 s); the soaks run hundreds of requests
with random faults over the fake device and a few dozen over QEMU.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import numpy as np
import pytest
import serial

from microtvm_projects.project_api import ProjectAPIHandler
from tvm_patchnet import micro
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.micro.errors import BoardReset, BoardStalled, TransportError
from tvm_patchnet.micro.rpc import CMD_FAULT, CMD_RUN, ST_OK, ST_STARTED
from tvm_patchnet.micro.session import Session
from tvm_patchnet.micro.transport import SerialTransport

from ..micro.conftest import NEEDS_GCC, NEEDS_QEMU
from ..micro.fake_device import FakeDevice, FakeSerial
from ..micro.standin import expected_output, write_standin
from .faults import DOWN, NO_FAULTS, UP, Faults, FaultyTransport, Rule

X = (np.arange(48) - 20).astype(np.int8)
TRAP = 127  #: a run on an input starting with this byte faults (the board reports it and resets)
SLOW_SPIN = 60_000_000  #: busy-loop iterations of the slow stand-in: a run of about 1 s on QEMU


def assert_one_line(e: BaseException) -> None:
    assert isinstance(e, micro.MicroError) and isinstance(e, PatchnetError), repr(e)
    assert str(e) and "\n" not in str(e), repr(e)


def run_once(s: Session, x: np.ndarray = X, **kw) -> np.ndarray:
    s.set_input(x)
    s.run(1, **kw)
    return s.get_output()


def soak(s: Session, rng: np.random.Generator, iterations: int) -> tuple[int, list[str]]:
    """set_input / run / get_output with random inputs: (runs that returned, errors)."""
    good, errors = 0, []
    for _ in range(iterations):
        x = rng.integers(-128, 127, 48, dtype=np.int8)
        x[0] = min(x[0], TRAP - 1)
        try:
            y = run_once(s, x)
        except PatchnetError as e:
            assert_one_line(e)
            errors.append(str(e))
            continue
        np.testing.assert_array_equal(y, expected_output(x, 100))
        good += 1
    return good, errors


# -- the fake device (no QEMU) -------------------------------------------------------------
@pytest.fixture
def fake_session(monkeypatch):
    """make(seed, up, down, rules, **session options) -> (Session over FaultyTransport over the
    fake serial port, FakeDevice with consume=True, FaultyTransport). The fake drops a partial
    frame after 20 ms without bytes, in proportion to the firmware's 200 ms and the host's 2 s."""
    monkeypatch.setattr(serial, "Serial", FakeSerial)
    sessions = []

    def make(seed=0, up=NO_FAULTS, down=NO_FAULTS, rules=(), **kw):
        FakeSerial.device = dev = FakeDevice(consume=True, byte_timeout=0.02)
        inner = SerialTransport("/dev/fake0", 921600)
        inner.open()
        t = FaultyTransport(inner, seed, up, down, rules, reset=dev.reset)
        kw = {"timeout": 0.03, "retries": 3, "run_timeout": 0.5, "name": "fake", **kw}
        sessions.append(s := Session(transport=t, **kw))
        return s, dev, t

    yield make
    for s in sessions:
        s.close()


def test_soak_fake_device(fake_session):
    """Hundreds of requests, a quarter of the frames hit in each direction, stalls and resets."""
    up = Faults(corrupt=0.06, drop=0.06, duplicate=0.05, truncate=0.04, delay=0.05, delay_s=0.1, stall=0.01,
                stall_s=0.8, reset=0.01)
    down = Faults(corrupt=0.06, drop=0.06, duplicate=0.05, truncate=0.04, delay=0.05, delay_s=0.1)
    s, dev, t = fake_session(seed=15, up=up, down=down)
    good, errors = soak(s, np.random.default_rng(15), 200)
    assert dev.requests >= 600 and t.log.total() >= 200, (dev.requests, t.log.counts)
    assert {a for _, a in t.log.counts} == {"corrupt", "drop", "duplicate", "truncate", "delay", "stall", "reset"}
    assert good >= 100, errors
    assert dev.executed <= 200  # one RUN request per iteration, and none ran twice


@pytest.mark.parametrize("rule", [Rule(UP, CMD_RUN, "stall", seconds=0.2), Rule(UP, CMD_RUN, "duplicate"),
                                  Rule(DOWN, CMD_RUN | 0x80, "drop", status=ST_STARTED),
                                  Rule(DOWN, CMD_RUN | 0x80, "drop", status=ST_OK),
                                  Rule(DOWN, CMD_RUN | 0x80, "corrupt", status=ST_OK),
                                  Rule(DOWN, CMD_RUN | 0x80, "truncate", status=ST_OK),
                                  Rule(DOWN, CMD_RUN | 0x80, "delay", status=ST_OK, seconds=0.3)],
                         ids=lambda r: f"{r.direction}-{r.action}")
def test_fake_run_survives_and_runs_once(fake_session, rule):
    s, dev, _ = fake_session(rules=[rule])
    np.testing.assert_array_equal(run_once(s), expected_output(X, 100))
    assert dev.executed == 1 and rule.count == 0
    s.run(1)  # a second run sees the input the first one consumed, once
    np.testing.assert_array_equal(s.get_output(), expected_output(X + 1, 100))


def test_fake_stalled_board(fake_session):
    s, _, _ = fake_session(rules=[Rule(DOWN, CMD_RUN | 0x80, "delay", status=ST_OK, seconds=5)])
    t0 = time.monotonic()
    with pytest.raises(BoardStalled) as e:
        run_once(s, timeout=0.4)
    assert_one_line(e.value)
    assert re.fullmatch(r"fake: board stalled: RUN sent 0\.\d s ago, no result \(timeout 0\.4 s; raise it with "
                        r"--timeout\)", str(e.value)), str(e.value)
    assert time.monotonic() - t0 < 1.5


# -- the real firmware on QEMU ---------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """project(kind) -> a built qemu-m4 project of a consuming stand-in: "fast", or "slow" (a run
    of about 1 s); both fault on input[0] == TRAP."""
    cache = {}

    def get(kind: str) -> str:
        if kind not in cache:
            root = tmp_path_factory.mktemp(f"consume-{kind}")
            cg = write_standin(str(root / "cg"), consume=True, trap_on=TRAP, spin=SLOW_SPIN if kind == "slow" else 0)
            cache[kind] = micro.create_project(cg, "qemu-m4", str(root / "p"))
            micro.build(cache[kind])
        return cache[kind]

    return get


@contextmanager
def faulty_qemu(project_dir: str, seed: int = 0, up: Faults = NO_FAULTS, down: Faults = NO_FAULTS, rules=(), **kw):
    """(Session, FaultyTransport) on QEMU; stalls SIGSTOP the emulator."""
    h = ProjectAPIHandler.for_project(project_dir)
    h.open_transport()
    t = FaultyTransport(h.transport, seed, up, down, rules, pid=h.transport.proc.pid)
    with Session(transport=t, name=h.label, **kw) as s:
        yield s, t


ISSUE_15_DEFECT_3 = {  # name: (rules, project kind, short-request timeout in s)
    "stall 2.5 s after the RUN request": (lambda: [Rule(UP, CMD_RUN, "stall", seconds=2.5)], "fast", 2.0),
    "lost STARTED frame": (lambda: [Rule(DOWN, CMD_RUN | 0x80, "drop", status=ST_STARTED)], "slow", 0.3),
    "corrupted RUN result frame": (lambda: [Rule(DOWN, CMD_RUN | 0x80, "corrupt", status=ST_OK)], "fast", 2.0),
    "duplicated RUN request": (lambda: [Rule(UP, CMD_RUN, "duplicate")], "fast", 2.0),
}


@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.parametrize("case", list(ISSUE_15_DEFECT_3))
def test_retried_run_runs_once_on_qemu(project, case):
    """Before protocol 2 the host re-sent RUN with a new seq and the board ran it again on the
    input the first run had consumed: `patchnet run` printed that output with exit 0."""
    rules, kind, timeout = ISSUE_15_DEFECT_3[case]
    with faulty_qemu(project(kind), rules=rules(), timeout=timeout) as (s, t):
        np.testing.assert_array_equal(run_once(s), expected_output(X, 100))
        assert sum(t.log.counts.values()) == 1
        s.run(1)  # the arena now holds X + 1 if (and only if) the first RUN ran once
        np.testing.assert_array_equal(s.get_output(), expected_output(X + 1, 100))


@NEEDS_GCC
@NEEDS_QEMU
def test_board_reset_during_run_is_an_error_on_qemu(project):
    """The run faults and the board resets, but STARTED and the FAULT frame are lost: the
    retried RUN reaches a board with an empty arena. It must be refused, not run on zeros."""
    rules = [Rule(DOWN, CMD_RUN | 0x80, "drop", status=ST_STARTED), Rule(DOWN, CMD_FAULT, "drop")]
    with faulty_qemu(project("fast"), rules=rules, timeout=0.5) as (s, _):
        x = X.copy()
        x[0] = TRAP
        with pytest.raises(BoardReset) as e:
            run_once(s, x)
        assert_one_line(e.value)
        assert str(e.value) == ("qemu-m4: the board reset during the session: RUN refused (its input and output "
                                "are gone)")
        with pytest.raises(BoardReset, match="GET_OUTPUT refused"):
            s.get_output()
        np.testing.assert_array_equal(run_once(s), expected_output(X, 100))  # a new input: back in business


@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.parametrize("how", ["run", "run_each", "session"])
def test_stalled_board_is_a_one_line_error_on_qemu(project, how):
    """SIGSTOP the emulator during RUN: the host gives up after the RUN timeout (issue 15, defect 4)."""
    stop = [Rule(DOWN, CMD_RUN | 0x80, "stall", status=ST_STARTED, seconds=600)]
    with faulty_qemu(project("slow"), rules=stop, run_timeout=2 if how == "session" else 600) as (s, t):
        s.set_input(X)
        t0 = time.monotonic()
        with pytest.raises(BoardStalled) as e:
            if how == "run_each":
                s.run_each(X, 1, timeout=2)
            else:
                s.run(1, **({"timeout": 2} if how == "run" else {}))
        waited = time.monotonic() - t0
        assert t.stopped and 2 <= waited < 5
    assert_one_line(e.value)
    assert re.fullmatch(r"qemu-m4: board stalled: RUN sent 2\.\d s ago, no result \(timeout 2 s; raise it with "
                        r"--timeout\)", str(e.value)), str(e.value)


@NEEDS_GCC
@NEEDS_QEMU
def test_qemu_exit_during_a_long_wait_is_noticed_at_once(project):
    kill = [Rule(DOWN, CMD_RUN | 0x80, "kill", status=ST_STARTED)]
    with faulty_qemu(project("slow"), rules=kill, run_timeout=600) as (s, _):
        s.set_input(X)
        t0 = time.monotonic()
        with pytest.raises(TransportError) as e:
            s.run(1)
        assert time.monotonic() - t0 < 3
    assert_one_line(e.value)
    assert str(e.value).startswith("QEMU (mps2-an386) exited with code -9")


@NEEDS_GCC
@NEEDS_QEMU
def test_soak_qemu(project):
    """Random faults both ways and SIGSTOP stalls of up to 1 s on the real firmware."""
    up = Faults(corrupt=0.05, drop=0.05, duplicate=0.05, truncate=0.05, delay=0.05, delay_s=0.4, stall=0.05,
                stall_s=1.0)
    down = Faults(corrupt=0.05, drop=0.05, duplicate=0.05, truncate=0.05, delay=0.05, delay_s=0.4)
    with faulty_qemu(project("fast"), seed=15, up=up, down=down, timeout=0.3, run_timeout=1.0) as (s, t):
        good, errors = soak(s, np.random.default_rng(15), 30)
    assert good >= 15 and t.log.total() >= 20, (good, errors, t.log.counts)
