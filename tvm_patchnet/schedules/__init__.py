"""Cortex-M schedules of the integer-only TE kernels, one file per op kind.

Each module builds a *fast* variant of one kernel kind for the known targets: the same integer
arithmetic as the plain TE kernel (bit-exact), scheduled with ``tvm.s_tir.Schedule`` for the
Cortex-M DSP extension (``SMLAD`` / ``SXTB16``: Cortex-M4 and M7), with micro-kernels emitted
as ``static inline`` C (:attr:`~tvm_patchnet.schedules.default.KernelFunc.preamble`). A builder
returns None where its variant does not apply; the code generator then uses the default
schedule (:mod:`.default`).

- :mod:`.pointwise`: 1x1 convs, fully connected layers, and a 1x1 conv accumulated into a
  residual buffer, as an int8 GEMM with register blocking;
- :mod:`.conv`: every other conv2d (any window, stride, dilation, padding), its windows gathered
  per pixel tile into registers (an im2col that never reaches the arena), then the same GEMM;
- :mod:`.depthwise`: depthwise convs, including MCUNet's in-place channel-by-channel scheme.
"""

from __future__ import annotations

from . import conv as windows
from . import depthwise, pointwise

#: targets whose schedules are known; every one has the DSP extension
KNOWN_TARGETS = ("cortex-m4", "cortex-m7")


def create(target: str) -> Schedules:
    """The schedules for ``target`` (one of :data:`KNOWN_TARGETS`)."""
    if target not in KNOWN_TARGETS:
        raise ValueError(f"no Cortex-M schedules for target '{target}'; known: {', '.join(KNOWN_TARGETS)}")
    return Schedules(target)


class Schedules:
    """Fast kernel builders for one target. Each method returns a ``KernelFunc`` or None."""

    def __init__(self, target: str):
        self.target = target

    def op_kernel(self, graph, op):
        """A fast kernel for ``op`` alone (output in its own buffer), or None."""
        if op.kind == "depthwise_conv2d":
            return depthwise.op_kernel(graph, op, self.target)
        if op.kind in ("conv2d", "fully_connected"):
            fast = pointwise.op_kernel(graph, op, self.target)
            return fast if fast is not None or op.kind != "conv2d" else windows.op_kernel(graph, op, self.target)
        return None

    def depthwise_in_place_kernel(self, graph, op):
        """A fast in-place depthwise conv (same contract as the default one), or None."""
        return depthwise.in_place_kernel(graph, op, self.target)

    def accumulate_kernel(self, graph, conv, add):
        """A fast conv + residual add (same contract as the default one), or None."""
        fast = pointwise.accumulate_kernel(graph, conv, add, self.target)
        return fast if fast is not None or conv.kind != "conv2d" else windows.accumulate_kernel(graph, conv, add,
                                                                                              self.target)
