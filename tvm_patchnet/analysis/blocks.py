"""Group the ops of an imported graph into blocks, numbered as in the MCUNetV2 paper.

Built-in architectures number their blocks themselves; imported models get them from here.
Rules, in op order:
- a span from a fork (a tensor read by several ops) to the op that joins it (residual add,
  SE multiply) stays inside one block;
- a block closes after a regular or pointwise conv that follows a depthwise conv (a separable
  or inverted-residual block), after a regular conv with a kernel larger than 1x1 and no
  depthwise conv before it in the block (a stem or plain conv), after a residual join, and
  after a fully connected op;
- ops that do no arithmetic (reshape, pad, quantize...) join the block they sit in.
The stem conv is therefore block 0, as in the paper.
"""

from __future__ import annotations

from ..graph import Graph

# Ops that never open a block: they finish the one before them (softmax after the classifier).
_NO_NEW_BLOCK = ("reshape", "softmax", "quantize", "dequantize")


def assign_blocks(graph: Graph) -> None:
    """Set ``op.block`` on every op of ``graph`` (in place)."""
    consumers = graph.consumers()
    producer = graph.producer()
    # Span ends: for each fork tensor, the index of its last consumer.
    span_end = -1
    block, has_dw, closed = 0, False, False
    for i, op in enumerate(graph.ops):
        if closed and op.kind not in _NO_NEW_BLOCK:
            block, has_dw, closed = block + 1, False, False
        op.block = block
        inside, joins = i < span_end, i == span_end
        for name in graph.activation_inputs(op):
            if name not in producer and len(consumers.get(name, [])) > 1:  # forked graph input
                span_end = max(span_end, max(consumers[name]))
                inside = True
        for name in op.outputs:  # a fork opens a span; ops inside a span extend it to their users
            users = consumers.get(name, [])
            if len(users) > 1 or (inside and users):
                span_end = max(span_end, max(users))
        if inside:
            has_dw |= op.kind == "depthwise_conv2d"
            continue
        if joins and len(graph.activation_inputs(op)) > 1:
            closed = True  # residual join (or SE multiply closing a block without a projection)
            if op.kind == "mul":
                closed = False  # SE: the projection conv that follows still belongs here
            continue
        if op.kind == "depthwise_conv2d":
            has_dw = True
        elif op.kind == "conv2d":
            kh, kw = graph.t(op.inputs[1]).shape[1:3]
            closed = has_dw or kh * kw > 1
        elif op.kind == "fully_connected":
            closed = True
