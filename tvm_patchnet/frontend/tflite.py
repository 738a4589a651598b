"""TFLite int8 flatbuffer -> int8 :class:`~tvm_patchnet.graph.Graph`.

The file is scanned once: every op code is looked up in ``_CONVERTERS`` and all unsupported
ops are reported together (index and type). Quantization parameters are taken as stored; the
kernels recompute TFLite Micro's multipliers from them. Handles what TVM 0.27's stock frontend
refuses on real models: quantized PAD / TRANSPOSE / RESIZE_NEAREST_NEIGHBOR, 1-D biases whose
quantized dimension exceeds their rank, and FULLY_CONNECTED inputs of more than 2 dimensions.

Nothing in the file is trusted: every tensor is checked as it is read (index, type, buffer,
shape and size, quantization: see :func:`~tvm_patchnet.graph_checks.tensor_problem`), every op's
tensor indices, input count and options, then the whole graph (:meth:`Graph.validate`). Each
refusal is one line naming the file and the tensor (index and name) or op (index and type);
bytes the flatbuffer reader cannot parse give "corrupt TFLite file".
"""

from __future__ import annotations

import os

import flatbuffers
import numpy as np
import tflite

from ..errors import PatchnetError, UnsupportedOpsError
from ..graph import Graph, Op, Tensor
from ..graph_checks import printable, quant_problem, shape_problem
from ..quant import act_range

_DTYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
_ACTS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_OPNAMES = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
_OPTION_TYPES = {v: k for k, v in tflite.BuiltinOptions.__dict__.items() if not k.startswith("_")}


def _empty_table() -> tuple[bytes, int]:
    """A table with no fields: what an op without stored options reads (every field default)."""
    b = flatbuffers.Builder(16)
    b.StartObject(0)
    b.Finish(b.EndObject())
    out = bytes(b.Output())
    return out, int.from_bytes(out[:4], "little")


_EMPTY = _empty_table()


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
        return _Importer(model, path, buf).run()
    except PatchnetError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer fails anywhere inside the reader
        raise PatchnetError(f"{path}: corrupt TFLite file ({type(e).__name__}: {e})") from None


