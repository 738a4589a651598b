"""Board-side errors. All are PatchnetError, so the CLI prints them as one line (exit code 2)."""

from __future__ import annotations

from ..errors import PatchnetError


class MicroError(PatchnetError):
    """Building, flashing or talking to a board failed."""


class ToolNotFound(MicroError):
    """A required program (arm-none-eabi-gcc, make, qemu-system-arm, openocd/st-flash) is missing."""


class BoardNotFound(MicroError):
    """No board or serial port answered at the USB/OS level."""


class DoesNotFit(MicroError):
    """The firmware needs more SRAM or flash than the board (or memory map) has."""


class TransportError(MicroError):
    """The byte stream to the board broke (QEMU exited, serial port vanished)."""


class DeviceNotAnswering(MicroError):
    """The board did not answer a request after all retries."""


class CrcError(MicroError):
    """Frames kept arriving corrupted after all retries."""


class DeviceFault(MicroError):
    """The firmware reported a CPU fault (then reset itself)."""


class ModelError(MicroError):
    """tvmgen_default_run returned a non-zero code."""
