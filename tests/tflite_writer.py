"""Build tiny int8 TFLite models in memory, to test each kernel kind against TFLite Micro.

    x = TensorSpec((1, 8, 8, 4), scale=0.05, zero_point=-3)
    y = TensorSpec((1, 4, 4, 4), scale=0.05, zero_point=-3)
    buf = single_op_model("MAX_POOL_2D", [x], y, {"padding": "SAME", "stride_h": 2, "stride_w": 2,
                                                   "filter_height": 3, "filter_width": 3})

Constant inputs (weights, biases, axes, paddings, permutations) are ``TensorSpec`` with
``data``; graph inputs are the specs without. Options are the fields of the schema's
``<Name>OptionsT`` class, in snake_case or camelCase; ``padding`` and
``fused_activation_function`` also take strings ("SAME", "relu6", ...). For several ops, use
:class:`ModelBuilder` directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

_TYPES = {"float32": fb.TensorType.FLOAT32, "int32": fb.TensorType.INT32, "int8": fb.TensorType.INT8,
          "int16": fb.TensorType.INT16, "uint8": fb.TensorType.UINT8, "int64": fb.TensorType.INT64}
_ACTS = {None: 0, "none": 0, "relu": 1, "relu_n1_to_1": 2, "relu6": 3}
# Builtin op -> its options table name (None: the op has no options).
_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions", "MUL": "MulOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions", "MEAN": "ReducerOptions",
    "PAD": "PadOptions", "PADV2": "PadV2Options", "TRANSPOSE": "TransposeOptions", "RESHAPE": "ReshapeOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions", "SOFTMAX": "SoftmaxOptions",
    "CONCATENATION": "ConcatenationOptions", "LOGISTIC": None, "QUANTIZE": None, "DEQUANTIZE": None,
}


@dataclass
class TensorSpec:
    """A tensor: shape, dtype, per-tensor (float) or per-axis (list) quantization, optional data."""

    shape: tuple
    dtype: str = "int8"
    scale: float | list | None = None
    zero_point: int | list = 0
    data: np.ndarray | None = None
    quant_axis: int = 0
    name: str = ""


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


class ModelBuilder:
    """Collects tensors and operators of one subgraph; :meth:`finish` returns the .tflite bytes."""

    def __init__(self):
        self.tensors: list = []
        self.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel every model starts with
        self.codes: list[int] = []
        self.ops: list = []

    def tensor(self, spec: TensorSpec) -> int:
        t = fb.TensorT()
        t.shape = [int(d) for d in spec.shape]
        t.type = _TYPES[spec.dtype]
        t.name = spec.name or f"t{len(self.tensors)}"
        t.buffer = 0
        if spec.data is not None:
            raw = np.ascontiguousarray(np.asarray(spec.data, dtype=spec.dtype).reshape(spec.shape))
            b = fb.BufferT()
            b.data = np.frombuffer(raw.tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if spec.scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(spec.scale)]
            q.zeroPoint = [int(z) for z in np.broadcast_to(np.atleast_1d(spec.zero_point), (len(q.scale),))]
            q.quantizedDimension = spec.quant_axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name: str, inputs: list[int], outputs: list[int], options: dict | None = None) -> None:
        code = getattr(fb.BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex = self.codes.index(code)
        o.inputs, o.outputs = list(inputs), list(outputs)
        table = _OPTIONS[name]
        if table is not None:
            opts = getattr(fb, table + "T")()
            for key, value in (options or {}).items():
                key = _camel(key)
                if not hasattr(opts, key):
                    raise KeyError(f"{table} has no field '{key}'")
                if key == "padding" and isinstance(value, str):
                    value = getattr(fb.Padding, value.upper())
                elif key == "fusedActivationFunction" and (value is None or isinstance(value, str)):
                    value = _ACTS[value]
                setattr(opts, key, value)
            o.builtinOptionsType = getattr(fb.BuiltinOptions, table)
            o.builtinOptions = opts
        elif options:
            raise KeyError(f"{name} takes no options")
        self.ops.append(o)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        sg = fb.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.ops
        sg.inputs, sg.outputs = list(inputs), list(outputs)
        model = fb.ModelT()
        model.version = 3
        model.description = "tvm-patchnet test model"
        model.subgraphs = [sg]
        model.buffers = self.buffers
        model.operatorCodes = []
        for code in self.codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            model.operatorCodes.append(oc)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def single_op_model(op: str, inputs: list[TensorSpec], output: TensorSpec, options: dict | None = None) -> bytes:
    """A model of one builtin ``op``; the non-constant ``inputs`` become the graph inputs."""
    b = ModelBuilder()
    ids = [b.tensor(t) for t in inputs]
    out = b.tensor(output)
    b.op(op, ids, [out], options)
    return b.finish([i for i, t in zip(ids, inputs) if t.data is None], [out])
