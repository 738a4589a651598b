"""SIGINT and SIGTERM at several points of ``compile`` and ``run``, and a frozen board: one line ("interrupted" /
"terminated"), exit 130 / 143, and nothing left behind: no temp folder, no child process (make,
gcc, QEMU), no partial output. Each point is reached by watching the process, not by sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.cli.test_cli import PROGRESS_LINE
from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU

PATCHNET = [sys.executable, "-m", "tvm_patchnet.cli.main"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def slow_archive(tmp_path_factory):
    """A model whose run spends seconds in make and in QEMU: MobileNetV2-w0.35 r144, 2x2 patches."""
    from tvm_patchnet.deploy import compile_model

    path = tmp_path_factory.mktemp("signals") / "mbv2.tar"
    compile_model("mbv2-w0.35-r144", str(path), patches=2, split=3)
    return str(path)


def _start(args, tmp):
    """patchnet in folder ``tmp`` with TMPDIR ``tmp/tmp``: stray output shows in the first,
    temp folders in the second."""
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "PYTHONPATH": ROOT}
    return subprocess.Popen(PATCHNET + args, cwd=str(tmp), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _descendants(proc) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []


def _wait_for(proc, ready, what, limit=120.0):
    """Poll until ``ready()`` holds while patchnet runs."""
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"patchnet ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} never happened")
        time.sleep(0.02)


def _alive(procs) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.name()} ({p.pid})")
        except psutil.NoSuchProcess:
            pass
    return out


def _interrupt_and_check(proc, sig, tmp):
    kids = _descendants(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    word = "terminated" if sig == signal.SIGTERM else "interrupted"
    assert err.strip().splitlines()[-1].endswith(f": {word}"), err
    assert "Traceback" not in err, err
    time.sleep(0.2)
    assert not _alive(kids), f"children left running: {_alive(kids)}"
    assert os.listdir(tmp) == ["tmp"], f"partial output: {os.listdir(tmp)}"
    assert not os.listdir(tmp / "tmp"), f"temp folders left: {os.listdir(tmp / 'tmp')}"


@pytest.fixture
def tmp(tmp_path):
    (tmp_path / "tmp").mkdir()
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("point", ["loading TVM", "code generation"])
def test_signal_during_compile(tmp, sig, point):
    proc = _start(["compile", "mbv2-w0.35-r144", "--patches", "2", "--split", "3", "-o", "m.tar"], tmp)
    if point == "loading TVM":  # the subcommand imports TVM's shared library
        _wait_for(proc, lambda: _maps(proc, "libtvm"), point)
    else:  # the compile's temp folder exists: TVM is lowering and emitting kernels
        _wait_for(proc, lambda: any(n.startswith("patchnet-compile-") for n in os.listdir(tmp / "tmp")), point)
        time.sleep(0.5)
    _interrupt_and_check(proc, sig, tmp)


@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("point", ["board build", "emulator"])
def test_signal_during_run(tmp, slow_archive, sig, point):
    proc = _start(["run", slow_archive], tmp)
    name = {"board build": "cc1", "emulator": "qemu-system-arm"}[point]
    _wait_for(proc, lambda: any(_name(k) == name for k in _descendants(proc)), point)
    time.sleep(0.3)
    _interrupt_and_check(proc, sig, tmp)


def _maps(proc, lib: str) -> bool:
    try:
        return any(lib in m.path for m in psutil.Process(proc.pid).memory_maps())
    except psutil.Error:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.slow
def test_stalled_board_is_one_line_within_the_timeout(tmp, slow_archive):
    """The emulator frozen (SIGSTOP) mid-session: `run --timeout 4` ends in one line naming the
    request and the wait, long before the default limit, and leaves no QEMU behind."""
    proc = _start(["run", slow_archive, "--timeout", "4"], tmp)
    _wait_for(proc, lambda: any(_name(k) == "qemu-system-arm" for k in _descendants(proc)), "emulator")
    time.sleep(1.5)  # uploading the 62 KB input or running: either request must end in one line
    qemu = [k for k in _descendants(proc) if _name(k) == "qemu-system-arm"]
    for q in qemu:
        q.suspend()
    start = time.monotonic()
    _, err = proc.communicate(timeout=60)
    # one line, after the progress lines of what ran before (the build took long)
    lines = [ln for ln in err.strip().splitlines() if not PROGRESS_LINE.search(ln)]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("patchnet run: error: "), err
    assert "board stalled: RUN sent" in err or "not answering" in err, err
    assert time.monotonic() - start < 20
    time.sleep(0.2)
    assert not _alive(qemu)
