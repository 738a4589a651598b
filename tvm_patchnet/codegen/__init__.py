"""Self-contained C for bare-metal firmware from the int8 graph's TE kernels.

``emit_c(graph, out_dir, plan=None)`` writes ``model.h`` / ``model.c`` (the entry point
``tvmgen_default_run`` over one static arena), ``kernels.h`` / ``kernels.c`` (one plain C
function per kernel, from TVM's C backend, see :mod:`.c_kernels`) and ``weights.h`` /
``weights.c`` (``const`` arrays). Arena offsets come from :func:`tvm_patchnet.memory.plan_memory`.
"""

from __future__ import annotations

from ..graph import Graph
from ..patch.planner import PatchPlan
from .c_model import CModelInfo, write_c_model

__all__ = ["CModelInfo", "emit_c"]


def emit_c(graph: Graph, out_dir: str, plan: PatchPlan | None = None, planner: str = "greedy",
           target: str = "cortex-m4", tuned: dict | None = None) -> CModelInfo:
    """Write the C model of ``graph`` to ``out_dir``; with ``plan``, its first blocks run patch by
    patch inside one kernel; ``planner`` places the arena (``greedy`` or ``milp``). Returns sizes
    (bytes) and the memory plan the arena follows. ``target``: whose kernel schedules to use
    (:data:`tvm_patchnet.schedules.KNOWN_TARGETS`); ``tuned``: step name -> tuned kernel, used
    instead (:func:`tvm_patchnet.tune.tuned_kernels`)."""
    return write_c_model(graph, out_dir, plan, planner, target, tuned)
