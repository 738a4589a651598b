"""Compile a model to a Model-Library-Format-like archive and run it on a board.

``compile_model`` -> ``model.tar`` (``.tar.gz`` or a folder; the format: :mod:`tvm_patchnet.archive`):
    codegen/host/src/*.c, codegen/host/include/*.h   plain C (see ``tvm_patchnet.codegen``)
    metadata.json                                    arena/weight bytes, offsets, patch plan, I/O
    src/model.tflite|.onnx                           what was compiled (for the host reference)
    src/graph.npz                                    the int8 graph, when the file does not rebuild it

``run_model`` builds a board project around the archive (``microtvm_projects``), runs it over
the serial RPC on the model's inputs (int8 or float32, one or several) and, with ``check``,
compares every output with the host build of the same int8 graph (the Relax VM on llvm), bit for
bit; with ``check_float``, the dequantized outputs with the float model (ONNX) on the host. Sizes are bytes; on QEMU the count is executed instructions, on Nucleo boards DWT cycles.
With ``profile`` the firmware is a profile build and the report adds each kernel call's count
(:class:`KernelProfile`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import progress
from .archive import (
    FORMAT,
    GRAPH_MEMBER,
    METADATA_VERSION,
    TARGET_BOARDS,
    check_output,
    io_bytes,
    load_graph,
    read_archive,
    save_graph,
    write_archive,
)
from .errors import PatchnetError
from .frontend import load_model
from .graph import Graph
from .rewrite import simplify

#: bytes of stack a firmware links with at least (microtvm_projects: PROJECT_OPTIONS["stack_min"])
STACK_MIN_BYTES = 4096


@dataclass
class CompileResult:
    path: str
    metadata: dict
    #: why ``auto`` chose layer by layer (one line), None otherwise
    note: str | None = None


def compile_model(model: str | Graph, out_path: str, target: str | None = None, board: str | None = None,
                  patches=None, split=None, sram_bytes: int | None = None, resolution: int | None = None,
                  width: float | None = None, planner: str = "greedy", calibration=None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  warn: Callable[[str], None] | None = None, tuning_records: str | None = None) -> CompileResult:
    """Compile ``model`` to ``out_path`` (.tar, .tar.gz / .tgz or a folder).

    ``tuning_records``: records from :func:`tvm_patchnet.tune.tune_model` (``patchnet tune``) for
    ``board``: each tunable kernel takes its best measured schedule, the others the default one
    (``metadata["tuning"]`` says how many were tuned).

    ``model``: a model file, a built-in name, or an int8 :class:`Graph` (e.g. quantized in Python
    with :func:`tvm_patchnet.ptq.quantize`). ``calibration`` / ``mean`` / ``std`` / ``warn``: how a
    float (ONNX) model is quantized (see :func:`tvm_patchnet.frontend.load_model`). The archive
    keeps what was compiled for ``run --check``: the model file, and the int8 graph itself
    (``src/graph.npz``) when the file alone does not rebuild it (a quantized float model, a graph).

    ``patches``/``split``: ints, "auto", or None for layer-by-layer execution. With only
    ``sram_bytes`` the cheapest setting that fits is chosen (layer by layer if that fits).
    ``planner`` places the arena: ``greedy`` (by size) or ``milp`` (exact where it can).
    ``board`` implies its ``target`` (None: the board's core, or cortex-m4); ``target`` alone
    implies its QEMU board; a board of another core is a one-line error.
    ``out_path`` must be new, an empty folder or an earlier output (nothing else is replaced);
    the archive appears whole or not at all. Raises DoesNotFit when the arena (with the
    minimum stack) or the weights exceed ``board``'s SRAM or flash.
    """
    target, board = resolve_target_board(target, board)
    check_output(out_path)  # before minutes of work, not after
    if isinstance(model, Graph):
        if resolution is not None or width is not None or calibration is not None or mean is not None \
                or std is not None:
            raise PatchnetError("compile_model: resolution, width and calibration apply to model files and names, "
                                "not to a Graph")
        model.validate()
        graph = simplify(model)
    elif isinstance(model, (str, os.PathLike)):
        model = str(model)
        graph = load_model(model, resolution=resolution, width=width, calibration=calibration, mean=mean, std=std,
                           warn=warn)
    else:
        raise PatchnetError(f"compile_model: model must be a file path, a built-in name or an int8 Graph, "
                            f"not {type(model).__name__}")
    from .patch.search import resolve

    searching = "auto" in (patches, split) or sram_bytes is not None  # else a lookup, no progress to show
    with progress.task("choosing the patch setting") if searching else contextlib.nullcontext():
        chosen = resolve(graph, patches, split, sram_bytes, planner)
    plan = chosen.plan
    from .analysis.profile import profile
    from .codegen import emit_c

    report = profile(graph)
    with tempfile.TemporaryDirectory(prefix="patchnet-compile-") as tmp:
        src = os.path.join(tmp, "codegen", "host", "src")
        tuned, tuning = None, None
        if tuning_records is not None:
            from .tune import tuned_kernels

            tuned, n, m = tuned_kernels(graph, plan, board, tuning_records)
            tuning = {"records": os.path.basename(tuning_records), "tuned": n, "tunable": m}
        info = emit_c(graph, src, plan, planner, target, tuned)
        spec = _hint_spec(model, resolution, width, calibration, mean, std, board)
        _check_board_fit(graph, board, info.arena_bytes, info.weight_bytes, hint=spec, planner=planner)
        inc = os.path.join(tmp, "codegen", "host", "include")
        os.makedirs(inc)
        for f in os.listdir(src):
            if f.endswith(".h"):
                shutil.copy(os.path.join(src, f), inc)
        meta = {
            "format": FORMAT,
            "version": METADATA_VERSION,
            "model": graph.name,
            "target": target,
            "board": board,
            "arena_bytes": info.arena_bytes,
            "weight_bytes": info.weight_bytes,
            "inputs": [_io(graph, n) for n in graph.inputs],
            "outputs": [_io(graph, n) for n in graph.outputs],
            "planner": planner,
            "arena_lower_bound_bytes": info.memory.lower_bound_bytes,
            "allocations": [{"name": a.name, "offset": a.offset, "bytes": a.size, "first_op": a.first,
                             "last_op": a.last} for a in info.memory.allocations],
            "kernels": len(info.kernels),
            "calls": _calls(graph, plan, info),
            "profile": {"peak_bytes": report.peak_bytes, "peak_bytes_no_inplace": report.peak_bytes_no_inplace,
                        "total_macs": report.total_macs},
            "patch": plan.to_json() if plan else None,
            # compile_args: the user's model spec and flags, for hints that run as printed
            "source": {**_store_source(model, graph, resolution, width, tmp),
                       **({"compile_args": spec[:-2]} if spec else {})},
            **({"note": report.note} if report.note else {}),
            **({"tuning": tuning} if tuning else {}),
        }
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(meta, f, indent=2)
        write_archive(tmp, out_path)
    return CompileResult(out_path, meta, chosen.note)


def _calls(graph, plan, info) -> list[dict]:
    """metadata.json's ``calls``: each kernel call of a run, in order: its name, the C kernel, the
    graph ops it runs and their MACs (the profiler's; the patch stage's with its overlap)."""
    from .analysis.profile import op_macs

    stage = set(plan.stage_ops) if plan else set()
    out = []
    for name, kernel, ops in zip(info.call_names, info.calls, info.call_ops):
        macs = plan.stage_macs_patched if stage and set(ops) == stage else \
            sum(op_macs(graph, graph.ops[i]) for i in ops)
        out.append({"name": name.removeprefix("tvmgen_default_"), "kernel": kernel, "ops": [graph.ops[i].name for i in ops],
                    "macs": int(macs)})
    return out


def resolve_target_board(target: str | None, board: str | None) -> tuple[str, str]:
    """(target, board): the board implies its core, the core alone its QEMU board (default
    cortex-m4 / qemu-m4); unknown names (with a close match) and contradictions are one line."""
    boards = {b: t for t, bs in TARGET_BOARDS.items() for b in bs}
    if target is not None and target not in TARGET_BOARDS:
        raise PatchnetError(f"unknown target '{target}'{did_you_mean(target, TARGET_BOARDS)}; known: "
                            f"{', '.join(TARGET_BOARDS)}")
    if board is not None and board not in boards:
        raise PatchnetError(f"unknown board '{board}'{did_you_mean(board, boards)}; known: {', '.join(boards)}")
    if board is None:
        target = target or "cortex-m4"
        return target, TARGET_BOARDS[target][0]
    if target is not None and boards[board] != target:
        raise PatchnetError(f"board '{board}' is a {boards[board]} board, not {target}: omit --target or choose "
                            f"one of the {target} boards ({', '.join(TARGET_BOARDS[target])})")
    return boards[board], board


def did_you_mean(name: str, known) -> str:
    """' (did you mean 'x'?)' for the closest of ``known`` (difflib), or ''."""
    import difflib

    close = difflib.get_close_matches(str(name).strip().lower(), list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _hint_spec(model, resolution, width, calibration, mean, std, board: str) -> list[str] | None:
    """The user's own model spec and flags as ``patchnet compile`` arguments (None: a Graph from
    Python, which no command rebuilds)."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    args = [str(model)]
    for flag, v in (("--resolution", resolution), ("--width", width), ("--calibration", calibration)):
        if v is not None:
            args += [flag, str(v)]
    for flag, v in (("--mean", mean), ("--std", std)):
        if v is not None:
            args += [flag, ",".join(repr(float(x)) for x in np.atleast_1d(v))]
    return args + ["--board", board]  # the board implies its target


