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
import signal
import stat
import subprocess

from tvm_patchnet.micro.elf import Elf
from tvm_patchnet.micro.errors import BoardNotFound, BuildFailed, DoesNotFit, MicroError, ToolNotFound
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
    "profile": (False, ("build with TVMGEN_PROFILE: model.c marks each kernel call and the firmware answers "
                       "PROFILE with per-kernel counts (QEMU: exact instructions; Nucleo: DWT cycles)")),
}


def list_boards() -> list[str]:
    return sorted(d for d in os.listdir(TEMPLATES_DIR) if os.path.isfile(os.path.join(TEMPLATES_DIR, d, "board.json")))


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _load_project(project_dir: str) -> dict:
    """project.json of a generated project; one-line MicroError for anything else."""
    path = os.path.join(project_dir, "project.json")
    if not os.path.isfile(path):
        raise MicroError(f"{project_dir}: not a board project (no project.json; make one with "
                         "'patchnet micro create-project')")
    try:
        meta = _load_json(path)
    except (OSError, ValueError) as e:
        raise MicroError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("board"), str) or not isinstance(meta.get("options"), dict):
        raise MicroError(f"{path}: not a project.json written by generate_project")
    return meta


def board_budgets(board: str, memory_map: str | None = None) -> dict[str, int]:
    """{'RAM': bytes, 'FLASH': bytes} a project for ``board`` (with ``memory_map``) links against."""
    if board not in list_boards():
        raise MicroError(f"unknown board '{board}' (known: {', '.join(list_boards())})")
    sizes = parse_memory_ld(os.path.join(TEMPLATES_DIR, memory_map or board, "memory.ld"))
    return {k: v[1] for k, v in sizes.items()}


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


def _run(cmd: list[str], cwd: str | None = None, timeout: float = 600) -> tuple[int, str]:
    """(exit code, stdout + stderr) of ``cmd`` (an argument list: nothing goes through a shell
    here). The child runs in its own process group, which is ended whatever stops the wait
    (a timeout, Ctrl-C, SIGTERM), so no make or gcc outlives the call."""
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    except FileNotFoundError:
        raise ToolNotFound(f"{cmd[0]} not found on PATH") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        raise MicroError(f"{' '.join(cmd[:2])} did not finish within {timeout:g} s (stopped)") from None
    except BaseException:
        _end_group(proc)
        raise
    return proc.returncode, out


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stdout:
        proc.stdout.close()


