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
    """The firmware needs more SRAM or flash than the board (or memory map) has: by
    ``sram_excess`` / ``flash_excess`` bytes (0: that memory fits or was not checked)."""

    def __init__(self, message: str, sram_excess: int = 0, flash_excess: int = 0):
        self.sram_excess, self.flash_excess = sram_excess, flash_excess
        super().__init__(message)


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


class BuildFailed(MicroError):
    """The board build failed (not for lack of memory): the first compiler diagnostics, one per
    line, then where make's full output is (``log_path``)."""

    def __init__(self, label: str, diagnostics: list[str], log_path: str, hint: str = ""):
        self.label, self.diagnostics, self.log_path = label, diagnostics, log_path
        lines = [f"{label}: build failed:", *(f"  {d}" for d in diagnostics), f"  full log: {log_path}{hint}"]
        super().__init__("\n".join(lines))


class BoardStalled(DeviceNotAnswering):
    """A RUN or CALIBRATE got no result within its timeout (a hung board, or a slower run than allowed)."""


class BoardReset(MicroError):
    """The board reset during the session (its input and output are gone), so a request was refused."""


class ProtocolMismatch(MicroError):
    """The firmware speaks another RPC protocol version than the host: rebuild the project."""
