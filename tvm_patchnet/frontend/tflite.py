"""TFLite int8 flatbuffer -> int8 :class:`~tvm_patchnet.graph.Graph`.

The file is scanned once: every op code is looked up in ``_CONVERTERS`` and all unsupported
ops are reported together (index and type). Quantization parameters are taken as stored; the
kernels recompute TFLite Micro's multipliers from them. Handles what TVM 0.27's stock frontend
refuses on real models: quantized PAD / TRANSPOSE / RESIZE_NEAREST_NEIGHBOR, 1-D biases whose
quantized dimension exceeds their rank, and FULLY_CONNECTED inputs of more than 2 dimensions.
"""

from __future__ import annotations

import os

import numpy as np
import tflite

from ..errors import PatchnetError, UnsupportedOpsError
from ..graph import Graph, Op, Tensor
from ..quant import act_range

_DTYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
_ACTS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_OPNAMES = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}


def load_tflite(path: str) -> Graph:
    """Parse a .tflite file into an int8 graph; :class:`PatchnetError` on any problem."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise PatchnetError(f"{path}: cannot read ({e.strerror})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise PatchnetError(f"{path}: not a TFLite flatbuffer (missing TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        return _Importer(model, path).run()
    except PatchnetError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer fails anywhere inside the reader
        raise PatchnetError(f"{path}: corrupt TFLite file ({type(e).__name__}: {e})") from None


class _Importer:
    def __init__(self, model, path: str):
        self.model = model
        self.path = path
        self.sg = model.Subgraphs(0)
        self.tensors: dict[str, Tensor] = {}
        self.names: dict[int, str] = {}
        self.ops: list[Op] = []

    # ------------------------------------------------------------------ tensors
    def name(self, idx: int) -> str:
        if idx in self.names:
            return self.names[idx]
        t = self.sg.Tensors(idx)
        raw = (t.Name() or b"").decode(errors="replace") or f"tensor_{idx}"
        name = raw if raw not in self.tensors else f"{raw}#{idx}"
        self.names[idx] = name
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = _DTYPES.get(t.Type())
        if dtype is None:
            raise PatchnetError(f"{self.path}: tensor {idx} '{raw}' has unsupported type code {t.Type()}")
        data = None
        b = self.model.Buffers(t.Buffer())
        if b is not None and b.DataLength():
            data = np.frombuffer(b.DataAsNumpy().tobytes(), dtype=dtype).reshape(shape).copy()
        scale = zp = None
        axis = 0
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float32)
            zp = q.ZeroPointAsNumpy().astype(np.int32) if q.ZeroPointLength() else np.zeros_like(scale, np.int32)
            axis = min(q.QuantizedDimension(), max(len(shape) - 1, 0))  # 1-D biases may carry axis > rank
        self.tensors[name] = Tensor(name, shape, dtype, scale, zp, axis, data, data is not None)
        return name

    def const_values(self, idx: int) -> np.ndarray:
        t = self.tensors[self.name(idx)]
        if t.data is None:
            raise PatchnetError(f"{self.path}: tensor '{t.name}' must be a constant")
        return t.data

    # ---------------------------------------------------------------------- ops
    def run(self) -> Graph:
        unsupported = []
        for i in range(self.sg.OperatorsLength()):
            code = self._code(self.sg.Operators(i))
            if _OPNAMES.get(code) not in _CONVERTERS:
                unsupported.append((i, _OPNAMES.get(code, f"CODE_{code}")))
        if unsupported:
            raise UnsupportedOpsError(self.path, unsupported)
        for i in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(i)
            opname = _OPNAMES[self._code(op)]
            ins = [int(k) for k in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(k) for k in op.OutputsAsNumpy()]
            kind, inputs, attrs = _CONVERTERS[opname](self, op, ins, outs)
            out_names = [self.name(k) for k in outs]
            attrs.setdefault("tflite_op", opname)
            self.ops.append(Op(f"{opname.lower()}_{i}", kind, inputs, out_names, attrs, -1, f"op {i} ({opname})"))
        inputs = [self.name(int(k)) for k in self.sg.InputsAsNumpy()]
        outputs = [self.name(int(k)) for k in self.sg.OutputsAsNumpy()]
        stem = os.path.splitext(os.path.basename(self.path))[0]
        g = Graph(stem, self.tensors, self.ops, inputs, outputs,
                  {"source": self.path, "tensor_index": {v: k for k, v in self.names.items()}})
        g.validate()
        from ..analysis.blocks import assign_blocks

        assign_blocks(g)
        return g

    def _code(self, op) -> int:
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        return max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())

    def options(self, op, cls):
        tab = op.BuiltinOptions()
        o = cls()
        o.Init(tab.Bytes, tab.Pos)
        return o

    def act(self, code: int, out_idx: int) -> dict:
        t = self.tensors[self.name(out_idx)]
        a = _ACTS.get(code)
        if code not in _ACTS:
            raise PatchnetError(f"{self.path}: unsupported fused activation code {code}")
        rng = act_range(a, t.s, t.zp) if t.is_quantized and t.dtype == "int8" else (-128, 127)
        return {"act": a, "act_range": rng}


def _same_or_valid(padding_code: int, in_hw, k_hw, s_hw, d_hw) -> tuple[int, int, int, int]:
    from ..builder import same_padding

    if padding_code == tflite.Padding.VALID:
        return (0, 0, 0, 0)
    t, b = same_padding(in_hw[0], k_hw[0], s_hw[0], d_hw[0])
    left, r = same_padding(in_hw[1], k_hw[1], s_hw[1], d_hw[1])
    return (t, left, b, r)


def _conv(imp: _Importer, op, ins, outs):
    x, w = imp.name(ins[0]), imp.name(ins[1])
    bias = imp.name(ins[2]) if len(ins) > 2 and ins[2] >= 0 else ""
    xs, ws = imp.tensors[x].shape, imp.tensors[w].shape
    depthwise = _OPNAMES[imp._code(op)] == "DEPTHWISE_CONV_2D"
    o = imp.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    s, d = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
    attrs = {"strides": s, "dilation": d, "padding": _same_or_valid(o.Padding(), xs[1:3], ws[1:3], s, d)}
    attrs.update(imp.act(o.FusedActivationFunction(), outs[0]))
    if depthwise:
        attrs["depth_multiplier"] = ws[3] // xs[3]
    elif ws[3] != xs[3]:
        raise PatchnetError(f"{imp.path}: grouped CONV_2D (groups={xs[3] // ws[3]}) is not supported")
    return ("depthwise_conv2d" if depthwise else "conv2d"), [x, w, bias], attrs


def _fc(imp: _Importer, op, ins, outs):
    o = imp.options(op, tflite.FullyConnectedOptions)
    bias = imp.name(ins[2]) if len(ins) > 2 and ins[2] >= 0 else ""
    return "fully_connected", [imp.name(ins[0]), imp.name(ins[1]), bias], imp.act(o.FusedActivationFunction(), outs[0])


def _binary(kind, cls):
    def conv(imp: _Importer, op, ins, outs):
        o = imp.options(op, cls)
        return kind, [imp.name(ins[0]), imp.name(ins[1])], imp.act(o.FusedActivationFunction(), outs[0])

    return conv


def _pool(kind):
    def conv(imp: _Importer, op, ins, outs):
        o = imp.options(op, tflite.Pool2DOptions)
        x = imp.name(ins[0])
        k, s = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        attrs = {"pool": k, "strides": s, "padding": _same_or_valid(o.Padding(), imp.tensors[x].shape[1:3], k, s, (1, 1))}
        attrs.update(imp.act(o.FusedActivationFunction(), outs[0]))
        return kind, [x], attrs

    return conv


def _reshape(imp: _Importer, op, ins, outs):
    return "reshape", [imp.name(ins[0])], {}


def _softmax(imp: _Importer, op, ins, outs):
    return "softmax", [imp.name(ins[0])], {"beta": float(imp.options(op, tflite.SoftmaxOptions).Beta())}


def _mean(imp: _Importer, op, ins, outs):
    axes = [int(a) for a in np.atleast_1d(imp.const_values(ins[1]))]
    keep = bool(imp.options(op, tflite.ReducerOptions).KeepDims())
    return "mean", [imp.name(ins[0])], {"axes": axes, "keepdims": keep}


def _pad(imp: _Importer, op, ins, outs):
    pads = [tuple(int(v) for v in row) for row in imp.const_values(ins[1]).reshape(-1, 2)]
    return "pad", [imp.name(ins[0])], {"paddings": pads}


def _transpose(imp: _Importer, op, ins, outs):
    return "transpose", [imp.name(ins[0])], {"perm": [int(p) for p in imp.const_values(ins[1])]}


def _resize(imp: _Importer, op, ins, outs):
    o = imp.options(op, tflite.ResizeNearestNeighborOptions)
    return "resize_nearest", [imp.name(ins[0])], {"align_corners": bool(o.AlignCorners()),
                                                   "half_pixel_centers": bool(o.HalfPixelCenters())}


def _concat(imp: _Importer, op, ins, outs):
    o = imp.options(op, tflite.ConcatenationOptions)
    attrs = {"axis": int(o.Axis())}
    attrs.update(imp.act(o.FusedActivationFunction(), outs[0]))
    return "concat", [imp.name(k) for k in ins], attrs


def _unary(kind):
    return lambda imp, op, ins, outs: (kind, [imp.name(ins[0])], {})


_CONVERTERS = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "FULLY_CONNECTED": _fc,
    "ADD": _binary("add", tflite.AddOptions),
    "MUL": _binary("mul", tflite.MulOptions),
    "AVERAGE_POOL_2D": _pool("avg_pool2d"),
    "MAX_POOL_2D": _pool("max_pool2d"),
    "MEAN": _mean,
    "PAD": _pad,
    "PADV2": _pad,
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "EXPAND_DIMS": _reshape,
    "TRANSPOSE": _transpose,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "SOFTMAX": _softmax,
    "LOGISTIC": _unary("logistic"),
    "CONCATENATION": _concat,
    "QUANTIZE": _unary("quantize"),
    "DEQUANTIZE": _unary("dequantize"),
}
