"""Several inputs and outputs, float32 inputs (QUANTIZE first op) and outputs (DEQUANTIZE last op)
in the C model: compiled with the host gcc and called through ctypes, every output equals
TensorFlow Lite Micro's bit for bit (float32: the same floats), with copies in and out and in
place; model.h declares what metadata.json and the firmware rely on."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.codegen.cmodel import check_cortex_m4, check_sources, compile_c, run_c
from tests.conftest import tflm_trace
from tests.io_models import IO_MODELS, S_IMAGE
from tests.tflite_writer import TensorSpec, single_op_model
from tvm_patchnet.archive import declared_sizes
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.codegen import emit_c
from tvm_patchnet.codegen.c_kernels import emit_kernels
from tvm_patchnet.codegen.float_literals import exact_float_literals
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.patch import plan_patches
from tvm_patchnet.schedules.default import op_kernel

#: model -> patch settings (patches, split) it also runs with; two-inputs has no one-input stage
PATCHED = {"float-edges": (2, 2), "three-heads": (2, 1)}


def _load(tmp_path, key):
    buf, inputs = IO_MODELS[key](np.random.default_rng(11))
    path = tmp_path / f"{key}.tflite"
    path.write_bytes(buf)
    return buf, inputs, load_tflite(str(path))


def _assert_tflm(graph, buf, inputs, got):
    ref = tflm_trace(buf, inputs)
    for name, y in zip(graph.outputs, got, strict=True):
        want = ref(graph.meta["tensor_index"][name])
        assert y.dtype == want.dtype and y.size == want.size, name
        assert y.tobytes() == want.tobytes(), f"output '{name}': {int(np.sum(y.reshape(want.shape) != want))} differ"


@pytest.mark.parametrize("key", list(IO_MODELS))
def test_io_model_bit_exact_with_tflm(tmp_path, key):
    buf, inputs, graph = _load(tmp_path, key)
    out = str(tmp_path / "c")
    info = emit_c(graph, out)
    floats = any(graph.t(n).dtype == "float32" for n in graph.inputs + graph.outputs)
    check_sources(out, float_edges=floats)
    lib = compile_c(out)
    got = run_c(lib, graph, inputs)
    _assert_tflm(graph, buf, inputs, got)
    in_place = run_c(lib, graph, inputs, in_place=True)  # NULL tables: the arena's own tensors
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, in_place))
    sizes = declared_sizes(out)
    assert sizes["TVMGEN_NUM_INPUTS"] == len(graph.inputs) and sizes["TVMGEN_NUM_OUTPUTS"] == len(graph.outputs)
    assert sizes["TVMGEN_INPUT_SIZES"] == [x.nbytes for x in inputs] == info.input_sizes
    assert sizes["TVMGEN_OUTPUT_SIZES"] == [y.nbytes for y in got] == info.output_sizes
    assert (sizes["TVMGEN_INPUT_BYTES"], sizes["TVMGEN_OUTPUT_BYTES"]) == (info.input_bytes, info.output_bytes)
    check_cortex_m4(out, float_edges=floats)


@pytest.mark.parametrize("key", list(PATCHED))
def test_patched_io_model_bit_exact_with_tflm(tmp_path, key):
    buf, inputs, graph = _load(tmp_path, key)
    out = str(tmp_path / "c")
    emit_c(graph, out, plan_patches(graph, *PATCHED[key]))
    _assert_tflm(graph, buf, inputs, run_c(compile_c(out), graph, inputs))


def test_quantize_rounds_as_tflm_at_every_halfway_point(tmp_path):
    """float32 -> int8 with a scale whose 7-digit text is another float32 (what TVM prints): at
    the halfway points between levels the C rounds away from zero exactly as TFLite Micro."""
    shape = (1, 16, 16, 4)
    buf = single_op_model("QUANTIZE", [TensorSpec(shape, "float32")], TensorSpec(shape, "int8", S_IMAGE, -3))
    path = tmp_path / "q.tflite"
    path.write_bytes(buf)
    graph = load_tflite(str(path))
    k = np.arange(np.prod(shape))
    x = (((k % 260) - 130 + 3 + 0.5) * np.float32(S_IMAGE)).astype(np.float32).reshape(shape)
    x.flat[:4] = [np.nextafter(x.flat[0], np.float32(0)), -0.0, 3.0, -3.0]  # below a halfway point; saturation
    emit_c(graph, str(tmp_path / "c"))
    got = run_c(compile_c(str(tmp_path / "c")), graph, x)[0]
    want = tflm_trace(buf, [x])(1)
    assert np.array_equal(got.reshape(want.shape), want)
    source = (tmp_path / "c" / "kernels.c").read_text()
    assert f"{S_IMAGE:.6e}f" not in source and "1.7331023e-02f" in source  # the exact float32, not TVM's text


def test_an_unaccounted_float_literal_is_refused():
    b = GraphBuilder("sm", (1, 4))
    g = b.finish(b.softmax("input"))
    func = op_kernel(g, g.ops[0]).func
    source = emit_kernels({"k": func})["k"].source
    assert exact_float_literals(source, func, "k") == source  # integer-only: nothing to do
    with pytest.raises(PatchnetError, match=r"^kernel 'k': float literal 1\.234568e-01 stands for no constant"):
        exact_float_literals(source + "\n/* 1.234568e-01 */", func, "k")


def test_other_edge_dtypes_are_refused(tmp_path):
    b = GraphBuilder("edge", (1, 4, 4, 3))
    g = b.finish(b.conv2d("input", 4, 1))
    g.tensors["input"].dtype = "int16"
    with pytest.raises(PatchnetError, match=r"^edge: C model input 'input' is int16; inputs and outputs must be "
                                            r"int8 or float32$"):
        emit_c(g, str(tmp_path / "c"))


def test_model_h_describes_each_input_and_output(tmp_path):
    _, _, graph = _load(tmp_path, "two-inputs")
    emit_c(graph, str(tmp_path / "c"))
    header = (tmp_path / "c" / "model.h").read_text()
    assert re.search(r"input 0 'frame': int8 \[1, 8, 8, 4\], scale 0\.0297311\d*, zero point -6, 256 B", header)
    assert "input 1 'depth': float32 [1, 8, 8, 2], 512 B" in header
    assert "#define TVMGEN_INPUT_SIZES {256, 512}\n" in header and "#define TVMGEN_INPUT_BYTES 768\n" in header
