"""Progress (``tvm_patchnet.progress``): silent unless enabled; on a non-terminal, plain lines
only for work that takes long (a quick step and a quick error stay silent); none with -q."""

from __future__ import annotations

import io
import time

import pytest

from tvm_patchnet import progress


@pytest.fixture
def stream(monkeypatch):
    monkeypatch.setattr(progress, "LONG_S", 0.05)
    s = io.StringIO()
    progress.enable(s)
    yield s
    progress.disable()


def test_quick_work_prints_nothing(stream):
    with progress.task("scheduling kernels", 3, "kernels") as advance:
        advance()
    assert stream.getvalue() == ""


def test_long_work_says_what_runs_and_how_long(stream):
    with progress.task("building the firmware for qemu-m4"):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "building the firmware for qemu-m4 ..."
    assert lines[1].startswith("building the firmware for qemu-m4: done in ") and len(lines) == 2


def test_failed_work_does_not_say_done(stream):
    with pytest.raises(RuntimeError), progress.task("running on qemu-m4"):
        time.sleep(0.2)
        raise RuntimeError("board gone")
    assert "done" not in stream.getvalue()


def test_disabled_by_default(capsys, monkeypatch):
    """Python API users get no output they did not ask for."""
    monkeypatch.setattr(progress, "LONG_S", 0.01)
    progress.disable()
    with progress.task("x", 5) as advance:
        time.sleep(0.1)
        advance(5)
    assert capsys.readouterr() == ("", "")


def test_the_cli_shows_progress_unless_quiet(capsys, monkeypatch):
    from tvm_patchnet.cli.main import main

    seen = []
    monkeypatch.setattr(progress, "enable", lambda stream=None: seen.append("on"))
    main(["profile", "tflm_hello_world_int8.tflite", "--list"])
    main(["-q", "profile", "--list"])
    assert seen == ["on"]


def test_silenced_inside(stream):
    with progress.silenced(), progress.task("a candidate's steps"):
        time.sleep(0.2)
    with progress.task("the tuning"):
        time.sleep(0.2)
    assert stream.getvalue().splitlines()[0] == "the tuning ..."


def test_silenced_is_per_thread(stream):
    """A worker thread's silenced candidate leaves the main thread's progress on."""
    import threading

    inside, leave = threading.Event(), threading.Event()

    def worker():
        with progress.silenced():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    with progress.task("the tuning"):
        time.sleep(0.2)
    leave.set()
    t.join()
    assert stream.getvalue().splitlines()[0] == "the tuning ..."