def _check_board_fit(graph, board: str, arena_bytes: int, weight_bytes: int, hint: list[str] | None = None,
                     planner: str = "greedy") -> None:
    """What is certain before any build: the arena plus the minimum stack must fit the board's
    SRAM, the weights its flash (the link adds the firmware's own bytes; ``run`` checks those).
    ``hint``: the user's model spec and flags (:func:`_hint_spec`) for the setting to try."""
    from microtvm_projects.project_api import board_budgets

    from .micro import DoesNotFit

    budgets = board_budgets(board)
    excess = arena_bytes + STACK_MIN_BYTES - budgets["RAM"]
    flash_excess = weight_bytes - budgets["FLASH"]
    if flash_excess > 0:  # patches do not shrink the weights: no patch setting to suggest
        sram = (f"; the arena ({arena_bytes:,} B) + {STACK_MIN_BYTES:,} B minimum stack also exceed its "
                f"{budgets['RAM']:,} B of SRAM by {excess:,} B" if excess > 0 else "")
        raise DoesNotFit(f"{board}: does not fit: the weights ({weight_bytes:,} B) exceed the {budgets['FLASH']:,} B "
                         f"of flash by {flash_excess:,} B{sram}", max(excess, 0), flash_excess)
    if excess > 0:
        raise DoesNotFit(f"{board}: does not fit: the arena ({arena_bytes:,} B) + {STACK_MIN_BYTES:,} B minimum stack "
                         f"exceed the {budgets['RAM']:,} B of SRAM by {excess:,} B"
                         f"{_fit_hint(graph, arena_bytes - excess, hint, planner)}", excess)


