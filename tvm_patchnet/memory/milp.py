"""The exact arena planner: a mixed-integer program solved by HiGHS (``scipy.optimize.milp``).

Minimise the arena ``A`` over group offsets ``x`` (bytes) and, for every pair of groups alive at
the same op, one binary ``y`` choosing which lies below the other::

    x_g + size_g <= A
    x_g + S(g,h) <= x_h + M (1 - y_gh)      (g below h)
    x_h + S(h,g) <= x_g + M y_gh             (h below g)

``S(g,h)`` is the largest buffer of ``g`` alive together with one of ``h`` (see
:meth:`ArenaPlanner._conflicts`); ``M`` is the greedy arena, which also bounds ``A`` from above,
and the liveness lower bound bounds it from below, so a greedy plan that already reaches the
bound is returned without solving. Problems with more groups than ``max_groups`` or running
past ``time_limit`` (seconds) fall back to the greedy plan (or the best plan found) and say so
in :attr:`ArenaPlan.note`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from .arena import DEFAULT_ALIGNMENT, ArenaPlanner, greedy_offsets


class MILPPlanner(ArenaPlanner):
    """Exact placement for graphs with at most ``max_groups`` groups, within ``time_limit`` seconds."""

    kind = "milp"

    def __init__(self, alignment: int = DEFAULT_ALIGNMENT, max_groups: int = 200, time_limit: float = 20.0):
        super().__init__(alignment)
        self.max_groups = max_groups
        self.time_limit = time_limit

    def _place(self, sizes):
        conflicts = self._conflicts()
        firsts = [min(self._buffers[i].first for i in g) for g in self._groups]
        greedy = greedy_offsets(sizes, firsts, conflicts)
        upper = max((o + s for o, s in zip(greedy, sizes)), default=0)
        bound = self.lower_bound()
        if upper == bound:
            return greedy, True, "greedy reaches the lower bound"
        if len(sizes) > self.max_groups:
            return greedy, False, (f"milp skipped ({len(sizes)} groups > max_groups={self.max_groups}): "
                                   f"greedy plan, {upper - bound} B above the lower bound")
        x, proven = _solve(sizes, conflicts, bound, upper, self.time_limit)
        if x is None:
            return greedy, False, (f"milp found no plan within its time limit ({self.time_limit:g} s): greedy plan, "
                                   f"{upper - bound} B above the lower bound")
        offsets = _compact(x, sizes, conflicts)
        arena = max(o + s for o, s in zip(offsets, sizes))
        if arena >= upper:
            offsets, arena = greedy, upper
        gap = arena - bound
        if proven:
            note = "exact" + (f": the lower bound is not reachable, {gap} B above it" if gap else "")
        else:
            note = f"milp time limit ({self.time_limit:g} s): best plan found, {gap} B above the lower bound"
        return offsets, proven, note


def _solve(sizes, conflicts, bound, upper, time_limit):
    """Solver offsets (floats) and whether they are proven optimal; (None, False) without a plan."""
    n = len(sizes)
    pairs = sorted((g, h) for g, h in conflicts if g < h)
    nv = n + 1 + len(pairs)  # offsets, arena, one order binary per pair
    entries: list[tuple[int, int, float]] = []  # (row, column, coefficient), all rows "<= rhs"
    rhs: list[float] = []

    def row(coeffs, bound_rhs):
        entries.extend((len(rhs), j, c) for j, c in coeffs)
        rhs.append(bound_rhs)

    for g, s in enumerate(sizes):
        row([(g, 1), (n, -1)], -s)
    big = float(upper)
    for k, (g, h) in enumerate(pairs):
        y = n + 1 + k
        row([(g, 1), (h, -1), (y, big)], big - conflicts[g, h])
        row([(h, 1), (g, -1), (y, -big)], -conflicts[h, g])
    r, col, val = zip(*entries)
    a = coo_array((val, (r, col)), shape=(len(rhs), nv))  # sparse: a few entries per row
    c = np.zeros(nv)
    c[n] = 1
    lb = np.zeros(nv)
    ub = np.ones(nv)
    ub[:n] = [upper - s for s in sizes]
    lb[n], ub[n] = bound, upper
    integrality = np.r_[np.zeros(n + 1), np.ones(len(pairs))]
    res = milp(c, constraints=LinearConstraint(a, -np.inf, rhs),
               integrality=integrality, bounds=Bounds(lb, ub), options={"time_limit": time_limit})
    if res.x is None:
        return None, False
    return res.x[:n], res.status == 0


def _compact(x, sizes, conflicts) -> list[int]:
    """Exact integer offsets from the solver's order: each group just above the conflicting groups
    the solver put below it (a longest path), so float round-off never causes an overlap."""
    offsets: dict[int, int] = {}
    for g in sorted(range(len(sizes)), key=lambda g: x[g]):
        offsets[g] = max((offsets[h] + conflicts[h, g] for h in offsets if (h, g) in conflicts), default=0)
    return [offsets[g] for g in range(len(sizes))]
