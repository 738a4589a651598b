"""Helpers for the C model tests: compile (host and Cortex-M4), call through ctypes, scan the source."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np

from tvm_patchnet.graph import Graph

SOURCES = ("model.c", "kernels.c", "weights.c")
WARNINGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
ARM_GCC = shutil.which("arm-none-eabi-gcc")
#: Nothing of TVM's runtime, no heap, no floating point, no assertion strings.
FORBIDDEN = ("TVMFFI", "DLTensor", "TVMBackend", "assert", "malloc", "float", "double", "TVM_DLL")
#: What the float32 edge kernels (QUANTIZE first op, DEQUANTIZE last op) may call on a Cortex-M4F:
#: double arithmetic in software (libgcc, IEEE) and floor (libm). Float32 runs on the FPU.
FLOAT_EDGE_HELPERS = {"floor", "__aeabi_f2d", "__aeabi_d2f", "__aeabi_i2d", "__aeabi_d2iz", "__aeabi_dadd",
                      "__aeabi_dsub", "__aeabi_dmul", "__aeabi_dcmpeq", "__aeabi_dcmple", "__aeabi_dcmplt",
                      "__aeabi_dcmpge", "__aeabi_dcmpgt", "__aeabi_dcmpun"}
M4F = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]


def compile_c(out_dir: str) -> ctypes.CDLL:
    """Host gcc, every warning an error, into ``out_dir/model.so``."""
    so = os.path.join(out_dir, "model.so")
    subprocess.run(["gcc", *WARNINGS, "-shared", "-fPIC", "-o", so, *[os.path.join(out_dir, f) for f in SOURCES],
                    "-lm"], check=True, capture_output=True, text=True)
    return ctypes.CDLL(so)


def run_c(lib: ctypes.CDLL, graph: Graph, inputs, in_place: bool = False) -> list[np.ndarray]:
    """``tvmgen_default_run`` on ``inputs`` (a list, or one array for a one-input model): the
    outputs in the graph outputs' shapes and dtypes. ``in_place``: write the inputs into the
    arena (``tvmgen_default_input(i)``), run with NULL tables, read the outputs from the arena."""
    inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    assert len(inputs) == len(graph.inputs)
    outs = [np.zeros(graph.t(n).shape, graph.t(n).dtype) for n in graph.outputs]
    lib.tvmgen_default_input.restype = lib.tvmgen_default_output.restype = ctypes.c_void_p
    if in_place:
        for i, x in enumerate(inputs):
            ctypes.memmove(lib.tvmgen_default_input(i), np.ascontiguousarray(x).ctypes.data, x.nbytes)
        assert lib.tvmgen_default_run(None, None) == 0
        for i, y in enumerate(outs):
            ctypes.memmove(y.ctypes.data, lib.tvmgen_default_output(i), y.nbytes)
        return outs
    xs = (ctypes.c_void_p * len(inputs))(*[np.ascontiguousarray(x).ctypes.data for x in inputs])
    ys = (ctypes.c_void_p * len(outs))(*[y.ctypes.data for y in outs])
    assert lib.tvmgen_default_run(xs, ys) == 0
    return outs


def check_sources(out_dir: str, float_edges: bool = False) -> None:
    """No C or header file in ``out_dir`` mentions a :data:`FORBIDDEN` word (``float_edges``:
    floating point allowed, for models with float32 inputs or outputs)."""
    words = [w for w in FORBIDDEN if not float_edges or w not in ("float", "double")]
    for name in os.listdir(out_dir):
        if name.endswith((".c", ".h")):
            with open(os.path.join(out_dir, name)) as f:
                text = f.read()
            found = [w for w in words if w in text]
            assert not found, f"{name} contains {found}"


def check_cortex_m4(out_dir: str, float_edges: bool = False) -> None:
    """Compiles for a Cortex-M4 and needs no libgcc helper (64-bit division, soft float); does
    nothing where ``arm-none-eabi-gcc`` is not installed. ``float_edges``: compiled for the
    Cortex-M4F (hard float) and allowed :data:`FLOAT_EDGE_HELPERS`."""
    if ARM_GCC is None:
        return
    for src in SOURCES:
        obj = os.path.join(out_dir, src[:-2] + ".o")
        subprocess.run([ARM_GCC, *(M4F if float_edges else ["-mcpu=cortex-m4", "-mthumb"]), *WARNINGS, "-c", "-o",
                        obj, os.path.join(out_dir, src)], check=True, capture_output=True, text=True)
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", os.path.join(out_dir, "kernels.o")], check=True,
                               capture_output=True, text=True).stdout.split()
    allowed = FLOAT_EDGE_HELPERS if float_edges else set()
    assert set(undefined) - {"U"} <= allowed, f"kernels need runtime helpers: {set(undefined) - {'U'} - allowed}"
