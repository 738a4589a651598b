"""Arena planners on small lifetime sets, checked by an independent overlap check and a brute force.

Buffers are ``(name, size bytes, first op, last op, host or None)``.
"""

from __future__ import annotations

import itertools
import random

import pytest

from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.memory import create

#: greedy puts b0 and b2 at 0, b1 on top of b0, and b3 must then clear b2 and b1 (72 B);
#: b1 at 0 with b0 on it leaves room for b3 under the 64 B the two 48 B buffers force anyway.
GREEDY_LOSES = [("b0", 48, 4, 5, None), ("b1", 16, 2, 4, None), ("b2", 48, 1, 1, None), ("b3", 8, 0, 2, None)]


def plan(kind, buffers, alignment=1, **options):
    p = create(kind, alignment, **options)
    for b in buffers:
        p.add_buffer(*b)
    return p.plan()


def root(buffers, name):
    by_name = {b[0]: b for b in buffers}
    while by_name[name][4] is not None:
        name = by_name[name][4]
    return name


def alive_together(a, b) -> bool:
    return a[2] <= b[3] and b[2] <= a[3]


def check(buffers, arena, alignment):
    """No two buffers alive at one op share a byte (unless one hosts the other); all fit."""
    off = arena.offsets
    for name, size, _, _, host in buffers:
        assert off[name] % alignment == 0
        assert off[name] + -(-size // alignment) * alignment <= arena.arena_bytes
        if host is not None:
            assert off[name] == off[host]
    for a, b in itertools.combinations(buffers, 2):
        if root(buffers, a[0]) != root(buffers, b[0]) and alive_together(a, b):
            assert off[a[0]] + a[1] <= off[b[0]] or off[b[0]] + b[1] <= off[a[0]], (a, b, off)


def brute_force(buffers) -> int:
    """The smallest arena (alignment 1): first fit over every order of the groups. Compacting an
    optimal packing and placing its groups bottom-up by first fit never puts one higher, so the
    best order reaches the optimum."""
    groups: dict[str, list] = {}
    for b in buffers:
        groups.setdefault(root(buffers, b[0]), []).append(b)
    best = None
    for order in itertools.permutations(groups):
        placed: list[tuple[int, tuple]] = []  # (offset, buffer)
        for g in order:
            candidates = sorted({0, *(o + b[1] for o, b in placed)})
            o = next(o for o in candidates if all(
                o + a[1] <= p or p + b[1] <= o for a in groups[g] for p, b in placed if alive_together(a, b)))
            placed += [(o, a) for a in groups[g]]
        arena = max(o + b[1] for o, b in placed)
        best = arena if best is None else min(best, arena)
    return best


def random_buffers(seed: int) -> list[tuple]:
    """3..7 buffers; some written in place over a buffer that dies as they are born."""
    rng = random.Random(seed)
    out: list[tuple] = []
    for i in range(rng.randint(3, 7)):
        host = rng.choice(out) if out and rng.random() < 0.25 else None
        first = host[3] if host else rng.randint(-1, 6)
        out.append((f"b{i}", rng.randint(1, 40), first, first + rng.randint(0, 3), host[0] if host else None))
    return out


@pytest.mark.parametrize("alignment", [1, 4])
@pytest.mark.parametrize("seed", range(30))
def test_random_sets_linear_greedy_milp(seed, alignment):
    bufs = random_buffers(seed)
    lin, greedy, milp = (plan(k, bufs, alignment) for k in ("linear", "greedy", "milp"))
    for arena in (lin, greedy, milp):
        check(bufs, arena, alignment)
    assert milp.lower_bound_bytes <= milp.arena_bytes <= greedy.arena_bytes <= lin.arena_bytes
    assert milp.optimal
    if alignment == 1:
        assert milp.arena_bytes == brute_force(bufs)
        # linear: no reuse, every group its largest buffer
        sizes: dict[str, int] = {}
        for b in bufs:
            sizes[root(bufs, b[0])] = max(sizes.get(root(bufs, b[0]), 0), b[1])
        assert lin.arena_bytes == sum(sizes.values())


def test_milp_closes_the_greedy_gap():
    greedy, milp = plan("greedy", GREEDY_LOSES), plan("milp", GREEDY_LOSES)
    assert (greedy.arena_bytes, milp.arena_bytes, milp.lower_bound_bytes) == (72, 64, 64)
    assert greedy.gap_bytes == 8 and not greedy.optimal
    assert milp.optimal and milp.note == "exact"
    check(GREEDY_LOSES, milp, 1)


def test_milp_falls_back_to_greedy_and_says_so():
    milp = plan("milp", GREEDY_LOSES, max_groups=3)
    assert milp.arena_bytes == 72 and not milp.optimal
    assert "milp skipped (4 groups > max_groups=3)" in milp.note and "8 B above the lower bound" in milp.note


def test_shrinking_in_place_buffer_frees_its_tail():
    # a stride-2 depthwise conv writes its 25 B output over its 100 B input at op 1; from op 2
    # on, a 75 B buffer fits in the freed tail, as the liveness counts it
    bufs = [("x", 100, 0, 1, None), ("y", 25, 1, 3, "x"), ("z", 75, 2, 3, None)]
    for kind in ("greedy", "milp"):
        arena = plan(kind, bufs)
        check(bufs, arena, 1)
        assert arena.arena_bytes == arena.lower_bound_bytes == 100
        assert arena.offsets == {"x": 0, "y": 0, "z": 25}


def test_alignment_is_counted_in_every_figure():
    bufs = [("a", 5, 0, 1, None), ("b", 3, 1, 2, None), ("c", 9, 2, 2, None)]
    # unaligned, op 2 holds 3 + 9 = 12 B; at 4 B it holds 4 + 12
    assert plan("greedy", bufs, alignment=1).arena_bytes == 12
    arena = plan("greedy", bufs, alignment=4)
    assert arena.lower_bound_bytes == arena.arena_bytes == 16
    assert plan("linear", bufs, alignment=16).arena_bytes == 48
    check(bufs, plan("greedy", bufs, alignment=16), 16)


def test_planner_errors_name_the_problem():
    with pytest.raises(PatchnetError, match="unknown arena planner 'best'; known: linear, greedy, milp"):
        create("best")
    with pytest.raises(PatchnetError, match="takes no options"):
        create("greedy", time_limit=1)
    with pytest.raises(PatchnetError, match="alignment must be >= 1"):
        create("greedy", 0)
    p = create("greedy")
    p.add_buffer("a", 4, 0, 1)
    with pytest.raises(PatchnetError, match="added twice"):
        p.add_buffer("a", 4, 0, 1)
    with pytest.raises(PatchnetError, match="unknown host 'z'"):
        p.add_buffer("b", 4, 1, 2, host="z")
    with pytest.raises(PatchnetError, match="lifetime 3..2"):
        p.add_buffer("c", 4, 3, 2)
