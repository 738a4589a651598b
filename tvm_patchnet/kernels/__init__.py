"""Integer-only int8 TE kernels, one lowering per op kind.

A lowering turns one :class:`~tvm_patchnet.graph.Op` into a :class:`Lowered`: a TE compute
function and the arguments it takes (graph tensor names for activations, NumPy arrays for
constants such as weights, biases, multipliers and shifts). ``tvm_patchnet.lower`` emits each
one into a Relax module with ``BlockBuilder.emit_te``; later steps reuse the same TE bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PatchnetError
from ..graph import Graph, Op


@dataclass
class Lowered:
    """A TE kernel for one op: ``compute(*te_args) -> te.Tensor`` and its arguments in order."""

    name: str
    compute: Callable
    args: list  # str (activation tensor name) or np.ndarray (constant)


_LOWERINGS: dict[str, Callable[[Graph, Op], Lowered]] = {}


def register(*kinds: str):
    """Decorator: register a lowering for op ``kinds``."""

    def wrap(fn):
        for k in kinds:
            _LOWERINGS[k] = fn
        return fn

    return wrap


def lower_op(graph: Graph, op: Op, frame=None) -> Lowered:
    """The TE kernel for ``op``; a clear error if the kind has no int8 kernel.

    ``frame`` (a :class:`~tvm_patchnet.kernels.frame.Frame`) places the op inside a patch
    stage; only the kinds a patch stage may hold accept one.
    """
    _load()
    fn = _LOWERINGS.get(op.kind)
    if fn is None:
        raise PatchnetError(f"op '{op.name}' ({op.kind}): no integer-only int8 kernel for this op kind")
    return fn(graph, op) if frame is None else fn(graph, op, frame)


def _load() -> None:
    # Import the kernel families for their @register side effects (kept lazy: TVM is heavy).
    from . import conv, elementwise, layout, pool, softmax  # noqa: F401
