"""An RPC fault injector: a Transport wrapper that corrupts, drops, duplicates, truncates and
delays frames in both directions and stalls (or resets) the board around requests, with every
random choice from one seeded numpy Generator.

A stall stops the board for a while: with ``pid`` (QEMU) the emulator gets SIGSTOP, then SIGCONT
(bytes already sent keep flowing; new ones wait in the pipe); without, the wrapper holds every
request back (the fake device answers only what it is given). Delays keep the byte stream in
order, as a serial link does: a held frame holds back the frames after it.
No threads: the wrapper does its timed work (releasing frames, SIGCONT) while the host reads.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tvm_patchnet.micro.rpc import MAX_LEN, SYNC
from tvm_patchnet.micro.transport import Transport

UP, DOWN = "up", "down"  #: host -> board, board -> host
ACTIONS = ("corrupt", "drop", "duplicate", "truncate", "delay")


@dataclass(frozen=True)
class Faults:
    """Probabilities per frame of one direction (at most one of ACTIONS per frame), and of a
    stall or a board reset just before a request reaches the board (UP only)."""

    corrupt: float = 0.0  #: flip 1 to 3 bits after the SYNC (CRC-16 detects them all)
    drop: float = 0.0
    duplicate: float = 0.0
    truncate: float = 0.0  #: cut the frame short; the rest never arrives
    delay: float = 0.0
    delay_s: float = 0.5  #: longest delay, seconds
    stall: float = 0.0
    stall_s: float = 1.0  #: longest stall, seconds
    reset: float = 0.0  #: needs FaultyTransport(reset=...)


NO_FAULTS = Faults()


@dataclass
class Rule:
    """A targeted fault: ``action`` (one of ACTIONS, "stall", "kill") on the next ``count``
    frames going ``direction`` with this cmd (answers: cmd | 0x80) and, if given, this status
    (the first payload byte). seconds: of a delay or a stall."""

    direction: str
    cmd: int
    action: str
    status: int | None = None
    seconds: float = 0.0
    count: int = 1

    def matches(self, direction: str, frame: bytes) -> bool:
        if self.count <= 0 or direction != self.direction or len(frame) < 8 or frame[2] != self.cmd:
            return False
        return self.status is None or (len(frame) > 8 and frame[6] == self.status)


@dataclass
class Log:
    """What was injected: counts per (direction, action)."""

    counts: dict = field(default_factory=dict)

    def add(self, direction: str, action: str) -> None:
        self.counts[direction, action] = self.counts.get((direction, action), 0) + 1

    def total(self) -> int:
        return sum(self.counts.values())


class FaultyTransport(Transport):
    """Wraps an open transport. up/down: random Faults per direction; rules: targeted faults,
    checked first; pid: the emulator process to SIGSTOP/SIGCONT/SIGKILL; reset: a callable
    that resets the board (the fake device's reset)."""

    def __init__(self, inner: Transport, seed: int = 0, up: Faults = NO_FAULTS, down: Faults = NO_FAULTS,
                 rules: list[Rule] | tuple = (), pid: int | None = None, reset: Callable[[], None] | None = None):
        self.inner, self.up_faults, self.down_faults, self.rules = inner, up, down, list(rules)
        self.rng, self.pid, self.reset_board = np.random.default_rng(seed), pid, reset
        self.up: deque = deque()  # (release time, bytes) to the board
        self.down: deque = deque()  # (release time, bytes) to the host
        self.raw = b""  # board -> host bytes not yet split into frames
        self.stall_until = 0.0
        self.stopped = False
        self.log = Log()

    # -- Transport -------------------------------------------------------------------------
    def open(self) -> None:
        pass

    def write(self, data: bytes, timeout: float) -> None:
        self._queue(self.up, self._inject(UP, bytes(data), self.up_faults))
        self._pump()

    def read(self, n: int, timeout: float) -> bytes:
        end = time.monotonic() + max(timeout, 0)
        while True:
            self._pump()
            now = time.monotonic()
            if self.down and self.down[0][0] <= now:
                out = b""
                while self.down and self.down[0][0] <= now and len(out) < n:
                    out += self.down.popleft()[1]
                return out
            if now >= end:
                return b""
            event = self._next_event()
            data = self.inner.read(4096, (end if event is None else min(end, event)) - now)
            if data:
                self.raw += data
                self._split()

    def close(self) -> None:
        self._resume()
        self.inner.close()

    # -- machinery -------------------------------------------------------------------------
    def _next_event(self) -> float | None:
        """When the next held frame is due or a stall ends."""
        times = [q[0][0] for q in (self.up, self.down) if q]
        if self.up and self.pid is None:
            times[0] = max(times[0], self.stall_until)  # requests wait out a stall of the fake
        if self.stopped:
            times.append(self.stall_until)
        return min(times, default=None)

    def _pump(self) -> None:
        now = time.monotonic()
        if self.stopped and now >= self.stall_until:
            self._resume()
        held = self.pid is None and now < self.stall_until
        while self.up and self.up[0][0] <= now and not held:
            self.inner.write(self.up.popleft()[1], 5.0)

    def _resume(self) -> None:
        if self.stopped:
            self.stopped = False
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _stall(self, seconds: float) -> None:
        self.stall_until = max(self.stall_until, time.monotonic() + seconds)
        if self.pid is not None and not self.stopped:
            os.kill(self.pid, signal.SIGSTOP)
            self.stopped = True

    @staticmethod
    def _queue(q: deque, items: list[tuple[float, bytes]]) -> None:
        for t, data in items:  # in order: a frame never overtakes the one before it
            q.append((max(t, q[-1][0]) if q else t, data))

    def _split(self) -> None:
        """Board -> host bytes into frames (faults apply per frame); bytes outside frames pass."""
        while True:
            i = self.raw.find(SYNC)
            cut = i if i >= 0 else len(self.raw) - self.raw.endswith(SYNC[:1])
            if cut:
                self._queue(self.down, [(time.monotonic(), self.raw[:cut])])
                self.raw = self.raw[cut:]
            if i < 0 or len(self.raw) < 6:
                return
            n = struct.unpack_from("<H", self.raw, 4)[0]
            if n > MAX_LEN + 1:  # not a frame header: pass the SYNC on
                self._queue(self.down, [(time.monotonic(), self.raw[:2])])
                self.raw = self.raw[2:]
                continue
            if len(self.raw) < 8 + n:
                return
            frame, self.raw = self.raw[:8 + n], self.raw[8 + n:]
            self._queue(self.down, self._inject(DOWN, frame, self.down_faults))

    def _inject(self, direction: str, frame: bytes, f: Faults) -> list[tuple[float, bytes]]:
        """The frame's fate: [(release time, bytes)], possibly empty."""
        now, rng = time.monotonic(), self.rng
        action, seconds = None, 0.0
        for rule in self.rules:
            if rule.matches(direction, frame):
                rule.count -= 1
                action, seconds = rule.action, rule.seconds
                break
        else:
            if direction == UP and self.reset_board is not None and rng.random() < f.reset:
                self.log.add(UP, "reset")
                self.reset_board()
            if direction == UP and rng.random() < f.stall:
                action, seconds = "stall", float(rng.uniform(0, f.stall_s))
            else:
                p = np.array([f.corrupt, f.drop, f.duplicate, f.truncate, f.delay])
                r = rng.random()
                if r < p.sum():
                    action = ACTIONS[int(np.searchsorted(np.cumsum(p), r, side="right"))]
                    seconds = float(rng.uniform(0, f.delay_s))
        if action is None:
            return [(now, frame)]
        self.log.add(direction, action)
        if action == "corrupt":
            b = bytearray(frame)
            for bit in rng.choice((len(b) - 2) * 8, size=int(rng.integers(1, 4)), replace=False):
                b[2 + bit // 8] ^= 1 << (bit % 8)
            return [(now, bytes(b))]
        if action == "drop":
            return []
        if action == "duplicate":
            return [(now, frame), (now, frame)]
        if action == "truncate":
            return [(now, frame[:int(rng.integers(1, len(frame)))])]
        if action == "delay":
            return [(now + seconds, frame)]
        if action == "stall":  # the board stops now, before this frame reaches it (or leaves it)
            self._stall(seconds)
            return [(now, frame)]
        if action == "kill":
            os.kill(self.pid, signal.SIGKILL)
            return [(now, frame)]
        raise ValueError(f"unknown fault action {action!r}")
