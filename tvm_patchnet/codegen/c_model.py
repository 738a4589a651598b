"""Write a self-contained C model: ``model.h``, ``model.c``, ``kernels.h/.c``, ``weights.h/.c``.

``model.c`` calls one plain C kernel per ``call_tir`` of the pipeline's module
(:func:`tvm_patchnet.pipeline.lower`), i.e. per step of the execution plan: one per op, one for
the whole patch stage, one for a conv and the residual add it accumulates into, in graph order, on buffers at fixed offsets of one static
arena; weights, biases, multipliers and shifts are ``const`` arrays (flash). Kernels that TVM
lowers to the same TIR are emitted once.

Compiled with ``-DTVMGEN_PROFILE``, ``model.c`` calls ``void tvmgen_profile_mark(void)`` (the
firmware's) before its first kernel call and after each one, ``TVMGEN_NUM_CALLS`` + 1 marks; without
it the code is the same minus those calls (the board firmware's per-kernel profile,
``patchnet run --profile``). ``CModelInfo.call_ops`` says which graph ops each call runs.

Every offset comes from the memory plan (:func:`tvm_patchnet.memory.plan_memory`, the one
planner behind the profiler's and the patch planner's figures), with the whole input in the
arena: the arena *is* the plan's arena, in-place depthwise convs, residual accumulation and
in-place adds included. As in TensorFlow Lite Micro, every input and output tensor lives in the
arena (``tvmgen_default_input(i)`` / ``tvmgen_default_output(i)``) and a run may overwrite the
inputs; ``tvmgen_default_run(inputs, outputs)`` copies in and out for callers with their own
buffers. Inputs and outputs are int8, or float32 at a QUANTIZE first op / DEQUANTIZE last op
(their kernels use the FPU, as TFLite Micro's; float literals exact: :mod:`.float_literals`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from relay_passes.steps import BUFFERS_ATTR, PREAMBLE_ATTR, callee

from .. import progress
from ..errors import PatchnetError
from ..execution import ExecutionPlan, Step
from ..graph import Graph
from ..memory import MemoryPlan, plan_memory
from ..memory.arena import DEFAULT_ALIGNMENT
from ..patch.planner import PatchPlan
from ..pipeline import lower
from .c_kernels import CKernel, emit_kernels

_C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}
#: dtypes a model input or output may have
EDGE_DTYPES = ("int8", "float32")
#: byte alignment of the arena's start (its offsets are DEFAULT_ALIGNMENT multiples)
ARENA_ALIGN = 16


@dataclass
class CModelInfo:
    """What :func:`write_c_model` wrote. Sizes are bytes."""

    out_dir: str
    files: list[str]
    #: bytes of each input / output, in the graph's order
    input_sizes: list[int]
    output_sizes: list[int]
    arena_bytes: int
    weight_bytes: int
    #: the memory plan the arena follows (offsets of every tensor, patch buffer and scratch)
    memory: MemoryPlan
    #: emitted C kernels by function name (shared by ops lowered to the same TIR)
    kernels: dict[str, CKernel] = field(default_factory=dict)
    #: kernel called by each step, in call order
    calls: list[str] = field(default_factory=list)
    #: each step's own name (its kernel's unless the kernel is shared), in call order
    call_names: list[str] = field(default_factory=list)
    #: indices of the graph ops each step runs (the patch stage's, a conv and its residual add)
    call_ops: list[list[int]] = field(default_factory=list)

    @property
    def input_bytes(self) -> int:
        """All inputs together (bytes)."""
        return sum(self.input_sizes)

    @property
    def output_bytes(self) -> int:
        """All outputs together (bytes)."""
        return sum(self.output_sizes)

    @property
    def offsets(self) -> dict[str, int]:
        """Arena offset of every allocation (tensor, ``<out>#scratch``, ``<out>#tile``)."""
        return self.memory.offsets


@dataclass
class _Call:
    """One ``call_tir`` of the pipeline's module: the step it runs, the kernel (PrimFunc and its
    name in the module, shared by structurally equal steps) and its arguments (tensor names,
    NumPy constants; the last: the output tensor)."""

    step: Step
    kernel: str
    func: tvm.tirx.PrimFunc
    args: list


def write_c_model(graph: Graph, out_dir: str, plan: PatchPlan | None = None, planner: str = "greedy",
                  target: str = "cortex-m4", tuned: dict | None = None) -> CModelInfo:
    """Emit the C model of ``graph`` (patch stage per ``plan`` if given) into ``out_dir``: the
    module of :func:`tvm_patchnet.pipeline.lower` for ``target``, one C call per ``call_tir``. The
    arena is placed by ``planner`` (``greedy`` or ``milp``, see ``tvm_patchnet.memory``) from the
    same execution plan. ``tuned``: step name -> tuned kernel (:mod:`tvm_patchnet.tune`)."""
    _check_edges(graph)
    mod, exe = lower(graph, plan, target, tuned)
    mem = plan_memory(graph, plan, kind=planner, alignment=DEFAULT_ALIGNMENT, input_mode="full", execution=exe)
    offsets, sizes = mem.offsets, {a.name: a.size for a in mem.allocations}
    calls = _module_calls(mod, exe)
    funcs = {c.kernel: c.func for c in calls}
    stage_buffers = {k: {str(b): str(t) for b, t in f.attrs[BUFFERS_ATTR].items()}
                     for k, f in funcs.items() if BUFFERS_ATTR in f.attrs}
    placed = {k: {b: offsets[t] for b, t in bufs.items() if t in offsets} for k, bufs in stage_buffers.items()}
    preambles = {k: tuple(str(p) for p in f.attrs[PREAMBLE_ATTR]) for k, f in funcs.items() if PREAMBLE_ATTR in f.attrs}
    with progress.task(f"generating C ({len(funcs)} kernels)"):
        kernels = {**emit_kernels({k: f for k, f in funcs.items() if k not in placed}, None, preambles),
                   **emit_kernels({k: funcs[k] for k in placed}, placed, preambles)}
    weights = _Weights()
    lines = []
    for call in calls:
        step, kname = call.step, call.kernel
        args = [weights.ref(a, f"{step.name}_w{k}") if isinstance(a, np.ndarray) else _tensor_ref(graph, a, offsets)
                for k, a in enumerate(call.args)]
        ws = kernels[kname].workspace_bytes
        if kname in stage_buffers:
            _check_stage_buffers(kernels[kname], stage_buffers[kname], sizes)
            if kernels[kname].workspace:  # a stage of one op has no buffer inside a patch: no ws
                args.append("arena")
        elif step.scratch is not None:
            if ws != sizes.get(step.scratch):
                raise PatchnetError(f"kernel '{kname}' needs {ws:,} B of scratch; the memory plan has "
                                    f"{sizes.get(step.scratch, 0):,} B")
            args.append(f"arena + {offsets[step.scratch]}")
        elif ws:
            raise PatchnetError(f"kernel '{kname}' needs {ws:,} B of scratch the memory plan does not count")
        lines.append(f"  {kname}({', '.join(args)});")
    os.makedirs(out_dir, exist_ok=True)
    in_sizes, out_sizes = [graph.t(n).nbytes for n in graph.inputs], [graph.t(n).nbytes for n in graph.outputs]
    files = {
        "model.h": _model_h(graph, mem.arena_bytes, len(lines)),
        "model.c": _model_c([offsets[n] for n in graph.inputs], [offsets[n] for n in graph.outputs], lines),
        "kernels.h": _header("KERNELS", "<stdint.h>", [k.prototype for k in kernels.values()]),
        "kernels.c": _kernels_c(kernels.values()),
        "weights.h": _header("WEIGHTS", "<stdint.h>", weights.declarations()),
        "weights.c": "#include \"weights.h\"\n\n" + "\n".join(weights.definitions()),
    }
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return CModelInfo(out_dir, sorted(files), in_sizes, out_sizes, mem.arena_bytes, weights.nbytes, mem, kernels,
                      [c.kernel for c in calls], [c.step.name for c in calls], [sorted(c.step.ops) for c in calls])


def _module_calls(mod: tvm.IRModule, exe: ExecutionPlan) -> list[_Call]:
    """The ``call_tir`` bindings of ``mod``'s main in order, each with the step whose output it
    binds (after ApplySchedules every call is one step: views are Relax reshapes, no call)."""
    calls = []
    for b in mod["main"].body.blocks[0].bindings:
        gv = callee(b.value)
        if gv is None:
            continue
        step = exe.step_writing(b.var.name)
        if step is None:
            raise PatchnetError(f"call of '{gv.name_hint}' writes '{b.var.name}', which no step of the execution "
                                "plan writes (a pass out of order?)")
        args = [a.name if isinstance(a, relax.Var) else a.value.numpy() for a in b.value.args[1].fields]
        calls.append(_Call(step, gv.name_hint, mod[gv], [*args, step.output]))
    if len(calls) != len(exe.steps):
        raise PatchnetError(f"the module makes {len(calls)} kernel calls; the execution plan has {len(exe.steps)} steps")
    return calls


def _check_edges(graph: Graph) -> None:
    for kind, names in (("input", graph.inputs), ("output", graph.outputs)):
        for n in names:
            if graph.t(n).dtype not in EDGE_DTYPES:
                raise PatchnetError(f"{graph.name}: C model {kind} '{n}' is {graph.t(n).dtype}; inputs and outputs "
                                    f"must be {' or '.join(EDGE_DTYPES)}")


def _check_stage_buffers(kernel: CKernel, buffers: dict[str, str], sizes: dict[str, int]) -> None:
    """Every buffer the lowered stage allocates is exactly the memory plan's allocation: a larger
    one would write past it into its neighbours in the arena."""
    for buf, (_, nbytes) in kernel.workspace.items():
        alloc = buffers.get(buf)
        if alloc is None or nbytes != sizes.get(alloc):
            raise PatchnetError(f"patch stage buffer '{buf}' is {nbytes:,} B; the memory plan gives "
                                f"'{alloc}' {sizes.get(alloc, 0):,} B (a planner/TIR mismatch: choose another "
                                "--patches or --split, and report it)")


def _tensor_ref(g: Graph, name: str, offsets: dict[str, int]) -> str:
    """C expression for tensor ``name`` in the arena."""
    if name not in offsets:
        raise PatchnetError(f"tensor '{name}' has no arena offset")
    return f"({_C_TYPES[g.t(name).dtype]} *)(arena + {offsets[name]})"


class _Weights:
    """The constant arrays, each distinct content emitted once."""

    def __init__(self):
        self.arrays: dict[tuple, tuple[str, np.ndarray]] = {}

    def ref(self, a: np.ndarray, name: str) -> str:
        a = np.ascontiguousarray(a)
        key = (str(a.dtype), a.shape, a.tobytes())
        if key not in self.arrays:
            self.arrays[key] = (name, a)
        sym, arr = self.arrays[key]
        return f"({_C_TYPES[str(arr.dtype)]} *){sym}"

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for _, a in self.arrays.values())

    def declarations(self) -> list[str]:
        return [f"extern const {_C_TYPES[str(a.dtype)]} {s}[{max(a.size, 1)}];" for s, a in self.arrays.values()]

    def definitions(self) -> list[str]:
        out = []
        for sym, a in self.arrays.values():
            vals = [_c_int(int(v)) for v in a.reshape(-1)] or ["0"]
            rows = ",\n".join("  " + ", ".join(vals[i:i + 16]) for i in range(0, len(vals), 16))
            out.append(f"const {_C_TYPES[str(a.dtype)]} {sym}[{max(a.size, 1)}] = {{\n{rows}\n}};\n")
        return out


