"""A measurement session with one board: upload an input, run N times, read output and statistics.

Units: sizes in bytes. Counts per run are executed *instructions* on QEMU (exact, from the TCG
plugin; QEMU has no pipeline model, so they are not cycles) and core clock *cycles* (DWT
CYCCNT at ``info().cpu_hz``) on Nucleo boards; ``RunStats.counter`` says which.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import numpy as np

from .errors import DeviceFault, DoesNotFit, MicroError
from .memory import MemoryReport, memory_report
from .rpc import (
    CMD_CALIBRATE,
    CMD_GET_OUTPUT,
    CMD_PING,
    CMD_PROFILE,
    CMD_RUN,
    CMD_SET_INPUT,
    CMD_STATS,
    COUNTERS,
    INFO_FMT,
    INFO_PROFILE,
    MAX_LEN,
    PROFILE_FMT,
    STATS_FMT,
    RpcClient,
)
from .transport import Transport


@dataclass
class DeviceInfo:
    board: str
    protocol: int
    counter: str | None      #: "instructions", "cycles" or None (QEMU without the plugin)
    input_bytes: int         #: all inputs together (TVMGEN_INPUT_BYTES)
    output_bytes: int        #: all outputs together (TVMGEN_OUTPUT_BYTES)
    arena_bytes: int         #: TVMGEN_ARENA_BYTES
    cpu_hz: int              #: core clock the firmware runs at (MPS2: nominal 25 MHz)
    ram_bytes: int           #: RAM region of the link (the board's, or the memory map's)
    data_bytes: int
    bss_bytes: int
    stack_bytes: int         #: stack available: RAM above .bss minus the 32-byte MPU guard
    max_payload: int
    num_inputs: int          #: TVMGEN_NUM_INPUTS
    num_outputs: int         #: TVMGEN_NUM_OUTPUTS
    profile: bool = False    #: a profile build (model.c marks its kernel calls; see Session.profile)


@dataclass
class RunStats:
    counter: str | None  #: unit of total/min/max: "instructions" (QEMU) or "cycles" (Nucleo)
    runs: int
    total: int           #: summed over the runs
    min: int             #: per run
    max: int             #: per run
    peak_stack_bytes: int  #: deepest stack since reset (firmware + model), from painting
    run_stack_bytes: int   #: stack used by the last RUN's calls below the RPC loop
    stack_bytes: int       #: stack available
    stack_overflow: bool   #: the painted stack was used up (needs more RAM than the board has)
    arena_bytes: int
    data_bytes: int
    bss_bytes: int
    rc: int                #: last tvmgen_default_run return code

    @property
    def per_run(self) -> float:
        """Mean count per run (instructions or cycles, see ``counter``)."""
        return self.total / self.runs if self.runs else 0.0

    @property
    def sram_bytes(self) -> int:
        """.data + .bss + peak stack."""
        return self.data_bytes + self.bss_bytes + self.peak_stack_bytes


@dataclass
class ProfileMarks:
    """The marks of the last measured call of a profile build: ``counts[i]`` = count (the
    counter's unit) from the start of the call to mark i; model.c marks before its first kernel
    call and after each, so kernel k ran between marks k and k + 1. ``overhead``: what one mark
    adds (QEMU: exactly 2 instructions, ``bl`` + the hook's ``bx lr``; Nucleo: cycles of two marks
    back to back, measured on the board)."""

    counter: str | None
    counts: list[int]
    overhead: int

    def kernels(self) -> list[int]:
        """Each kernel call's own count: the marks' differences minus one mark's overhead."""
        return [b - a - self.overhead for a, b in zip(self.counts, self.counts[1:])]


class Session:
    """``Session(project_dir)`` starts QEMU (or opens the Nucleo's serial port) for a built
    project; ``Session(transport=...)`` talks over any Transport (tests, custom links).

    timeout/retries: seconds per attempt and extra attempts of a short request; run_timeout:
    seconds a RUN (or CALIBRATE) may take, counted from sending it, before the board counts as
    stalled (one-line BoardStalled); ``run(timeout=...)`` overrides it per call.
    A request whose outcome the host cannot confirm raises a one-line MicroError: a result is
    never reported from a run on consumed input or from a board that reset meanwhile (rpc.py).
    """

    def __init__(self, project_dir: str | None = None, *, transport: Transport | None = None,
                 timeout: float = 2.0, retries: int = 3, run_timeout: float = 600.0,
                 options: dict | None = None, name: str | None = None):
        _check_timeout(run_timeout, "run_timeout")
        self.handler = None
        self.project_dir = project_dir
        if transport is None:
            if project_dir is None:
                raise MicroError("Session needs a project_dir or a transport")
            from microtvm_projects.project_api import ProjectAPIHandler

            self.handler = ProjectAPIHandler.for_project(project_dir)
            self.handler.open_transport(options)
            transport = self.handler.transport
            name = name or self.handler.label
        self.transport = transport
        self.rpc = RpcClient(transport, timeout, retries, run_timeout, name or "board")
        self._info: DeviceInfo | None = None

    def close(self) -> None:
        if self.handler is not None:
            self.handler.close_transport()
        else:
            self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, *args, **kw) -> bytes:
        try:
            return self.rpc.call(*args, **kw)
        except DeviceFault as e:
            if "stack overflow" in str(e):
                raise DoesNotFit(str(e)) from None
            raise

    def ping(self, data: bytes = b"") -> bytes:
        return self._call(CMD_PING, data)

    def info(self) -> DeviceInfo:
        """What the firmware reports (asked once; asking opens the session, see rpc.py)."""
        if self._info is None:
            d = self.rpc.info or self.rpc.hello()
            n = struct.calcsize(INFO_FMT)
            if len(d) < n:
                raise MicroError(f"{self.rpc.name}: INFO answer has {len(d)} bytes, expected at least {n}")
            v = struct.unpack_from(INFO_FMT, d)
            self._info = DeviceInfo(board=d[n:].decode(errors="replace"), protocol=v[0], counter=COUNTERS.get(v[1]),
                                    max_payload=v[2], input_bytes=v[3], output_bytes=v[4], arena_bytes=v[5],
                                    cpu_hz=v[6], ram_bytes=v[7], data_bytes=v[8], bss_bytes=v[9], stack_bytes=v[10],
                                    num_inputs=v[11], num_outputs=v[12], profile=bool(v[13] & INFO_PROFILE))
        return self._info

    def set_input(self, data) -> None:
        """``data``: the model's inputs one after the other, in order, exactly info().input_bytes
        bytes: bytes, an array (any shape or dtype), or a list of arrays (the inputs in order)."""
        raw = _raw(data)
        want = self.info().input_bytes
        if len(raw) != want:
            raise MicroError(f"{self.rpc.name}: input has {len(raw)} bytes, the model takes {want}")
        step = min(self.info().max_payload, MAX_LEN) - 4
        for off in range(0, len(raw), step):
            self._call(CMD_SET_INPUT, struct.pack("<I", off) + raw[off:off + step])

    def run(self, n: int = 1, timeout: float | None = None) -> RunStats:
        """Runs the model n times back to back; counts are per run (see RunStats). The input
        lives in the model's arena and a run may overwrite it (as in TFLite Micro), so runs
        after the first see other data: :meth:`run_each` re-sends the input before each run.
        timeout: seconds the n runs may take from sending RUN (default: the session's
        run_timeout); past it, BoardStalled ("board stalled: RUN sent 30.0 s ago, ...")."""
        if n < 1:
            raise MicroError("run(n) needs n >= 1")
        _check_timeout(timeout, "run timeout")
        st = _stats(self._call(CMD_RUN, struct.pack("<I", n), long=True, long_timeout=timeout), self.rpc.name)
        if st.runs != n and not st.rc:  # only a model error stops the runs early
            raise MicroError(f"{self.rpc.name}: RUN answered with {st.runs} runs for {n} asked: not the result "
                             "of this request")
        return st

    def run_each(self, data, n: int = 1, timeout: float | None = None) -> RunStats:
        """Upload ``data`` and run once, ``n`` times; statistics over the n runs (the output is
        the last run's, on ``data``). timeout: per run, as in :meth:`run`."""
        if n < 1:
            raise MicroError("run_each(n) needs n >= 1")
        runs = []
        for _ in range(n):
            self.set_input(data)
            runs.append(self.run(1, timeout))
        last = runs[-1]
        return replace(last, runs=n, total=sum(r.total for r in runs), min=min(r.min for r in runs),
                       max=max(r.max for r in runs), rc=next((r.rc for r in runs if r.rc), 0))

    def get_output(self) -> np.ndarray:
        """The outputs one after the other, in order, as a flat int8 array of info().output_bytes
        (split and view them by the model's output sizes and dtypes)."""
        total, step = self.info().output_bytes, min(self.info().max_payload, MAX_LEN) - 1
        out = b"".join(self._call(CMD_GET_OUTPUT, struct.pack("<IH", off, min(step, total - off)))
                       for off in range(0, total, step))
        if len(out) != total:
            raise MicroError(f"{self.rpc.name}: GET_OUTPUT answers hold {len(out)} bytes, the output has {total}")
        return np.frombuffer(out, dtype=np.int8).copy()

    def stats(self) -> RunStats:
        return _stats(self._call(CMD_STATS), self.rpc.name)

    def calibrate(self, n: int = 1000, timeout: float | None = None) -> int:
        """Count for a known loop of exactly 2n+1 instructions plus the call: 2n+2 on QEMU.
        timeout: as in :meth:`run`."""
        _check_timeout(timeout, "calibrate timeout")
        d = self._call(CMD_CALIBRATE, struct.pack("<I", n), long=True, long_timeout=timeout)
        if len(d) != 8:
            raise MicroError(f"{self.rpc.name}: CALIBRATE answer has {len(d)} bytes, expected 8")
        return struct.unpack("<Q", d)[0]

    def profile(self) -> ProfileMarks:
        """The per-kernel marks of the last measured call (RUN: its last run; see ProfileMarks).
        Needs a profile build (``create_project(..., profile=True)``); a QEMU run without the
        counting plugin, or more marks than the firmware's table holds, is a one-line MicroError."""
        info = self.info()
        if not info.profile:
            raise MicroError(f"{self.rpc.name}: the firmware is not a profile build (create the project with "
                             "profile=True)")
        if info.counter is None:
            raise MicroError(f"{self.rpc.name}: no counter (QEMU without the instruction-count plugin): no profile")
        head, counts, marks = struct.calcsize(PROFILE_FMT), [], None
        while marks is None or len(counts) < marks:
            d = self._call(CMD_PROFILE, struct.pack("<H", len(counts)))
            if len(d) < head or (len(d) - head) % 8:
                raise MicroError(f"{self.rpc.name}: PROFILE answer has {len(d)} bytes")
            got, overhead = struct.unpack_from(PROFILE_FMT, d)
            if marks is not None and got != marks:
                raise MicroError(f"{self.rpc.name}: PROFILE answers disagree ({marks} then {got} marks)")
            marks = got
            new = [v for (v,) in struct.iter_unpack("<Q", d[head:])]
            if not new and len(counts) < marks:
                raise MicroError(f"{self.rpc.name}: the run made {marks} marks, more than the firmware's profile "
                                 f"table holds ({len(counts)})")
            counts += new
        return ProfileMarks(info.counter, counts, overhead)

    def memory(self) -> MemoryReport:
        """ELF section sizes + the measured peak stack, with the link's budgets (needs project_dir)."""
        if self.handler is None:
            raise MicroError("memory() needs a Session opened on a project_dir")
        b = self.handler.budgets()
        return memory_report(self.handler.elf_path(), self.stats().peak_stack_bytes, b.get("RAM"), b.get("FLASH"))

    def check_fit(self) -> MemoryReport:
        """Raises DoesNotFit (one line, with the excess) unless .data + .bss + peak stack fit the SRAM."""
        st, rep = self.stats(), self.memory()
        if st.stack_overflow:
            raise DoesNotFit(f"{self.rpc.name}: does not fit: the stack used all {st.stack_bytes:,} B left in SRAM "
                             "after .data + .bss")
        if rep.ram_budget and rep.sram_bytes > rep.ram_budget:
            excess = rep.sram_bytes - rep.ram_budget
            raise DoesNotFit(f"{self.rpc.name}: does not fit: .data + .bss + peak stack = {rep.sram_bytes:,} B "
                             f"exceed the {rep.ram_budget:,} B of SRAM by {excess:,} B", excess)
        return rep


