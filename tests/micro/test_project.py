"""Project API: generating projects, building every template, flashing with fake tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import serial

from microtvm_projects.project_api import ProjectAPIHandler, parse_memory_ld
from tvm_patchnet import micro
from tvm_patchnet.micro.elf import Elf

from .conftest import NEEDS_GCC
from .fake_device import FakeDevice, FakeSerial
from .standin import write_standin

BOARDS = ["qemu-m4", "qemu-m7", "nucleo-f412zg", "nucleo-f746zg", "nucleo-h743zi"]
# (flash, SRAM) origin and bytes of each board's own linker memory map
MEMORY = {
    "qemu-m4": ((0x0, 4 << 20), (0x20000000, 4 << 20)),
    "qemu-m7": ((0x0, 4 << 20), (0x20000000, 4 << 20)),
    "nucleo-f412zg": ((0x08000000, 1 << 20), (0x20000000, 256 << 10)),
    "nucleo-f746zg": ((0x08000000, 1 << 20), (0x20000000, 320 << 10)),
    "nucleo-h743zi": ((0x08000000, 2 << 20), (0x24000000, 512 << 10)),
}


def test_boards_and_memory_maps():
    assert micro.list_boards() == sorted(BOARDS)
    for b in BOARDS:
        info = micro.board_info(b)
        assert info["platform_name"] == b and info["is_template"]
        mem = parse_memory_ld(os.path.join(info["template_project_dir"], "memory.ld"))
        assert (mem["FLASH"], mem["RAM"]) == MEMORY[b]


def test_generate_project_layout(standin, tmp_path):
    d = micro.create_project(standin, "qemu-m4", str(tmp_path / "p"), memory_map="nucleo-f412zg", stack_min=2048)
    for f in ("Makefile", "config.mk", "project.json", "board/memory.ld", "board/board_config.h",
              "common/rpc.c", "codegen/model.c", "codegen/model.h"):
        assert os.path.isfile(os.path.join(d, f)), f
    mem = parse_memory_ld(os.path.join(d, "board", "memory.ld"))
    assert mem == {"FLASH": (0x0, 1 << 20), "RAM": (0x20000000, 256 << 10)}  # QEMU addresses, F412 sizes
    assert "STACK_MIN := 2048" in Path(d, "config.mk").read_text()
    h = ProjectAPIHandler.for_project(d)
    assert h.label == "qemu-m4 with the nucleo-f412zg memory map" and not h.server_info_query()["is_template"]


@pytest.mark.parametrize("case,match", [
    ("no_header", "no model.h"),
    ("no_define", "missing #define TVMGEN_ARENA_BYTES"),
    ("no_entry", "no .c file defines tvmgen_default_run"),
])
def test_codegen_folder_checked(tmp_path, case, match):
    cg = write_standin(str(tmp_path / "cg"))
    if case == "no_header":
        os.remove(os.path.join(cg, "model.h"))
    elif case == "no_define":
        h = Path(cg, "model.h")
        h.write_text(h.read_text().replace("#define TVMGEN_ARENA_BYTES", "#define X"))
    else:
        Path(cg, "model.c").write_text("int x;\n")
    with pytest.raises(micro.MicroError, match=match):
        micro.create_project(cg, "qemu-m4", str(tmp_path / "p"))


def test_bad_board_and_options(standin, tmp_path):
    with pytest.raises(micro.MicroError, match="unknown board 'esp32'"):
        micro.create_project(standin, "esp32", str(tmp_path / "a"))
    with pytest.raises(micro.MicroError, match="memory_map is for QEMU boards"):
        micro.create_project(standin, "nucleo-f412zg", str(tmp_path / "b"), memory_map="nucleo-f746zg")
    with pytest.raises(micro.MicroError, match="unknown memory map 'qemu-m7'"):
        micro.create_project(standin, "qemu-m4", str(tmp_path / "c"), memory_map="qemu-m7")
    with pytest.raises(micro.MicroError, match="unknown project option"):
        micro.create_project(standin, "qemu-m4", str(tmp_path / "d"), colour="red")


@NEEDS_GCC
@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_every_template_builds(built, board):
    d = built(board)
    elf = os.path.join(d, "build", "fw.elf")
    sym = Elf(elf).symbols()
    (flash0, _), (ram0, ram) = MEMORY[board]
    assert sym["vector_table"] == flash0 and sym["__stack_top"] == ram0 + ram
    assert os.path.isfile(os.path.join(d, "build", "fw.bin"))
    assert os.path.isfile(os.path.join(d, "build", "libicount.so")) == board.startswith("qemu")
    rep = micro.memory(d)
    assert rep.flash_bytes > 1000 and rep.static_sram_bytes >= 256 + 48 + 100 and rep.ram_budget == ram


@NEEDS_GCC
@pytest.mark.slow
def test_flash_with_fake_openocd_and_st_flash(built, fake_tools, monkeypatch):
    d = built("nucleo-f412zg")
    _, log = fake_tools
    micro.flash(d)  # openocd is preferred when both are on PATH
    micro.flash(d, flash_tool="st-flash")
    lines = log.read_text().splitlines()
    elf = os.path.join(d, "build", "fw.elf")
    assert lines[0] == f"openocd -f board/st_nucleo_f4.cfg -c program {{{elf}}} verify reset exit"
    assert lines[1] == f"st-flash --reset write {elf[:-3]}bin 0x08000000"
    monkeypatch.setenv("FAKE_RC", "1")
    monkeypatch.setenv("FAKE_MSG", "Error: open failed")
    with pytest.raises(micro.BoardNotFound, match=r"^nucleo-f412zg: openocd failed \(exit 1\): Error: open failed$"):
        micro.flash(d)


@NEEDS_GCC
@pytest.mark.slow
def test_flash_without_tools(built, tmp_path, monkeypatch):
    d = built("nucleo-f412zg")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(micro.ToolNotFound, match="^neither openocd nor st-flash found on PATH"):
        micro.flash(d)
    micro.flash(built("qemu-m4"))  # QEMU: nothing to flash


@NEEDS_GCC
@pytest.mark.slow
def test_nucleo_session_through_project_api(built, monkeypatch):
    """The Nucleo path end to end on the host side: project -> SerialTransport -> fake device."""
    d = built("nucleo-f746zg")
    monkeypatch.setattr(serial, "Serial", FakeSerial)
    FakeSerial.opened, FakeSerial.device = [], FakeDevice(board="nucleo-f746zg")
    with micro.Session(d, options={"serial_port": "/dev/fakeACM0"}) as s:
        assert s.info().board == "nucleo-f746zg"
        assert s.run(2).per_run == 1234
        rep = s.memory()
        assert rep.peak_stack_bytes == 300 and rep.ram_budget == 320 * 1024
    assert FakeSerial.opened == [("/dev/fakeACM0", 115200)]


@NEEDS_GCC
@pytest.mark.slow
def test_nested_codegen_and_extra_cflags(tmp_path):
    cg = write_standin(str(tmp_path / "cg"))
    os.makedirs(os.path.join(cg, "kernels"))
    os.rename(os.path.join(cg, "model.c"), os.path.join(cg, "kernels", "model.c"))
    with open(os.path.join(cg, "kernels", "flag.c"), "w") as f:
        f.write("#ifndef PATCHNET_FLAG\n#error extra_cflags not applied\n#endif\nint patchnet_flag = PATCHNET_FLAG;\n")
    d = micro.create_project(cg, "qemu-m7", str(tmp_path / "p"), extra_cflags="-DPATCHNET_FLAG=7", opt="-Os")
    assert micro.build(d).flash_bytes > 1000
    with pytest.raises(micro.BuildFailed, match=r"^qemu-m7: build failed:\n  .*flag\.c:2:2: error: #error extra_cflags not "
                       r"applied\n(  .*\n)*  full log: .*build\.log$"):
        d2 = micro.create_project(cg, "qemu-m7", str(tmp_path / "p2"))
        micro.build(d2)


@NEEDS_GCC
@pytest.mark.slow
def test_flash_overflow_is_one_line(tmp_path):
    cg = write_standin(str(tmp_path / "cg"))
    Path(cg, "model.c").write_text(  # 1.1 MB of const "weights": more than an F412's 1 MB of flash
        '#include "model.h"\nconst int8_t weights[1100000] = {1};\nstatic int8_t io[2];\n'
        "void *tvmgen_default_input(int i) { return io + 0 * i; }\nvoid *tvmgen_default_output(int i) { return io + 1 + 0 * i; }\n"
        "int tvmgen_default_run(const void *const *in, void *const *out) {\n"
        "  (void)in; (void)out; io[1] = weights[io[0] + 128]; return 0;\n}\n")
    d = micro.create_project(cg, "qemu-m4", str(tmp_path / "p"), memory_map="nucleo-f412zg")
    with pytest.raises(micro.DoesNotFit, match=r"^qemu-m4 with the nucleo-f412zg memory map: does not fit: \.text \+ "
                       r"\.rodata \+ \.data exceed the 1,048,576 B of flash by [\d,]+ B$"):
        micro.build(d)
