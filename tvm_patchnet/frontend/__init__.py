"""Model loading: one entry point for every source of an int8 graph.

``load_model`` takes a ``.tflite`` file (int8, imported as is), a ``.onnx`` file (float,
quantized post-training on the calibration data) or a built-in architecture name. Every graph
then goes through the int8-graph rewrites (:func:`tvm_patchnet.rewrite.simplify`: explicit PADs
folded into the padding of the conv after them, where exact), so every later step sees one graph.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import PatchnetError
from ..graph import Graph
from ..rewrite import simplify


def load_model(
    spec: str,
    resolution: int | None = None,
    width: float | None = None,
    calibration: np.ndarray | str | None = None,
    seed: int = 0,
) -> Graph:
    """Load ``spec`` (a file path or a built-in architecture name) as an int8 graph.

    ``resolution``/``width`` apply to built-in architectures only. ``calibration`` (an array
    in the model's float input layout, or a folder of images / .npy files) applies to float
    models; without it, activation ranges come from seeded random inputs, which is fine for
    memory and MAC analysis but not for accuracy.
    """
    return simplify(_import(spec, resolution, width, calibration, seed))


def _import(spec: str, resolution, width, calibration, seed: int) -> Graph:
    ext = os.path.splitext(spec)[1].lower()
    if ext in (".tflite", ".onnx"):
        if resolution is not None or width is not None:
            raise PatchnetError(f"{spec}: --resolution/--width apply to built-in architectures, not to model files")
        if not os.path.exists(spec):
            raise PatchnetError(f"{spec}: no such file")
        if ext == ".tflite":
            from .tflite import load_tflite

            return load_tflite(spec)
        from ..ptq import quantize
        from .torch_onnx import import_onnx

        float_graph = import_onnx(spec)
        return quantize(float_graph, _calibration(float_graph, calibration, seed))
    if os.path.exists(spec) or os.path.sep in spec or ext in (".pb", ".h5", ".pt", ".pth", ".keras", ".tf"):
        raise PatchnetError(f"{spec}: unknown model format '{ext or spec}' (expected .tflite, .onnx or a built-in name)")
    from ..zoo import get_architecture

    return get_architecture(spec, resolution=resolution, width=width, seed=seed)


def _calibration(float_graph: Graph, calibration, seed: int):
    if calibration is not None:
        return calibration
    shape = float_graph.t(float_graph.inputs[0]).shape
    return np.random.default_rng(seed).standard_normal((8, *shape[1:])).astype(np.float32)
