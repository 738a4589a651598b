"""Write a self-contained C model: ``model.h``, ``model.c``, ``kernels.h/.c``, ``weights.h/.c``.

``model.c`` holds the single entry point ``int tvmgen_default_run(const int8_t *input,
int8_t *output)``: it calls one plain C kernel per op (or one for the whole patch stage) in
graph order, on buffers at fixed offsets of one static arena; weights, biases, multipliers and
shifts are ``const`` arrays (flash). Kernels that TVM lowers to the same TIR are emitted once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi

from ..errors import PatchnetError
from ..graph import Graph
from ..patch.planner import PatchPlan
from .c_kernels import CKernel, emit_kernels, op_kernel, stage_kernel
from .placement import ALIGN, assign_offsets, step_graph, workspace_key

PREFIX = "tvmgen_default_"
_C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t"}


@dataclass
class CModelInfo:
    """What :func:`write_c_model` wrote. Sizes are bytes."""

    out_dir: str
    files: list[str]
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    weight_bytes: int
    #: arena offset of every placed activation tensor and kernel workspace (``<tensor>#workspace``)
    offsets: dict[str, int]
    #: bytes of every placed buffer, same keys as ``offsets``
    buffer_bytes: dict[str, int]
    #: emitted C kernels by function name (shared by ops lowered to the same TIR)
    kernels: dict[str, CKernel] = field(default_factory=dict)
    #: kernel called by each step, in call order
    calls: list[str] = field(default_factory=list)


@dataclass
class _Step:
    func: tvm.tirx.PrimFunc
    args: list  # tensor names, NumPy constants; last: the output tensor
    name: str


def write_c_model(graph: Graph, out_dir: str, plan: PatchPlan | None = None) -> CModelInfo:
    """Emit the C model of ``graph`` (patch stage per ``plan`` if given) into ``out_dir``."""
    _check_edges(graph)
    steps = _steps(graph, plan)
    kernel_of = _dedupe(steps)
    kernels = emit_kernels({k: s.func for s, k in zip(steps, kernel_of) if s.name == k})
    outputs = [s.args[-1] for s in steps]
    ws = {o: kernels[k].workspace_bytes for o, k in zip(outputs, kernel_of)}
    offsets, arena = assign_offsets(graph, plan, ws)
    g = step_graph(graph, plan)
    sizes = {n: g.t(n).nbytes for n in offsets if n in g.tensors}
    sizes.update({workspace_key(o): b for o, b in ws.items() if workspace_key(o) in offsets})
    weights = _Weights()
    calls = []
    for step, kname, out in zip(steps, kernel_of, outputs):
        args = [weights.ref(a, f"{step.name}_w{k}") if isinstance(a, np.ndarray) else _tensor_ref(g, a, offsets)
                for k, a in enumerate(step.args)]
        if kernels[kname].workspace_bytes:
            args.append(f"arena + {offsets[workspace_key(out)]}")
        calls.append(f"  {kname}({', '.join(args)});")
    os.makedirs(out_dir, exist_ok=True)
    x, y = graph.t(graph.inputs[0]), graph.t(graph.outputs[0])
    files = {
        "model.h": _model_h(x.nbytes, y.nbytes, arena),
        "model.c": _model_c(g, offsets, calls, arena),
        "kernels.h": _header("KERNELS", "<stdint.h>", [k.prototype for k in kernels.values()]),
        "kernels.c": _kernels_c(kernels.values()),
        "weights.h": _header("WEIGHTS", "<stdint.h>", weights.declarations()),
        "weights.c": "#include \"weights.h\"\n\n" + "\n".join(weights.definitions()),
    }
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return CModelInfo(out_dir, sorted(files), x.nbytes, y.nbytes, arena, weights.nbytes, offsets, sizes, kernels,
                      list(kernel_of))


def _check_edges(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise PatchnetError(f"{graph.name}: C model needs one input and one output, got "
                            f"{len(graph.inputs)} and {len(graph.outputs)}")
    for n in (*graph.inputs, *graph.outputs):
        if graph.t(n).dtype != "int8":
            raise PatchnetError(f"{graph.name}: C model edge '{n}' is {graph.t(n).dtype}, only int8 is supported")


def _steps(graph: Graph, plan: PatchPlan | None) -> list[_Step]:
    """One kernel call per executed op (the patch stage as one), reshapes skipped (views)."""
    steps = []
    stage = set(plan.stage_ops) if plan else set()
    for i, op in enumerate(graph.ops):
        if i in stage:
            if i == min(stage):
                kf = stage_kernel(graph, plan)
                steps.append(_Step(kf.func, kf.args, PREFIX + "patch_stage"))
            continue
        if op.kind == "reshape":
            continue
        kf = op_kernel(graph, op)
        steps.append(_Step(kf.func, kf.args, PREFIX + _c_name(op.name)))
    names = [s.name for s in steps]
    if len(set(names)) != len(names):  # op names that differ only in punctuation
        for k, s in enumerate(steps):
            s.name = f"{s.name}_{k}"
    return steps


def _dedupe(steps: list[_Step]) -> list[str]:
    """Kernel name per step: the first step whose PrimFunc is structurally equal."""
    firsts: dict[int, list[_Step]] = {}
    out = []
    for s in steps:
        bucket = firsts.setdefault(tvm_ffi.structural_hash(s.func), [])
        same = next((f for f in bucket if tvm_ffi.structural_equal(f.func, s.func)), None)
        if same is None:
            bucket.append(s)
            same = s
        out.append(same.name)
    return out


def _tensor_ref(g: Graph, name: str, offsets: dict[str, int]) -> str:
    """C expression for tensor ``name``: in the arena, or the caller's input / output."""
    ctype = _C_TYPES[g.t(name).dtype]
    if name in offsets:
        return f"({ctype} *)(arena + {offsets[name]})"
    root = _view_root(g, name)
    if root == _view_root(g, g.inputs[0]):
        return f"({ctype} *)input"
    if root == _view_root(g, g.outputs[0]):
        return "output"
    raise PatchnetError(f"tensor '{name}' has no arena offset")


