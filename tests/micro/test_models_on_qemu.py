"""Every shared TFLite model and MobileNetV2-w0.35 r144, layer by layer and patched, compiled to C
and run on the emulated Cortex-M4 (qemu-m4): outputs equal TensorFlow Lite Micro's (TFLite
models) or the host int8 build (built-ins), bit for bit; the shared models also on the Cortex-M7
(qemu-m7), layer by layer."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SHARED_MODELS, model_path, tflm_trace
from tvm_patchnet.deploy import compile_model, run_model
from tvm_patchnet.frontend.tflite import load_tflite

CONV_STAGE = {"mlperftiny_vww_96_int8.tflite": (3, 3), "mlperftiny_ic_resnet8_quant.tflite": (2, 2),
              "mlperftiny_kws_ref_model.tflite": (2, 3)}


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_on_qemu_equals_tflite_micro(name, tmp_path):
    path = model_path(name)
    g = load_tflite(path)
    t = g.t(g.inputs[0])
    x = np.random.default_rng(7).integers(-128, 128, size=t.shape, dtype=np.int8)
    want = tflm_trace(path, [x])(g.meta["tensor_index"][g.outputs[0]])
    settings = [(None, None)] + ([CONV_STAGE[name]] if name in CONV_STAGE else [])
    for patches, split in settings:
        tar = tmp_path / f"m{patches}.tar"
        compile_model(path, str(tar), patches=patches, split=split)
        rep = run_model(str(tar), x=x)
        (got,) = rep.arrays()
        assert np.array_equal(got.reshape(want.shape), want), \
            f"{name} patches={patches}: board output differs from TFLite Micro"
        assert rep.counter == "instructions" and rep.count > 0


@pytest.mark.slow
@pytest.mark.parametrize("patches, split", [(None, None), (3, 4)])
def test_mbv2_w035_r144_on_qemu_equals_host(patches, split, tmp_path):
    tar = tmp_path / "mbv2.tar"
    compile_model("mbv2-w0.35-r144", str(tar), patches=patches, split=split)
    rep = run_model(str(tar), check=True)
    assert rep.reference_match is True
    assert rep.arena_bytes == rep.predicted_arena_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_on_qemu_m7_equals_tflite_micro(name, tmp_path):
    """The Cortex-M7 (mps2-an500) runs the same fast kernels (same DSP instructions): bit-exact."""
    path = model_path(name)
    g = load_tflite(path)
    x = np.random.default_rng(11).integers(-128, 128, size=g.t(g.inputs[0]).shape, dtype=np.int8)
    want = tflm_trace(path, [x])(g.meta["tensor_index"][g.outputs[0]])
    tar = tmp_path / "m7.tar"
    compile_model(path, str(tar), target="cortex-m7", board="qemu-m7")
    rep = run_model(str(tar), x=x)
    (got,) = rep.arrays()
    assert rep.board == "qemu-m7" and rep.counter == "instructions"
    assert np.array_equal(got.reshape(want.shape), want), f"{name}: qemu-m7 output differs from TFLite Micro"