class _Importer:
    def __init__(self, model, path: str, buf: bytes):
        self.model = model
        self.path = path
        self.buf = buf
        if model.SubgraphsLength() < 1:
            raise PatchnetError(f"{path}: the model has no subgraph")
        self.sg = model.Subgraphs(0)
        counts = {"subgraphs": model.SubgraphsLength(), "buffers": model.BuffersLength(),
                  "operator codes": model.OperatorCodesLength(), "tensors": self.sg.TensorsLength(),
                  "operators": self.sg.OperatorsLength()}
        for what, n in counts.items():  # each entry takes a 4-byte offset at least
            if 4 * n > len(buf):
                raise PatchnetError(f"{path}: corrupt TFLite file (it claims {n:,} {what} in {len(buf):,} bytes)")
        self.tensors: dict[str, Tensor] = {}
        self.names: dict[int, str] = {}
        self.read_cache: dict[int, Tensor] = {}
        self.ops: list[Op] = []
        self.opname = self.where = ""  # the op being converted, and "op 3 (CONV_2D)" for messages

    # ------------------------------------------------------------------ tensors
    def name(self, idx: int, user: str = "") -> str:
        """Graph name of tensor ``idx`` (added to the graph on first use); ``user`` names the op
        or subgraph list that refers to it, for the message when the index is out of range."""
        if idx in self.names:
            return self.names[idx]
        n = self.sg.TensorsLength()
        if not 0 <= idx < n:
            raise PatchnetError(f"{self.path}: {user or 'subgraph'}: tensor index {idx} is out of range "
                                f"(the subgraph has {n} tensors)")
        t = self.read(idx)
        name = t.name if t.name not in self.tensors else f"{t.name}#{idx}"
        t.name = name
        if t.data is not None:
            t.data = t.data.copy()  # own the bytes (read() keeps a view of the file)
        self.names[idx] = name
        self.tensors[name] = t
        return name

    def read(self, idx: int) -> Tensor:
        """Tensor ``idx`` as stored (name not yet made unique, data a view of the file), checked;
        refusals name it."""
        if idx in self.read_cache:
            return self.read_cache[idx]
        t = self.sg.Tensors(idx)
        raw = (t.Name() or b"").decode(errors="replace") or f"tensor_{idx}"
        where = f"{self.path}: tensor {idx} '{printable(raw)}'"
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = _DTYPES.get(t.Type())
        if dtype is None:
            raise PatchnetError(f"{where}: unsupported type code {t.Type()}")
        problem = shape_problem(shape, dtype)
        if problem:
            raise PatchnetError(f"{where}: {problem}")
        data = self._data(t, shape, dtype, where)
        scale = zp = None
        axis = 0
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float32)
            zp = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros_like(scale, np.int64)
            axis = q.QuantizedDimension()
            if len(shape) == 1 and axis > 0:
                axis = 0  # 1-D biases may carry the weights' quantized dimension
            axis = axis if scale.size > 1 else 0  # TFLite ignores it for per-tensor quantization
            problem = quant_problem(shape, dtype, scale, zp, axis)
            if problem:
                raise PatchnetError(f"{where}: {problem}")
            zp = zp.astype(np.int32)
        self.read_cache[idx] = Tensor(raw, shape, dtype, scale, zp, axis, data, data is not None)
        return self.read_cache[idx]

    def _data(self, t, shape, dtype: str, where: str) -> np.ndarray | None:
        """Constant values of tensor ``t`` (a view of the file's bytes), from its buffer (inline, or
        at Buffer.offset in the file); None when the buffer is empty. The byte count must match the
        shape exactly."""
        if not 0 <= t.Buffer() < self.model.BuffersLength():
            raise PatchnetError(f"{where}: buffer index {t.Buffer()} is out of range "
                                f"(the model has {self.model.BuffersLength()} buffers)")
        b = self.model.Buffers(t.Buffer())
        if b.Offset() > 1:  # data stored behind the flatbuffer (models over 2 GB)
            start, size = b.Offset(), b.Size()
            if start + size > len(self.buf):
                raise PatchnetError(f"{where}: buffer {t.Buffer()} at offset {start:,} + {size:,} bytes lies "
                                    f"outside the {len(self.buf):,}-byte file")
            raw = memoryview(self.buf)[start:start + size]
        elif b.DataLength():
            raw = b.DataAsNumpy()  # a view of the file's bytes
        else:
            return None
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if len(raw) != need:
            raise PatchnetError(f"{where}: constant data is {len(raw):,} bytes, shape {list(shape)} {dtype} "
                                f"needs {need:,} bytes")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def const_values(self, idx: int, what: str = "", dtypes: tuple = ("int32", "int64")) -> np.ndarray:
        t = self.tensors[self.name(idx, what)]
        if t.data is None or t.dtype not in dtypes:
            raise PatchnetError(f"{self.path}: {what}: tensor {idx} '{printable(t.name)}' must be an integer constant "
                                f"({' or '.join(dtypes)})")
        return t.data

    # ---------------------------------------------------------------------- ops
    def run(self) -> Graph:
        unsupported = []
        for i in range(self.sg.OperatorsLength()):
            code = self._code(self.sg.Operators(i), i)
            if _OPNAMES.get(code) not in _CONVERTERS:
                unsupported.append((i, _OPNAMES.get(code, f"CODE_{code}")))
        if unsupported:
            raise UnsupportedOpsError(self.path, unsupported)
        for idx in range(self.sg.TensorsLength()):  # every tensor, used or not, as TFLite does
            self.read(idx)
        for i in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(i)
            opname = _OPNAMES[self._code(op, i)]
            self.opname, where = opname, f"op {i} ({opname})"
            self.where = where
            ins = [int(k) for k in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(k) for k in op.OutputsAsNumpy()] if op.OutputsLength() else []
            need = _MIN_INPUTS.get(opname, 1)
            if len(ins) < need or min(ins[:need], default=0) < 0 or not outs:
                raise PatchnetError(f"{self.path}: {where}: needs {need} input(s) and an output, has inputs "
                                    f"{ins} and outputs {outs}")
            n = self.sg.TensorsLength()
            for k in [k for k in ins if k != -1] + outs:  # -1: an optional input left out
                if not 0 <= k < n:
                    raise PatchnetError(f"{self.path}: {where}: tensor index {k} is out of range "
                                        f"(the subgraph has {n} tensors)")
            kind, inputs, attrs = _CONVERTERS[opname](self, op, ins, outs)
            out_names = [self.name(k, where) for k in outs]
            attrs.setdefault("tflite_op", opname)
            self.ops.append(Op(f"{opname.lower()}_{i}", kind, inputs, out_names, attrs, -1, where))
        ins = self.sg.InputsAsNumpy() if self.sg.InputsLength() else []
        outs = self.sg.OutputsAsNumpy() if self.sg.OutputsLength() else []
        inputs = [self.name(int(k), "subgraph inputs") for k in ins]
        outputs = [self.name(int(k), "subgraph outputs") for k in outs]
        stem = os.path.splitext(os.path.basename(self.path))[0]
        g = Graph(stem, self.tensors, self.ops, inputs, outputs,
                  {"source": self.path, "tensor_index": {v: k for k, v in self.names.items()}})
        g.validate()
        from ..analysis.blocks import assign_blocks

        assign_blocks(g)
        return g

    def _code(self, op, i: int) -> int:
        n = self.model.OperatorCodesLength()
        if not 0 <= op.OpcodeIndex() < n:
            raise PatchnetError(f"{self.path}: op {i}: operator code index {op.OpcodeIndex()} is out of range "
                                f"(the model has {n})")
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        return max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())

    def options(self, op, cls):
        """``op``'s options as ``cls``; all defaults when the file stores none."""
        tab = op.BuiltinOptions()
        o = cls()
        if tab is None:
            o.Init(*_EMPTY)
            return o
        stored = _OPTION_TYPES.get(op.BuiltinOptionsType(), op.BuiltinOptionsType())
        if stored != cls.__name__:
            raise PatchnetError(f"{self.path}: {self.where}: options are {stored}, expected {cls.__name__}")
        o.Init(tab.Bytes, tab.Pos)
        return o

    def act(self, code: int, out_idx: int) -> dict:
        t = self.tensors[self.name(out_idx)]
        a = _ACTS.get(code)
        if code not in _ACTS:
            raise PatchnetError(f"{self.path}: {self.where}: unsupported fused activation code {code}")
        rng = act_range(a, t.s, t.zp) if t.is_quantized and t.dtype == "int8" else (-128, 127)
        return {"act": a, "act_range": rng}