class ProjectAPIHandler:
    """One template (project_dir=None) or one generated project."""

    def __init__(self, board: str | None = None, project_dir: str | None = None):
        if project_dir is not None:
            meta = _load_project(project_dir)
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
        sources = _check_codegen(codegen_dir)
        mm = options.get("memory_map")
        if mm and self.info["kind"] != "qemu":
            raise MicroError(f"memory_map is for QEMU boards; {self.board} has its own memory")
        if mm and (mm not in list_boards() or _load_json(os.path.join(TEMPLATES_DIR, mm, "board.json"))["kind"] != "nucleo"):
            raise MicroError(f"unknown memory map '{mm}' (use a Nucleo board name)")
        if os.path.exists(project_dir) and os.listdir(project_dir):
            raise MicroError(f"project folder {project_dir} exists and is not empty")
        os.makedirs(os.path.join(project_dir, "board"), exist_ok=True)
        shutil.copytree(COMMON_DIR, os.path.join(project_dir, "common"))
        for name in sources:
            dst = os.path.join(project_dir, "codegen", name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            _copy_no_follow(os.path.join(codegen_dir, name), dst)
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
            f.write(f"PROFILE := {1 if options.get('profile') else 0}\n")
            # the model's sources, listed here (names checked by _check_codegen), never found by a shell
            f.write("MODEL_SRCS := " + " ".join(f"codegen/{n}" for n in sorted(sources) if n.endswith(".c")) + "\n")
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
        rc, log = _run(["make", "-j", str(os.cpu_count() or 2)], cwd=self.project_dir)
        os.makedirs(os.path.join(self.project_dir, "build"), exist_ok=True)
        log_path = os.path.join(self.project_dir, "build", "build.log")
        with open(log_path, "w") as f:
            f.write(log)
        if rc == 0:
            return log
        over = dict(re.findall(r"region `(\w+)' overflowed by (\d+) bytes", log))
        if over:
            b, parts = self.budgets(), []
            if "RAM" in over:
                parts.append(f".data + .bss + {int(self._opt(options, 'stack_min')):,} B minimum stack exceed the "
                             f"{b['RAM']:,} B of SRAM by {int(over['RAM']):,} B")
            if "FLASH" in over:
                parts.append(f".text + .rodata + .data exceed the {b['FLASH']:,} B of flash by {int(over['FLASH']):,} B")
            raise DoesNotFit(f"{self.label}: does not fit: " + "; ".join(parts), int(over.get("RAM", 0)),
                             int(over.get("FLASH", 0)))
        raise BuildFailed(self.label, diagnostics(log), log_path)

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
        rc, out = _run(cmd, timeout=180)
        if rc != 0:
            lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
            no_board = re.search(r"open failed|no device found|couldn't find any st-?link|not connected|"
                                 r"unable to open|libusb", " ".join(lines), re.IGNORECASE)
            cls = BoardNotFound if no_board else MicroError
            raise cls(f"{self.board}: {tool} failed (exit {rc}): {last}")

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
                if "icount_profile" in sym:  # a profile build: the kernel marks and their table
                    args.update(mark=hex(sym["tvmgen_profile_mark"]), table=hex(sym["icount_profile"]))
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


_SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\.[ch]")
_FOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DIAGNOSTIC = re.compile(r"^\S+:\d+(:\d+)?: (fatal )?error: |undefined reference|^collect2: ")


def diagnostics(log: str, most: int = 5) -> list[str]:
    """The first compiler / linker diagnostics of a build log (at most ``most``, then a count);
    make's own complaint when there are none."""
    lines = [ln.strip()[:300] for ln in log.splitlines() if ln.strip()]
    found = [ln for ln in lines if _DIAGNOSTIC.search(ln)]
    found = found or [ln for ln in lines if "***" in ln and "Waiting for unfinished" not in ln][:1] or lines[-1:]
    return (found or ["make failed"])[:most] + ([f"... and {len(found) - most} more"] if len(found) > most else [])


def _check_codegen(codegen_dir: str) -> list[str]:
    """The files of ``codegen_dir`` (relative paths; folders and .c / .h files named
    [A-Za-z_][A-Za-z0-9_]*, regular files, no links), after checking model.h has the input and
    output counts and sizes and the arena size, and a .c file defines the entry point. One-line MicroError otherwise: the names end
    up in make's recipes."""
    if not os.path.isdir(codegen_dir):
        raise MicroError(f"{codegen_dir}: no such folder of generated code")
    files = []
    for root, dirs, names in os.walk(codegen_dir):
        for name in dirs + names:
            rel = os.path.relpath(os.path.join(root, name), codegen_dir)
            mode = os.lstat(os.path.join(root, name)).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise MicroError(f"{codegen_dir}: {rel!r} is not a regular file or folder (links are not followed)")
            if not (_FOLDER_NAME if stat.S_ISDIR(mode) else _SOURCE_NAME).fullmatch(name) or rel.count(os.sep) > 3:
                raise MicroError(f"{codegen_dir}: {rel!r} is not a source name the board build accepts "
                                 "(letters, digits and _, then .c or .h; at most 3 folders deep)")
            if stat.S_ISREG(mode):
                files.append(rel)
    if "model.h" not in files:
        raise MicroError(f"{codegen_dir}: no model.h (the generated code must provide it)")
    header = os.path.join(codegen_dir, "model.h")
    text = _read(header)
    missing = [d for d in (*(f"TVMGEN_{k}" for k in ("NUM_INPUTS", "NUM_OUTPUTS", "INPUT_SIZES", "OUTPUT_SIZES",
                                                     "INPUT_BYTES", "OUTPUT_BYTES")), "TVMGEN_ARENA_BYTES")
               if not re.search(rf"#\s*define\s+{d}\b", text)]
    if missing:
        raise MicroError(f"{header}: missing #define {', '.join(missing)}")
    if not any(n.endswith(".c") and "tvmgen_default_run" in _read(os.path.join(codegen_dir, n)) for n in files):
        raise MicroError(f"{codegen_dir}: no .c file defines tvmgen_default_run")
    return sorted(files)


def _copy_no_follow(src: str, dst: str) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f, open(dst, "xb") as out:
        shutil.copyfileobj(f, out)


def _write_memory_map(dst: str, qemu_template: str, nucleo_ld: str, nucleo: str) -> None:
    """QEMU's own origins (code must stay where QEMU loads and runs it) with the Nucleo's sizes."""
    own, theirs = parse_memory_ld(os.path.join(qemu_template, "memory.ld")), parse_memory_ld(nucleo_ld)
    with open(dst, "w") as f:
        f.write(f"/* {nucleo} sizes at QEMU's addresses (generate_project memory_map={nucleo}): a firmware\n"
                f" * that links and runs here fits the {nucleo}'s SRAM and flash. */\nMEMORY\n{{\n")
        f.write(f"    FLASH (rx)  : ORIGIN = 0x{own['FLASH'][0]:08x}, LENGTH = {_size(theirs['FLASH'][1])}\n")
        f.write(f"    RAM   (rwx) : ORIGIN = 0x{own['RAM'][0]:08x}, LENGTH = {_size(theirs['RAM'][1])}\n}}\n")
