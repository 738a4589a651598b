"""Progress of work that takes more than a few seconds (kernels, the board build, a run).

Library code reports through :func:`task`; nothing is shown unless a front end turns it on with
:func:`enable` (the ``patchnet`` CLI does, except with ``-q``), so Python API users get no output
they did not ask for. On a terminal a task is a tqdm bar on stderr; otherwise (a log, CI) it is
plain lines, for work that takes more than :data:`LONG_S`: one when it has run that long, one
with its duration when it ends.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_stream = None  # where progress goes (None: nowhere)
_thread = threading.local()  # .silent: this thread's progress is off (see silenced)
#: seconds after which a plain-line task says what is running (and then, when it ended)
LONG_S = 2.0


def enable(stream=None) -> None:
    """Show progress on ``stream`` (default: stderr); ``disable()`` turns it off again."""
    global _stream
    _stream = stream or sys.stderr


def disable() -> None:
    global _stream
    _stream = None


@contextmanager
def silenced() -> Iterator[None]:
    """No progress inside, in this thread (the steps of one candidate while tuning shows its
    own progress; tuning's worker threads measure candidates side by side)."""
    saved, _thread.silent = getattr(_thread, "silent", False), True
    try:
        yield
    finally:
        _thread.silent = saved


@contextmanager
def task(desc: str, total: int | None = None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A piece of work named ``desc``, of ``total`` steps (None: unknown); yields
    ``advance(n=1)``. Silent unless :func:`enable` was called."""
    stream = None if getattr(_thread, "silent", False) else _stream
    if stream is None:
        yield lambda n=1: None
        return
    if stream.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, unit=unit or "it", file=stream, leave=False,
                  bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]" if total else None) as bar:
            yield bar.update
        return
    # Plain lines only for work that turns out long: a quick step (and a quick error) stays
    # silent, and a one-line error stays the only line.
    start = time.monotonic()
    of = f" ({total}{' ' + unit if unit else ''})" if total else ""
    timer = threading.Timer(LONG_S, lambda: print(f"{desc}{of} ...", file=stream, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield lambda n=1: None
    finally:
        timer.cancel()
    took = time.monotonic() - start
    if took >= LONG_S:
        print(f"{desc}: done in {took:.1f} s", file=stream, flush=True)