def _c_int(v: int) -> str:
    # -2147483648 is not an int literal in C (it is -(2147483648), a long): spell INT32_MIN
    return "(-2147483647 - 1)" if v == -(1 << 31) else str(v)


def _header(guard: str, include: str, lines: list[str]) -> str:
    g = f"TVMGEN_DEFAULT_{guard}_H_"
    return f"#ifndef {g}\n#define {g}\n\n#include {include}\n\n" + "\n".join(lines) + f"\n\n#endif  /* {g} */\n"


def _model_h(graph: Graph, arena: int, n_calls: int) -> str:
    def table(names):
        return "{" + ", ".join(str(graph.t(n).nbytes) for n in names) + "}"

    def describe(kind, names):
        return [f" *   {kind} {i} '{_c_comment(n)}': {_describe(graph.t(n))}" for i, n in enumerate(names)]

    lines = "\n".join([*describe("input", graph.inputs), *describe("output", graph.outputs)])
    return f"""#ifndef TVMGEN_DEFAULT_MODEL_H_
#define TVMGEN_DEFAULT_MODEL_H_

#include <stdint.h>

/* The model's inputs and outputs, in order (shapes as the model's, NHWC):
{lines}
 */
#define TVMGEN_NUM_INPUTS {len(graph.inputs)}
#define TVMGEN_NUM_OUTPUTS {len(graph.outputs)}
/* Bytes of each input / output, and of all of them together (one after the other, in order). */
#define TVMGEN_INPUT_SIZES {table(graph.inputs)}
#define TVMGEN_OUTPUT_SIZES {table(graph.outputs)}
#define TVMGEN_INPUT_BYTES {sum(graph.t(n).nbytes for n in graph.inputs)}
#define TVMGEN_OUTPUT_BYTES {sum(graph.t(n).nbytes for n in graph.outputs)}
/* Bytes of the static arena inside model.c: every activation, the inputs and outputs included. */
#define TVMGEN_ARENA_BYTES {arena}
/* Each input / output k: TVMGEN_INPUTk_ / TVMGEN_OUTPUTk_ DIMS, SHAPE (NHWC), IS_FLOAT (0: int8),
   and for int8 SCALE and ZERO_POINT: real value = SCALE * (q - ZERO_POINT). */
{_tensor_macros(graph)}
/* Kernel calls per run. Built with -DTVMGEN_PROFILE, the run calls tvmgen_profile_mark() (defined
   by the firmware) before the first one and after each: TVMGEN_NUM_CALLS + 1 marks. */
#define TVMGEN_NUM_CALLS {n_calls}

#ifdef __cplusplus
extern "C" {{
#endif

/* Input / output i inside the arena (as TensorFlow Lite Micro's), NULL for i out of range. A run
   may overwrite the inputs: write them again before each run. */
void *tvmgen_default_input(int i);
void *tvmgen_default_output(int i);

/* Copy inputs[i] (TVMGEN_INPUT_SIZES[i] bytes) into the arena unless it is NULL or
   tvmgen_default_input(i), run, copy output i to outputs[i] unless it is NULL or
   tvmgen_default_output(i). NULL tables: run in place. Returns 0. Not reentrant: all activations
   live in one static arena. */
int tvmgen_default_run(const void *const *inputs, void *const *outputs);

#ifdef __cplusplus
}}
#endif

#endif  /* TVMGEN_DEFAULT_MODEL_H_ */
"""


