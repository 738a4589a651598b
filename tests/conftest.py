"""Shared fixtures: where the shared TFLite models are, and the TFLite Micro reference."""

from __future__ import annotations

import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Override with PATCHNET_MODELS to test your own models.
MODELS_DIR = os.environ.get("PATCHNET_MODELS", os.path.join(ROOT, "..", "shared", "models"))

SHARED_MODELS = [
    "mlperftiny_vww_96_int8.tflite",
    "mlperftiny_ic_resnet8_quant.tflite",
    "mlperftiny_kws_ref_model.tflite",
    "mlperftiny_ad01_int8.tflite",
    "mlperftiny_str_ww_ref_model.tflite",
    "tflm_hello_world_int8.tflite",
]


def model_path(name: str) -> str:
    path = os.path.join(MODELS_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"shared model {path} is missing (set PATCHNET_MODELS to the models folder)")
    return path


def random_inputs(graph, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs in each graph input's dtype (int8 over the full range)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in graph.inputs:
        t = graph.t(name)
        if t.dtype == "int8":
            out.append(rng.integers(-128, 128, size=t.shape, dtype=np.int8))
        else:
            out.append(rng.standard_normal(t.shape).astype(t.dtype))
    return out


def tflm_trace(path_or_bytes, inputs: list[np.ndarray]):
    """Run TFLite Micro (the golden int8 reference) keeping every tensor; returns a function
    tensor index -> np.ndarray."""
    from tflite_micro.python.tflite_micro import runtime

    cfg = runtime.InterpreterConfig.kPreserveAllTensors
    if isinstance(path_or_bytes, (bytes, bytearray)):
        it = runtime.Interpreter.from_bytes(bytes(path_or_bytes), arena_size=64 << 20, intrepreter_config=cfg)
    else:
        it = runtime.Interpreter.from_file(path_or_bytes, arena_size=64 << 20, intrepreter_config=cfg)
    for k, x in enumerate(inputs):
        it.set_input(x, k)
    it.invoke()
    return lambda idx: it.GetTensor(idx, 0)["tensor_data"]
