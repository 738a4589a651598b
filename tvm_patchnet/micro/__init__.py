"""Run and measure generated C models on boards: QEMU Cortex-M4/M7 (default) and STM32 Nucleos.

    from tvm_patchnet import micro
    micro.create_project("out/codegen", "qemu-m4", "out/proj", memory_map="nucleo-f412zg")
    micro.build("out/proj")                  # MemoryReport; DoesNotFit if the link overflows
    with micro.Session("out/proj") as s:     # starts QEMU (or opens the ST-LINK serial port)
        s.set_input(x); st = s.run(10); y = s.get_output()
        st.per_run, st.counter               # e.g. 81234.0 "instructions" (QEMU) / "cycles" (Nucleo)
        s.check_fit()                        # .data + .bss + peak stack against the SRAM budget
        s.profile().kernels()                # per kernel call (a project made with profile=True)
    y, st, mem = micro.measure("out/proj", x, n=10)  # the same in one call

Sizes are bytes. On QEMU counts are executed instructions (exact, never cycles); on Nucleo boards
DWT cycles. Board templates and firmware: microtvm_projects/.
"""

from .errors import (
    BoardNotFound,
    BuildFailed,
    CrcError,
    DeviceFault,
    DeviceNotAnswering,
    DoesNotFit,
    MicroError,
    ModelError,
    ToolNotFound,
    TransportError,
)
from .memory import MemoryReport, memory_report
from .project import board_info, build, create_project, flash, list_boards, memory
from .session import DeviceInfo, ProfileMarks, RunStats, Session, measure

__all__ = [
    "BoardNotFound", "BuildFailed", "CrcError", "DeviceFault", "DeviceInfo", "DeviceNotAnswering", "DoesNotFit", "MemoryReport",
    "MicroError", "ModelError", "ProfileMarks", "RunStats", "Session", "ToolNotFound", "TransportError", "board_info", "build",
    "create_project", "flash", "list_boards", "measure", "memory", "memory_report",
]
