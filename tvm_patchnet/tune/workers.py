"""Where tuning's candidates are measured: K local workers, or every worker of a TVM RPC tracker.

A worker takes a candidate's board project (its C already emitted by the builder), builds the
firmware (make), runs it on its board and checks the output against the default schedule's:
:func:`measure_project`, one code path for both kinds of worker.

- :class:`LocalWorkers` (``patchnet tune --workers K``): K threads on this machine, each
  building and running one candidate at a time (``make`` and QEMU are processes of their own).
- :class:`TrackerWorkers` (``patchnet tune --rpc-tracker HOST:PORT --rpc-key KEY``): TVM's RPC
  tracker (``python -m tvm.exec.rpc_tracker``) hands each candidate to a free worker registered
  under KEY; a worker is ``patchnet micro serve --tracker HOST:PORT --key KEY`` (:func:`serve`),
  a ``tvm.rpc.Server`` with one more function, :data:`MEASURE_FUNC`. A candidate travels as one
  request (:func:`pack`: the project without its build folder, the inputs and the expected
  output; a few hundred kB) and comes back as one JSON line.

TVM's RPC trusts its network (anyone who reaches a server can run code there): serve on
loopback or a private network only.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import PatchnetError

#: the global function a worker registers: packed request (bytes) -> JSON result (str)
MEASURE_FUNC = "patchnet.tune.measure"
#: seconds a remote candidate may take (build + run), as the tracker's session timeout
SESSION_TIMEOUT_S = 300


def run_project(project: str, inputs: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """Run a built profile project once on ``inputs``: (the kernel call's count, the output)."""
    from .. import micro

    with micro.Session(project) as s:
        s.run_each(inputs, 1)
        got = s.get_output()
        marks = s.profile()
    (count,) = marks.kernels()
    return count, got


def measure_project(project: str, inputs: list[np.ndarray], expected: np.ndarray | None,
                    name: str) -> tuple[int, np.ndarray]:
    """Build ``project`` and run it: (the kernel call's count (QEMU: executed instructions; a
    Nucleo: cycles), the output). Raises PatchnetError if the output is not ``expected`` (the
    default schedule's, bit for bit; None: the default schedule itself)."""
    from .. import micro, progress

    with progress.silenced():  # the tuning's one bar, not one per candidate's build
        micro.build(project)
        count, got = run_project(project, inputs)
    if expected is not None and not np.array_equal(got, expected):
        raise PatchnetError(f"{name}: the candidate's output differs from the default schedule's")
    return count, got


class LocalWorkers:
    """``k`` threads measuring candidates on this machine."""

    def __init__(self, k: int = 1):
        if k < 1:
            raise PatchnetError(f"--workers must be >= 1, got {k}")
        self.k = k
        self._pool = ThreadPoolExecutor(k, thread_name_prefix="patchnet-worker")

    def submit(self, project: str, inputs, expected, name: str) -> Future:
        """A future of :func:`measure_project`'s (count, output), or of the exception saying
        why there is none."""
        return self._pool.submit(measure_project, project, inputs, expected, name)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __str__(self) -> str:
        return f"{self.k} local worker" + ("s" if self.k > 1 else "")


def parse_address(text: str, option: str = "--rpc-tracker") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), or a one-line error naming ``option``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise PatchnetError(f"{option} {text}: give HOST:PORT (e.g. 127.0.0.1:9190)")
    return host, int(port)


def registered(host: str, port: int, key: str) -> int:
    """Number of workers registered under ``key`` at the tracker (free or busy)."""
    from tvm import rpc

    try:  # TVM's own connect retries for a minute
        socket.create_connection((host, port), timeout=5).close()
        summary = rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError) as e:
        raise PatchnetError(f"{host}:{port}: no RPC tracker answers ({e.strerror or e}; start one with "
                            f"'python -m tvm.exec.rpc_tracker --host {host} --port {port}')") from None
    return sum(1 for s in summary["server_info"] if s["key"].split(":", 1)[-1] == key)


