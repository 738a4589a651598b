"""Byte streams to a board: QEMU's serial port on a pipe, or a Nucleo's ST-LINK virtual COM port.

A transport only moves bytes; framing, CRC and retries are in rpc.py.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time

from .errors import BoardNotFound, ToolNotFound, TransportError

STLINK_USB_VID = 0x0483  # STMicroelectronics: the ST-LINK/V2-1 and V3 on Nucleo boards


class Transport:
    """Interface: open, write all bytes, read what has arrived (waiting up to timeout), close."""

    def open(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes, timeout: float) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Up to n bytes; b"" if nothing arrived within timeout seconds."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


class QemuTransport(Transport):
    """Runs ``qemu-system-arm -M <machine> -nographic -kernel fw.elf`` with the first UART on
    stdin/stdout (the monitor is disabled, so bytes pass through unescaped) and, when plugin
    args are given, the instruction-count plugin. QEMU's stderr goes to ``log_path``."""

    def __init__(self, machine: str, elf: str, plugin: str | None = None, plugin_args: dict | None = None,
                 icount: str | None = "shift=0", log_path: str | None = None):
        self.machine, self.elf, self.plugin, self.plugin_args = machine, elf, plugin, plugin_args or {}
        self.icount, self.log_path = icount, log_path or os.devnull
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        exe = shutil.which("qemu-system-arm")
        if exe is None:
            raise ToolNotFound("qemu-system-arm not found on PATH (apt-get install qemu-system-arm)")
        cmd = [exe, "-M", self.machine, "-nographic", "-monitor", "none", "-serial", "stdio", "-kernel", self.elf]
        if self.icount:
            cmd += ["-icount", self.icount]  # deterministic virtual time: 1 ns per instruction
        if self.plugin:
            cmd += ["-plugin", ",".join([self.plugin] + [f"{k}={v}" for k, v in self.plugin_args.items()])]
        return cmd

    def open(self) -> None:
        cmd = self.command()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- open as long as QEMU runs; closed in close()
        prctl = _prctl()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     preexec_fn=(lambda: prctl(1, signal.SIGTERM)) if prctl else None)  # noqa: PLW1509

    def _died(self) -> TransportError:
        rc = self.proc.wait(timeout=5)
        tail = ""
        if self.log_path != os.devnull:
            self._log.flush()
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            # QEMU's own complaint ("qemu-system-arm: ...") beats the hints printed after it
            own = [ln for ln in lines if ln.startswith("qemu-system-arm:") and "terminating on signal" not in ln]
            tail = f": {(own or lines)[0 if own else -1]}" if lines else ""
        return TransportError(f"QEMU ({self.machine}) exited with code {rc}{tail}")

    def write(self, data: bytes, timeout: float) -> None:
        """All of data; TransportError if QEMU exited or took none of it for timeout s (a stopped
        emulator with a full pipe)."""
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            _, ready, _ = select.select([], [fd], [], max(timeout, 0))
            if not ready:
                if self.proc.poll() is not None:
                    raise self._died()
                raise TransportError(f"QEMU ({self.machine}) took no input for {timeout:g} s (stopped?)")
            try:
                view = view[os.write(fd, view):]
            except OSError:  # EPIPE: QEMU exited
                raise self._died() from None

    def read(self, n: int, timeout: float) -> bytes:
        """Up to n bytes; b"" after timeout s. QEMU's exit ends the wait at once (end of file on
        its stdout) and raises TransportError; the process is also polled every second, in case
        something else holds the pipe open."""
        fd, end = self.proc.stdout.fileno(), time.monotonic() + max(timeout, 0)
        while not select.select([fd], [], [], min(max(end - time.monotonic(), 0), 1.0))[0]:
            if self.proc.poll() is not None:
                raise self._died()
            if time.monotonic() >= end:
                return b""
        data = os.read(fd, n)
        if not data:
            raise self._died()
        return data

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)  # a stopped QEMU acts on SIGTERM only once continued
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self._log.close()
            self.proc = None


def _prctl():
    """Linux prctl, looked up before fork (the child only calls it): QEMU gets PR_SET_PDEATHSIG
    (1) = SIGTERM, so it dies with a Python process that never called close(); the busy-polling
    firmware would otherwise keep the emulator spinning at 100% CPU. (It fires when the *thread*
    that started QEMU exits: keep a Session in a thread that outlives it.)"""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


def find_stlink_port(serial_number: str | None = None) -> str:
    """The serial device of the one connected ST-LINK (or the one with ``serial_number``)."""
    from serial.tools import list_ports

    ports = [p for p in list_ports.comports() if p.vid == STLINK_USB_VID]
    if serial_number:
        ports = [p for p in ports if p.serial_number == serial_number]
    if not ports:
        which = f" with serial number {serial_number}" if serial_number else ""
        raise BoardNotFound(f"no ST-LINK virtual COM port{which} found (USB VID 0483): connect the Nucleo "
                            "or pass serial_port=")
    if len(ports) > 1:
        raise BoardNotFound("several ST-LINK ports found (" + ", ".join(p.device for p in ports)
                            + "): pass serial_port= or serial_number=")
    return ports[0].device


class SerialTransport(Transport):
    """pyserial port (8N1). ``port=None`` finds the ST-LINK virtual COM port."""

    def __init__(self, port: str | None, baud: int = 115200, serial_number: str | None = None):
        self.port, self.baud, self.serial_number = port, baud, serial_number
        self.ser = None

    def open(self) -> None:
        try:
            import serial
        except ImportError:
            raise ToolNotFound("pyserial is not installed (pip install pyserial)") from None
        port = self.port or find_stlink_port(self.serial_number)
        try:
            self.ser = serial.Serial(port, self.baud, timeout=0)
        except serial.SerialException as e:
            raise BoardNotFound(f"cannot open serial port {port}: {e}") from None
        self.ser.reset_input_buffer()

    def write(self, data: bytes, timeout: float) -> None:
        import serial

        self.ser.write_timeout = timeout
        try:
            self.ser.write(data)
            self.ser.flush()
        except serial.SerialException as e:
            raise TransportError(f"serial port {self.ser.port}: {e}") from None

    def read(self, n: int, timeout: float) -> bytes:
        import serial

        try:
            self.ser.timeout = max(timeout, 0)
            first = self.ser.read(1)  # blocks up to timeout
            if not first or n == 1:
                return first
            return first + self.ser.read(min(n - 1, self.ser.in_waiting))
        except serial.SerialException as e:
            raise TransportError(f"serial port {self.ser.port}: {e}") from None

    def close(self) -> None:
        if self.ser is not None:
            self.ser.close()
            self.ser = None
