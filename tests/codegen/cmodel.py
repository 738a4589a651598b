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


def compile_c(out_dir: str) -> ctypes.CDLL:
    """Host gcc, every warning an error, into ``out_dir/model.so``."""
    so = os.path.join(out_dir, "model.so")
    subprocess.run(["gcc", *WARNINGS, "-shared", "-fPIC", "-o", so, *[os.path.join(out_dir, f) for f in SOURCES]],
                   check=True, capture_output=True, text=True)
    return ctypes.CDLL(so)


def run_c(lib: ctypes.CDLL, graph: Graph, x: np.ndarray) -> np.ndarray:
    """``tvmgen_default_run`` on ``x``; the output in the graph output's shape."""
    y = np.zeros(graph.t(graph.outputs[0]).shape, np.int8)
    rc = lib.tvmgen_default_run(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p))
    assert rc == 0
    return y


def check_sources(out_dir: str) -> None:
    """No C or header file in ``out_dir`` mentions a :data:`FORBIDDEN` word."""
    for name in os.listdir(out_dir):
        if name.endswith((".c", ".h")):
            with open(os.path.join(out_dir, name)) as f:
                text = f.read()
            found = [w for w in FORBIDDEN if w in text]
            assert not found, f"{name} contains {found}"


def check_cortex_m4(out_dir: str) -> None:
    """Compiles for a Cortex-M4 and needs no libgcc helper (64-bit division, soft float); does
    nothing where ``arm-none-eabi-gcc`` is not installed."""
    if ARM_GCC is None:
        return
    for src in SOURCES:
        obj = os.path.join(out_dir, src[:-2] + ".o")
        subprocess.run([ARM_GCC, "-mcpu=cortex-m4", "-mthumb", *WARNINGS, "-c", "-o", obj,
                        os.path.join(out_dir, src)], check=True, capture_output=True, text=True)
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", os.path.join(out_dir, "kernels.o")], check=True,
                               capture_output=True, text=True).stdout.split()
    assert undefined == [], f"kernels need runtime helpers: {undefined}"
