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
        main = mod["main"]
        body = main.body
        if len(body.blocks) != 1 or not isinstance(body.blocks[0], relax.DataflowBlock):
            raise PatchnetError("PatchBasedInference expects main to be one dataflow block (from to_relax)")
        bindings = list(body.blocks[0].bindings)
        # to_relax emits one binding per op, in op order; the stage is the leading ops. (Names do
        # not identify ops: BlockBuilder shares one PrimFunc between structurally equal ops.)
        k = len(self.plan.stage_ops)
        if len(bindings) < k or any(_callee(b.value) is None for b in bindings[:k]):
            raise PatchnetError("PatchBasedInference: main does not start with the stage's call_tir bindings")
        stage = build_stage(self.graph, self.plan, self.func_name)
        out = self.graph.t(self.plan.stage_output)
        stage_in = main.params[self.graph.inputs.index(self.plan.stage_input)]
        kept = bindings[k:]
        bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in mod.functions.items()
                                              if gv.name_hint == "main" or _used(gv, kept)}))
        gv = bb.add_func(stage.func, self.func_name)  # a typed GlobalVar
        call = relax.op.call_tir(gv, relax.Tuple([stage_in, *[relax.const(c) for c in stage.consts]]),
                                 relax.TensorType(shape=out.shape, dtype=out.dtype))
        # the stage output keeps its var, so the bindings after it need no rewrite
        new_block = relax.DataflowBlock([relax.VarBinding(bindings[k - 1].var, call), *kept])
        new_mod = bb.get()
        new_mod["main"] = relax.Function(main.params, relax.SeqExpr([new_block], body.body), main.ret_ty,
                                         main.is_pure, main.attrs)
        return new_mod


def _callee(value):
    """The GlobalVar a ``call_tir`` binding calls, else None."""
    if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
        return value.args[0]
    return None


def _used(gv, bindings) -> bool:
    return any((c := _callee(b.value)) is not None and c.same_as(gv) for b in bindings)
