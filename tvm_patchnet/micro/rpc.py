"""Serial RPC, host side (the firmware side and the frame layout are in
microtvm_projects/common/rpc.h). Request/response in lockstep, CRC-16/CCITT-FALSE per frame.

Every new request gets a fresh sequence number (the first one random, so a board still holding
an earlier host's last request cannot take a new request for a repeat of it); a retry re-sends
the same bytes with the same seq. The board answers a repeat of its last RUN/CALIBRATE with the
stored result instead of running again, so a retried RUN never runs twice on an input the first
run consumed. Any answer carrying the request's seq is its answer, whichever attempt it answers;
other frames are stale and skipped. INFO opens a session (and checks the protocol version); a
board that reset since then refuses the other commands (BoardReset). An outcome the host cannot
confirm is an exception, never a result."""

from __future__ import annotations

import binascii
import secrets
import struct
import time

from .errors import (
    BoardReset,
    BoardStalled,
    CrcError,
    DeviceFault,
    DeviceNotAnswering,
    MicroError,
    ModelError,
    ProtocolMismatch,
)
from .transport import Transport

#: RPC_PROTO_VERSION of the firmware this host speaks to (3: several inputs / outputs; 4: PROFILE)
PROTO_VERSION = 4
SYNC = b"\xa5\x5a"
CMD_PING, CMD_INFO, CMD_SET_INPUT, CMD_RUN, CMD_GET_OUTPUT, CMD_STATS, CMD_CALIBRATE, CMD_PROFILE = range(8)
CMD_FAULT = 0x7F
ST_OK, ST_CRC, ST_BAD_CMD, ST_BAD_ARG, ST_MODEL, ST_NO_SESSION, ST_STARTED = 0, 1, 2, 3, 4, 5, 0x80
SESSION_CMDS = frozenset({CMD_SET_INPUT, CMD_RUN, CMD_GET_OUTPUT, CMD_STATS, CMD_CALIBRATE, CMD_PROFILE})
MAX_LEN = 1024
POLL_MAX = 10.0  #: seconds: longest gap between re-sends of a RUN/CALIBRATE while waiting for its result
COUNTERS = {0: None, 1: "cycles", 2: "instructions"}
CMD_NAMES = {CMD_PING: "PING", CMD_INFO: "INFO", CMD_SET_INPUT: "SET_INPUT", CMD_RUN: "RUN",
             CMD_GET_OUTPUT: "GET_OUTPUT", CMD_STATS: "STATS", CMD_CALIBRATE: "CALIBRATE", CMD_PROFILE: "PROFILE"}
EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}