def _view_root(g: Graph, name: str) -> str:
    producer = g.producer()
    while name in producer and g.ops[producer[name]].kind == "reshape":
        name = g.ops[producer[name]].inputs[0]
    return name


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


def _c_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _header(guard: str, include: str, lines: list[str]) -> str:
    g = f"TVMGEN_DEFAULT_{guard}_H_"
    return f"#ifndef {g}\n#define {g}\n\n#include {include}\n\n" + "\n".join(lines) + f"\n\n#endif  /* {g} */\n"


def _model_h(input_bytes: int, output_bytes: int, arena: int) -> str:
    return f"""#ifndef TVMGEN_DEFAULT_MODEL_H_
#define TVMGEN_DEFAULT_MODEL_H_

#include <stdint.h>

/* Bytes of the int8 input and output tensors (NHWC, as the model's input and output). */
#define TVMGEN_INPUT_BYTES {input_bytes}
#define TVMGEN_OUTPUT_BYTES {output_bytes}
/* Bytes of the static activation arena inside model.c (input and output are the caller's). */
#define TVMGEN_ARENA_BYTES {arena}

#ifdef __cplusplus
extern "C" {{
#endif

/* Run the model on `input` (TVMGEN_INPUT_BYTES), write `output` (TVMGEN_OUTPUT_BYTES); returns 0.
   Not reentrant: all activations live in one static arena. */
int tvmgen_default_run(const int8_t *input, int8_t *output);

#ifdef __cplusplus
}}
#endif

#endif  /* TVMGEN_DEFAULT_MODEL_H_ */
"""


def _model_c(g: Graph, offsets: dict[str, int], calls: list[str], arena: int) -> str:
    x, y = g.inputs[0], g.outputs[0]
    head = ["#include \"model.h\"", "#include \"kernels.h\"", "#include \"weights.h\""]
    body = []
    # A planner may place the edges in the arena too: then copy them in and out.
    copy_in, copy_out = x in offsets, y in offsets
    if copy_in or copy_out:
        head.append("#include <string.h>")
    if copy_in:
        body.append(f"  memcpy(arena + {offsets[x]}, input, TVMGEN_INPUT_BYTES);")
    body += calls
    if copy_out:
        body.append(f"  memcpy(output, arena + {offsets[y]}, TVMGEN_OUTPUT_BYTES);")
    arena_decl = f"static _Alignas({ALIGN}) uint8_t arena[TVMGEN_ARENA_BYTES];\n\n" if arena else ""
    return ("\n".join(head) + "\n\n" + arena_decl + "int tvmgen_default_run(const int8_t *input, int8_t *output) {\n"
            + "\n".join(body) + "\n  return 0;\n}\n")


def _kernels_c(kernels) -> str:
    return "#include <stdbool.h>\n#include <stdint.h>\n\n#include \"kernels.h\"\n\n" + "\n".join(
        k.source for k in kernels)
