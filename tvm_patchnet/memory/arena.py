"""Static arena planners: place buffers with known lifetimes at offsets in one memory block.

The interface mirrors TFLite Micro's ``MicroMemoryPlanner`` and microTVM USMP's algorithms:
add every buffer with its size (bytes) and lifetime (op indices ``first..last``, inclusive; -1 is
"before op 0", where graph inputs are written), then ask for a plan. Buffers alive at the same op
must not overlap; buffers whose lifetimes are disjoint may share bytes.

A buffer may name a ``host``: it is then placed at its host's offset (an op writing its output
over its input in place, a reshape view). Host and guest form one *group* that occupies, at each
op, the size of its largest member alive then, so a buffer shrinking over time (an in-place
stride-2 depthwise conv) frees its tail for others.

Planners: :class:`LinearPlanner` (no reuse, an oracle for tests), :class:`GreedyBySizePlanner`
(TFLM's ``GreedyMemoryPlanner`` / USMP ``greedy_by_size``) and :class:`MILPPlanner` (exact,
``scipy.optimize.milp``, for graphs small enough; it falls back to greedy and says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PatchnetError

#: int8 Cortex-M kernels (CMSIS-NN) read activations with 32-bit loads: 4-byte offsets suffice.
DEFAULT_ALIGNMENT = 4


@dataclass
class ArenaPlan:
    """Offsets (bytes from the arena start) of every buffer and the arena size (bytes).

    ``lower_bound_bytes`` is the most bytes (aligned sizes) alive at any one op: no placement
    beats it. ``optimal`` is True when the arena is proven minimal (it reaches the bound, or
    the MILP proved it). ``note`` explains a fallback or a gap.
    """

    kind: str
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound_bytes: int
    optimal: bool
    note: str = ""

    @property
    def gap_bytes(self) -> int:
        """Bytes the arena spends above the lower bound (0 = a perfect packing)."""
        return self.arena_bytes - self.lower_bound_bytes


@dataclass
class _Buffer:
    name: str
    size: int  # bytes, rounded up to the alignment
    first: int
    last: int
    group: int


class ArenaPlanner:
    """Collects buffers; subclasses decide the offsets of groups (:meth:`_place`)."""

    kind = ""

    def __init__(self, alignment: int = DEFAULT_ALIGNMENT):
        if alignment < 1:
            raise PatchnetError(f"arena alignment must be >= 1 byte, got {alignment}")
        self.alignment = alignment
        self._buffers: list[_Buffer] = []
        self._index: dict[str, int] = {}
        self._groups: list[list[int]] = []

    def add_buffer(self, name: str, size: int, first: int, last: int, host: str | None = None) -> None:
        """Add ``size`` bytes alive for ops ``first..last``; with ``host``, at the host's offset."""
        if name in self._index:
            raise PatchnetError(f"arena: buffer '{name}' added twice")
        if size < 0 or last < first:
            raise PatchnetError(f"arena: buffer '{name}' has size {size} B and lifetime {first}..{last}")
        if host is not None and host not in self._index:
            raise PatchnetError(f"arena: buffer '{name}' names unknown host '{host}'")
        group = self._buffers[self._index[host]].group if host is not None else len(self._groups)
        if host is None:
            self._groups.append([])
        aligned = -(-size // self.alignment) * self.alignment
        self._index[name] = len(self._buffers)
        self._groups[group].append(len(self._buffers))
        self._buffers.append(_Buffer(name, aligned, first, last, group))

    def plan(self) -> ArenaPlan:
        """Place every group; the arena is the highest byte any buffer reaches."""
        sizes = [max((self._buffers[i].size for i in g), default=0) for g in self._groups]
        offsets, optimal, note = self._place(sizes)
        arena = max((o + s for o, s in zip(offsets, sizes)), default=0)
        bound = self.lower_bound()
        return ArenaPlan(self.kind, {b.name: offsets[b.group] for b in self._buffers}, arena, bound,
                         optimal or arena == bound, note)

    def lower_bound(self) -> int:
        """Most aligned bytes alive at one op: per group, its largest member alive then."""
        best = 0
        for t in sorted({b.first for b in self._buffers}):  # the sum only grows where a buffer starts
            occupied: dict[int, int] = {}
            for b in self._buffers:
                if b.first <= t <= b.last:
                    occupied[b.group] = max(occupied.get(b.group, 0), b.size)
            best = max(best, sum(occupied.values()))
        return best

    def _conflicts(self) -> dict[tuple[int, int], int]:
        """``(g, h) -> S``: group ``g`` placed below ``h`` must end ``S`` bytes under ``h``'s offset
        (its largest buffer alive together with one of ``h``'s); pairs never alive together are absent."""
        out: dict[tuple[int, int], int] = {}
        bufs = self._buffers
        for i, a in enumerate(bufs):
            for b in bufs[i + 1:]:
                if a.group != b.group and a.first <= b.last and b.first <= a.last:
                    out[a.group, b.group] = max(out.get((a.group, b.group), 0), a.size)
                    out[b.group, a.group] = max(out.get((b.group, a.group), 0), b.size)
        return out

    def _place(self, sizes: list[int]) -> tuple[list[int], bool, str]:
        """Offsets of the groups (bytes), whether they are proven optimal, and a note."""
        raise NotImplementedError


class LinearPlanner(ArenaPlanner):
    """No reuse: every group gets its own region (the arena is the sum of the sizes)."""

    kind = "linear"

    def _place(self, sizes):
        return [int(x) for x in np.cumsum([0, *sizes[:-1]])] if sizes else [], False, ""


class GreedyBySizePlanner(ArenaPlanner):
    """Largest group first, each at the lowest offset clear of every placed group alive with it."""

    kind = "greedy"

    def _place(self, sizes):
        return greedy_offsets(sizes, [min(self._buffers[i].first for i in g) for g in self._groups],
                              self._conflicts()), False, ""


def greedy_offsets(sizes: list[int], firsts: list[int], conflicts: dict[tuple[int, int], int]) -> list[int]:
    """Greedy-by-size offsets (bytes) of groups; ties go to the earlier-born group (TFLM's order)."""
    offsets: dict[int, int] = {}
    for g in sorted(range(len(sizes)), key=lambda g: (-sizes[g], firsts[g], g)):
        # g at o clashes with a placed h iff h.offset - S(g,h) < o < h.offset + S(h,g)
        clashes = [(offsets[h] - conflicts[g, h], offsets[h] + conflicts[h, g])
                   for h in offsets if (g, h) in conflicts]
        for o in sorted({0, *(hi for _, hi in clashes)}):
            if all(not lo < o < hi for lo, hi in clashes):
                offsets[g] = o
                break
    return [offsets[g] for g in range(len(sizes))]


def create(kind: str, alignment: int = DEFAULT_ALIGNMENT, **options) -> ArenaPlanner:
    """A planner by name: ``linear``, ``greedy`` or ``milp`` (``options`` go to the MILP)."""
    from .milp import MILPPlanner  # milp imports this module

    kinds = {"linear": LinearPlanner, "greedy": GreedyBySizePlanner, "milp": MILPPlanner}
    if kind not in kinds:
        raise PatchnetError(f"unknown arena planner '{kind}'; known: {', '.join(kinds)}")
    if options and kind != "milp":
        raise PatchnetError(f"arena planner '{kind}' takes no options (got {', '.join(options)})")
    return kinds[kind](alignment, **options)