def _io(graph, name: str) -> dict:
    """An ``inputs`` / ``outputs`` entry: float32 tensors have no quantization (null)."""
    t = graph.t(name)
    q = t.is_quantized
    return {"name": name, "shape": list(t.shape), "dtype": t.dtype, "scale": t.s if q else None,
            "zero_point": t.zp if q else None}


def _store_source(model: str | Graph, graph: Graph, resolution, width, tmp: str) -> dict:
    """metadata.json's ``source``, with what it names written into ``tmp/src``: the model file;
    the int8 graph (``src/graph.npz``) where the file does not rebuild it alone (a float model's
    quantization depends on its calibration data) or there is no file (a Graph); a built-in name."""
    os.makedirs(os.path.join(tmp, "src"))
    if isinstance(model, Graph):
        save_graph(graph, os.path.join(tmp, GRAPH_MEMBER))
        calibration = graph.meta.get("calibration")
        return {"graph": GRAPH_MEMBER, **({"calibration": calibration} if calibration else {})}
    if os.path.exists(model):
        name = "model" + os.path.splitext(model)[1].lower()
        if name.endswith(".onnx"):
            _store_onnx(model, os.path.join(tmp, "src", name))
            save_graph(graph, os.path.join(tmp, GRAPH_MEMBER))
            return {"file": f"src/{name}", "graph": GRAPH_MEMBER, "calibration": graph.meta.get("calibration")}
        shutil.copy(model, os.path.join(tmp, "src", name))
        return {"file": f"src/{name}"}
    return {"builtin": model, "resolution": resolution, "width": width}


