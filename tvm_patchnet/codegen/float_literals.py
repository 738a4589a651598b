"""Exact floating-point constants in the C that TVM 0.27 emits.

TVM's C backend prints a float immediate with ``std::scientific`` at the default precision: seven
significant digits (``3.700000e-02``, ``2.000000e-02f``). That does not round-trip: a float32
needs up to 9 digits, a double 17. The graph-edge kernels (``quantize`` float32 -> int8,
``dequantize`` int8 -> float32) carry a tensor's scale as such an immediate, so their C would
divide or multiply by a neighbour of the scale and differ from TFLite Micro (dequantize: in about
one value in five). :func:`exact_float_literals` rewrites every float literal of an emitted
kernel to the shortest text that parses back to the immediate the kernel's PrimFunc holds, and
refuses a literal it cannot account for.
"""

from __future__ import annotations

import re

import numpy as np
import tvm_ffi
from tvm import tirx

from ..errors import PatchnetError

# what CodeGenC::PrintConst writes for a finite float32 / float64 immediate
_PRINTED = re.compile(r"(?<![\w.+-])-?\d\.\d{6}e[+-]\d{2,3}f?(?![\w.])")


def _printed(value: float, bits: int) -> str:
    return f"{value:.6e}" + ("f" if bits == 32 else "")


def _exact(value: float, bits: int) -> str:
    """Shortest C literal of ``value`` that parses back to it (float32 literals carry ``f``)."""
    if bits == 32:
        return np.format_float_scientific(np.float32(value), unique=True, exp_digits=2) + "f"
    return repr(float(value))


def _parses_to(text: str, bits: int) -> float:
    return float(np.float32(text[:-1])) if bits == 32 else float(text)


def exact_float_literals(source: str, func: tirx.PrimFunc, name: str) -> str:
    """``source`` (C of kernel ``name``, emitted from ``func``) with every float literal exact.

    Literals that already parse back to their immediate stay as TVM wrote them. Raises
    :class:`PatchnetError` for a literal of no immediate of ``func`` (one made while lowering)
    or two immediates TVM prints alike: their exact values are unknown.
    """
    values: dict[str, set[float]] = {}

    def visit(node):
        bits = node.ty.dtype.bits
        if bits in (32, 64) and np.isfinite(node.value):
            values.setdefault(_printed(node.value, bits), set()).add(float(node.value))

    tvm_ffi.structural_walk(func.body, (tirx.FloatImm, visit))

    def fix(m: re.Match) -> str:
        text = m.group(0)
        bits = 32 if text.endswith("f") else 64
        found = values.get(text)
        if not found or len(found) > 1:
            why = "several constants" if found else "no constant of the kernel's PrimFunc"
            raise PatchnetError(f"kernel '{name}': float literal {text} stands for {why}; its exact value is unknown")
        value = next(iter(found))
        return text if _parses_to(text, bits) == value else _exact(value, bits)

    return _PRINTED.sub(fix, source)

