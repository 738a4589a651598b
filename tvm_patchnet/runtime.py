"""Build and run an int8 graph on the host (llvm) through TVM's Relax VM."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .errors import PatchnetError
from .graph import Graph
from .lower import to_relax


def build(mod: tvm.IRModule, target: str | dict = "llvm") -> relax.VirtualMachine:
    """Compile a Relax module for the host and return a VM ready to call ``main``."""
    ex = tvm.compile(mod, target=tvm.target.Target(target))
    return relax.VirtualMachine(ex, tvm.cpu())


def check_inputs(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Validate count, shape and dtype of ``inputs``; one-line error naming the bad input."""
    if len(inputs) != len(graph.inputs):
        raise PatchnetError(f"{graph.name}: expected {len(graph.inputs)} input(s), got {len(inputs)}")
    out = []
    for name, x in zip(graph.inputs, inputs):
        t = graph.t(name)
        x = np.asarray(x)
        if tuple(x.shape) != tuple(t.shape):
            raise PatchnetError(f"{graph.name}: input '{name}' has shape {list(x.shape)}, expected {list(t.shape)}")
        if x.dtype != np.dtype(t.dtype):
            raise PatchnetError(f"{graph.name}: input '{name}' has dtype {x.dtype}, expected {t.dtype}")
        out.append(np.ascontiguousarray(x))
    return out


def run_module(vm: relax.VirtualMachine, inputs: list[np.ndarray]) -> list[np.ndarray]:
    res = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    items = [res] if hasattr(res, "numpy") else list(res)  # one tensor, or a tuple of them
    return [r.numpy() for r in items]


def run_graph(graph: Graph, inputs: list[np.ndarray], trace: bool = False):
    """Run ``graph`` on the host with the integer-only kernels.

    Returns the list of graph outputs, or with ``trace=True`` a dict from every op output
    tensor name to its value (for per-op comparisons against a reference).
    """
    inputs = check_inputs(graph, inputs)
    vm = build(to_relax(graph, trace=trace))
    outs = run_module(vm, inputs)
    if not trace:
        return outs
    names = [o for op in graph.ops for o in op.outputs]
    return dict(zip(names, outs))
