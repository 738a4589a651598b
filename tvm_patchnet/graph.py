"""The int8 graph: the one model representation every tvm-patchnet step reads.

Frontends (TFLite, PyTorch, ONNX, built-in architectures) produce a :class:`Graph`; the
profiler, the patch planner, the Relax lowering and (later) the C code generator consume it.

Conventions (TFLite's, so imported models need no re-layout):
- activations are NHWC; int8 activations carry per-tensor ``scale`` / ``zero_point``;
- conv2d weights are OHWI, depthwise weights 1HW(C*M), fully-connected weights [O, I];
  int8 weights are symmetric (zero point 0), per output channel or per tensor;
- biases are int32 with scale ``s_in * s_w[c]`` and zero point 0;
- fused activations are stored as an int8 clamp range ``(act_min, act_max)``.
Ops are kept in a topological order; ``Op.block`` numbers blocks from 0 (the stem conv).

:meth:`Graph.validate` holds the rules every frontend's graph must meet (tensor shapes and the
:data:`MAX_TENSOR_BYTES` limit, quantization parameters, op geometry), so a bad model is
refused with one line before any analysis runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import PatchnetError
from .graph_checks import op_problem, printable, tensor_problem

#: Op kinds the int8 graph knows. Each has an integer-only kernel in ``tvm_patchnet.kernels``.
OP_KINDS = (
    "conv2d",  # attrs: strides, dilation, padding (top, left, bottom, right), act
    "depthwise_conv2d",  # attrs as conv2d, plus depth_multiplier
    "fully_connected",  # attrs: act
    "add",  # attrs: act
    "mul",  # attrs: act
    "avg_pool2d",  # attrs: pool, strides, padding, act
    "max_pool2d",  # attrs: pool, strides, padding, act
    "mean",  # attrs: axes, keepdims
    "pad",  # attrs: paddings [(before, after)] per axis; value (PADV2's fill; default: the zero point)
    "reshape",  # attrs: (none; output shape is the output tensor's)
    "transpose",  # attrs: perm
    "resize_nearest",  # attrs: align_corners, half_pixel_centers
    "softmax",  # attrs: beta
    "logistic",  # attrs: (none)
    "concat",  # attrs: axis
    "quantize",  # float32 -> int8, or int8 -> int8 requantize
    "dequantize",  # int8 -> float32
)

#: Ops whose output is a view of the input (same bytes): no kernel, no copy (Relax reshape).
VIEW_OPS = ("reshape",)


@dataclass
class Tensor:
    """A value in the graph.

    ``shape`` is in elements; ``scale`` is a float array (one entry per tensor or one per
    channel along ``quant_axis``); ``data`` holds the values of constants (weights, biases).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "int8"
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quant_axis: int = 0
    data: np.ndarray | None = None
    const: bool = False

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Storage in bytes (int8: one byte per element)."""
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None

    @property
    def zp(self) -> int:
        """Per-tensor zero point (activations)."""
        return int(self.zero_point.reshape(-1)[0]) if self.zero_point is not None else 0

    @property
    def s(self) -> float:
        """Per-tensor scale (activations)."""
        return float(self.scale.reshape(-1)[0])


@dataclass
class Op:
    """One operator: ``kind`` from :data:`OP_KINDS`, tensor names in and out, attributes."""

    name: str
    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    block: int = -1
    #: source location for messages, e.g. "op 12 (CONV_2D)"
    origin: str = ""


def pad_hw(op: Op) -> tuple[int, int, int, int] | None:
    """A ``pad`` op's (top, left, bottom, right) when it pads only H and W of an NHWC tensor
    (batch and channel pairs (0, 0)); None otherwise."""
    pads = [tuple(int(v) for v in p) for p in op.attrs["paddings"]]
    if len(pads) != 4 or pads[0] != (0, 0) or pads[3] != (0, 0):
        return None
    (top, bottom), (left, right) = pads[1], pads[2]
    return top, left, bottom, right


def pad_value(graph: Graph, op: Op) -> int:
    """What a ``pad`` op fills with: its ``value`` attribute (TFLite PADV2's constant), else the
    output's zero point (PAD's quantized zero)."""
    return int(op.attrs.get("value", graph.t(op.outputs[0]).zp))


@dataclass
class Graph:
    """A topologically ordered int8 dataflow graph."""

    name: str
    tensors: dict[str, Tensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    #: provenance, e.g. {"source": path, "tensor_index": {name: index in the TFLite file}}
    meta: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- queries
    def t(self, name: str) -> Tensor:
        return self.tensors[name]

    def activation_inputs(self, op: Op) -> list[str]:
        """Inputs of ``op`` that are not constants (weights, biases, shape tensors)."""
        return [n for n in op.inputs if n and not self.tensors[n].const]

    def consumers(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the ops that read it."""
        out: dict[str, list[int]] = {n: [] for n in self.tensors}
        for i, op in enumerate(self.ops):
            for n in op.inputs:
                if n:
                    out[n].append(i)
        return out

    def producer(self) -> dict[str, int]:
        """Tensor name -> index of the op that writes it."""
        return {n: i for i, op in enumerate(self.ops) for n in op.outputs}

    @property
    def num_blocks(self) -> int:
        return max((op.block for op in self.ops), default=-1) + 1

    def block_ops(self, block: int) -> list[int]:
        return [i for i, op in enumerate(self.ops) if op.block == block]

    def weight_bytes(self, op: Op) -> int:
        """Bytes of constant data (weights + bias) an op reads from flash."""
        return sum(self.tensors[n].nbytes for n in op.inputs if n and self.tensors[n].const)

    def validate(self) -> None:
        """Check every tensor and op; raise a one-line :class:`PatchnetError` naming the culprit.

        Tensors: see :func:`~tvm_patchnet.graph_checks.tensor_problem`. Ops: known kind, inputs produced before use, one
        producer per tensor, and the per-kind geometry of :func:`op_problem` (ranks, channels,
        strides / dilations / windows >= 1, output shapes that agree with the inputs; :mod:`.graph_checks`).
        """
        src = self.meta.get("source") or self.name
        for n, t in self.tensors.items():
            problem = tensor_problem(t)
            if problem:
                raise PatchnetError(f"{src}: {self.tensor_label(n)}: {problem}")
        for n in list(self.inputs) + list(self.outputs):
            if n not in self.tensors:
                raise PatchnetError(f"{src}: graph input/output '{printable(n)}' is not a tensor of the graph")
        if not self.inputs or not self.outputs:
            raise PatchnetError(f"{src}: the graph needs at least one input and one output")
        for n in list(self.inputs) + list(self.outputs):
            if self.tensors[n].const:
                raise PatchnetError(f"{src}: graph input/output {self.tensor_label(n)} is a constant")
        known = {n for n, t in self.tensors.items() if t.const} | set(self.inputs)
        produced = set(self.inputs)
        for i, op in enumerate(self.ops):
            where = f"{src}: {op.origin or f'op {i} ({op.name})'}"
            if op.kind not in OP_KINDS:
                raise PatchnetError(f"{where}: unknown kind '{op.kind}'")
            for n in op.inputs:
                if n and n not in known:
                    raise PatchnetError(f"{where}: input '{printable(n)}' is used before it is produced")
            if not op.outputs:
                raise PatchnetError(f"{where}: the op has no output")
            for n in op.outputs:
                if n not in self.tensors or self.tensors[n].const or n in produced:
                    raise PatchnetError(f"{where}: output '{printable(n)}' is a constant, unknown or written twice")
                produced.add(n)
            problem = op_problem(self, op)
            if problem:
                raise PatchnetError(f"{where}: {problem}")
            known.update(op.outputs)
        for n in self.outputs:
            if n not in known:
                raise PatchnetError(f"{src}: graph output '{printable(n)}' is never produced")

    def renamed(self, names: dict[str, str]) -> Graph:
        """This graph with tensors renamed per ``names`` (old -> new); a new name another tensor
        already has is left out (the tensor keeps its old one)."""
        taken = set(self.tensors) - set(names)
        names = {a: b for a, b in names.items() if a in self.tensors and b not in taken and a != b}
        if len(set(names.values())) != len(names):
            raise PatchnetError(f"{self.name}: two tensors cannot both be renamed to one name")

        def r(n: str) -> str:
            return names.get(n, n) if n else n

        tensors = {r(n): dataclasses.replace(t, name=r(n)) for n, t in self.tensors.items()}
        ops = [dataclasses.replace(op, inputs=[r(n) for n in op.inputs], outputs=[r(n) for n in op.outputs])
               for op in self.ops]
        return dataclasses.replace(self, tensors=tensors, ops=ops, inputs=[r(n) for n in self.inputs],
                                   outputs=[r(n) for n in self.outputs])

    def tensor_label(self, name: str) -> str:
        """``tensor 7 'conv1/weights'`` (the index is the source file's, when known)."""
        idx = self.meta.get("tensor_index", {}).get(name)
        return f"tensor {'' if idx is None else f'{idx} '}'{printable(name)}'"
