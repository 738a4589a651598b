"""Whole-graph arenas against the liveness figures of the profiler and the patch planner.

Tiles 2.. run while the full-size stage output holds the earlier tiles' results, so it is alive
from the stage's first op; the settings below are those where the patch stage sets the peak.
"""

from __future__ import annotations

import functools
import itertools

import pytest

from tests.conftest import SHARED_MODELS, model_path
from tvm_patchnet.analysis.liveness import analyze
from tvm_patchnet.analysis.profile import profile
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.memory import plan_memory
from tvm_patchnet.patch.planner import patch_graph, plan_patches
from tvm_patchnet.patch.search import candidate_plans
from tvm_patchnet.zoo import get_architecture

arch = functools.cache(get_architecture)


def check(mp):
    """Independently: aligned offsets, everything inside the arena, and no two tensors alive at the
    same op sharing a byte unless one is written in place over the other (same host chain)."""
    hosts = {a.name: a.host for a in mp.allocations}

    def root(n):
        while hosts[n] is not None:
            n = hosts[n]
        return n

    assert all(a.offset % mp.alignment == 0 and a.offset + a.size <= mp.arena_bytes for a in mp.allocations)
    for a, b in itertools.combinations(mp.allocations, 2):
        if a.first <= b.last and b.first <= a.last and root(a.name) != root(b.name):
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
        elif root(a.name) == root(b.name):
            assert a.offset == b.offset


def stage_output_counted_throughout(graph, plan) -> int:
    """The planner's peak with the stage output alive over every stage op of a tile."""
    pg = patch_graph(graph, plan)
    live = analyze(pg, in_place=True)
    born, size = live.span[plan.stage_output][0], graph.t(plan.stage_output).nbytes
    return max(max(b + (size if i < born else 0) for i, b in enumerate(live.op_bytes)), plan.rest_peak_bytes)


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_tflite_models_reach_the_profiler_peak(name):
    g = load_tflite(model_path(name))
    peak = profile(g).peak_bytes
    exact = plan_memory(g, alignment=1)
    check(exact)
    assert exact.arena_bytes == exact.peak_bytes == peak and exact.optimal
    aligned = plan_memory(g)  # 4 B: odd-sized tensors (logits, a 490 B input) may round up
    check(aligned)
    assert aligned.arena_bytes == aligned.lower_bound_bytes >= peak


@pytest.mark.parametrize("name, peak", [
    ("mobilenetv2", 1_404_928), ("mbv2-w0.35-r144", 290_304), ("mcunet-320kb-1mb", 247_808),
])
def test_zoo_models_reach_the_profiler_peak(name, peak):
    g = arch(name)
    assert profile(g).peak_bytes == peak
    for kind in ("greedy", "milp"):
        mp = plan_memory(g, kind=kind)
        check(mp)
        assert mp.arena_bytes == mp.peak_bytes == mp.lower_bound_bytes == peak and mp.gap_bytes == 0
    assert plan_memory(g, kind="linear").arena_bytes > peak


@pytest.mark.parametrize("name, p, n, peak", [
    ("mobilenetv2", 4, 5, 176_400), ("mbv2-w0.35-r144", 3, 4, 72_576), ("mbv2-w0.35-r144", 5, 5, 36_612),
    ("mcunet-320kb-1mb", 4, 5, 185_856),
])
def test_patched_arena_reaches_the_planner_peak(name, p, n, peak):
    g = arch(name)
    plan = plan_patches(g, p, n)
    assert plan.peak_bytes == peak
    mp = plan_memory(g, plan)
    check(mp)
    assert mp.arena_bytes == mp.lower_bound_bytes == peak and mp.optimal


@pytest.mark.parametrize("name, p, n, arena", [
    ("mobilenetv2", 4, 6, 232_176), ("mbv2-w0.35-r144", 4, 5, 46_008), ("mcunet-320kb-1mb", 5, 7, 108_416),
])
def test_stage_output_is_alive_through_the_stage(name, p, n, arena):
    g = arch(name)
    plan = plan_patches(g, p, n)
    mp = plan_memory(g, plan)
    check(mp)
    assert plan.peak_bytes == mp.arena_bytes == mp.lower_bound_bytes == arena
    assert arena == stage_output_counted_throughout(g, plan)


def test_exact_planner_closes_a_greedy_gap():
    g = arch("mobilenetv2")
    plan = plan_patches(g, 5, 6)
    greedy, exact = plan_memory(g, plan), plan_memory(g, plan, kind="milp")
    check(exact)
    assert greedy.lower_bound_bytes == exact.arena_bytes == 195_440 and exact.optimal
    assert greedy.arena_bytes == 199_952 and not greedy.optimal  # 4,512 B above the bound


def test_every_patch_setting_reaches_its_liveness_bound():
    g = arch("mbv2-w0.35-r144")
    for plan in candidate_plans(g):
        mp = plan_memory(g, plan)
        if mp.arena_bytes != mp.lower_bound_bytes:
            mp = plan_memory(g, plan, kind="milp")
        assert mp.arena_bytes == mp.lower_bound_bytes == stage_output_counted_throughout(g, plan), plan.to_json()


def test_input_modes():
    g = arch("mobilenetv2")
    plan = plan_patches(g, 4, 5)
    mp = plan_memory(g, plan)
    assert (mp.input_mode, mp.arena_bytes, mp.input_bytes) == ("patch", 176_400, 224 * 224 * 3)
    full = plan_memory(g, plan, input_mode="full")
    check(full)
    # the whole 150,528 B input beside the stage's patch buffers and its 25,088 B output
    assert full.arena_bytes == mp.arena_bytes_full_input == 312_816
    none = plan_memory(g, plan, input_mode="none")
    check(none)
    assert none.arena_bytes == mp.arena_bytes_no_input == 176_400  # + the input in its own buffer
    unpatched = plan_memory(g)
    assert unpatched.input_mode == "full" and unpatched.arena_bytes_full_input == 1_404_928
    with pytest.raises(PatchnetError, match="input_mode 'patch' does not apply here; choose one of full, none"):
        plan_memory(g, input_mode="patch")
