"""Fold an ONNX graph's constant subgraphs into initializers before TVM imports it.

PyTorch's TorchScript exporter writes ``F.pad`` as a Pad whose ``pads`` input is computed at run
time from constants (ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose -> Cast); TVM's
ONNX frontend refuses such "dynamic pads". Every node whose inputs are all constants is evaluated
once here (ONNX's reference evaluator) and replaced by an initializer, so the frontend sees
static attributes. Nodes that read the graph input are left as they are.
"""

from __future__ import annotations

import numpy as np


def fold_constants(model):
    """``model`` (an ``onnx.ModelProto``) with its constant-only nodes replaced by initializers;
    the same object when there is nothing to fold."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    const = {t.name for t in g.initializer}
    foldable = []
    for node in g.node:
        # Constant nodes, and nodes of constants only (no subgraphs: If / Loop stay)
        if all(not i or i in const for i in node.input) and not any(a.type == onnx.AttributeProto.GRAPH
                                                                         for a in node.attribute):
            foldable.append(node)
            const.update(o for o in node.output if o)
    targets = [o for n in foldable for o in n.output if o]
    if not targets or all(n.op_type == "Constant" for n in foldable):
        return model
    sub = helper.make_graph(foldable, "constants", [], [helper.make_tensor_value_info(o, 0, None) for o in targets],
                            list(g.initializer))
    values = ReferenceEvaluator(helper.make_model(sub, opset_imports=model.opset_import)).run(None, {})
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    keep = [n for n in g.node if n not in foldable]
    del folded.graph.node[:]
    folded.graph.node.extend(keep)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    folded.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name)
                                    for name, v in zip(targets, values) if name in used)
    return folded
