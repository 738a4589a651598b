"""Model loading: one entry point for every source of an int8 graph.

``load_model`` takes a ``.tflite`` file (int8, imported as is), a ``.onnx`` file (float,
quantized post-training on the calibration data) or a built-in architecture name. Every graph
then goes through the int8-graph rewrites (:func:`tvm_patchnet.rewrite.simplify`: explicit PADs
folded into the padding of the conv after them, where exact), so every later step sees one graph.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import PatchnetError
from ..graph import Graph
from ..rewrite import simplify

#: seeded random normal inputs a float model is calibrated on when no calibration data is given
RANDOM_CALIBRATION_SAMPLES = 8
#: calibration samples used at most (the first ones, in file or name order)
CALIBRATION_SAMPLES = 64


def load_model(
    spec: str,
    resolution: int | None = None,
    width: float | None = None,
    calibration: np.ndarray | str | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Graph:
    """Load ``spec`` (a file path or a built-in architecture name) as an int8 graph.

    ``resolution``/``width`` apply to built-in architectures only. ``calibration`` applies to
    float models (ONNX): an array or an ``.npy`` / ``.npz`` file of inputs in the model's NCHW
    layout (preprocessed as the model expects), or a folder of images (and ``.npy`` files) that
    are scaled to [0, 1], resized to the input size and normalised per channel by ``mean`` /
    ``std``; the first :data:`CALIBRATION_SAMPLES` are used. Without it, activation ranges come
    from :data:`RANDOM_CALIBRATION_SAMPLES` seeded random normal inputs, which is fine for memory
    and MAC analysis but not for accuracy: ``warn`` (default: a line on stderr) says so.
    ``graph.meta["calibration"]`` records ``{source, samples}`` for float models.
    """
    return simplify(_import(spec, resolution, width, calibration, seed, mean, std, warn))


def _import(spec: str, resolution, width, calibration, seed: int, mean, std, warn) -> Graph:
    ext = os.path.splitext(spec)[1].lower()
    if ext != ".onnx" and (calibration is not None or mean is not None or std is not None):
        why = "an int8 TFLite model is already quantized" if ext == ".tflite" else \
            "a built-in architecture is calibrated on its own"
        raise PatchnetError(f"{spec}: --calibration/--mean/--std apply to float models (.onnx); {why}")
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
        data, info = _calibration(spec, float_graph, calibration, seed, mean, std, warn)
        g = quantize(float_graph, data, num_samples=len(data))
        g.name = os.path.splitext(os.path.basename(spec))[0]  # as a TFLite model is: not the exporter's graph name
        g.meta["calibration"] = info
        return g
    if os.path.exists(spec) or os.path.sep in spec or ext in (".pb", ".h5", ".pt", ".pth", ".keras", ".tf"):
        raise PatchnetError(f"{spec}: unknown model format '{ext or spec}' (expected .tflite, .onnx or a built-in name)")
    from ..zoo import get_architecture

    return get_architecture(spec, resolution=resolution, width=width, seed=seed)


def _calibration(spec: str, float_graph: Graph, calibration, seed: int, mean, std, warn):
    """(NHWC float32 calibration samples, ``{source, samples}``) for ``float_graph``."""
    from ..ptq import load_calibration

    shape = float_graph.t(float_graph.inputs[0]).shape
    if calibration is None:
        if mean is not None or std is not None:
            raise PatchnetError("--mean/--std need --calibration (a folder of images)")
        n = RANDOM_CALIBRATION_SAMPLES
        (warn or _warn_stderr)(f"warning: {os.path.basename(spec)} quantized on {n} random inputs; "
                               "pass --calibration for real accuracy")
        data = np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)
        return data, {"source": "random", "samples": n}
    preprocess = _normalise(shape[3], mean, std) if (mean is not None or std is not None) else None
    data = load_calibration(calibration, shape, CALIBRATION_SAMPLES, preprocess, layout="NCHW")
    source = os.path.basename(os.path.normpath(str(calibration))) if isinstance(calibration, (str, os.PathLike)) \
        else "array"
    return data, {"source": source or str(calibration), "samples": len(data)}


def _normalise(channels: int, mean, std) -> Callable[[np.ndarray], np.ndarray]:
    """``(img - mean) / std`` per channel (HWC image in [0, 1]); one value applies to every channel."""
    vals = []
    for flag, v, default in (("--mean", mean, 0.0), ("--std", std, 1.0)):
        v = np.atleast_1d(np.asarray(default if v is None else v, np.float32))
        if v.ndim != 1 or v.size not in (1, channels) or not np.isfinite(v).all():
            raise PatchnetError(f"{flag}: expected 1 or {channels} numbers (one per input channel), got {v.tolist()}")
        vals.append(v)
    if not (vals[1] > 0).all():
        raise PatchnetError(f"--std: every value must be positive, got {vals[1].tolist()}")
    m, s = vals
    return lambda img: (img - m) / s


def _warn_stderr(line: str) -> None:
    print(line, file=sys.stderr)
