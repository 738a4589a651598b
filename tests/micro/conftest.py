"""Fixtures for the board tests: the stand-in model and projects built once per test session; a
session with a fake serial board."""

from __future__ import annotations

import os
import shutil

import pytest
import serial

from tvm_patchnet import micro
from tvm_patchnet.micro.transport import SerialTransport

from .fake_device import FakeDevice, FakeSerial
from .standin import write_standin

NEEDS_GCC = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("make") is None,
                               reason="arm-none-eabi-gcc / make not installed")
NEEDS_QEMU = pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> str:
    """codegen/ folder of the default stand-in: 48 B in, 100 B out, 256 B arena."""
    return write_standin(str(tmp_path_factory.mktemp("standin") / "codegen"))


@pytest.fixture(scope="session")
def built(tmp_path_factory, standin):
    """built(board, memory_map=None, **options) -> project dir, built once per session."""
    cache = {}

    def get(board, memory_map=None, **options):
        key = (board, memory_map, tuple(sorted(options.items())))
        if key not in cache:
            d = str(tmp_path_factory.mktemp(board) / "proj")
            micro.create_project(standin, board, d, memory_map=memory_map, **options)
            micro.build(d)
            cache[key] = d
        return cache[key]

    return get


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """A PATH holding only fake openocd/st-flash scripts that log their arguments.
    Returns (bin_dir, log_file); FAKE_RC / FAKE_MSG set their exit code and message."""
    bin_dir, log = tmp_path / "bin", tmp_path / "flash.log"
    bin_dir.mkdir()
    for tool in ("openocd", "st-flash"):
        p = bin_dir / tool
        p.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n[ -n "$FAKE_MSG" ] && echo "$FAKE_MSG" >&2\n'
                     'exit ${FAKE_RC:-0}\n')
        p.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin:/bin")
    return bin_dir, log


@pytest.fixture
def fake(monkeypatch):
    """Session over SerialTransport whose serial.Serial is a FakeSerial around a FakeDevice."""
    monkeypatch.setattr(serial, "Serial", FakeSerial)
    FakeSerial.opened = []

    def make(**kw):
        FakeSerial.device = FakeDevice(**kw)
        t = SerialTransport("/dev/fake0", 921600)
        t.open()
        return micro.Session(transport=t, timeout=0.2, retries=2, name="nucleo-f412zg"), FakeSerial.device

    return make