class TrackerWorkers:
    """Every worker registered under ``key`` at the tracker ``host:port``, one candidate each
    at a time (one thread per worker found when tuning starts)."""

    def __init__(self, host: str, port: int, key: str):
        self.host, self.port, self.key = host, port, key
        self.n = registered(host, port, key)
        if not self.n:
            raise PatchnetError(f"--rpc-tracker {host}:{port}: no worker under key '{key}' (start one with "
                                f"'patchnet micro serve --tracker {host}:{port} --key {key}')")
        self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="patchnet-rpc")

    def submit(self, project: str, inputs, expected, name: str) -> Future:
        return self._pool.submit(self._remote, pack(project, inputs, expected, name))

    def _remote(self, request: bytes) -> tuple[int, np.ndarray]:
        from tvm import rpc

        session = rpc.connect_tracker(self.host, self.port).request(self.key, priority=1,
                                                                    session_timeout=SESSION_TIMEOUT_S)
        return _result(str(session.get_function(MEASURE_FUNC)(request)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __str__(self) -> str:
        return f"{self.n} worker{'s' if self.n > 1 else ''} of {self.host}:{self.port} (key {self.key})"


def pack(project: str, inputs: list[np.ndarray], expected: np.ndarray, name: str) -> bytes:
    """One candidate as a request: a tar of the project (sources only), ``probe.npz`` (the
    inputs and the expected output, if any) and the kernel's name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(project, "project", filter=lambda ti: None if ti.name.startswith("project/build") else ti)
        data = io.BytesIO()
        np.savez(data, **{f"input{i}": x for i, x in enumerate(inputs)},
                 **({} if expected is None else {"expected": expected}))
        _add_bytes(tar, "probe.npz", data.getvalue())
        _add_bytes(tar, "name", name.encode())
    return buf.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def measure_request(request: bytes) -> str:
    """A worker's side of :func:`pack`: build, run, check; ``{"count": N}`` or ``{"error": "..."}``
    (one line: a failed candidate is a result, never a dead worker)."""
    work = tempfile.mkdtemp(prefix="patchnet-worker-")
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes(request)), mode="r:gz") as tar:
            tar.extractall(work, filter="data")
        with np.load(os.path.join(work, "probe.npz")) as z:
            inputs = [z[f"input{i}"] for i in range(len(z.files) - ("expected" in z.files))]
            expected = z["expected"] if "expected" in z.files else None
        with open(os.path.join(work, "name")) as f:
            name = f.read()
        count, got = measure_project(os.path.join(work, "project"), inputs, expected, name)
        print(f"{time.strftime('%H:%M:%S')} {name}: {count:,}", flush=True)
        return json.dumps({"count": count, "output": base64.b64encode(got.tobytes()).decode(),
                           "dtype": str(got.dtype), "shape": list(got.shape)})
    except Exception as e:  # noqa: BLE001 - reported to the tuner as this candidate's result
        return json.dumps({"error": one_line(e)})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _result(reply: str) -> tuple[int, np.ndarray]:
    r = json.loads(reply)
    if "error" in r:
        raise PatchnetError(r["error"])
    out = np.frombuffer(base64.b64decode(r["output"]), r["dtype"]).reshape(r["shape"])
    return int(r["count"]), out


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _register() -> None:
    """The worker's RPC server gets :data:`MEASURE_FUNC` (run in the server's process)."""
    import tvm

    tvm.register_global_func(MEASURE_FUNC, measure_request, override=True)


def serve(tracker: str, key: str, host: str = "127.0.0.1", port: int = 9091,
          stop: threading.Event | None = None) -> None:
    """Run a worker: a ``tvm.rpc.Server`` on ``host`` (first free port of ``port`` .. ``port + 99``)
    registered at ``tracker`` (``HOST:PORT``) under ``key``, until ``stop`` is set or Ctrl-C."""
    from tvm import rpc

    addr = parse_address(tracker, "--tracker")
    registered(*addr, key)  # a one-line error now if no tracker answers
    server = rpc.Server(host, port, port + 100, tracker_addr=addr, key=key, silent=True,
                        server_init_callback=_register)
    print(f"worker {host}:{server.port} registered at {tracker} under key '{key}' (Ctrl-C stops it)", flush=True)
    try:
        while not (stop and stop.is_set()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
