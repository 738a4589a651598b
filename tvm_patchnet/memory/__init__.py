"""Static memory planning: every activation (and patch buffer) at an offset in one arena.

:mod:`.arena` holds the generic planners (linear, greedy by size, exact MILP); :mod:`.plan` turns
a graph's liveness (:mod:`tvm_patchnet.analysis.liveness`) or a patch plan into their buffers.
"""

from .arena import DEFAULT_ALIGNMENT, ArenaPlan, ArenaPlanner, GreedyBySizePlanner, LinearPlanner, create
from .milp import MILPPlanner
from .plan import Allocation, MemoryPlan, plan_memory

__all__ = [
    "DEFAULT_ALIGNMENT", "Allocation", "ArenaPlan", "ArenaPlanner", "GreedyBySizePlanner", "LinearPlanner",
    "MILPPlanner", "MemoryPlan", "create", "plan_memory",
]
