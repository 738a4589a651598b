"""Compile a model to a Model-Library-Format-like archive and run it on a board.

``compile_model`` -> ``model.tar``:
    codegen/host/src/*.c, codegen/host/include/*.h   plain C (see ``tvm_patchnet.codegen``)
    metadata.json                                    arena/weight bytes, offsets, patch plan, I/O
    src/model.tflite|.onnx or src/model.json         what was compiled (for the host reference)

``run_model`` builds a board project around the archive (``microtvm_projects``), runs it over
the serial RPC and, with ``check``, compares the board's output with the host build of the same
int8 graph (the Relax VM on llvm), bit for bit. Sizes are bytes; on QEMU the count is executed
instructions, on Nucleo boards DWT cycles.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from .errors import PatchnetError
from .frontend import load_model

METADATA_VERSION = 1
TARGET_BOARDS = {"cortex-m4": ("qemu-m4", "nucleo-f412zg"), "cortex-m7": ("qemu-m7", "nucleo-f746zg", "nucleo-h743zi")}


@dataclass
class CompileResult:
    path: str
    metadata: dict


def compile_model(model: str, out_path: str, target: str = "cortex-m4", board: str = "qemu-m4",
                  patches=None, split=None, sram_bytes: int | None = None, resolution: int | None = None,
                  width: float | None = None, planner: str = "greedy") -> CompileResult:
    """Compile ``model`` (file or built-in name) to ``out_path`` (.tar or a directory).

    ``patches``/``split``: ints, "auto", or None for layer-by-layer execution. With only
    ``sram_bytes`` the cheapest setting that fits is chosen (layer by layer if that fits).
    ``planner`` places the arena: ``greedy`` (by size) or ``milp`` (exact where it can).
    """
    if target not in TARGET_BOARDS:
        raise PatchnetError(f"unknown target '{target}'; known: {', '.join(TARGET_BOARDS)}")
    if board not in TARGET_BOARDS[target]:
        raise PatchnetError(f"board '{board}' is not a {target} board; {target} boards: "
                            f"{', '.join(TARGET_BOARDS[target])}")
    graph = load_model(model, resolution=resolution, width=width)
    from .patch.search import resolve_plan

    plan = resolve_plan(graph, patches, split, sram_bytes)
    from .analysis.profile import profile
    from .codegen import emit_c

    report = profile(graph)
    with tempfile.TemporaryDirectory(prefix="patchnet-compile-") as tmp:
        src = os.path.join(tmp, "codegen", "host", "src")
        info = emit_c(graph, src, plan, planner)
        inc = os.path.join(tmp, "codegen", "host", "include")
        os.makedirs(inc)
        for f in os.listdir(src):
            if f.endswith(".h"):
                shutil.copy(os.path.join(src, f), inc)
        meta = {
            "version": METADATA_VERSION,
            "model": graph.name,
            "target": target,
            "board": board,
            "arena_bytes": info.arena_bytes,
            "weight_bytes": info.weight_bytes,
            "input": _io(graph, graph.inputs[0]),
            "output": _io(graph, graph.outputs[0]),
            "planner": planner,
            "arena_lower_bound_bytes": info.memory.lower_bound_bytes,
            "allocations": [{"name": a.name, "offset": a.offset, "bytes": a.size, "first_op": a.first,
                             "last_op": a.last} for a in info.memory.allocations],
            "kernels": len(info.kernels),
            "profile": {"peak_bytes": report.peak_bytes, "peak_bytes_no_inplace": report.peak_bytes_no_inplace,
                        "total_macs": report.total_macs},
            "patch": plan.to_json() if plan else None,
            "source": _store_source(model, resolution, width, tmp),
        }
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(meta, f, indent=2)
        _write_output(tmp, out_path)
    return CompileResult(out_path, meta)


def _io(graph, name: str) -> dict:
    t = graph.t(name)
    return {"name": name, "shape": list(t.shape), "dtype": t.dtype, "scale": t.s if t.is_quantized else None,
            "zero_point": t.zp}


def _store_source(model: str, resolution, width, tmp: str) -> dict:
    os.makedirs(os.path.join(tmp, "src"))
    if os.path.exists(model):
        name = "model" + os.path.splitext(model)[1].lower()
        shutil.copy(model, os.path.join(tmp, "src", name))
        return {"file": f"src/{name}"}
    return {"builtin": model, "resolution": resolution, "width": width}


def _write_output(tmp: str, out_path: str) -> None:
    """Atomically: a .tar archive, or a directory tree (nothing half-written on failure)."""
    out_path = os.path.abspath(out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    if out_path.endswith(".tar"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for entry in sorted(os.listdir(tmp)):
                tar.add(os.path.join(tmp, entry), arcname=entry)
        from .cli.common import write_atomic

        write_atomic(out_path, buf.getvalue())
        return
    staging = out_path + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(tmp, staging)
    shutil.rmtree(out_path, ignore_errors=True)
    os.replace(staging, out_path)


def open_archive(path: str, into: str) -> dict:
    """Extract a compiled model (.tar or directory) into ``into``; returns its metadata."""
    if not os.path.exists(path):
        raise PatchnetError(f"{path}: no such compiled model")
    if os.path.isdir(path):
        shutil.copytree(path, into, dirs_exist_ok=True)
    else:
        try:
            with tarfile.open(path) as tar:
                tar.extractall(into, filter="data")
        except tarfile.TarError as e:
            raise PatchnetError(f"{path}: not a compiled model archive ({str(e).splitlines()[0]})") from None
    meta_path = os.path.join(into, "metadata.json")
    if not os.path.exists(meta_path):
        raise PatchnetError(f"{path}: no metadata.json (not made by 'patchnet compile')")
    with open(meta_path) as f:
        return json.load(f)


@dataclass
class RunReport:
    """One measured run on a board. Bytes; ``count`` is per run, in ``counter`` units."""

    board: str
    memory_map: str | None
    counter: str | None
    count: float
    cpu_hz: int
    sram_bytes: int
    flash_bytes: int
    stack_peak_bytes: int
    arena_bytes: int
    predicted_arena_bytes: int
    #: the planner's activation peak (paper rule; patched: whole network, input at patch size)
    planner_peak_bytes: int
    input_bytes: int
    output_bytes: int
    output: list
    reference_match: bool | None = None
    patched: bool = False

    @property
    def other_sram_bytes(self) -> int:
        """Measured SRAM outside the arena (which holds the input and output) and the stack: RPC
        buffers, firmware state."""
        return self.sram_bytes - self.arena_bytes - self.stack_peak_bytes

    def to_json(self) -> dict:
        d = asdict(self)
        d["other_sram_bytes"] = self.other_sram_bytes
        d["instructions" if self.counter == "instructions" else "cycles"] = self.count
        if self.counter != "instructions":
            d["milliseconds"] = 1e3 * self.count / self.cpu_hz if self.cpu_hz else None
        return d


def run_model(archive: str, board: str | None = None, memory_map: str | None = None, x: np.ndarray | None = None,
              repeat: int = 1, check: bool = False, work_dir: str | None = None) -> RunReport:
    """Build ``archive`` for ``board`` (default: the one it was compiled for), run it ``repeat``
    times on input ``x`` (seeded random int8 if None) and measure it."""
    from . import micro

    with tempfile.TemporaryDirectory(prefix="patchnet-run-") as tmp:
        work = work_dir or tmp
        model_dir = os.path.join(work, "model")
        meta = open_archive(archive, model_dir)
        board = board or meta["board"]
        shape, dtype = tuple(meta["input"]["shape"]), meta["input"]["dtype"]
        if x is None:
            x = np.random.default_rng(0).integers(-128, 128, size=shape, dtype=np.int8)
        x = np.asarray(x)
        if tuple(x.shape) != shape or str(x.dtype) != dtype:
            raise PatchnetError(f"input has shape {list(x.shape)} {x.dtype}, the model expects {list(shape)} {dtype}")
        project = os.path.join(work, "project")
        micro.create_project(os.path.join(model_dir, "codegen", "host", "src"), board, project,
                             memory_map=memory_map)
        try:
            micro.build(project)
        except micro.DoesNotFit as e:
            raise micro.DoesNotFit(f"{e}{_fit_hint(meta, model_dir, str(e))}") from None
        with micro.Session(project) as s:
            info = s.info()
            stats = s.run_each(x, repeat)
            y = np.asarray(s.get_output(), np.int8).reshape(meta["output"]["shape"])
            mem = s.check_fit()  # .data + .bss + peak stack against the board's (or map's) SRAM
        match = bool(np.array_equal(y, _host_reference(meta, model_dir, x))) if check else None
    planner_peak = meta["patch"]["peak_bytes"] if meta["patch"] else meta["profile"]["peak_bytes"]
    return RunReport(board, memory_map, stats.counter, stats.per_run, info.cpu_hz, mem.sram_bytes or 0,
                     mem.flash_bytes, stats.peak_stack_bytes, stats.arena_bytes, meta["arena_bytes"], planner_peak,
                     info.input_bytes, info.output_bytes, y.tolist(), match, meta["patch"] is not None)


def _fit_hint(meta: dict, model_dir: str, message: str) -> str:
    """'; try ...': the patch setting the planner expects to free the SRAM the link lacks."""
    import re

    m = re.search(r"SRAM by ([\d,]+) B", message)
    if not m:
        return ""
    target = meta["arena_bytes"] - int(m.group(1).replace(",", ""))
    if target <= 0:
        return ""
    from .patch.search import choose_plan

    try:
        plan = choose_plan(_source_graph(meta, model_dir), sram_bytes=target)
    except PatchnetError:
        return "; no patch setting brings the activations under the remaining SRAM"
    if plan is None:
        return ""
    return (f"; try 'patchnet compile {meta['model']} --patches {plan.patches} --split {plan.split}' "
            f"(planner peak {plan.peak_bytes:,} B <= {target:,} B)")


def _source_graph(meta: dict, model_dir: str):
    src = meta["source"]
    if "file" in src:
        return load_model(os.path.join(model_dir, src["file"]))
    return load_model(src["builtin"], resolution=src["resolution"], width=src["width"])


def _host_reference(meta: dict, model_dir: str, x: np.ndarray) -> np.ndarray:
    """The unpatched int8 graph run on the host (Relax VM, llvm): the reference for the board."""
    from .runtime import run_graph

    return run_graph(_source_graph(meta, model_dir), [x])[0].reshape(meta["output"]["shape"])