def _store_onnx(path: str, dst: str) -> None:
    """The ONNX model as one file: weights kept beside it (``model.onnx.data``, what PyTorch's
    exporter writes by default) are embedded, so the archive's float model is whole."""
    import onnx

    model = onnx.load(path)  # loads external data from beside the file
    onnx.save(model, dst, save_as_external_data=False)


@dataclass
class KernelProfile:
    """One kernel call of a profiled run: its name (``outside kernels`` for the rest of the run:
    the input and output copies, the calls' own instructions around the kernels), the C kernel
    it calls, the graph ops it runs, their MACs (the profiler's; a patch stage's with its
    overlap) and its count (the run's unit: instructions on QEMU, exact; cycles on Nucleo)."""

    name: str
    kernel: str | None
    ops: list[str]
    macs: int
    count: int

    def per_mac(self) -> float | None:
        return self.count / self.macs if self.macs else None


@dataclass
class RunReport:
    """One measured run on a board. Bytes; ``count`` is per run, in ``counter`` units.
    ``outputs``: every output, in order, as ``{name, shape, dtype, values}`` (values nested
    lists in the shape; float32 values are the exact floats); ``mismatches``: names of the
    outputs that differ from the host reference (with ``check``)."""

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
    outputs: list[dict]
    reference_match: bool | None = None
    patched: bool = False
    mismatches: list[str] = field(default_factory=list)
    #: with ``profile``: every kernel call in order, then the rest of the run ("outside kernels");
    #: their counts sum to ``count``
    profile: list[KernelProfile] | None = None
    #: with ``profile``: what the marks added to the profile build's count (subtracted from
    #: ``count``: QEMU, exactly 2 instructions per mark; Nucleo, cycles measured on the board)
    profile_overhead: int | None = None
    #: of ``flash_bytes``: the model's weights, biases and requantization constants (metadata's)
    weight_bytes: int = 0
    #: with ``check_float``: the board's outputs (dequantized) against the float model run on the
    #: host on the same input: ``{max_abs_diff, output_range, cosine, top1_agreement, outputs}``
    #: (the first four over every output: the largest difference and range, the lowest cosine and
    #: agreement; ``outputs``: each output's own, with its ``name``)
    float_reference: dict | None = None

    @property
    def code_bytes(self) -> int:
        """Flash that is not the model's constants: the kernels' code, the firmware and the RPC."""
        return self.flash_bytes - self.weight_bytes

    @property
    def other_sram_bytes(self) -> int:
        """Measured SRAM outside the arena (which holds the inputs and outputs) and the stack: RPC
        buffers, firmware state."""
        return self.sram_bytes - self.arena_bytes - self.stack_peak_bytes

    def arrays(self) -> list[np.ndarray]:
        """The outputs as NumPy arrays (their shapes and dtypes)."""
        return [np.asarray(o["values"], dtype=o["dtype"]).reshape(o["shape"]) for o in self.outputs]

    def to_json(self) -> dict:
        d = asdict(self)
        d["other_sram_bytes"] = self.other_sram_bytes
        d["code_bytes"] = self.code_bytes
        if self.profile is not None:
            d["profile"] = [{**asdict(k), "per_mac": k.per_mac(), "share": k.count / self.count if self.count else None}
                            for k in self.profile]
        d["instructions" if self.counter == "instructions" else "cycles"] = self.count
        if self.counter == "instructions":
            # QEMU's clock is nominal: instructions are not cycles, so no clock invites converting
            del d["cpu_hz"]
        else:
            d["milliseconds"] = 1e3 * self.count / self.cpu_hz if self.cpu_hz else None
        return d


#: QEMU speed floor for the RUN timeout: executed instructions per second under TCG with the
#: counting plugin (measured here: ~80 M/s for MobileNetV2-w0.35 r144; a busy machine is slower),
#: and a generous count per MAC (the generated code runs ~13 today).
QEMU_MIN_INSTRUCTIONS_PER_S = 20e6
MAX_INSTRUCTIONS_PER_MAC = 40


