"""PatchBasedInference: run the first ``n`` blocks of an int8 network patch by patch.

Precondition: a Relax module built by :func:`tvm_patchnet.lower.to_relax` (one ``call_tir`` per
int8-graph op, each PrimFunc named after its op) and a :class:`~tvm_patchnet.patch.PatchPlan`
for the same graph.

Rewrite: the ``call_tir`` bindings of the plan's stage (blocks ``0..n-1``) are replaced by one
``call_tir`` of a single PrimFunc, built by :func:`tvm_patchnet.patch.stage.build_stage`: an
outer loop over the ``p x p`` output tiles with the stage's producer chain computed under it,
intermediates compacted to patch size by lowering, writing one full-size output buffer. The
rest of ``main`` is untouched; the stage's old PrimFuncs are removed.

Invariant: outputs are bit-identical to the unpatched module (the same TE kernels compute
every value; tests check it). Runs before ``tvm.compile``; it is the graph-level pass the
pipeline uses for patch-based inference.
"""

from __future__ import annotations

import tvm
from tvm import relax

from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.graph import Graph
from tvm_patchnet.lower import _var_name
from tvm_patchnet.patch.planner import PatchPlan
from tvm_patchnet.patch.stage import build_stage


@tvm.transform.module_pass(opt_level=0, name="PatchBasedInference")
class PatchBasedInference:
    """Replace the plan's patch stage in ``main`` by one patched PrimFunc ``patch_stage``."""

    def __init__(self, graph: Graph, plan: PatchPlan, func_name: str = "patch_stage"):
        self.graph = graph
        self.plan = plan
        self.func_name = func_name

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        stage_names = [_var_name(self.graph.ops[i].name) for i in self.plan.stage_ops]
        main = mod["main"]
        body = main.body
        if len(body.blocks) != 1 or not isinstance(body.blocks[0], relax.DataflowBlock):
            raise PatchnetError("PatchBasedInference expects main to be one dataflow block (from to_relax)")
        bindings = list(body.blocks[0].bindings)
        callee = [_callee_name(b.value) for b in bindings]
        found = [k for k, name in enumerate(callee) if name in stage_names]
        if sorted(callee[k] for k in found) != sorted(stage_names):
            missing = sorted(set(stage_names) - {callee[k] for k in found})
            raise PatchnetError(f"PatchBasedInference: stage ops not found in main: {', '.join(missing[:5])}")
        last = found[-1]
        first_args = bindings[found[0]].value.args[1].fields
        stage = build_stage(self.graph, self.plan, self.func_name)
        bb = relax.BlockBuilder(tvm.IRModule({k: v for k, v in mod.functions.items() if k.name_hint not in stage_names}))
        gv = bb.add_func(stage.func, self.func_name)  # a typed GlobalVar
        new_mod = bb.get()
        out = self.graph.t(self.plan.stage_output)
        call = relax.op.call_tir(
            gv,
            relax.Tuple([first_args[0], *[relax.const(c) for c in stage.consts]]),
            relax.TensorType(shape=out.shape, dtype=out.dtype),
        )
        kept = []
        for k, b in enumerate(bindings):
            if k == last:
                kept.append(relax.VarBinding(b.var, call))  # same var: later bindings need no rewrite
            elif k not in found:
                kept.append(b)
        new_body = relax.SeqExpr([relax.DataflowBlock(kept)], body.body)
        new_mod["main"] = relax.Function(main.params, new_body, main.ret_ty, main.is_pure, main.attrs)
        return new_mod


def _callee_name(value) -> str | None:
    """Name of the PrimFunc a ``call_tir`` binding calls, else None."""
    if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
        return value.args[0].name_hint
    return None
