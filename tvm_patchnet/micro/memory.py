"""SRAM and flash use of a built firmware, from fw.elf and (optionally) the measured peak stack.

flash = .vectors/.text + .rodata + .ARM.exidx + .data (its initial values live in flash)
SRAM  = .data + .bss + peak stack (painted and measured on the board, reported by stats())
All sizes are bytes. The model's inputs and outputs live in its arena (.bss of model.c).
"""

from __future__ import annotations

from dataclasses import dataclass

from .elf import Elf


@dataclass
class MemoryReport:
    text: int
    rodata: int
    data: int
    bss: int
    flash_bytes: int          #: .text + .rodata + .ARM.exidx + .data
    static_sram_bytes: int    #: .data + .bss
    peak_stack_bytes: int | None  #: None until measured on the board
    ram_budget: int | None    #: RAM region of the linker script (the board or --memory-map)
    flash_budget: int | None

    @property
    def sram_bytes(self) -> int | None:
        """.data + .bss + peak stack, or None if the stack was not measured."""
        return None if self.peak_stack_bytes is None else self.static_sram_bytes + self.peak_stack_bytes

    def summary(self) -> str:
        sram = "not measured" if self.sram_bytes is None else f"{self.sram_bytes:,} B"
        return (f"flash {self.flash_bytes:,} B (text {self.text:,} + rodata {self.rodata:,} + data {self.data:,})"
                f"{_of(self.flash_budget)}; SRAM {sram} (data {self.data:,} + bss {self.bss:,} + peak stack "
                f"{'?' if self.peak_stack_bytes is None else f'{self.peak_stack_bytes:,}'}){_of(self.ram_budget)}")


def _of(budget):
    return f" of {budget:,} B" if budget else ""


def memory_report(elf_path: str, peak_stack_bytes: int | None = None,
                  ram_budget: int | None = None, flash_budget: int | None = None) -> MemoryReport:
    elf = Elf(elf_path)
    text = elf.section_size(".text")
    rodata = elf.section_size(".rodata") + elf.section_size(".ARM.exidx")
    data, bss = elf.section_size(".data"), elf.section_size(".bss")
    return MemoryReport(text, rodata, data, bss, text + rodata + data, data + bss, peak_stack_bytes,
                        ram_budget, flash_budget)
