"""Post-training quantization of a float graph (from :mod:`tvm_patchnet.frontend.torch_onnx`)
to the project's int8 scheme.

- weights: symmetric int8, per output channel for conv2d, per channel for depthwise conv2d,
  per tensor for fully connected (what TFLite's FULLY_CONNECTED expects);
- activations: per-tensor asymmetric int8 from the min/max seen on the calibration data, with
  0.0 always inside the range; pools, pad, reshape and transpose keep their input's
  quantization, logistic and softmax output use TFLite's fixed scale 1/256, zero point -128;
- biases: int32, ``round(b / (s_in * s_w[c]))``;
- fused activations (ReLU, ReLU6, clips) become the int8 clamp ``act_range``.
The int8 graph input is int8 with the calibrated scale: use :func:`quantize_input` and
:func:`dequantize_output` to cross the float boundary. Batch norm was folded at import.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable

import numpy as np

from .errors import PatchnetError
from .frontend.float_exec import run_float
from .graph import Graph, Op, Tensor
from .quant import act_range

_WEIGHTED = ("conv2d", "depthwise_conv2d", "fully_connected")
_FUSED_ACT = _WEIGHTED + ("add", "mul", "avg_pool2d", "max_pool2d")
_KEEP_QUANT = ("avg_pool2d", "max_pool2d", "pad", "reshape", "transpose")
_FIXED_OUT = {"logistic": (1 / 256, -128), "softmax": (1 / 256, -128)}
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def quantize(float_graph: Graph, calibration: np.ndarray | str, num_samples: int = 64,
             preprocess: Callable[[np.ndarray], np.ndarray] | None = None, layout: str | None = None) -> Graph:
    """int8 :class:`Graph` of ``float_graph``, calibrated on up to ``num_samples`` inputs.

    ``calibration`` is an array of input samples (NHWC, or NCHW which is transposed) or a folder
    of ``.npy`` samples and images; see :func:`load_calibration` (``preprocess`` applies to images).
    """
    x_shape = float_graph.t(float_graph.inputs[0]).shape
    data = load_calibration(calibration, x_shape, num_samples, preprocess, layout)
    lo, hi = calibrate(float_graph, data)
    tensors: dict[str, Tensor] = {}
    qp: dict[str, tuple[float, int]] = {}

    def act(name: str, params: tuple[float, int]) -> None:
        qp[name] = params
        tensors[name] = Tensor(name, float_graph.t(name).shape, "int8", np.array([params[0]], np.float32),
                               np.array([params[1]], np.int32))

    for name in float_graph.inputs:
        act(name, _asym(lo[name], hi[name]))
    ops = []
    for op in float_graph.ops:
        out, x = op.outputs[0], op.inputs[0]
        if op.kind in _FIXED_OUT:
            act(out, _FIXED_OUT[op.kind])
        elif op.kind in _KEEP_QUANT:
            act(out, qp[x])
        else:
            act(out, _asym(lo[out], hi[out]))
        if op.kind in _WEIGHTED:
            _quantize_weights(float_graph, op, qp[x][0], tensors)
        attrs = {k: v for k, v in op.attrs.items() if k != "clamp"}
        if op.kind in _FUSED_ACT:
            attrs["act_range"] = _act_range(op.attrs, *qp[out])
        ops.append(Op(op.name, op.kind, list(op.inputs), list(op.outputs), attrs, op.block, op.origin))
    g = Graph(float_graph.name, tensors, ops, list(float_graph.inputs), list(float_graph.outputs))
    g.validate()
    return g


def load_calibration(calibration: np.ndarray | str, input_shape: tuple[int, ...], num_samples: int,
                     preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                     layout: str | None = None) -> np.ndarray:
    """Calibration inputs as float32 NHWC ``(N, H, W, C)`` with ``1 <= N <= num_samples``.

    ``calibration`` is an array, a ``.npy`` file or an ``.npz`` file holding one array (one
    sample or a batch, already preprocessed as the model's input), or a folder of such ``.npy``
    files and images (.png/.jpg/.jpeg/.bmp: RGB (or grey for one channel) scaled to [0, 1],
    resized to H x W, then passed through ``preprocess`` if given), read in sorted name order.
    ``layout``: "NCHW" (an ONNX / PyTorch model's own layout: arrays must be NCHW), "NHWC", or
    None (either). Arrays must be floating point and finite. A problem is one
    :class:`PatchnetError` line naming the file.
    """
    if isinstance(calibration, (str, os.PathLike)):
        path = str(calibration)
        if not os.path.exists(path):
            raise PatchnetError(f"{path}: no such calibration file or folder")
        if os.path.isdir(path):
            data = _load_folder(path, input_shape, num_samples, preprocess, layout)
        else:
            if preprocess is not None:
                raise PatchnetError(f"{path}: --mean/--std apply to a folder of images; an array file must "
                                    "already be preprocessed")
            data = np.stack(_as_nhwc(_read_array(path), input_shape, path, layout))
    else:
        data = np.stack(_as_nhwc(np.asarray(calibration), input_shape, "calibration array", layout))
    return data[:num_samples].astype(np.float32)


def _load_folder(folder: str, input_shape, num_samples: int, preprocess, layout) -> np.ndarray:
    samples = []
    for f in sorted(os.listdir(folder)):
        path = os.path.join(folder, f)
        if f.lower().endswith(".npy"):
            samples.extend(_as_nhwc(_read_array(path), input_shape, path, layout))
        elif f.lower().endswith(_IMAGE_EXT):
            img = _read_image(path, input_shape)
            samples.append(preprocess(img) if preprocess else img)
        if len(samples) >= num_samples:
            break
    if not samples:
        raise PatchnetError(f"{folder}: calibration folder has no .npy or image files "
                            f"({', '.join(_IMAGE_EXT)})")
    return np.stack([np.asarray(s, np.float32) for s in samples])


def _read_array(path: str) -> np.ndarray:
    """The array of an ``.npy`` file or the one array of an ``.npz`` file (never pickled objects)."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if len(data.files) != 1:
                    raise PatchnetError(f"{path}: holds {len(data.files)} arrays "
                                        f"({', '.join(data.files[:5]) or 'none'}); expected one: the calibration inputs")
                return data[data.files[0]]
        return data
    except PatchnetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise PatchnetError(f"{path}: cannot read calibration data "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def calibrate(float_graph: Graph, data: np.ndarray, batch: int = 16) -> tuple[dict, dict]:
    """Per-tensor (min, max) dicts over every activation of ``float_graph`` on ``data`` (NHWC)."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for i in range(0, len(data), batch):
        for name, v in run_float(float_graph, data[i: i + batch], trace=True).items():
            lo[name] = min(lo.get(name, np.inf), float(v.min()))
            hi[name] = max(hi.get(name, -np.inf), float(v.max()))
    return lo, hi


def quantize_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Float input (NHWC, the graph's input layout) -> int8 with the input's scale and zero point."""
    t = graph.t(graph.inputs[0])
    v = np.asarray(x, np.float64) / t.s
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + t.zp, -128, 127).astype(np.int8)


def dequantize_output(graph: Graph, y: np.ndarray, index: int = 0) -> np.ndarray:
    """int8 value of graph output ``index`` -> float32, ``(y - zp) * scale``."""
    t = graph.t(graph.outputs[index])
    return ((np.asarray(y, np.float32) - t.zp) * t.s).astype(np.float32)


def _asym(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0.0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32(max(hi - lo, 1e-8) / 255.0))
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _act_range(attrs: dict, scale: float, zp: int) -> tuple[int, int]:
    """int8 clamp of a fused activation: TFLite's rule for named ones, else the clip bounds."""
    clamp = attrs.get("clamp")
    if clamp is None or attrs.get("act") is not None:
        return act_range(attrs.get("act"), scale, zp)
    lo = -128 if np.isinf(clamp[0]) else max(-128, zp + int(np.floor(clamp[0] / scale + 0.5)))
    hi = 127 if np.isinf(clamp[1]) else min(127, zp + int(np.floor(clamp[1] / scale + 0.5)))
    return lo, hi


def _quantize_weights(fg: Graph, op: Op, s_in: float, tensors: dict[str, Tensor]) -> None:
    """Symmetric int8 weights (per channel, or per tensor for FC) and int32 bias of ``op``."""
    w, b = fg.t(op.inputs[1]), fg.t(op.inputs[2])
    axis = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": None}[op.kind]
    reduce = None if axis is None else tuple(i for i in range(w.data.ndim) if i != axis)
    peak = np.atleast_1d(np.abs(w.data).max(axis=reduce))
    s_w = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.data.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w.data / s_w.reshape(shape)), -127, 127).astype(np.int8)
    tensors[w.name] = Tensor(w.name, w.shape, "int8", s_w, np.zeros(s_w.size, np.int32), axis or 0, q, True)
    s_b = np.broadcast_to(np.float64(s_in) * s_w.astype(np.float64), (b.shape[0],))
    bq = np.clip(np.round(b.data.astype(np.float64) / s_b), -(2**31), 2**31 - 1).astype(np.int32)
    tensors[b.name] = Tensor(b.name, b.shape, "int32", s_b.astype(np.float32), np.zeros(b.shape[0], np.int32),
                             0, bq, True)


