"""Fold an explicit PAD into the padding of the windowed ops that read it.

TFLite models exported by TinyEngine, or from PyTorch, often pad with a PAD op and then run a
VALID convolution. In the int8 graph a ``pad`` fills with its output's zero point (TFLite's
int8 PAD; its input and output quantization are equal), and a conv's padded taps add exactly
zero, ``(zp - zp) * w``: a PAD over H and W in front of a conv2d / depthwise_conv2d is the same
as adding its amounts to the conv's ``padding`` (top, left, bottom, right). Folded, the PAD's
output (the largest tensor around it) is gone, and the conv runs per patch like any padded conv.

Folded only where exact:
- the PAD pads H and W of an NHWC tensor (batch and channel pairs (0, 0));
- its input and output have the same dtype and quantization (scale and zero point);
- its output is not a graph output, and *every* reader folds it (else the PAD stays for the
  others, and folding would only add work);
- a reader is a conv2d / depthwise_conv2d reading it as its data input, or a max_pool2d when
  the fill is -128 (TFLite's max pool ignores padded taps; -128 never wins either) and the
  combined padding stays smaller than the window (no window wholly in the padding).
  avg_pool2d never folds: TFLite divides by the count of in-map taps, a PAD's fill counts.
The rest stay ``pad`` ops, which run per patch (``patch/planner.py``).

Precondition: a valid graph (:meth:`~tvm_patchnet.graph.Graph.validate`) with blocks assigned.
Invariant: every graph output is bit for bit the same for every input; graph inputs, outputs and
the names of the tensors kept are unchanged; the folded PAD's output tensor leaves the graph and
``meta["tensor_index"]``; the graph validates; blocks keep their numbers (a PAD does no
arithmetic, so it never decides a block boundary), renumbered densely if one empties.
Runs in :func:`tvm_patchnet.rewrite.simplify`, after import, before any analysis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..graph import Graph, Op, pad_hw, pad_value

_CONVS = ("conv2d", "depthwise_conv2d")


def fold_pad(graph: Graph) -> Graph:
    """``graph`` with every foldable PAD folded (a new graph; ``graph`` is not modified)."""
    folded = graph
    while True:  # a chain PAD -> PAD -> conv folds from the conv back
        i = next((k for k, op in enumerate(folded.ops) if _foldable(folded, k, op)), None)
        if i is None:
            break
        folded = _fold(folded, i)
    if folded is graph:
        return graph
    _renumber_blocks(folded)
    folded.validate()
    return folded


def _same_quant(a, b) -> bool:
    return (a.dtype == b.dtype and a.scale is not None and b.scale is not None
            and np.array_equal(a.scale.reshape(-1), b.scale.reshape(-1))
            and np.array_equal(a.zero_point.reshape(-1), b.zero_point.reshape(-1)))


def _foldable(graph: Graph, i: int, op: Op) -> bool:
    if op.kind != "pad" or pad_hw(op) is None:
        return False
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    if not _same_quant(x, y) or op.outputs[0] in graph.outputs:
        return False
    readers = graph.consumers()[op.outputs[0]]
    return bool(readers) and all(_reader_folds(graph, graph.ops[r], op) for r in readers)


def _reader_folds(graph: Graph, reader: Op, pad: Op) -> bool:
    y = pad.outputs[0]
    if reader.inputs[0] != y or y in reader.inputs[1:]:
        return False
    fill = pad_value(graph, pad)
    if reader.kind in _CONVS:
        return fill == graph.t(y).zp  # padded taps add (zp - zp) * w = 0
    if reader.kind == "max_pool2d" and fill == -128:
        pool = reader.attrs["pool"]
        combined = _combined(reader.attrs["padding"], pad_hw(pad))
        return all(p < pool[k % 2] for k, p in enumerate(combined))
    return False


def _combined(padding, pads) -> tuple[int, int, int, int]:
    return tuple(int(a) + b for a, b in zip(padding, pads))


def _fold(graph: Graph, i: int) -> Graph:
    """``graph`` without op ``i`` (a foldable PAD), its readers padding its input instead."""
    pad = graph.ops[i]
    x, y = pad.inputs[0], pad.outputs[0]
    pads = pad_hw(pad)
    ops = []
    for k, op in enumerate(graph.ops):
        if k == i:
            continue
        if op.inputs and op.inputs[0] == y:
            attrs = {**op.attrs, "padding": _combined(op.attrs["padding"], pads)}
            op = dataclasses.replace(op, inputs=[x, *op.inputs[1:]], attrs=attrs)
        ops.append(dataclasses.replace(op))  # a copy: the input graph's ops stay as they were
    tensors = {n: t for n, t in graph.tensors.items() if n != y}
    meta = dict(graph.meta)
    if "tensor_index" in meta:
        meta["tensor_index"] = {n: k for n, k in meta["tensor_index"].items() if n != y}
    return dataclasses.replace(graph, tensors=tensors, ops=ops, meta=meta)


def _renumber_blocks(graph: Graph) -> None:
    """Close the gaps a block emptied by folding leaves (op order keeps blocks ascending)."""
    dense = {b: k for k, b in enumerate(sorted({op.block for op in graph.ops}))}
    for op in graph.ops:  # the folded graph's own copies
        op.block = dense[op.block]
