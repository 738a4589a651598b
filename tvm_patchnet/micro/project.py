"""Create, build and flash board projects (thin layer over microtvm_projects/project_api.py).

These are the library functions behind the ``patchnet micro`` commands.
"""

from __future__ import annotations

import os

from .memory import MemoryReport, memory_report


def _api():
    from microtvm_projects import project_api  # imported late: it imports this package

    return project_api


def list_boards() -> list[str]:
    """Board templates: qemu-m4, qemu-m7, nucleo-f412zg, nucleo-f746zg, nucleo-h743zi."""
    return _api().list_boards()


def board_info(board: str) -> dict:
    """server_info_query of a template: its board.json and the project options."""
    return _api().ProjectAPIHandler(board).server_info_query()


def create_project(codegen_dir: str, board: str, project_dir: str, memory_map: str | None = None,
                   **options) -> str:
    """Copy the board template, the shared firmware and ``codegen_dir`` (C files exposing
    ``tvmgen_default_run``; model.h with TVMGEN_NUM_INPUTS/OUTPUTS, TVMGEN_INPUT/OUTPUT_SIZES and
    TVMGEN_INPUT/OUTPUT/ARENA_BYTES) into ``project_dir``.

    memory_map: QEMU boards only, a Nucleo name: link with that board's SRAM/flash sizes.
    options: see microtvm_projects.project_api.PROJECT_OPTIONS (stack_min bytes, opt, uart_baud,
    serial_port, serial_number, flash_tool, icount, plugin).
    """
    _api().ProjectAPIHandler(board).generate_project(codegen_dir, project_dir, {"memory_map": memory_map, **options})
    return project_dir


def build(project_dir: str) -> MemoryReport:
    """make the firmware (and the QEMU plugin). Returns flash/static SRAM sizes in bytes.
    Raises DoesNotFit, one line with the byte excess, if the link overflows SRAM or flash."""
    h = _api().ProjectAPIHandler.for_project(project_dir)
    h.build()
    return memory(project_dir)


def flash(project_dir: str, **options) -> None:
    """Nucleo: program build/fw.elf with openocd or st-flash. QEMU: nothing to do."""
    _api().ProjectAPIHandler.for_project(project_dir).flash(options)


def memory(project_dir: str, peak_stack_bytes: int | None = None) -> MemoryReport:
    """Memory report of a built project (SRAM total needs the peak stack measured by a Session)."""
    h = _api().ProjectAPIHandler.for_project(project_dir)
    b = h.budgets()
    return memory_report(os.path.join(project_dir, "build", "fw.elf"), peak_stack_bytes, b.get("RAM"), b.get("FLASH"))
