"""Activation buffers and their lifetimes: the one source of every activation-memory figure.

A graph's activations are grouped into buffers (a buffer holds one tensor, or several when an
op works in place) that live from the op that first writes them to the last op that reads
them. The memory an op needs is the total size of the buffers alive while it runs. Two rules:

- ``in_place=True``, the MCUNetV2 paper's analytic rule (Sec. 4): a layer needs its input plus
  its output (int8), depthwise convolution overwrites its input, a residual block's shared
  input is counted once, and the block's last conv adds into the residual buffer in place.
  The in-place depthwise kernel (MCUNet's) copies one input channel at a time into a scratch
  plane (the rows and columns its windows read, :func:`plane_hw`) before it overwrites that
  channel: :attr:`Liveness.scratch` counts it, beside the int32 row buffers of softmax (under
  both rules). The generated C runs
  exactly these kernels (``codegen``), so this rule is also the deployed arena's;
- ``in_place=False``: every tensor has its own buffer, what a plain layer-by-layer
  interpreter needs.

Reshapes are views under both rules. The static arena planner places exactly these buffers,
so its arena can be checked against these figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph


@dataclass
class Buffer:
    """A piece of activation memory: ``size`` bytes, alive for ops ``first..last`` (inclusive).

    ``first == -1`` marks a graph input (present before op 0); graph outputs live to the end.
    """

    id: int
    size: int
    first: int
    last: int
    tensors: list[str] = field(default_factory=list)


@dataclass
class Liveness:
    """Buffers of a graph and the bytes alive at each op."""

    buffers: list[Buffer]
    buffer_of: dict[str, int]  # tensor name -> buffer id
    span: dict[str, tuple[int, int]]  # tensor name -> (producing op or -1, last reading op)
    op_bytes: list[int]  # bytes alive while op i runs, kernel scratch included
    in_place: bool
    #: op index -> bytes of kernel scratch alive while that op runs (in-place depthwise planes)
    scratch: dict[int, int] = field(default_factory=dict)
    #: conv output -> skip tensor it is accumulated into (conv and add run as one kernel)
    accumulate: dict[str, str] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return max(self.op_bytes, default=0)



def analyze(graph: Graph, in_place: bool = True) -> Liveness:
    """Buffers and per-op live bytes of ``graph`` under the paper's rule or the plain one."""
    consumers = graph.consumers()
    last_use = {n: max(c) if c else -1 for n, c in consumers.items()}
    end = len(graph.ops) - 1
    for n in graph.outputs:
        last_use[n] = end
    buffers: list[Buffer] = []
    buffer_of: dict[str, int] = {}

    def new_buffer(name: str, first: int) -> None:
        buffer_of[name] = len(buffers)
        buffers.append(Buffer(len(buffers), graph.t(name).nbytes, first, max(first, last_use[name]), [name]))

    def share(name: str, host: str) -> None:
        b = buffers[buffer_of[host]]
        buffer_of[name] = b.id
        b.tensors.append(name)
        b.size = max(b.size, graph.t(name).nbytes)
        b.last = max(b.last, last_use[name])

    first_def = {n: -1 for n in graph.inputs}
    first_def.update({n: i for i, op in enumerate(graph.ops) for n in op.outputs})
    for n in graph.inputs:
        new_buffer(n, -1)
    # conv outputs that are written straight into a residual buffer: tensor -> skip tensor
    accumulate_into = _residual_accumulations(graph, consumers, last_use) if in_place else {}
    for i, op in enumerate(graph.ops):
        acts = graph.activation_inputs(op)
        for out in op.outputs:
            host = _in_place_host(graph, op, i, acts, out, last_use, accumulate_into, in_place, buffer_of)
            if host is not None:
                share(out, host)
            else:
                new_buffer(out, i)
    span = {n: (first_def[n], max(first_def[n], last_use[n])) for n in buffer_of}
    scratch = {i: plane_bytes(graph, op) for i, op in enumerate(graph.ops)
               if op.kind == "depthwise_conv2d" and buffer_of[op.outputs[0]] == buffer_of[op.inputs[0]]}
    scratch.update({i: softmax_scratch_bytes(graph, op) for i, op in enumerate(graph.ops) if op.kind == "softmax"})
    op_bytes = []
    for i in range(len(graph.ops)):
        # A buffer needs, at op i, the largest of its tensors alive then: after a stride-2
        # in-place depthwise conv only the smaller output still occupies the buffer.
        occupied: dict[int, int] = {}
        for n, (a, b) in span.items():
            if a <= i <= b:
                occupied[buffer_of[n]] = max(occupied.get(buffer_of[n], 0), graph.t(n).nbytes)
        op_bytes.append(sum(occupied.values()) + scratch.get(i, 0))
    return Liveness(buffers, buffer_of, span, op_bytes, in_place, scratch, accumulate_into)


