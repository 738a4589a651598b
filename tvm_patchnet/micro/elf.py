"""Minimal ELF32 little-endian reader: section sizes and symbol addresses of fw.elf.

Enough for the memory report and for the QEMU plugin's marker addresses, without needing
binutils at run time (``arm-none-eabi-size -A`` prints the same section sizes).
"""

from __future__ import annotations

import struct

from .errors import MicroError

SHT_SYMTAB, SHF_ALLOC = 2, 0x2


class Elf:
    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.data = f.read()
        if self.data[:4] != b"\x7fELF" or self.data[4] != 1 or self.data[5] != 1:
            raise MicroError(f"{path}: not a 32-bit little-endian ELF file")
        shoff, = struct.unpack_from("<I", self.data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", self.data, 0x2E)
        raw = [struct.unpack_from("<IIIIIIIIII", self.data, shoff + i * shentsize) for i in range(shnum)]
        names_off = raw[shstrndx][4]
        #: name -> (type, flags, addr, offset, size, link, entsize)
        self.sections = {}
        for name, typ, flags, addr, off, size, link, _info, _align, entsize in raw:
            self.sections[self._str(names_off + name)] = (typ, flags, addr, off, size, link, entsize)
        self._raw = raw

    def _str(self, off: int) -> str:
        return self.data[off:self.data.index(b"\0", off)].decode()

    def section_size(self, name: str) -> int:
        return self.sections[name][4] if name in self.sections else 0

    def symbols(self) -> dict[str, int]:
        out = {}
        for typ, _f, _a, off, size, link, entsize in self.sections.values():
            if typ != SHT_SYMTAB:
                continue
            strtab = self._raw[link][4]
            for k in range(size // entsize):
                name, value = struct.unpack_from("<II", self.data, off + k * entsize)
                if name:
                    out[self._str(strtab + name)] = value
        return out