def _raw(data) -> bytes:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).tobytes()
    if isinstance(data, (list, tuple)) and all(isinstance(x, np.ndarray) for x in data):
        return b"".join(np.ascontiguousarray(x).tobytes() for x in data)
    return bytes(data)


def _check_timeout(timeout: float | None, what: str) -> None:
    if timeout is not None and not timeout > 0:
        raise MicroError(f"{what} must be > 0 s, got {timeout!r}")


def _stats(d: bytes, name: str) -> RunStats:
    if len(d) < struct.calcsize(STATS_FMT):
        raise MicroError(f"{name}: statistics answer has {len(d)} bytes, expected {struct.calcsize(STATS_FMT)}")
    v = struct.unpack_from(STATS_FMT, d)
    return RunStats(counter=COUNTERS.get(v[0]), stack_overflow=bool(v[1]), runs=v[3], total=v[4],
                    min=v[5] if v[3] else 0, max=v[6], peak_stack_bytes=v[7], run_stack_bytes=v[8], stack_bytes=v[9],
                    arena_bytes=v[10], data_bytes=v[11], bss_bytes=v[12], rc=v[13])


def measure(project_dir: str, data=None, n: int = 1, options: dict | None = None,
            check_fit: bool = True, run_timeout: float = 600.0) -> tuple[np.ndarray, RunStats, MemoryReport]:
    """One call for a CLI: open a session on a built project, upload ``data`` (the inputs one
    after the other, see :meth:`Session.set_input`; zeros if None), run n times, and return (the
    outputs one after the other as an int8 array, RunStats, MemoryReport with the peak stack).
    check_fit: raise DoesNotFit if .data + .bss + peak stack exceed the SRAM budget;
    run_timeout: seconds each run may take (see Session)."""
    with Session(project_dir, options=options, run_timeout=run_timeout) as s:
        stats = s.run_each(np.zeros(s.info().input_bytes, np.int8) if data is None else data, n)
        out = s.get_output()
        rep = s.check_fit() if check_fit else s.memory()
    return out, stats, rep