def run_timeout(meta: dict, counter: str | None, cpu_hz: int) -> float:
    """Seconds one RUN may take before the board counts as stalled: a generous multiple of the
    model's expected time (MACs x :data:`MAX_INSTRUCTIONS_PER_MAC`, at the emulator's slowest
    speed on QEMU or at the core clock on a board), never under 30 s."""
    macs = meta["patch"]["total_macs_patched"] if meta["patch"] else meta["profile"]["total_macs"]
    work = macs * MAX_INSTRUCTIONS_PER_MAC + 10_000_000
    speed = QEMU_MIN_INSTRUCTIONS_PER_S if counter == "instructions" or not cpu_hz else cpu_hz
    return round(30.0 + 2 * work / speed)


def run_model(archive: str, board: str | None = None, memory_map: str | None = None,
              x: np.ndarray | list | dict | None = None, repeat: int = 1, check: bool = False, work_dir: str | None = None,
              timeout: float | None = None, profile: bool = False, check_float: bool = False,
              serial_port: str | None = None, serial_number: str | None = None) -> RunReport:
    """Build ``archive`` for ``board`` (default: the one it was compiled for), run it ``repeat``
    times on inputs ``x`` and measure it.

    ``x``: the model's inputs: a list in order, a dict by input name (or ``arr_0``, ``arr_1``,
    ... in order, as ``np.savez`` names them), one array for a one-input model, or None for
    seeded random inputs (int8: the full range; float32: standard normal). Shapes and dtypes
    must be the model's. ``work_dir``: keep the extracted model and the board project there (a
    new or empty folder; default: a temporary folder, removed). ``timeout``: seconds one run may
    take (default: :func:`run_timeout`). A result is either confirmed by the board or an error.
    ``profile``: build the firmware with ``TVMGEN_PROFILE`` and report every kernel call's count
    (``RunReport.profile``; ``count`` is then the plain build's: the marks' cost is subtracted).
    ``check_float``: also run the float model the archive was compiled from (ONNX / PyTorch) on
    the host, on the same input (an int8 input dequantized), and compare it with the board's
    outputs, dequantized (``RunReport.float_reference``); an archive without a float model is a
    one-line error before any build. ``serial_port`` / ``serial_number``: Nucleo boards, which
    serial device / which ST-LINK (default: the one connected).
    """
    from . import micro

    if work_dir is not None and os.path.exists(work_dir) and (not os.path.isdir(work_dir) or os.listdir(work_dir)):
        raise PatchnetError(f"--keep-build {work_dir}: must be a new or empty folder")
    if timeout is not None and not timeout > 0:
        raise PatchnetError(f"--timeout must be a positive number of seconds, got {timeout}")
    with tempfile.TemporaryDirectory(prefix="patchnet-run-") as tmp:
        work = os.path.abspath(work_dir or tmp)
        model_dir = os.path.join(work, "model")
        meta = read_archive(archive, model_dir)
        if profile and "calls" not in meta:
            raise PatchnetError(f"{archive}: compiled before per-kernel profiles (metadata version "
                                f"{meta['version']}): recompile it with this patchnet to use --profile")
        board = board or meta["board"]
        serial = {k: v for k, v in (("serial_port", serial_port), ("serial_number", serial_number)) if v}
        if serial and not board.startswith("nucleo-"):
            raise PatchnetError(f"--{next(iter(serial)).replace('_', '-')} applies to Nucleo boards, not {board}")
        if check_float:
            _require_float_model(meta, archive)
        xs = model_inputs(meta, x)
        ref_graph = _source_graph(meta, model_dir) if check else None  # a bad stored graph fails before the build
        project = os.path.join(work, "project")
        micro.create_project(os.path.join(model_dir, "codegen", "host", "src"), board, project,
                             memory_map=memory_map, **({"profile": True} if profile else {}), **serial)
        try:
            with progress.task(f"building the firmware for {board}"):
                micro.build(project)
        except micro.DoesNotFit as e:
            spec = meta["source"].get("compile_args")
            hint = _fit_hint(_source_graph(meta, model_dir), meta["arena_bytes"] - e.sram_excess,
                             spec and [*spec, "--board", meta["board"]], meta["planner"]) if e.sram_excess else ""
            raise micro.DoesNotFit(f"{e}{hint}", e.sram_excess, e.flash_excess) from None
        except micro.BuildFailed as e:
            hint = "" if work_dir else " (or run with --keep-build DIR)"
            raise micro.BuildFailed(e.label, e.diagnostics, _keep_log(e.log_path, work_dir), hint) from None
        with micro.Session(project) as s, progress.task(f"running on {board}"):
            info = s.info()
            _check_device(info, meta, archive)
            limit = timeout or run_timeout(meta, info.counter, info.cpu_hz)
            stats = s.run_each(xs, repeat, timeout=limit)
            ys = split_outputs(meta, s.get_output().tobytes())
            mem = s.check_fit()  # .data + .bss + peak stack against the board's (or map's) SRAM
            marks = s.profile() if profile else None  # after check_fit: its answer's buffer is on the stack
        mismatches = []
        if check:
            with progress.task("host int8 reference"):
                ref = _host_reference(meta, ref_graph, xs)
            mismatches = [o["name"] for o, y, r in zip(meta["outputs"], ys, ref) if not _identical(y, r)]
        float_ref = _float_reference(meta, model_dir, xs, ys) if check_float else None
    planner_peak = meta["patch"]["peak_bytes"] if meta["patch"] else meta["profile"]["peak_bytes"]
    outputs = [{"name": o["name"], "shape": o["shape"], "dtype": o["dtype"], "values": y.tolist()}
               for o, y in zip(meta["outputs"], ys)]
    count, kernels, overhead = stats.per_run, None, None
    if marks is not None:
        count, kernels, overhead = _kernel_profile(meta, marks, stats.per_run, archive)
    return RunReport(board, memory_map, stats.counter, count, info.cpu_hz, mem.sram_bytes or 0,
                     mem.flash_bytes, stats.peak_stack_bytes, stats.arena_bytes, meta["arena_bytes"], planner_peak,
                     info.input_bytes, info.output_bytes, outputs, (not mismatches) if check else None,
                     meta["patch"] is not None, mismatches, kernels, overhead, meta["weight_bytes"], float_ref)


