"""Rewrite ``main``'s ``call_tir`` bindings step by step of an execution plan.

Precondition: a module from :func:`tvm_patchnet.lower.to_relax` (one dataflow block, every
binding's var named after the tensor it holds, graph inputs as parameters by name), possibly
rewritten already by passes of this package.

A step (:class:`tvm_patchnet.execution.Step`) runs one or more graph ops. Rewriting it replaces
the bindings of the tensors its ops write by one ``call_tir`` of the step's kernel, bound to the
step's output var at the place of its first op's binding (where the C code calls it too: an
accumulated conv runs where the conv is), or of its output's if a pass rewrote it already; the kernel's parameters are bound to the vars of its tensor
arguments and to Relax constants. Bindings of other ops are kept. Every PrimFunc is added under
the step's C name (``tvmgen_default_<op>``), with what the C code generator needs as attributes
(:data:`PREAMBLE_ATTR`, :data:`BUFFERS_ATTR`); structurally equal kernels are one PrimFunc.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import tvm
from tvm import relax

from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.execution import ExecutionPlan, Step

#: PrimFunc attribute: the ``static inline`` micro-kernel definitions (C text) the kernel calls
PREAMBLE_ATTR = "patchnet_preamble"
#: PrimFunc attribute of the patch stage: TIR buffer name -> memory-plan allocation it is
BUFFERS_ATTR = "patchnet_buffers"


def rewrite_steps(mod: tvm.IRModule, execution: ExecutionPlan, steps: Iterable[Step], kernel_of: Callable,
                  keep_funcs: bool = True) -> tvm.IRModule:
    """``mod`` with the bindings of ``steps`` replaced by calls of ``kernel_of(step)`` (a
    :class:`~tvm_patchnet.schedules.default.KernelFunc`). ``keep_funcs=False``: the module's
    other PrimFuncs are not reused for new kernels (every call is being replaced)."""
    graph = execution.graph
    main = mod["main"]
    blocks = main.body.blocks
    if len(blocks) != 1 or not isinstance(blocks[0], relax.DataflowBlock):
        raise PatchnetError("main must be one dataflow block (from tvm_patchnet.lower.to_relax)")
    bindings = list(blocks[0].bindings)
    env = {p.name: p for p in main.params} | {b.var.name: b.var for b in bindings}
    at: dict[str, Step] = {}  # tensor whose binding the step's call takes the place of
    dropped: set[str] = set()  # tensors the steps' calls compute (no binding of their own)
    for s in steps:
        written = [n for i in s.ops for n in graph.ops[i].outputs]
        bound = [n for n in written if n in env]  # once rewritten, only the step's output is
        if not bound:
            raise PatchnetError(f"step '{s.name}': main binds none of the tensors its ops write")
        at[bound[0]] = s
        dropped.update(written)
    base = mod if keep_funcs else tvm.IRModule({mod.get_global_var("main"): main})
    bb = relax.BlockBuilder(base)
    new = []
    for b in bindings:
        name = b.var.name
        if name in at:
            s = at[name]
            new.append(relax.VarBinding(env[s.output], _call(bb, kernel_of(s), s, env, graph)))
        elif name not in dropped:
            new.append(b)
    out = bb.get()
    out["main"] = relax.Function(main.params, relax.SeqExpr([relax.DataflowBlock(new)], main.body.body),
                                 main.ret_ty, main.is_pure, main.attrs)
    used = {callee(b.value).name_hint for b in new if callee(b.value) is not None}
    for gv in list(out.functions):
        if gv.name_hint != "main" and gv.name_hint not in used:
            del out[gv]
    return out


def _call(bb: relax.BlockBuilder, kf, step: Step, env: dict, graph) -> relax.Call:
    func = kf.func.without_attr("global_symbol")  # private: called from main only
    if kf.preamble:
        func = func.with_attr(PREAMBLE_ATTR, list(kf.preamble))
    if kf.buffers is not None:
        func = func.with_attr(BUFFERS_ATTR, dict(kf.buffers))
    gv = bb.add_func(func, step.name)
    *params, out = kf.args
    if out != step.output:
        raise PatchnetError(f"step '{step.name}': its kernel writes '{out}', the step '{step.output}'")
    args = [env[a] if isinstance(a, str) else relax.const(np.ascontiguousarray(a)) for a in params]
    t = graph.t(out)
    return relax.op.call_tir(gv, relax.Tuple(args), relax.TensorType(shape=t.shape, dtype=t.dtype))


def callee(value) -> tvm.ir.GlobalVar | None:
    """The GlobalVar a ``call_tir`` binding calls, else None."""
    if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
        return value.args[0]
    return None