def _same_or_valid(imp: _Importer, padding_code: int, in_hw, k_hw, s_hw, d_hw) -> tuple[int, int, int, int]:
    from ..builder import same_padding

    if min(*k_hw, *s_hw, *d_hw) < 1:
        raise PatchnetError(f"{imp.path}: {imp.where}: window {list(k_hw)}, strides {list(s_hw)} and dilations "
                            f"{list(d_hw)} must all be >= 1")
    if padding_code not in (tflite.Padding.SAME, tflite.Padding.VALID):
        raise PatchnetError(f"{imp.path}: {imp.where}: unknown padding code {padding_code}")
    if padding_code == tflite.Padding.VALID:
        return (0, 0, 0, 0)
    t, b = same_padding(in_hw[0], k_hw[0], s_hw[0], d_hw[0])
    left, r = same_padding(in_hw[1], k_hw[1], s_hw[1], d_hw[1])
    return (t, left, b, r)


def _conv(imp: _Importer, op, ins, outs):
    x, w = imp.name(ins[0]), imp.name(ins[1])
    bias = imp.name(ins[2]) if len(ins) > 2 and ins[2] >= 0 else ""
    xs, ws = imp.tensors[x].shape, imp.tensors[w].shape
    if len(xs) != 4 or len(ws) != 4:
        raise PatchnetError(f"{imp.path}: {imp.where}: input {list(xs)} and weights {list(ws)} must be 4-D")
    depthwise = imp.opname == "DEPTHWISE_CONV_2D"
    o = imp.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    s, d = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
    attrs = {"strides": s, "dilation": d, "padding": _same_or_valid(imp, o.Padding(), xs[1:3], ws[1:3], s, d)}
    attrs.update(imp.act(o.FusedActivationFunction(), outs[0]))
    if depthwise:
        attrs["depth_multiplier"] = ws[3] // xs[3]
        if o.DepthMultiplier() not in (0, ws[3] // xs[3]) or ws[3] % xs[3]:  # 0: not stored (TFLite infers it)
            raise PatchnetError(f"{imp.path}: {imp.where}: depth multiplier {o.DepthMultiplier()} does not fit "
                                f"{xs[3]} input and {ws[3]} output channels")
    elif ws[3] != xs[3] and xs[3] % ws[3] == 0:
        raise PatchnetError(f"{imp.path}: {imp.where}: grouped CONV_2D (groups={xs[3] // ws[3]}) is not supported")
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
        xs = imp.tensors[x].shape
        if len(xs) != 4:
            raise PatchnetError(f"{imp.path}: {imp.where}: input {list(xs)} must be NHWC (4-D)")
        k, s = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        attrs = {"pool": k, "strides": s, "padding": _same_or_valid(imp, o.Padding(), xs[1:3], k, s, (1, 1))}
        attrs.update(imp.act(o.FusedActivationFunction(), outs[0]))
        return kind, [x], attrs

    return conv


def _reshape(imp: _Importer, op, ins, outs):
    return "reshape", [imp.name(ins[0])], {}


def _softmax(imp: _Importer, op, ins, outs):
    return "softmax", [imp.name(ins[0])], {"beta": float(imp.options(op, tflite.SoftmaxOptions).Beta())}


def _mean(imp: _Importer, op, ins, outs):
    axes = [int(a) for a in np.atleast_1d(imp.const_values(ins[1], imp.where))]
    keep = bool(imp.options(op, tflite.ReducerOptions).KeepDims())
    return "mean", [imp.name(ins[0])], {"axes": axes, "keepdims": keep}


def _pad(imp: _Importer, op, ins, outs):
    values = imp.const_values(ins[1], imp.where)
    if values.size % 2:
        raise PatchnetError(f"{imp.path}: {imp.where}: paddings {values.shape} are not (before, after) pairs")
    pads = [tuple(int(v) for v in row) for row in values.reshape(-1, 2)]
    attrs = {"paddings": pads}
    if len(ins) > 2 and ins[2] >= 0:  # PADV2's constant_values: a scalar of the output's dtype
        value = imp.const_values(ins[2], imp.where, (imp.tensors[imp.name(outs[0])].dtype,))
        if value.size != 1:
            raise PatchnetError(f"{imp.path}: {imp.where}: constant_values has {value.size} values, not one")
        attrs["value"] = int(value.reshape(-1)[0])
    return "pad", [imp.name(ins[0])], attrs


def _transpose(imp: _Importer, op, ins, outs):
    perm = [int(p) for p in imp.const_values(ins[1], imp.where).reshape(-1)]
    return "transpose", [imp.name(ins[0])], {"perm": perm}


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
#: inputs an op must have (later ones are optional, e.g. the bias; -1 marks one left out)
_MIN_INPUTS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "ADD": 2, "MUL": 2, "MEAN": 2,
               "PAD": 2, "PADV2": 2, "TRANSPOSE": 2}
