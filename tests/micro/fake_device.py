"""A fake board for the Nucleo path: speaks the firmware's RPC protocol (rpc.h: sessions, the
stored answer to a repeated RUN/CALIBRATE) behind a pyserial-like object, with fault injection
(dropped requests, corrupted answers, NAKs, stale answers, a fault on RUN)."""

from __future__ import annotations

import struct
import time
from typing import ClassVar

from tvm_patchnet.micro.rpc import (
    CMD_CALIBRATE,
    CMD_FAULT,
    CMD_GET_OUTPUT,
    CMD_INFO,
    CMD_PING,
    CMD_PROFILE,
    CMD_RUN,
    CMD_SET_INPUT,
    CMD_STATS,
    INFO_FMT,
    MAX_LEN,
    PROTO_VERSION,
    SESSION_CMDS,
    ST_BAD_ARG,
    ST_BAD_CMD,
    ST_CRC,
    ST_NO_SESSION,
    ST_OK,
    ST_STARTED,
    crc16,
    encode,
)


class FakeDevice:
    """Counter = cycles; each run costs ``cycles_per_run``; model: output[i] = input[i % n] + 1.
    consume: a run then adds 1 to its input in place (a second run gives input + 2), as the
    arena of a real model may. ``executed`` counts the RUN requests that ran the model."""

    def __init__(self, board="nucleo-f412zg", input_bytes=48, output_bytes=100, arena_bytes=256,
                 cycles_per_run=1234, drop=0, corrupt=0, nak=0, fault_on_run=False, stale=False, consume=False,
                 proto=PROTO_VERSION, byte_timeout=0.2, profile=None, profile_overhead=9, profile_cap=512):
        self.board, self.input_bytes, self.output_bytes = board, input_bytes, output_bytes
        self.arena, self.cycles, self.consume, self.proto = arena_bytes, cycles_per_run, consume, proto
        self.byte_timeout = byte_timeout  # s, as BYTE_TIMEOUT_MS in rpc.c
        # a profile build: the counts at each mark of a run (None: not a profile build)
        self.profile, self.profile_overhead, self.profile_cap = profile, profile_overhead, profile_cap
        self.drop, self.corrupt, self.nak, self.fault_on_run, self.stale = drop, corrupt, nak, fault_on_run, stale
        self.requests = 0
        self.executed = 0
        self.buf, self.last_byte = b"", 0.0
        self.reset()

    def reset(self):
        """What a board reset clears (.bss): the arena, the statistics, the session, the stored answer."""
        self.inp, self.out = bytearray(self.input_bytes), bytearray(self.output_bytes)
        self.runs = 0
        self.session = False
        self.last = None  # (cmd, seq, crc) of the last request
        self.stored = None  # [(status, body)] answering it again, for RUN/CALIBRATE

    def feed(self, data: bytes) -> bytes:
        """Bytes from the host -> bytes the device sends back. As the firmware's recv_frame, it
        drops a partial frame after byte_timeout s without bytes, and resyncs on a length
        beyond MAX_LEN."""
        now = time.monotonic()
        if now - self.last_byte > self.byte_timeout:
            self.buf = b""
        self.buf, self.last_byte = self.buf + data, now
        out = b""
        while True:
            i = self.buf.find(b"\xa5\x5a")
            if i < 0 or len(self.buf) < i + 6:
                return out
            cmd, seq, n = struct.unpack_from("<BBH", self.buf, i + 2)
            if n > MAX_LEN:
                self.buf = self.buf[i + 2:]
                continue
            if len(self.buf) < i + 8 + n:
                return out
            frame, self.buf = self.buf[i:i + 8 + n], self.buf[i + 8 + n:]
            self.requests += 1
            if self.drop:
                self.drop -= 1
                continue
            crc = struct.unpack_from("<H", frame, 6 + n)[0]
            if crc16(frame[2:6 + n]) != crc or self.nak:
                self.nak = max(self.nak - 1, 0)
                out += encode(cmd | 0x80, seq, bytes([ST_CRC]))
                continue
            if self.stale:  # an answer to an older request first: the host must skip it
                out += encode(cmd | 0x80, (seq - 1) & 0xFF, bytes([ST_OK]) + b"stale")
            if self.stored is not None and self.last == (cmd, seq, crc):
                answers = self.stored  # a repeat: the stored answer, no second run
            else:
                self.last, self.stored = (cmd, seq, crc), None
                answers = self.handle(cmd, frame[6:6 + n])
                if cmd in (CMD_RUN, CMD_CALIBRATE) and answers[-1][0] != "fault" and self.session:
                    self.stored = answers[-1:]
            for status, body in answers:
                if status == "fault":  # unsolicited fault frame, as fault_report() sends it
                    ans = bytearray(encode(CMD_FAULT, 0, bytes([ST_OK]) + body))
                    self.reset()
                else:
                    ans = bytearray(encode(cmd | 0x80, seq, bytes([status]) + body))
                if self.corrupt:
                    self.corrupt -= 1
                    ans[-3] ^= 0x40
                out += bytes(ans)

    def _stats(self, rc=0):
        return struct.pack("<BBHIQQQIIIIIIi", 1, 0, 0, self.runs, self.runs * self.cycles, self.cycles, self.cycles,
                           300, 40, 200_000, self.arena, 0, 1500, rc)

    def handle(self, cmd, p):
        if cmd in SESSION_CMDS and not self.session:
            return [(ST_NO_SESSION, b"")]
        if cmd == CMD_PING:
            return [(ST_OK, p)]
        if cmd == CMD_INFO:
            self.session = True
            return [(ST_OK, struct.pack(INFO_FMT, self.proto, 1, 1024, len(self.inp), len(self.out), self.arena,
                                        16_000_000, 262_144, 0, 1500, 200_000, 1, 1, int(self.profile is not None))
                     + self.board.encode())]
        if cmd == CMD_SET_INPUT:
            off = struct.unpack_from("<I", p)[0]
            if off + len(p) - 4 > len(self.inp):
                return [(ST_BAD_ARG, b"")]
            self.inp[off:off + len(p) - 4] = p[4:]
            return [(ST_OK, b"")]
        if cmd == CMD_RUN:
            if self.fault_on_run:  # the firmware's fault frame: exception 4, MMFAR, guard hit
                return [(ST_STARTED, b""), ("fault", struct.pack("<IIIIII", 4, 0x10, 0, 0, 1, 4704))]
            self.runs = struct.unpack_from("<I", p)[0]
            self.executed += 1
            n = len(self.inp)
            for _ in range(self.runs):
                self.out[:] = bytes((self.inp[i % n] + 1) & 0xFF for i in range(len(self.out)))
                if self.consume:
                    self.inp[:] = bytes((b + 1) & 0xFF for b in self.inp)
            return [(ST_STARTED, b""), (ST_OK, self._stats())]
        if cmd == CMD_GET_OUTPUT:
            off, n = struct.unpack_from("<IH", p)
            return [(ST_OK, bytes(self.out[off:off + n]))]
        if cmd == CMD_STATS:
            return [(ST_OK, self._stats())]
        if cmd == CMD_PROFILE:  # as rpc.c: 64 counts per answer, marks beyond the table not kept
            marks = list(self.profile or []) if self.runs else []
            have = min(len(marks), self.profile_cap)
            first = struct.unpack_from("<H", p)[0] if len(p) == 2 else 1 << 20
            if first > have:
                return [(ST_BAD_ARG, b"")]
            vals = marks[first:min(have, first + 64)]
            return [(ST_OK, struct.pack("<II", len(marks), self.profile_overhead if self.profile else 0)
                     + b"".join(struct.pack("<Q", v) for v in vals))]
        if cmd == CMD_CALIBRATE:
            n = struct.unpack_from("<I", p)[0]
            return [(ST_STARTED, b""), (ST_OK, struct.pack("<Q", 3 * n + 7))]
        return [(ST_BAD_CMD, b"")]


class FakeSerial:
    """Enough of serial.Serial for SerialTransport."""

    device: ClassVar[FakeDevice | None] = None  # set by the test
    opened: ClassVar[list] = []  # (port, baud) of each open

    def __init__(self, port, baudrate=9600, timeout=None, **kw):
        self.port, self.baudrate, self.timeout, self.write_timeout = port, baudrate, timeout, None
        self.rx = b""
        FakeSerial.opened.append((port, baudrate))

    def write(self, data):
        self.rx += FakeSerial.device.feed(bytes(data))
        return len(data)

    def flush(self):
        pass

    @property
    def in_waiting(self):
        return len(self.rx)

    def read(self, n=1):
        if not self.rx and self.timeout:
            time.sleep(min(self.timeout, 0.05))
        data, self.rx = self.rx[:n], self.rx[n:]
        return data

    def reset_input_buffer(self):
        self.rx = b""

    def close(self):
        pass

