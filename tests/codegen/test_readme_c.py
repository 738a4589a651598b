"""The README's C usage example, compiled and run as written against a compiled model (host gcc):
``model.h``'s macros (shape, scale, zero point) and the in-place run work as documented."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np

from tests.codegen.cmodel import SOURCES, WARNINGS
from tests.conftest import model_path
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.runtime import run_graph

README = Path(__file__).parents[2] / "README.md"


def _usage_block() -> str:
    text = README.read_text()
    m = re.search(r"<!-- c-usage -->\s*```c\n(.*?)```", text, flags=re.DOTALL)
    assert m, "README: no C usage block after <!-- c-usage -->"
    return "\n".join(line.removeprefix("  ") for line in m.group(1).splitlines())


def test_readme_c_usage_runs_as_written(tmp_path):
    graph = load_tflite(model_path("mlperftiny_kws_ref_model.tflite"))
    out = tmp_path / "c"
    emit_c(graph, str(out))
    (out / "main.c").write_text(_usage_block())
    exe = tmp_path / "usage"
    subprocess.run(["gcc", *WARNINGS, "-I", str(out), "-o", str(exe), str(out / "main.c"),
                    *[str(out / f) for f in SOURCES], "-lm"], check=True, capture_output=True, text=True)
    printed = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    # the same input, through the host build
    t = graph.t(graph.inputs[0])
    x = np.array([t.zp + i % 7 for i in range(t.size)], np.int8).reshape(t.shape)
    y = run_graph(graph, [x])[0].reshape(-1)
    o = graph.t(graph.outputs[0])
    best = int(np.argmax(y))  # first of the largest, as the C loop keeps
    assert printed == f"class {best} score {np.float32(o.s) * np.float32(int(y[best]) - o.zp):.6f}\n", printed