def _as_nhwc(a: np.ndarray, input_shape: tuple[int, ...], what: str, layout: str | None = None) -> list[np.ndarray]:
    """Split ``a`` (one sample or a batch; NCHW or NHWC as ``layout`` allows) into NHWC samples."""
    _, h, w, c = input_shape
    if not np.issubdtype(a.dtype, np.floating):
        raise PatchnetError(f"{what}: dtype {a.dtype}; calibration inputs must be float (preprocessed as the "
                            "model's input)")
    a = a[None] if a.ndim == 3 else a
    if a.ndim == 4 and a.shape[0] == 0:
        raise PatchnetError(f"{what}: holds no samples (shape {a.shape})")
    if not np.isfinite(a).all():
        raise PatchnetError(f"{what}: holds NaN or infinite values")
    if layout != "NCHW" and a.ndim == 4 and a.shape[1:] == (h, w, c):
        return list(a.astype(np.float32))
    if layout != "NHWC" and a.ndim == 4 and a.shape[1:] == (c, h, w):
        return list(a.transpose(0, 2, 3, 1).astype(np.float32))
    want = {"NCHW": f"(N, {c}, {h}, {w}) (NCHW, the model's layout)", "NHWC": f"(N, {h}, {w}, {c}) (NHWC)",
            None: f"(N, {h}, {w}, {c}) (NHWC) or (N, {c}, {h}, {w}) (NCHW)"}[layout]
    raise PatchnetError(f"{what}: shape {tuple(a.shape)} does not match the model input: expected {want}")


def _read_image(path: str, input_shape: tuple[int, ...]) -> np.ndarray:
    """An image as float32 HWC in [0, 1] with the model's H, W and channel count (Pillow: RGB, or
    grey for a one-channel model, resized bilinearly)."""
    _, h, w, c = input_shape
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR), np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PatchnetError(f"{path}: cannot read the image ({why})") from None
    img = img.reshape(h, w, -1)
    if img.shape[2] != c:
        raise PatchnetError(f"{path}: image has {img.shape[2]} channels, the model wants {c}")
    return img
