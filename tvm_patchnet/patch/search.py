"""Choose the patch setting: ``--patches auto --split auto [--sram BYTES]``.

Without a budget: the (p, n) with the lowest whole-network peak, ties broken by the lower MAC
overhead (then fewer patches). With an SRAM budget: the lowest MAC overhead among the settings
whose peak fits, layer-by-layer execution (no patches, no overhead) included. A budget nothing
meets is an error stating the smallest peak reachable. Every figure comes from the planner.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.liveness import analyze
from ..errors import PatchnetError, StageError
from ..graph import Graph
from .planner import PatchPlan, plan_patches, stage_of

#: patch counts tried by ``auto``: the paper's range (Sec. 4.4, Figure 8); larger grids buy
#: little memory for a steeply growing overhead.
AUTO_PATCHES = (2, 3, 4, 5)


def candidate_plans(graph: Graph, patches: int | None = None, split: int | None = None) -> list[PatchPlan]:
    """Every feasible plan for the fixed ``patches``/``split`` (None = try all)."""
    ps = [patches] if patches else AUTO_PATCHES
    ns = [split] if split else range(1, graph.num_blocks)
    plans, errors = [], []
    for n in ns:
        try:
            for p in ps:
                try:
                    plans.append(plan_patches(graph, p, n))
                except StageError:
                    raise
                except PatchnetError as e:  # this patch count does not fit this split
                    errors.append(str(e))
        except StageError as e:
            errors.append(str(e))
            break  # a larger split contains the same obstacle
    if not plans:
        raise PatchnetError(errors[-1] if errors else f"{graph.name}: no patch setting is feasible")
    return plans


@dataclass
class Resolution:
    """What the user's settings resolve to: a plan, or None (layer by layer) with ``note``, one
    line saying why when ``auto`` chose layer by layer."""

    plan: PatchPlan | None
    note: str | None = None


def resolve_plan(graph: Graph, patches=None, split=None, sram_bytes: int | None = None) -> PatchPlan | None:
    """:func:`resolve`'s plan (None: layer by layer)."""
    return resolve(graph, patches, split, sram_bytes).plan


def resolve(graph: Graph, patches=None, split=None, sram_bytes: int | None = None) -> Resolution:
    """The plan for user settings: ``patches``/``split`` are ints, "auto" or None. None/None:
    layer by layer, or with ``sram_bytes`` the cheapest setting that fits; ``patches`` 1:
    layer by layer. ``auto`` never fails on a model that fits layer by layer: when no patch
    setting can run or none lowers the peak, it resolves to layer by layer and says why. An
    explicit setting that cannot run is an error naming the largest split that can."""
    if patches is None and split is None:
        if sram_bytes is None:
            return Resolution(None)
        return _auto(graph, None, None, sram_bytes)
    if patches is None or split is None:
        raise PatchnetError("--patches and --split go together (each a number or 'auto')")
    if patches == 1:
        return Resolution(None)
    if isinstance(patches, int) and isinstance(split, int):
        try:
            return Resolution(plan_patches(graph, patches, split))
        except StageError as e:
            raise StageError(f"{e}; {_largest_split_hint(graph)}") from None
    return _auto(graph, None if patches == "auto" else patches, None if split == "auto" else split, sram_bytes)


def _auto(graph: Graph, patches: int | None, split: int | None, sram_bytes: int | None) -> Resolution:
    per_layer = analyze(graph, in_place=True).peak_bytes
    fits_layer_by_layer = sram_bytes is None or per_layer <= sram_bytes
    if sram_bytes is not None and fits_layer_by_layer and patches is None and split is None:
        return Resolution(None, f"layer by layer: its peak {per_layer:,} B fits {sram_bytes:,} B of SRAM")
    try:
        plan = choose_plan(graph, patches, split, sram_bytes)
    except PatchnetError as e:
        if not fits_layer_by_layer:
            raise
        why = str(e).removeprefix(f"{graph.name}: ")
        return Resolution(None, f"layer by layer (peak {per_layer:,} B): no patch setting can run ({why})")
    if sram_bytes is None and plan.peak_bytes >= per_layer:
        return Resolution(None, f"layer by layer (peak {per_layer:,} B): patches do not lower it (the best, "
                                f"{plan.patches}x{plan.patches} over blocks 0..{plan.split - 1}, peaks at "
                                f"{plan.peak_bytes:,} B)")
    return Resolution(plan)


def largest_split(graph: Graph) -> int:
    """The largest n whose blocks 0..n-1 can run per patch (0: none can). Obstacles only grow
    with n (a larger stage contains the smaller one), so the first failure ends the scan."""
    best = 0
    for n in range(1, graph.num_blocks):
        try:
            stage_of(graph, n)
        except StageError:
            break
        best = n
    return best


def _largest_split_hint(graph: Graph) -> str:
    n = largest_split(graph)
    if n == 0:
        return "no split of this model can run per patch: compile it layer by layer (omit --patches)"
    return f"the largest split that can run per patch is {n} (--split {n}, or --split auto)"


def choose_plan(graph: Graph, patches: int | None = None, split: int | None = None,
                sram_bytes: int | None = None) -> PatchPlan | None:
    """The best plan by the rule in the module docstring; None means "run layer by layer"
    (only with a budget, when that already fits)."""
    plans = candidate_plans(graph, patches, split)
    if sram_bytes is None:
        return min(plans, key=lambda q: (q.peak_bytes, q.mac_overhead, q.patches, q.split))
    per_layer = analyze(graph, in_place=True).peak_bytes
    if per_layer <= sram_bytes and patches is None and split is None:
        return None
    fits = [q for q in plans if q.peak_bytes <= sram_bytes]
    if not fits:
        best = min(plans, key=lambda q: q.peak_bytes)
        raise PatchnetError(
            f"{graph.name}: no patch setting fits {sram_bytes:,} B of SRAM; the smallest peak reachable is "
            f"{best.peak_bytes:,} B ({best.peak_bytes / 1024:.1f} kB) with {best.patches}x{best.patches} patches, "
            f"split {best.split}"
        )
    return min(fits, key=lambda q: (q.mac_overhead, q.peak_bytes, q.patches, q.split))