def _kernel_profile(meta: dict, marks, per_run: float, archive: str):
    """(the plain build's count per run, the kernel calls' profile + the rest, the marks' total
    cost) from the profile build's count and its marks (model.c: one before the first kernel call,
    one after each)."""
    calls = meta["calls"]
    if len(marks.counts) != len(calls) + 1:
        raise PatchnetError(f"{archive}: the run made {len(marks.counts)} profile marks, metadata.json lists "
                            f"{len(calls)} kernel calls (expected {len(calls) + 1} marks)")
    overhead = len(marks.counts) * marks.overhead
    count = per_run - overhead
    rows = [KernelProfile(c["name"], c["kernel"], c["ops"], c["macs"], n) for c, n in zip(calls, marks.kernels())]
    rest = count - sum(k.count for k in rows)
    rows.append(KernelProfile("outside kernels", None, [], 0, int(rest) if float(rest).is_integer() else rest))
    return (int(count) if float(count).is_integer() else count), rows, overhead


def model_inputs(meta: dict, x: np.ndarray | list | dict | None) -> list[np.ndarray]:
    """The inputs ``x`` (see :func:`run_model`) as a list in the model's order, each checked
    against metadata.json's shape and dtype; one-line :class:`PatchnetError` otherwise."""
    specs = meta["inputs"]
    names = [e["name"] for e in specs]
    if x is None:
        rng = np.random.default_rng(0)
        return [rng.integers(-128, 128, size=e["shape"], dtype=np.int8) if e["dtype"] == "int8"
                else rng.standard_normal(e["shape"]).astype(e["dtype"]) for e in specs]
    if isinstance(x, dict):
        xs = _by_name(x, names)
    elif isinstance(x, (list, tuple)):
        xs = list(x)
        if len(xs) != len(specs):
            raise PatchnetError(f"{len(xs)} input(s) given, the model takes {len(specs)}: {_quoted(names)}")
    else:
        if len(specs) != 1:
            raise PatchnetError(f"one input given, the model takes {len(specs)}: {_quoted(names)} "
                                "(pass them in an .npz)")
        xs = [x]
    out = []
    for e, a in zip(specs, xs):
        a = np.asarray(a)
        if list(a.shape) != list(e["shape"]) or str(a.dtype) != e["dtype"]:
            raise PatchnetError(f"input '{e['name']}' has shape {list(a.shape)} {a.dtype}, the model expects "
                                f"{list(e['shape'])} {e['dtype']}")
        out.append(np.ascontiguousarray(a))
    return out


