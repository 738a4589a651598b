"""Project API for the board templates, after microTVM's (removed from TVM in 2024): the same
calls (server_info_query, generate_project, build, flash, open/read/write/close_transport),
in-process instead of a JSON-RPC server.

A template is a folder here with board.json, board_config.h, memory.ld and a Makefile;
common/ holds the shared firmware. generate_project makes a self-contained project folder:
  Makefile  board/{board.json,board_config.h,memory.ld}  common/  codegen/  config.mk  project.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from tvm_patchnet.micro.elf import Elf
from tvm_patchnet.micro.errors import BoardNotFound, DoesNotFit, MicroError, ToolNotFound
from tvm_patchnet.micro.transport import QemuTransport, SerialTransport, Transport

TEMPLATES_DIR = os.path.dirname(os.path.abspath(__file__))
COMMON_DIR = os.path.join(TEMPLATES_DIR, "common")

#: name -> (default, help). Options not meant for a board kind are ignored by it.
PROJECT_OPTIONS = {
    "memory_map": (None, "QEMU only: link against this Nucleo's SRAM/flash sizes (e.g. nucleo-f412zg)"),
    "stack_min": (4096, "bytes of stack the link must leave free above .bss (the stack is all free RAM)"),
    "opt": ("-O2", "optimisation flag for all C files (-O2 or -Os)"),
    "extra_cflags": ("", "more flags for all C files (everything builds with -Wall -Werror)"),
    "uart_baud": (115200, "Nucleo only: USART3 / ST-LINK VCP baud rate"),
    "serial_port": (None, "Nucleo only: serial device; default: the one ST-LINK virtual COM port"),
    "serial_number": (None, "Nucleo only: ST-LINK serial number, to pick one of several boards"),
    "flash_tool": (None, "Nucleo only: openocd or st-flash; default: the first found on PATH"),
    "icount": ("shift=0", "QEMU only: -icount argument (None to run without)"),
    "plugin": (True, "QEMU only: load the instruction-count plugin"),
}


def list_boards() -> list[str]:
    return sorted(d for d in os.listdir(TEMPLATES_DIR) if os.path.isfile(os.path.join(TEMPLATES_DIR, d, "board.json")))


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def parse_memory_ld(path: str) -> dict[str, tuple[int, int]]:
    """{region: (origin, length in bytes)} from a MEMORY block."""
    units = {"": 1, "K": 1024, "M": 1024 * 1024}
    out = {}
    with open(path) as f:
        for m in re.finditer(r"(\w+)\s*\([^)]*\)\s*:\s*ORIGIN\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*LENGTH\s*=\s*(\d+)\s*([KM]?)",
                             f.read()):
            out[m.group(1)] = (int(m.group(2), 0), int(m.group(3)) * units[m.group(4)])
    return out


def _size(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _run(cmd, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ToolNotFound(f"{cmd[0]} not found on PATH") from None


class ProjectAPIHandler:
    """One template (project_dir=None) or one generated project."""

    def __init__(self, board: str | None = None, project_dir: str | None = None):
        if project_dir is not None:
            meta = _load_json(os.path.join(project_dir, "project.json"))
            board, self.options = meta["board"], meta["options"]
        else:
            self.options = {}
        if board not in list_boards():
            raise MicroError(f"unknown board '{board}' (known: {', '.join(list_boards())})")
        self.board, self.project_dir = board, project_dir
        self.template_dir = os.path.join(TEMPLATES_DIR, board)
        self.info = _load_json(os.path.join(self.template_dir, "board.json"))
        self.transport: Transport | None = None

    @staticmethod
    def for_project(project_dir: str) -> ProjectAPIHandler:
        return ProjectAPIHandler(project_dir=project_dir)

    @property
    def label(self) -> str:
        mm = self.options.get("memory_map")
        return f"{self.board} with the {mm} memory map" if mm else self.board

    def _opt(self, options: dict | None, name: str):
        merged = {**{k: v[0] for k, v in PROJECT_OPTIONS.items()}, **self.options, **(options or {})}
        return merged[name]

    # -- microTVM Project API ---------------------------------------------------------------
    def server_info_query(self, tvm_version: str = "") -> dict:
        return {
            "platform_name": self.board,
            "is_template": self.project_dir is None,
            "model_library_format_path": None,  # no MLF: a codegen/ folder of C files instead
            "template_project_dir": self.template_dir,
            "board": self.info,
            "project_options": [{"name": k, "default": d, "help": h} for k, (d, h) in PROJECT_OPTIONS.items()],
        }

    def generate_project(self, codegen_dir: str, project_dir: str, options: dict | None = None) -> None:
        options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = set(options) - set(PROJECT_OPTIONS)
        if unknown:
            raise MicroError(f"unknown project option(s): {', '.join(sorted(unknown))}")
        _check_codegen(codegen_dir)
        mm = options.get("memory_map")
        if mm and self.info["kind"] != "qemu":
            raise MicroError(f"memory_map is for QEMU boards; {self.board} has its own memory")
        if mm and (mm not in list_boards() or _load_json(os.path.join(TEMPLATES_DIR, mm, "board.json"))["kind"] != "nucleo"):
            raise MicroError(f"unknown memory map '{mm}' (use a Nucleo board name)")
        if os.path.exists(project_dir) and os.listdir(project_dir):
            raise MicroError(f"project folder {project_dir} exists and is not empty")
        os.makedirs(os.path.join(project_dir, "board"), exist_ok=True)
        shutil.copytree(COMMON_DIR, os.path.join(project_dir, "common"))
        shutil.copytree(codegen_dir, os.path.join(project_dir, "codegen"))
        shutil.copy(os.path.join(self.template_dir, "Makefile"), project_dir)
        for f in ("board.json", "board_config.h", "memory.ld"):
            shutil.copy(os.path.join(self.template_dir, f), os.path.join(project_dir, "board"))
        if mm:
            _write_memory_map(os.path.join(project_dir, "board", "memory.ld"), self.template_dir,
                              os.path.join(TEMPLATES_DIR, mm, "memory.ld"), mm)
        with open(os.path.join(project_dir, "config.mk"), "w") as f:
            f.write("# written by generate_project\n")
            f.write(f"OPT := {options.get('opt', PROJECT_OPTIONS['opt'][0])}\n")
            f.write(f"UART_BAUD := {int(options.get('uart_baud', PROJECT_OPTIONS['uart_baud'][0]))}\n")
            f.write(f"STACK_MIN := {int(options.get('stack_min', PROJECT_OPTIONS['stack_min'][0]))}\n")
            f.write(f"EXTRA_CFLAGS := {options.get('extra_cflags', '')}\n")
        with open(os.path.join(project_dir, "project.json"), "w") as f:
            json.dump({"board": self.board, "options": options}, f, indent=2)
        self.project_dir, self.options = project_dir, options

    def _need_project(self):
        if self.project_dir is None:
            raise MicroError("no project: call generate_project first")

    def elf_path(self) -> str:
        return os.path.join(self.project_dir, "build", "fw.elf")

    def budgets(self) -> dict[str, int]:
        """{'RAM': bytes, 'FLASH': bytes} of the project's linker memory map."""
        return {k: v[1] for k, v in parse_memory_ld(os.path.join(self.project_dir, "board", "memory.ld")).items()}

    def build(self, options: dict | None = None) -> str:
        """Runs make; returns the build log. A region overflow becomes a one-line DoesNotFit."""
        self._need_project()
        if shutil.which("make") is None:
            raise ToolNotFound("make not found on PATH")
        if shutil.which("arm-none-eabi-gcc") is None:
            raise ToolNotFound("arm-none-eabi-gcc not found on PATH (apt-get install gcc-arm-none-eabi "
                               "libnewlib-arm-none-eabi)")
        r = _run(["make", "-j", str(os.cpu_count() or 2)], cwd=self.project_dir)
        log = r.stdout + r.stderr
        os.makedirs(os.path.join(self.project_dir, "build"), exist_ok=True)
        with open(os.path.join(self.project_dir, "build", "build.log"), "w") as f:
            f.write(log)
        if r.returncode == 0:
            return log
        over = dict(re.findall(r"region `(\w+)' overflowed by (\d+) bytes", log))
        if over:
            b, parts = self.budgets(), []
            if "RAM" in over:
                parts.append(f".data + .bss + {int(self._opt(options, 'stack_min')):,} B minimum stack exceed the "
                             f"{b['RAM']:,} B of SRAM by {int(over['RAM']):,} B")
            if "FLASH" in over:
                parts.append(f".text + .rodata + .data exceed the {b['FLASH']:,} B of flash by {int(over['FLASH']):,} B")
            raise DoesNotFit(f"{self.label}: does not fit: " + "; ".join(parts))
        errors = [ln for ln in log.splitlines() if "error" in ln.lower()] or log.strip().splitlines()[-1:]
        raise MicroError(f"{self.label}: build failed: {errors[0] if errors else 'make failed'} "
                         f"(log: {os.path.join(self.project_dir, 'build', 'build.log')})")

    def flash(self, options: dict | None = None) -> None:
        """QEMU: nothing to do (QEMU loads fw.elf when the transport opens). Nucleo: openocd or st-flash."""
        self._need_project()
        if self.info["kind"] == "qemu":
            return
        elf = self.elf_path()
        if not os.path.exists(elf):
            raise MicroError(f"{elf} does not exist: build the project first")
        tool = self._opt(options, "flash_tool")
        if tool is None:
            tool = next((t for t in ("openocd", "st-flash") if shutil.which(t)), None)
            if tool is None:
                raise ToolNotFound(f"neither openocd nor st-flash found on PATH: install one (apt-get install openocd "
                                   f"or stlink-tools) to flash {self.board}")
        elif tool not in ("openocd", "st-flash"):
            raise MicroError(f"unknown flash tool '{tool}' (openocd or st-flash)")
        elif shutil.which(tool) is None:
            raise ToolNotFound(f"{tool} not found on PATH")
        if tool == "openocd":  # braces: Tcl quoting, for paths with spaces
            cmd = ["openocd", "-f", self.info["openocd_cfg"], "-c", f"program {{{elf}}} verify reset exit"]
        else:
            cmd = ["st-flash", "--reset", "write", elf[:-3] + "bin", self.info["flash_address"]]
        r = _run(cmd, timeout=180)
        if r.returncode != 0:
            lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
            no_board = re.search(r"open failed|no device found|couldn't find any st-?link|not connected|"
                                 r"unable to open|libusb", " ".join(lines), re.IGNORECASE)
            cls = BoardNotFound if no_board else MicroError
            raise cls(f"{self.board}: {tool} failed (exit {r.returncode}): {last}")

    def open_transport(self, options: dict | None = None) -> dict:
        self._need_project()
        if self.info["kind"] == "qemu":
            elf = self.elf_path()
            if not os.path.exists(elf):
                raise MicroError(f"{elf} does not exist: build the project first")
            plugin, args = None, None
            if self._opt(options, "plugin"):
                plugin = os.path.join(self.project_dir, "build", "libicount.so")
                sym = Elf(elf).symbols()
                args = {"start": hex(sym["icount_mark_start"]), "stop": hex(sym["icount_mark_stop"]),
                        "box": hex(sym["icount_mailbox"])}
            self.transport = QemuTransport(self.info["machine"], elf, plugin, args, self._opt(options, "icount"),
                                           os.path.join(self.project_dir, "build", "qemu.log"))
        else:
            self.transport = SerialTransport(self._opt(options, "serial_port"), int(self._opt(options, "uart_baud")),
                                             self._opt(options, "serial_number"))
        self.transport.open()
        return {"timeouts": {"session_start_retry_timeout_sec": 2.0}}

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def read_transport(self, n: int, timeout_sec: float | None) -> bytes:
        return self.transport.read(n, 3600.0 if timeout_sec is None else timeout_sec)

    def write_transport(self, data: bytes, timeout_sec: float | None) -> None:
        self.transport.write(data, 3600.0 if timeout_sec is None else timeout_sec)


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def _check_codegen(codegen_dir: str) -> None:
    """One-line error unless codegen_dir has model.h with the three sizes and a C file defining the entry point."""
    header = os.path.join(codegen_dir, "model.h")
    if not os.path.isfile(header):
        raise MicroError(f"{codegen_dir}: no model.h (the generated code must provide it)")
    text = _read(header)
    missing = [d for d in ("TVMGEN_INPUT_BYTES", "TVMGEN_OUTPUT_BYTES", "TVMGEN_ARENA_BYTES")
               if not re.search(rf"#\s*define\s+{d}\b", text)]
    if missing:
        raise MicroError(f"{header}: missing #define {', '.join(missing)}")
    sources = [os.path.join(r, f) for r, _, fs in os.walk(codegen_dir) for f in fs if f.endswith(".c")]
    if not any("tvmgen_default_run" in _read(f) for f in sources):
        raise MicroError(f"{codegen_dir}: no .c file defines tvmgen_default_run")


def _write_memory_map(dst: str, qemu_template: str, nucleo_ld: str, nucleo: str) -> None:
    """QEMU's own origins (code must stay where QEMU loads and runs it) with the Nucleo's sizes."""
    own, theirs = parse_memory_ld(os.path.join(qemu_template, "memory.ld")), parse_memory_ld(nucleo_ld)
    with open(dst, "w") as f:
        f.write(f"/* {nucleo} sizes at QEMU's addresses (generate_project memory_map={nucleo}): a firmware\n"
                f" * that links and runs here fits the {nucleo}'s SRAM and flash. */\nMEMORY\n{{\n")
        f.write(f"    FLASH (rx)  : ORIGIN = 0x{own['FLASH'][0]:08x}, LENGTH = {_size(theirs['FLASH'][1])}\n")
        f.write(f"    RAM   (rwx) : ORIGIN = 0x{own['RAM'][0]:08x}, LENGTH = {_size(theirs['RAM'][1])}\n}}\n")
