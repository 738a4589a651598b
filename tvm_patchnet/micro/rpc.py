"""Serial RPC, host side (the firmware side and the frame layout are in
microtvm_projects/common/rpc.h). Request/response in lockstep, CRC-16/CCITT-FALSE per frame,
a sequence number to drop stale answers, and retries on timeouts and CRC errors."""

from __future__ import annotations

import struct
import time

from .errors import CrcError, DeviceFault, DeviceNotAnswering, MicroError, ModelError
from .transport import Transport

SYNC = b"\xa5\x5a"
CMD_PING, CMD_INFO, CMD_SET_INPUT, CMD_RUN, CMD_GET_OUTPUT, CMD_STATS, CMD_CALIBRATE = range(7)
CMD_FAULT = 0x7F
ST_OK, ST_CRC, ST_BAD_CMD, ST_BAD_ARG, ST_MODEL, ST_STARTED = 0, 1, 2, 3, 4, 0x80
MAX_LEN = 1024
COUNTERS = {0: None, 1: "cycles", 2: "instructions"}
CMD_NAMES = {CMD_PING: "PING", CMD_INFO: "INFO", CMD_SET_INPUT: "SET_INPUT", CMD_RUN: "RUN",
             CMD_GET_OUTPUT: "GET_OUTPUT", CMD_STATS: "STATS", CMD_CALIBRATE: "CALIBRATE"}
EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}

INFO_FMT = "<BBHIIIIIIII"  # then the board name
STATS_FMT = "<BBHIQQQIIIIIIi"


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BBH", cmd, seq, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


class _BadFrame(Exception):
    pass


class RpcClient:
    """One board's RPC endpoint.

    timeout: seconds to wait for an answer to a short request (and for the STARTED answer of
    RUN/CALIBRATE); retries: extra attempts after a timeout or CRC error; long_timeout: seconds
    a RUN/CALIBRATE may take once started (not retried: the board is busy, not lost).
    """

    def __init__(self, transport: Transport, timeout: float = 2.0, retries: int = 3,
                 long_timeout: float = 600.0, name: str = "board"):
        self.t, self.timeout, self.retries, self.long_timeout, self.name = transport, timeout, retries, long_timeout, name
        self.seq = 0
        self.buf = b""
        self.crc_errors = 0  #: corrupted frames seen (either direction), for diagnostics

    # -- frames ----------------------------------------------------------------------------
    def _fill(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.buf += self.t.read(4096, left)
        return True

    def _next_frame(self, deadline: float):
        """(cmd, seq, payload) of the next frame, None on timeout; _BadFrame on a CRC error."""
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                self.buf = self.buf[-1:] if self.buf.endswith(SYNC[:1]) else b""
                if not self._fill(2, deadline):
                    return None
                continue
            self.buf = self.buf[i:]
            if not self._fill(6, deadline):
                return None
            cmd, seq, n = struct.unpack_from("<BBH", self.buf, 2)
            if n > MAX_LEN + 1:
                self.buf = self.buf[2:]  # not a frame: resync after this SYNC
                continue
            if not self._fill(8 + n, deadline):
                return None
            frame, self.buf = self.buf[:8 + n], self.buf[8 + n:]
            if crc16(frame[2:6 + n]) != struct.unpack_from("<H", frame, 6 + n)[0]:
                self.crc_errors += 1
                raise _BadFrame()
            return cmd, seq, frame[6:6 + n]

    def _answer(self, cmd: int, seq: int, deadline: float):
        """(status, data) of the answer to (cmd, seq); None on timeout. Faults raise."""
        while True:
            got = self._next_frame(deadline)
            if got is None:
                return None
            rcmd, rseq, payload = got
            if rcmd == CMD_FAULT:
                raise self._fault(payload[1:])  # [0] is the status byte
            if rcmd == cmd | 0x80 and rseq == seq and payload:
                return payload[0], payload[1:]
            # anything else is a stale answer to an earlier, retried request: skip it

    def _fault(self, p: bytes) -> DeviceFault:
        exc, cfsr, hfsr, mmfar, guard, stack = struct.unpack_from("<IIIIII", p.ljust(24, b"\0"))
        if guard:
            return DeviceFault(f"{self.name}: stack overflow: the run needs more than the {stack:,} B of stack "
                               "left in SRAM after .data + .bss (MPU guard hit; the board reset)")
        return DeviceFault(f"{self.name}: CPU fault {EXCEPTIONS.get(exc, exc)} (CFSR=0x{cfsr:08x} "
                           f"HFSR=0x{hfsr:08x} MMFAR=0x{mmfar:08x}); the board reset")

    # -- requests --------------------------------------------------------------------------
    def call(self, cmd: int, payload: bytes = b"", long: bool = False, long_timeout: float | None = None) -> bytes:
        """Send a request and return the answer's data (after the status byte)."""
        what = CMD_NAMES.get(cmd, hex(cmd))
        reasons = []
        for _attempt in range(self.retries + 1):
            self.seq = (self.seq + 1) & 0xFF
            self.buf = b""
            while self.t.read(4096, 0):  # drop leftovers of earlier attempts
                pass
            self.t.write(encode(cmd, self.seq, payload), self.timeout)
            try:
                ans = self._answer(cmd, self.seq, time.monotonic() + self.timeout)
                if ans is not None and ans[0] == ST_STARTED and long:
                    limit = long_timeout or self.long_timeout
                    ans = self._answer(cmd, self.seq, time.monotonic() + limit)
                    if ans is None:
                        raise DeviceNotAnswering(f"{self.name}: {what} started but did not finish within {limit:g} s")
            except _BadFrame:
                reasons.append("CRC error")
                continue
            if ans is None:
                reasons.append("timeout")
                continue
            status, data = ans
            if status == ST_CRC:
                self.crc_errors += 1
                reasons.append("CRC error")
                continue
            if status == ST_OK:
                return data
            if status == ST_MODEL:
                rc = struct.unpack_from("<i", data, len(data) - 4)[0] if len(data) >= 4 else -1
                raise ModelError(f"{self.name}: tvmgen_default_run returned {rc}")
            raise MicroError(f"{self.name}: {what} refused (status {status}: "
                             f"{'unknown command' if status == ST_BAD_CMD else 'bad argument'})")
        if reasons and all(r == "CRC error" for r in reasons):
            raise CrcError(f"{self.name}: {what}: CRC error on all {len(reasons)} attempts "
                           "(wrong baud rate or a noisy link?)")
        raise DeviceNotAnswering(f"{self.name}: device not answering {what} after {len(reasons)} attempts "
                                 f"({', '.join(reasons)}; {self.timeout:g} s timeout)")