def _by_name(x: dict, names: list[str]) -> list:
    """Inputs keyed by input name, or ``arr_0``, ``arr_1``, ... in order (``np.savez``)."""
    keys = set(x)
    if keys != set(names) and keys == {f"arr_{i}" for i in range(len(names))}:
        return [x[f"arr_{i}"] for i in range(len(names))]
    missing, extra = [n for n in names if n not in keys], sorted(keys - set(names))
    if missing or extra:
        parts = ([f"missing {_quoted(missing)}"] if missing else []) + ([f"unknown {_quoted(extra)}"] if extra else [])
        raise PatchnetError(f"inputs: {'; '.join(parts)} (the model's inputs: {_quoted(names)}, or arr_0.. in order)")
    return [x[n] for n in names]


def _quoted(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def split_outputs(meta: dict, raw: bytes) -> list[np.ndarray]:
    """The outputs one after the other (``raw``, as GET_OUTPUT reads them) as arrays in
    metadata.json's shapes and dtypes (little-endian, as the boards store them)."""
    out, off = [], 0
    for e in meta["outputs"]:
        n = io_bytes(e)
        out.append(np.frombuffer(raw[off:off + n], np.dtype(e["dtype"]).newbyteorder("<")).astype(e["dtype"])
                   .reshape(e["shape"]))
        off += n
    if off != len(raw):
        raise PatchnetError(f"the board sent {len(raw):,} B of outputs, metadata.json describes {off:,} B")
    return out


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bytes: int8 bit for bit, float32 the exact same floats."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _check_device(info, meta: dict, archive: str) -> None:
    """The built firmware's sizes against metadata.json (a second check after model.h's)."""
    want = {"inputs": (info.input_bytes, sum(io_bytes(e) for e in meta["inputs"])),
            "outputs": (info.output_bytes, sum(io_bytes(e) for e in meta["outputs"])),
            "arena_bytes": (info.arena_bytes, meta["arena_bytes"])}
    bad = [f"{k} {m:,} B (the firmware has {d:,} B)" for k, (d, m) in want.items() if d != m]
    counts = {"inputs": (info.num_inputs, len(meta["inputs"])), "outputs": (info.num_outputs, len(meta["outputs"]))}
    bad += [f"{m} {k} (the firmware has {d})" for k, (d, m) in counts.items() if d != m]
    if bad:
        raise PatchnetError(f"{archive}: metadata.json does not match the built firmware: {'; '.join(bad)}")


def _keep_log(log_path: str, work_dir: str | None) -> str:
    """Where the user can read the build log after the temporary folder is gone."""
    if work_dir:
        return log_path
    fd, kept = tempfile.mkstemp(prefix="patchnet-build-", suffix=".log")
    with os.fdopen(fd, "wb") as out, open(log_path, "rb") as f:
        shutil.copyfileobj(f, out)
    return kept


def _fit_hint(graph, target: int, spec: list[str] | None = None, planner: str = "greedy") -> str:
    """'; try ...': a setting whose deployable arena (what ``compile`` places, checked here by
    the memory plan) fits ``target`` B, as a ``patchnet compile`` command on the user's own model
    spec and flags (``spec``: :func:`_hint_spec`); without one, the flags to recompile with. The
    setting that failed never fits ``target``, so it is never suggested."""
    if target <= 0:
        return ""
    from .patch.search import resolve

    try:
        chosen = resolve(graph, "auto", "auto", target + STACK_MIN_BYTES, planner)
    except PatchnetError:
        return "; no patch setting brings the arena under the remaining SRAM"
    if chosen.arena_bytes is None or chosen.arena_bytes > target:
        return ""
    plan = chosen.plan
    flags = [] if plan is None else ["--patches", str(plan.patches), "--split", str(plan.split)]
    what = (f"(arena {chosen.arena_bytes:,} B <= {target:,} B, whole input in SRAM"
            + ("" if plan is None else f"; +{100 * plan.mac_overhead:.1f}% MACs") + ")")
    if spec is None:
        how = "layer by layer (no --patches)" if plan is None else f"'{' '.join(flags)}'"
        return f"; recompile the model with {how} {what}"
    import shlex

    model, board = spec[:-2], spec[-2:]  # the setting before --board, as users write it
    return f"; try '{shlex.join(['patchnet', 'compile', *model, *flags, *board])}' {what}"


def _source_graph(meta: dict, model_dir: str):
    """The int8 graph the archive's C was built from: the stored graph (a quantized float model,
    a graph quantized in Python), else the model file or built-in architecture re-imported."""
    src = meta["source"]
    if "graph" in src:
        return load_graph(os.path.join(model_dir, src["graph"]), src["graph"])
    if "file" in src:  # before src/graph.npz: an ONNX model calibrated on the seeded random inputs
        return load_model(os.path.join(model_dir, src["file"]), warn=lambda _: None)
    return load_model(src["builtin"], resolution=src["resolution"], width=src["width"])


def _require_float_model(meta: dict, archive: str) -> None:
    """One line when the archive holds no float model for ``--check-float``."""
    src = meta["source"]
    if src.get("file") == "src/model.onnx":
        return
    if src.get("file"):
        what = "an int8 TFLite model (src/model.tflite)"
    elif "graph" in src:
        what = "an int8 graph built in Python"
    else:
        what = f"the built-in architecture '{src['builtin']}' (seeded int8 weights)"
    raise PatchnetError(f"{archive}: --check-float: compiled from {what}: there is no float model to compare with "
                        "(--check compares with the host int8 reference)")


def _float_reference(meta: dict, model_dir: str, xs: list[np.ndarray], ys: list[np.ndarray]) -> dict:
    """The board's outputs (dequantized) against the float model on the host, on the same input."""
    from .frontend.float_exec import run_float
    from .frontend.torch_onnx import import_onnx

    fg = import_onnx(os.path.join(model_dir, meta["source"]["file"]))
    if len(meta["inputs"]) != 1 or len(fg.outputs) != len(meta["outputs"]):
        raise PatchnetError(f"src/model.onnx: {len(fg.outputs)} output(s), the compiled model has "
                            f"{len(meta['outputs'])}: cannot compare with the float model")
    refs = run_float(fg, _dequantize(meta["inputs"][0], xs[0]))
    rows = []
    for e, y, r in zip(meta["outputs"], ys, refs):
        d, r = _dequantize(e, y).astype(np.float64).reshape(-1), np.asarray(r, np.float64).reshape(-1)
        if d.size != r.size:
            raise PatchnetError(f"src/model.onnx: output '{e['name']}' has {r.size} values, the compiled model "
                                f"{d.size}: cannot compare with the float model")
        norm = float(np.linalg.norm(d) * np.linalg.norm(r))
        cos = float(d @ r) / norm if norm else float(np.array_equal(d, r))
        last = e["shape"][-1]
        top1 = (float(np.mean(d.reshape(-1, last).argmax(1) == r.reshape(-1, last).argmax(1))) if last > 1
                else None)
        rows.append({"name": e["name"], "max_abs_diff": float(np.abs(d - r).max()),
                     "output_range": float(r.max() - r.min()), "cosine": cos, "top1_agreement": top1})
    top1s = [r["top1_agreement"] for r in rows if r["top1_agreement"] is not None]
    return {"max_abs_diff": max(r["max_abs_diff"] for r in rows), "output_range": max(r["output_range"] for r in rows),
            "cosine": min(r["cosine"] for r in rows), "top1_agreement": min(top1s) if top1s else None,
            "outputs": rows}


def _dequantize(entry: dict, a: np.ndarray) -> np.ndarray:
    """An int8 input or output of metadata.json as float32 ``(q - zero_point) * scale``; float32 as is."""
    if entry["scale"] is None:
        return np.asarray(a, np.float32)
    return ((np.asarray(a, np.float32) - entry["zero_point"]) * np.float32(entry["scale"])).astype(np.float32)


def _host_reference(meta: dict, graph, xs: list[np.ndarray]) -> list[np.ndarray]:
    """The unpatched int8 graph run on the host (Relax VM, llvm): the reference for the board."""
    from .runtime import run_graph

    return [y.reshape(e["shape"]) for y, e in zip(run_graph(graph, xs), meta["outputs"])]