def _tensor_macros(graph: Graph) -> str:
    lines = []
    for kind, names in (("INPUT", graph.inputs), ("OUTPUT", graph.outputs)):
        for k, n in enumerate(names):
            t, p = graph.t(n), f"#define TVMGEN_{kind}{k}_"
            lines += [f"{p}DIMS {len(t.shape)}", f"{p}SHAPE {{{', '.join(map(str, t.shape))}}}",
                      f"{p}IS_FLOAT {int(t.dtype == 'float32')}"]
            if t.is_quantized:  # %.9g: the float32 scale exactly
                lines += [f"{p}SCALE {float(np.float32(t.s)):.9g}f", f"{p}ZERO_POINT ({t.zp})"]
    return "\n".join(lines)


def _describe(t) -> str:
    q = f", scale {t.s:.9g}, zero point {t.zp}" if t.is_quantized else ""
    return f"{t.dtype} {list(t.shape)}{q}, {t.nbytes} B"


def _c_comment(name: str) -> str:
    """``name`` safe inside a C comment (model files name their tensors)."""
    return "".join(c if c.isalnum() or c in "_:./-" else "?" for c in name)[:80]


def _model_c(input_offsets: list[int], output_offsets: list[int], calls: list[str]) -> str:
    def table(offsets):
        return "{" + ", ".join(map(str, offsets)) + "}"

    body = "\n".join(["  TVMGEN_MARK();"] + [line for c in calls for line in (c, "  TVMGEN_MARK();")])
    return f"""#include <string.h>

#include "model.h"
#include "kernels.h"
#include "weights.h"

#ifdef TVMGEN_PROFILE
void tvmgen_profile_mark(void); /* the firmware's: counts at each kernel call boundary */
#define TVMGEN_MARK() tvmgen_profile_mark()
#else
#define TVMGEN_MARK() ((void)0)
#endif

static _Alignas({ARENA_ALIGN}) uint8_t arena[TVMGEN_ARENA_BYTES];
static const uint32_t input_offsets[TVMGEN_NUM_INPUTS] = {table(input_offsets)};
static const uint32_t output_offsets[TVMGEN_NUM_OUTPUTS] = {table(output_offsets)};
static const uint32_t input_sizes[TVMGEN_NUM_INPUTS] = TVMGEN_INPUT_SIZES;
static const uint32_t output_sizes[TVMGEN_NUM_OUTPUTS] = TVMGEN_OUTPUT_SIZES;

void *tvmgen_default_input(int i) {{ return i >= 0 && i < TVMGEN_NUM_INPUTS ? arena + input_offsets[i] : 0; }}
void *tvmgen_default_output(int i) {{ return i >= 0 && i < TVMGEN_NUM_OUTPUTS ? arena + output_offsets[i] : 0; }}

int tvmgen_default_run(const void *const *inputs, void *const *outputs) {{
  for (int i = 0; inputs && i < TVMGEN_NUM_INPUTS; i++)
    if (inputs[i] && inputs[i] != tvmgen_default_input(i))
      memcpy(tvmgen_default_input(i), inputs[i], input_sizes[i]);
""" + body + """
  for (int i = 0; outputs && i < TVMGEN_NUM_OUTPUTS; i++)
    if (outputs[i] && outputs[i] != tvmgen_default_output(i))
      memcpy(outputs[i], tvmgen_default_output(i), output_sizes[i]);
  return 0;
}
"""


def _kernels_c(kernels) -> str:
    # math.h: floor() of the float32 -> int8 QUANTIZE kernel (round half away from zero, in double)
    micro = list(dict.fromkeys(p for k in kernels for p in k.preamble))  # each once, in first-use order
    return "#include <math.h>\n#include <stdbool.h>\n#include <stdint.h>\n\n#include \"kernels.h\"\n\n" + \
        "".join(m + "\n" for m in micro) + "\n".join(k.source for k in kernels)