INFO_FMT = "<BBHIIIIIIIIBBH"  # then the board name; the last u16's low byte: flags (INFO_PROFILE)
INFO_PROFILE = 1  #: INFO flag: a profile build (model.c marks its kernel calls; PROFILE answers them)
PROFILE_FMT = "<II"  # PROFILE's answer: marks, overhead per mark; then u64 counts
STATS_FMT = "<BBHIQQQIIIIIIi"


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor (the firmware's
    crc16 in rpc.c; here binascii's C implementation of the same CRC)."""
    return binascii.crc_hqx(data, crc)


def encode(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BBH", cmd, seq, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


class _BadFrame(Exception):
    pass


class RpcClient:
    """One board's RPC endpoint.

    timeout: seconds to wait for the answer to one attempt of a short request; retries: extra
    attempts after a timeout or CRC error; long_timeout: seconds a RUN/CALIBRATE may take,
    counted from sending it, before the board counts as stalled (BoardStalled). While waiting,
    the request is re-sent now and then (same seq: the board answers a repeat with the stored
    result), so a lost STARTED or result frame costs seconds, not the whole timeout.
    """

    def __init__(self, transport: Transport, timeout: float = 2.0, retries: int = 3,
                 long_timeout: float = 600.0, name: str = "board"):
        self.t, self.timeout, self.retries, self.long_timeout, self.name = transport, timeout, retries, long_timeout, name
        self.seq = secrets.randbelow(256)  #: seq of the last request; a random start per client (see above)
        self.buf = b""
        self.info: bytes | None = None  #: INFO's data from the last hello()
        self.session = False  #: a session is open (hello() succeeded and no reset was seen since)
        self.reset_seen = False  #: the board reset during the session; cleared by a new input or hello()
        self.crc_errors = 0  #: corrupted frames seen (either direction), for diagnostics

    # -- frames ----------------------------------------------------------------------------
    def _next_frame(self, deadline: float):
        """(cmd, seq, payload) of the next good frame, None on timeout; _BadFrame when only a
        corrupted frame arrived."""
        while True:
            got = self._scan()
            if got is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.buf += self.t.read(4096, left)

    def _scan(self):
        """The first good frame in the buffer, dropping what comes before it. A frame start whose
        bytes have not all arrived is kept, but does not hide a good frame after it (a corrupted
        length or a truncated frame would otherwise swallow the frames behind it)."""
        buf, i, keep, bad = self.buf, 0, None, False
        while (i := buf.find(SYNC, i)) >= 0:
            if len(buf) - i < 6:
                keep = i if keep is None else keep
                break
            n = struct.unpack_from("<H", buf, i + 4)[0]
            end = i + 8 + n
            if n > MAX_LEN + 1:
                pass  # not a frame header
            elif end > len(buf):
                keep = i if keep is None else keep
            elif crc16(buf[i + 2:end - 2]) == struct.unpack_from("<H", buf, end - 2)[0]:
                self.buf = buf[end:]
                return buf[i + 2], buf[i + 3], buf[i + 6:end - 2]
            elif keep is None:
                bad = True  # a corrupted or truncated frame
            i += 1
        self.buf = buf[len(buf) - buf.endswith(SYNC[:1]) if keep is None else keep:]
        if bad:
            self.crc_errors += 1
            raise _BadFrame()
        return None

    def _answer(self, cmd: int, seq: int, deadline: float):
        """(status, data) of the answer to (cmd, seq); None on timeout. Faults raise."""
        while True:
            got = self._next_frame(deadline)
            if got is None:
                return None
            rcmd, rseq, payload = got
            if rcmd == CMD_FAULT:
                self.session, self.reset_seen = False, True  # the board reset: the session is gone
                raise self._fault(payload[1:])  # [0] is the status byte
            if rcmd == cmd | 0x80 and rseq == seq and payload:
                return payload[0], payload[1:]
            # anything else answers an earlier request (or repeats an answer): skip it

    def _fault(self, p: bytes) -> DeviceFault:
        exc, cfsr, hfsr, mmfar, guard, stack = struct.unpack_from("<IIIIII", p.ljust(24, b"\0"))
        if guard:
            return DeviceFault(f"{self.name}: stack overflow: the run needs more than the {stack:,} B of stack "
                               "left in SRAM after .data + .bss (MPU guard hit; the board reset)")
        return DeviceFault(f"{self.name}: CPU fault {EXCEPTIONS.get(exc, exc)} (CFSR=0x{cfsr:08x} "
                           f"HFSR=0x{hfsr:08x} MMFAR=0x{mmfar:08x}); the board reset")

    # -- requests --------------------------------------------------------------------------
    def hello(self) -> bytes:
        """INFO: opens a session on the board and checks that it speaks this host's protocol.
        Returns INFO's data. call() does this itself before the first command that needs one."""
        self.session = False
        d = self.call(CMD_INFO)
        if not d or d[0] != PROTO_VERSION:
            raise ProtocolMismatch(f"{self.name}: firmware speaks protocol {d[0] if d else 'unknown'}, host "
                                   f"{PROTO_VERSION}: rebuild the project")
        self.info, self.session, self.reset_seen = d, True, False
        return d

    def call(self, cmd: int, payload: bytes = b"", long: bool = False, long_timeout: float | None = None) -> bytes:
        """Send a request and return the answer's data (after the status byte). long: RUN or
        CALIBRATE, which answer STARTED and then, up to long_timeout s after sending (default
        self.long_timeout), the result."""
        what = CMD_NAMES.get(cmd, hex(cmd))
        if cmd in SESSION_CMDS and not self.session:
            if self.reset_seen and cmd in (CMD_RUN, CMD_GET_OUTPUT, CMD_STATS):
                raise BoardReset(f"{self.name}: the board reset during the session: {what} refused (its input "
                                 "and output are gone: set the input again)")
            self.hello()
        self.seq = (self.seq + 1) & 0xFF
        frame = encode(cmd, self.seq, payload)
        if long:
            limit = self.long_timeout if long_timeout is None else long_timeout
            status, data = self._wait_long(cmd, frame, limit)
        else:
            status, data = self._exchange(cmd, frame)
        if status == ST_OK:
            return data
        if status == ST_MODEL:
            rc = struct.unpack_from("<i", data, len(data) - 4)[0] if len(data) >= 4 else -1
            raise ModelError(f"{self.name}: tvmgen_default_run returned {rc}")
        if status == ST_NO_SESSION:
            self.session, self.reset_seen = False, True
            raise BoardReset(f"{self.name}: the board reset during the session: {what} refused (its input and "
                             "output are gone)")
        kind = {ST_BAD_CMD: "unknown command", ST_BAD_ARG: "bad argument"}.get(status, "unexpected status")
        raise MicroError(f"{self.name}: {what} refused (status {status}: {kind})")

    def _exchange(self, cmd: int, frame: bytes) -> tuple[int, bytes]:
        """A short request: up to retries + 1 attempts of timeout s each, all with the same seq."""
        reasons = []
        for _attempt in range(self.retries + 1):
            self.t.write(frame, self.timeout)
            try:
                ans = self._answer(cmd, self.seq, time.monotonic() + self.timeout)
            except _BadFrame:
                reasons.append("CRC error")
                continue
            if ans is None:
                reasons.append("timeout")
            elif ans[0] == ST_CRC:
                self.crc_errors += 1
                reasons.append("CRC error")
            else:
                return ans
        what = CMD_NAMES.get(cmd, hex(cmd))
        if all(r == "CRC error" for r in reasons):
            raise CrcError(f"{self.name}: {what}: CRC error on all {len(reasons)} attempts "
                           "(wrong baud rate or a noisy link?)")
        raise DeviceNotAnswering(f"{self.name}: device not answering {what} after {len(reasons)} attempts "
                                 f"({', '.join(reasons)}; {self.timeout:g} s timeout)")

    def _wait_long(self, cmd: int, frame: bytes, limit: float) -> tuple[int, bytes]:
        """RUN/CALIBRATE: the result within limit s of sending. The request is re-sent (same seq)
        at once after a corrupted frame or a NAK, and otherwise after timeout s, then at doubling
        intervals up to POLL_MAX: a board that is still running reads the repeats afterwards and
        answers each with the stored result, which the host skips as stale."""
        what = CMD_NAMES.get(cmd, hex(cmd))
        t0 = time.monotonic()
        deadline, poll, started, bad = t0 + limit, self.timeout, False, 0
        self.t.write(frame, self.timeout)
        resend = t0 + poll
        while True:
            try:
                ans = self._answer(cmd, self.seq, min(deadline, resend))
            except _BadFrame:
                ans = (ST_CRC, b"")
            else:
                if ans is not None and ans[0] == ST_CRC:
                    self.crc_errors += 1
            now = time.monotonic()
            if ans is None:
                if now >= deadline:
                    raise BoardStalled(f"{self.name}: board stalled: {what} sent {now - t0:.1f} s ago, no "
                                       f"{'result' if started else 'answer'} (timeout {limit:g} s; raise it "
                                       "with --timeout)")
                poll = min(2 * poll, max(self.timeout, POLL_MAX))
            elif ans[0] == ST_STARTED:
                started = True
                continue
            elif ans[0] == ST_CRC:
                bad += 1
                if bad > self.retries:
                    raise CrcError(f"{self.name}: {what}: {bad} corrupted answers or NAKs, no result "
                                   "(wrong baud rate or a noisy link?)")
            else:
                return ans
            self.t.write(frame, self.timeout)
            resend = now + poll
