"""Rewrites of the int8 graph, run once after import (``frontend.load_model``, every source).

:func:`simplify` runs :data:`REWRITES` in order, so the profiler, the patch planner, the Relax
lowering and the C code generator all see the rewritten graph. Each rewrite is a function
``Graph -> Graph`` in its own module, named for what it does.

Precondition: a valid graph (:meth:`~tvm_patchnet.graph.Graph.validate`) with blocks assigned.
Invariant: every graph output stays bit-exact for every input (so TensorFlow Lite Micro on the
original file remains the reference); graph inputs and outputs, and the names of the tensors
kept, are unchanged; ``meta["tensor_index"]`` names only tensors of the graph; the result
validates. A rewrite that has nothing to do returns its input unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from ..graph import Graph
from .fold_pad import fold_pad

#: (name, rewrite), in the order they run
REWRITES: tuple[tuple[str, Callable[[Graph], Graph]], ...] = (
    ("fold_pad", fold_pad),  # PAD into the next conv's / max pool's padding, where exact
)


def simplify(graph: Graph) -> Graph:
    """``graph`` after every rewrite of :data:`REWRITES` (``graph`` itself is not modified)."""
    for _, rewrite in REWRITES:
        graph = rewrite(graph)
    return graph


__all__ = ["REWRITES", "fold_pad", "simplify"]