def softmax_scratch_bytes(graph: Graph, op) -> int:
    """Scratch of the int8 softmax kernel (``kernels/softmax.py``, TFLite Micro's arithmetic, run
    one row at a time): seven int32 row buffers (exp(x - max) and its steps, which the row sum
    and the output both read); per-row values live in registers. Like CMSIS-NN's
    ``*_get_buffer_size``: a formula beside the kernel, which tests check against the emitted
    kernel's buffers and code generation refuses to contradict."""
    return 7 * 4 * graph.t(op.inputs[0]).shape[-1]


def plane_bytes(graph: Graph, op) -> int:
    """Scratch of an in-place depthwise conv: one channel of its input, the part the kernel
    reads (:func:`plane_hw`), in bytes."""
    h, w = plane_hw(graph, op)
    x = graph.t(op.inputs[0])
    return h * w * x.nbytes // x.size


def plane_hw(graph: Graph, op) -> tuple[int, int]:
    """Rows and columns of the channel plane an in-place depthwise conv copies its input channel
    into: exactly the rows and columns its windows read, clipped to the map. Along one axis of
    size n, output size o, kernel k, stride s, dilation d and padding before p, the windows read
    ``-p .. (o - 1) * s - p + (k - 1) * d`` (inclusive), so the plane holds
    ``min(n, (o - 1) * s - p + (k - 1) * d + 1)`` of them (the first is 0 or padding). A VALID
    stride-2 window on an even map never reads the last row and column: its plane is one
    smaller each way than the map.

    The one rule for the plane: it sizes the liveness scratch (and with it the profiler, the
    patch planner and the memory plan) and the crop the layer-by-layer kernel copies
    (``schedules/default.py``). Inside a patch stage, whose windows read margins instead of
    padding, the patch graph's windows have no padding (``patch/planner.py``), and the rule
    gives the region the stage's plane copies.
    """
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    kernel = graph.t(op.inputs[1]).shape[1:3]
    out = []
    for axis in range(2):
        n, o, k = x.shape[1 + axis], y.shape[1 + axis], kernel[axis]
        s, d, p = op.attrs["strides"][axis], op.attrs["dilation"][axis], op.attrs["padding"][axis]
        out.append(max(0, min(n, (o - 1) * s - p + (k - 1) * d + 1)))
    return out[0], out[1]


def _in_place_host(graph, op, i, acts, out, last_use, accumulate_into, in_place, buffer_of) -> str | None:
    """The tensor whose buffer ``out`` may reuse, or None for a fresh buffer."""
    if op.kind == "reshape":  # a view under both rules
        return acts[0]
    if not in_place:
        return None
    acts = [a for a in acts if a not in graph.meta.get("read_only", ())]  # buffers no op may write over
    if out in accumulate_into:
        return accumulate_into[out]
    y = graph.t(out)
    if (op.kind == "depthwise_conv2d" and acts and last_use[acts[0]] == i and y.nbytes <= graph.t(acts[0]).nbytes
            and y.shape[3] == graph.t(acts[0]).shape[3]):  # channel c is written over channel c only
        return acts[0]
    if op.kind in ("add", "mul"):
        # the output overwrites an input that dies here, element by element (same shape: the
        # kernel reads element k of it before writing element k): the residual (skip) buffer when
        # the other operand was already accumulated into it, else the first input that fits.
        for a in acts:
            if last_use[a] == i and graph.t(a).shape == y.shape and graph.t(a).dtype == y.dtype:
                return a
    return None


def _residual_accumulations(graph: Graph, consumers, last_use) -> dict[str, str]:
    """Conv outputs that feed only a residual add whose other input dies at that add.

    Such a conv can add its results into the skip buffer as it produces them ("the block's last
    conv adds into the residual buffer in place"): the generated C fuses conv and add into one
    kernel, run where the conv is, that reads skip element k and then writes element k. So the
    conv must not read the skip itself, and no op between the conv and the add may read it.
    Returns conv output -> skip tensor.
    """
    producer = graph.producer()
    out: dict[str, str] = {}
    for i, op in enumerate(graph.ops):
        if op.kind != "add":
            continue
        acts = graph.activation_inputs(op)
        if len(acts) != 2 or graph.t(acts[0]).shape != graph.t(acts[1]).shape:
            continue
        for conv_out, skip in (acts, acts[::-1]):
            j = producer.get(conv_out)
            if (
                j is not None
                and graph.ops[j].kind in ("conv2d", "depthwise_conv2d")
                and consumers[conv_out] == [i]
                and last_use[skip] == i
                and graph.t(skip).shape == graph.t(conv_out).shape
                and graph.t(skip).dtype == graph.t(conv_out).dtype
                and producer.get(skip, -1) < j
                and skip not in graph.ops[j].inputs
                and skip not in graph.meta.get("read_only", ())
                and not any(j < c < i for c in consumers[skip])
            ):
                out[conv_out] = skip
                break
    return out
