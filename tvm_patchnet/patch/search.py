"""Choose the patch setting: ``--patches auto --split auto [--sram BYTES]``.

Every choice is judged by what deploys: the arena ``compile`` places (the memory plan with the
whole input in SRAM, :func:`deployable_arena`), not the planner's peak, which counts one input
patch as the paper does (a lower bound, used only to skip settings cheaply). Without a budget:
the fewest MACs among the settings (layer by layer included) whose arena is within
:data:`AUTO_TOLERANCE` of the lowest. With an SRAM budget: layer by layer if its arena plus the
minimum stack fits, else the lowest MAC overhead among the settings that fit; a budget nothing
meets is an error stating the smallest arena reachable. ``Resolution.note`` says why, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PatchnetError, StageError
from ..graph import Graph
from .planner import PatchPlan, plan_patches, stage_of

#: patch counts tried by ``auto``: the paper's range (Sec. 4.4, Figure 8); larger grids buy
#: little memory for a steeply growing overhead.
AUTO_PATCHES = (2, 3, 4, 5)
#: ``auto`` without a budget takes the fewest MACs among settings whose deployable arena is within
#: this fraction of the lowest (layer by layer included: it wins when patching gains less)
AUTO_TOLERANCE = 0.05


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
    """What the user's settings resolve to: a plan, or None (layer by layer), with ``note``, one
    line saying why ``auto`` chose what it chose, and ``arena_bytes``, the deployable arena of the
    choice when it was computed (what ``compile`` places: the whole input in SRAM)."""

    plan: PatchPlan | None
    note: str | None = None
    arena_bytes: int | None = None


def stack_min_bytes() -> int:
    """Bytes of stack every firmware links with at least: an ``--sram`` budget holds the arena and this."""
    from ..deploy import STACK_MIN_BYTES

    return STACK_MIN_BYTES


def deployable_arena(graph: Graph, plan: PatchPlan | None, planner: str = "greedy") -> int:
    """The arena ``compile`` places for ``plan`` (None: layer by layer): the memory plan with the
    whole input in SRAM (``input_mode="full"``). The planner's ``peak_bytes`` counts one input patch
    (the paper's figure), so it is a lower bound of this, not what deploys."""
    from ..memory import plan_memory

    return plan_memory(graph, plan, kind=planner, input_mode="full").arena_bytes


def _setting(plan: PatchPlan | None) -> str:
    return "layer by layer" if plan is None else f"{plan.patches}x{plan.patches} patches over blocks 0..{plan.split - 1}"


def resolve_plan(graph: Graph, patches=None, split=None, sram_bytes: int | None = None) -> PatchPlan | None:
    """:func:`resolve`'s plan (None: layer by layer)."""
    return resolve(graph, patches, split, sram_bytes).plan


def resolve(graph: Graph, patches=None, split=None, sram_bytes: int | None = None,
            planner: str = "greedy") -> Resolution:
    """The plan for user settings: ``patches``/``split`` are ints, "auto" or None. None/None:
    layer by layer, or with ``sram_bytes`` the cheapest setting that fits; ``patches`` 1:
    layer by layer. ``auto`` never fails on a model that fits layer by layer: when no patch
    setting can run or none lowers the deployable arena by more than :data:`AUTO_TOLERANCE`, it
    resolves to layer by layer and says why. An explicit setting that cannot run is an error
    naming the largest split that can. ``sram_bytes`` bounds what deploys: the arena ``compile``
    places (``planner``; the whole input in SRAM) plus the minimum stack; an explicit setting
    over it is an error."""
    if patches is None and split is None:
        if sram_bytes is None:
            return Resolution(None)
        return _auto(graph, None, None, sram_bytes, planner)
    if patches is None or split is None:
        raise PatchnetError("--patches and --split go together (each a number or 'auto')")
    if patches == 1:
        return _check_explicit(graph, None, sram_bytes, planner)
    if isinstance(patches, int) and isinstance(split, int):
        try:
            plan = plan_patches(graph, patches, split)
        except StageError as e:
            raise StageError(f"{e}; {_largest_split_hint(graph)}") from None
        return _check_explicit(graph, plan, sram_bytes, planner)
    return _auto(graph, None if patches == "auto" else patches, None if split == "auto" else split, sram_bytes,
                 planner)


def _check_explicit(graph: Graph, plan: PatchPlan | None, sram_bytes: int | None, planner: str) -> Resolution:
    """An explicit setting, checked against ``sram_bytes`` when one is given."""
    if sram_bytes is None:
        return Resolution(plan)
    arena, stack = deployable_arena(graph, plan, planner), stack_min_bytes()
    if arena + stack > sram_bytes:
        raise PatchnetError(f"{graph.name}: {_setting(plan)} does not fit {sram_bytes:,} B of SRAM: its arena "
                            f"({arena:,} B, the whole input in SRAM) + {stack:,} B minimum stack exceed it by "
                            f"{arena + stack - sram_bytes:,} B (--patches auto --split auto picks one that fits)")
    return Resolution(plan, arena_bytes=arena)


def _auto(graph: Graph, patches: int | None, split: int | None, sram_bytes: int | None,
          planner: str = "greedy") -> Resolution:
    per_layer = deployable_arena(graph, None, planner)
    stack = stack_min_bytes()
    fits_layer_by_layer = sram_bytes is None or per_layer + stack <= sram_bytes
    if sram_bytes is not None and fits_layer_by_layer and patches is None and split is None:
        return Resolution(None, f"layer by layer: its arena {per_layer:,} B + {stack:,} B minimum stack fits "
                                f"{sram_bytes:,} B of SRAM", per_layer)
    try:
        plans = candidate_plans(graph, patches, split)
    except PatchnetError as e:
        if not fits_layer_by_layer:
            raise
        why = str(e).removeprefix(f"{graph.name}: ")
        return Resolution(None, f"layer by layer (peak {per_layer:,} B): no patch setting can run ({why})", per_layer)
    if sram_bytes is not None:
        try:
            plan, arena = _cheapest_that_fits(graph, plans, sram_bytes, planner)
        except PatchnetError:
            if not fits_layer_by_layer:
                raise
            return Resolution(None, f"layer by layer: no such patch setting fits {sram_bytes:,} B of SRAM; layer by "
                                    f"layer, its arena {per_layer:,} B + {stack:,} B minimum stack does", per_layer)
        return Resolution(plan, f"{_setting(plan)}: the fewest MACs (+{100 * plan.mac_overhead:.1f}%) whose arena "
                                f"{arena:,} B (whole input in SRAM) + {stack:,} B minimum stack fits "
                                f"{sram_bytes:,} B", arena)
    arenas = _lowest_arenas(graph, plans, per_layer, planner)
    lowest = min(a for _, a in arenas)
    near = [(q, a) for q, a in arenas if a <= lowest * (1 + AUTO_TOLERANCE)]
    plan, arena = min(near, key=lambda qa: (qa[0].mac_overhead if qa[0] else 0.0, qa[1],
                                            qa[0].patches if qa[0] else 1, qa[0].split if qa[0] else 0))
    best_plan = min((qa for qa in arenas if qa[0] is not None), key=lambda qa: qa[1], default=None)
    if plan is None:
        best = (f" (the lowest, {_setting(best_plan[0])}, deploys in {best_plan[1]:,} B)" if best_plan else "")
        return Resolution(None, f"layer by layer (peak {per_layer:,} B): patches do not lower it by more than "
                                f"{100 * AUTO_TOLERANCE:.0f}%{best}", per_layer)
    if arena == lowest:
        why = f"the lowest deployable arena, {arena:,} B (whole input in SRAM)"
    else:
        why = (f"the fewest MACs among settings within {100 * AUTO_TOLERANCE:.0f}% of the lowest deployable arena "
               f"({lowest:,} B); its arena {arena:,} B (whole input in SRAM)")
    return Resolution(plan, f"{_setting(plan)}, +{100 * plan.mac_overhead:.1f}% MACs: {why}", arena)


def _cheapest_that_fits(graph: Graph, plans: list[PatchPlan], sram_bytes: int,
                        planner: str) -> tuple[PatchPlan, int]:
    """The plan with the lowest MAC overhead whose deployable arena + minimum stack fits
    ``sram_bytes``. The planner's peak (one input patch) never exceeds the arena, so only plans
    whose peak fits get the (slower) memory plan. None fits: an error naming the smallest
    deployable arena reachable."""
    stack = stack_min_bytes()
    for q in sorted((q for q in plans if q.peak_bytes + stack <= sram_bytes),
                    key=lambda q: (q.mac_overhead, q.peak_bytes, q.patches, q.split)):
        arena = deployable_arena(graph, q, planner)
        if arena + stack <= sram_bytes:
            return q, arena
    best, arena = min(((q, a) for q, a in _lowest_arenas(graph, plans, None, planner)), key=lambda qa: qa[1])
    raise PatchnetError(
        f"{graph.name}: no patch setting fits {sram_bytes:,} B of SRAM; the smallest deployable arena is "
        f"{arena:,} B ({arena / 1024:.1f} kB; the whole input in SRAM) + {stack:,} B minimum stack, with "
        f"{best.patches}x{best.patches} patches, split {best.split} (planner peak {best.peak_bytes:,} B counts "
        "one input patch)"
    )


def _lowest_arenas(graph: Graph, plans: list[PatchPlan], per_layer: int | None,
                   planner: str) -> list[tuple[PatchPlan | None, int]]:
    """(plan, deployable arena) of every plan that may lie within :data:`AUTO_TOLERANCE` of the
    lowest arena, layer by layer (None) first when ``per_layer`` is given. Plans go in order of
    planner peak, a lower bound of their arena, so the scan stops at the first that cannot."""
    out: list[tuple[PatchPlan | None, int]] = [(None, per_layer)] if per_layer is not None else []
    lowest = per_layer
    for q in sorted(plans, key=lambda q: (q.peak_bytes, q.mac_overhead, q.patches, q.split)):
        if lowest is not None and q.peak_bytes > lowest * (1 + AUTO_TOLERANCE):
            break
        a = deployable_arena(graph, q, planner)
        out.append((q, a))
        lowest = a if lowest is None else min(lowest, a)
    return out


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
                sram_bytes: int | None = None, planner: str = "greedy") -> PatchPlan | None:
    """The plan ``auto`` picks (see :func:`resolve`); None means "run layer by layer"."""
    return _auto(graph, patches, split, sram_bytes, planner).plan
