"""int8 graph -> Relax IRModule of integer-only TE kernels (one ``call_tir`` per op).

This is where the model enters TVM: every op becomes a PrimFunc built from its TE kernel
(``tvm_patchnet.kernels``); weights, biases, multipliers and shifts become Relax constants.
Relax passes (``relay_passes``, in the order of :mod:`tvm_patchnet.pipeline`) rewrite this module;
``tvm_patchnet.runtime`` builds and runs it on the host, ``tvm_patchnet.codegen`` emits its C.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tvm
from tvm import relax

from .execution import c_identifier
from .graph import VIEW_OPS, Graph
from .kernels import lower_op


def to_relax(graph: Graph, trace: bool = False) -> tvm.IRModule:
    """Build the Relax module for ``graph``.

    ``main`` takes the graph inputs and returns the graph outputs (a tuple if several). With
    ``trace=True`` it returns every op output in op order instead, for per-op comparisons.
    """
    # Lower every op first: an op without a kernel fails here, before any IR is half-built.
    lowered = {op.name: lower_op(graph, op) for op in graph.ops if op.kind not in VIEW_OPS}
    bb = relax.BlockBuilder()
    # every var is named after its tensor: the passes (relay_passes) find bindings by tensor
    params = [relax.Var(n, relax.TensorType(shape=graph.t(n).shape, dtype=graph.t(n).dtype)) for n in graph.inputs]
    env: dict[str, relax.Expr] = dict(zip(graph.inputs, params))
    try:
        with bb.function("main", params):
            with bb.dataflow():
                for op in graph.ops:
                    out = graph.t(op.outputs[0])
                    name = op.outputs[0]
                    if op.kind in VIEW_OPS:
                        env[name] = bb.emit(relax.op.reshape(env[op.inputs[0]], out.shape), name_hint=name)
                        continue
                    low = lowered[op.name]
                    args = [env[a] if isinstance(a, str) else relax.const(np.ascontiguousarray(a)) for a in low.args]
                    env[name] = bb.emit_te(low.compute, *args, primfunc_name_hint=c_identifier(low.name), name_hint=name)
                names = [o for op in graph.ops for o in op.outputs] if trace else list(graph.outputs)
                result = env[names[0]] if len(names) == 1 else relax.Tuple([env[n] for n in names])
                gv = bb.emit_output(result)
            bb.emit_func_output(gv)
    except BaseException:
        # An error or a signal inside the scopes leaves their binding block open, and TVM warns
        # "BlockBuilder destroyed with remaining blocks" on the terminal when bb is freed.
        with contextlib.suppress(Exception):  # no block open: nothing to end
            bb._end_block()
        raise
    return bb.get()

