"""Per-layer and per-block profile of an int8 graph: shapes, MACs, weights, activation memory.

Activation memory comes from :mod:`tvm_patchnet.analysis.liveness` (the paper's in-place rule,
and the plain layer-by-layer rule beside it). The JSON form (:meth:`ProfileReport.to_json`) is
stable: later tools read it; see docs/profile-json.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..graph import Graph, Op
from .liveness import analyze

JSON_VERSION = 1


def op_macs(graph: Graph, op: Op) -> int:
    """Multiply-accumulates of one op (convolutions and fully connected; others count 0)."""
    if op.kind in ("conv2d", "depthwise_conv2d"):
        out = graph.t(op.outputs[0])
        _, kh, kw, cin = graph.t(op.inputs[1]).shape
        per_out = kh * kw * (cin if op.kind == "conv2d" else 1)
        return out.size * per_out
    if op.kind == "fully_connected":
        n_out, n_in = graph.t(op.inputs[1]).shape
        return graph.t(op.inputs[0]).size // n_in * n_in * n_out
    return 0


@dataclass
class LayerReport:
    """One op. Bytes are int8 activation bytes alive while it runs (paper rule / plain rule)."""

    index: int
    name: str
    op: str
    block: int
    input_shape: list[int]
    output_shape: list[int]
    macs: int
    weight_bytes: int
    activation_bytes: int
    activation_bytes_no_inplace: int


@dataclass
class BlockReport:
    """One block: its peak activation bytes (both rules), MACs and weight bytes."""

    index: int
    peak_bytes: int
    peak_bytes_no_inplace: int
    macs: int
    weight_bytes: int
    layers: list[int] = field(default_factory=list)


@dataclass
class ProfileReport:
    """The whole model. ``peak_bytes`` follows the paper's rule; ``patch`` is filled in by the
    patch planner when a patch setting is asked for."""

    model: str
    peak_bytes: int
    peak_block: int
    peak_bytes_no_inplace: int
    total_macs: int
    weight_bytes: int
    blocks: list[BlockReport]
    layers: list[LayerReport]
    patch: dict | None = None
    #: what the figures do not say by themselves (e.g. an int4 design profiled in int8), or ""
    note: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["version"] = JSON_VERSION
        if d["patch"] is None:
            del d["patch"]
        return d


def profile(graph: Graph) -> ProfileReport:
    """Profile ``graph`` (see the module docstring for the memory rules)."""
    paper = analyze(graph, in_place=True)
    plain = analyze(graph, in_place=False)
    layers = []
    for i, op in enumerate(graph.ops):
        acts = graph.activation_inputs(op)
        layers.append(
            LayerReport(
                index=i,
                name=op.name,
                op=op.kind,
                block=op.block,
                input_shape=list(graph.t(acts[0]).shape) if acts else [],
                output_shape=list(graph.t(op.outputs[0]).shape),
                macs=op_macs(graph, op),
                weight_bytes=graph.weight_bytes(op),
                activation_bytes=paper.op_bytes[i],
                activation_bytes_no_inplace=plain.op_bytes[i],
            )
        )
    blocks = []
    for b in range(graph.num_blocks):
        ls = [la for la in layers if la.block == b]
        blocks.append(
            BlockReport(
                index=b,
                peak_bytes=max((la.activation_bytes for la in ls), default=0),
                peak_bytes_no_inplace=max((la.activation_bytes_no_inplace for la in ls), default=0),
                macs=sum(la.macs for la in ls),
                weight_bytes=sum(la.weight_bytes for la in ls),
                layers=[la.index for la in ls],
            )
        )
    peak_block = max(blocks, key=lambda b: b.peak_bytes).index if blocks else 0
    return ProfileReport(
        model=graph.name,
        peak_bytes=paper.peak_bytes,
        peak_block=peak_block,
        peak_bytes_no_inplace=plain.peak_bytes,
        total_macs=sum(la.macs for la in layers),
        weight_bytes=sum(la.weight_bytes for la in layers),
        blocks=blocks,
        layers=layers,
        note=graph.meta.get("note", ""),
    )
