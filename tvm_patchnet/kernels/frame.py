"""Extended coordinates for tensors inside a patch stage.

Inside a patch stage every intermediate tensor is stored with *margins*: rows and columns
before and after the map, holding a *fill* value (the zero point for convolution readers, -128
for max pooling, 0 for average pooling), wide enough for every tile's region. Readers index the
tensor at ``row + top margin``, so for every tile TIR's region inference yields the same linear,
unclipped region: buffer compaction can then prove its exact size, which it cannot for regions
clipped at the map's borders (it bounds ``min(a, H) - max(b, 0)`` loosely, up to the whole
map). Outputs in the margins are only filled, never computed: no MAC is spent there. Outside a
patch stage the frame is empty and every margin is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import tirx


@dataclass(frozen=True)
class Frame:
    """``margins[name] = (top, left, bottom, right)``; ``fills[name]`` = int8 margin value."""

    margins: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    fills: dict[str, int] = field(default_factory=dict)

    def margin(self, name: str) -> tuple[int, int, int, int]:
        return self.margins.get(name, (0, 0, 0, 0))

    def ext_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Storage shape of an NHWC tensor with its margins."""
        if len(shape) != 4:
            return shape
        t, left, b, r = self.margin(name)
        return (shape[0], shape[1] + t + b, shape[2] + left + r, shape[3])

    def fill(self, name: str, default: int) -> int:
        return self.fills.get(name, default)

    def stored_with_margins(self, name: str) -> bool:
        """Whether ``name`` is a stage intermediate (margins, maybe all 0, hold every tile's
        region), not the stage input, which the stage reads in place: full size, no margins."""
        return name in self.margins


NO_FRAME = Frame()


def valid(i, j, margin: tuple[int, int, int, int], h: int, w: int):
    """Condition "extended position (i, j) lies inside the h x w map", or None if always.

    Written as ``(a | b | ...) >= 0`` over the signed distances to the map's edges (an OR of
    ints is negative iff one of them is): equal to the chain of comparisons, one compare in C,
    and not affine, so TVM's buffer compaction does not turn it into clipped region bounds.
    Those bounds, combined with tile predicates (uneven tiles) or a second reader (residual
    skips), would degrade to the whole map; the reads are in-bounds anyway thanks to margins.
    """
    t, left, b, r = margin
    terms = ([i - t] if t else []) + ([t + h - 1 - i] if b else []) + ([j - left] if left else []) + (
        [left + w - 1 - j] if r else [])
    return _all_nonnegative(terms)


def inside(i, j, h: int, w: int, rows: tuple[bool, bool], cols: tuple[bool, bool]):
    """Condition "map position (i, j) lies inside the h x w map", checking only the sides
    (low, high) that can be out; None when none can. The OR form of :func:`valid`, for the same
    reason: a PAD inside a patch stage reads its input under this condition, and affine bounds
    would make compaction clip its region."""
    terms = ([i] if rows[0] else []) + ([h - 1 - i] if rows[1] else []) + ([j] if cols[0] else []) + (
        [w - 1 - j] if cols[1] else [])
    return _all_nonnegative(terms)


def _all_nonnegative(terms: list):
    """Condition "every term >= 0" as one sign test of their bitwise OR (a negative int32 has
    the sign bit set), or None for no terms."""
    if not terms:
        return None
    acc = terms[0]
    for term in terms[1:]:
        acc = acc | term
    return acc >= 0


def tap_guard(i, j, h: int, w: int, rows: tuple[bool, bool], cols: tuple[bool, bool]):
    """Condition that an input tap (i, j) lies inside an h x w input without margins, checking
    only the sides (low, high) where padding can reach; None when no side can."""
    conds = ([i >= 0] if rows[0] else []) + ([i < h] if rows[1] else []) + ([j >= 0] if cols[0] else []) + (
        [j < w] if cols[1] else [])
    return tirx.all(*conds) if conds else None


def both(*conds):
    """Conjunction of the conditions that are not None (None if all are)."""
    conds = [c for c in conds if c is not None]
    return tirx.all(*conds) if conds else None


def guarded(cond, value, otherwise):
    return value if cond is None else tirx.if_then_else(cond, value, otherwise)
