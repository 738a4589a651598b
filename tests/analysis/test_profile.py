"""Profiler figures: the MCUNetV2 paper's MobileNetV2 numbers and the memory rules on small graphs."""

from __future__ import annotations

import pytest

from tvm_patchnet.analysis.liveness import analyze
from tvm_patchnet.analysis.profile import profile
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.zoo import get_architecture

KB450 = 450 * 1024


def test_mobilenetv2_224_matches_the_paper():
    r = profile(get_architecture("mobilenetv2", resolution=224))
    assert r.peak_bytes == 1_404_928  # 1372 kB, Figure 1 / Table 1
    assert r.peak_block == 2
    assert r.blocks[0].peak_bytes == 3 * 224 * 224 + 32 * 112 * 112 == 551_936  # 539 kB stem
    assert [b.index for b in r.blocks if b.peak_bytes > KB450] == [0, 1, 2, 3, 4]
    assert r.total_macs == sum(la.macs for la in r.layers)
    assert 295e6 < r.total_macs < 305e6


def test_depthwise_runs_in_place_only_under_the_paper_rule():
    b = GraphBuilder("dw", (1, 16, 16, 8))
    y = b.depthwise_conv2d("input", 3, stride=1)
    g = b.finish(y)
    paper = analyze(g, in_place=True)
    assert paper.op_bytes == [16 * 16 * 8 + 16 * 16]  # the map, and one channel plane of scratch
    assert paper.scratch == {0: 16 * 16}
    plain = analyze(g, in_place=False)
    assert plain.op_bytes == [2 * 16 * 16 * 8] and not plain.scratch


def test_depthwise_with_multiplier_never_in_place():
    b = GraphBuilder("dwm", (1, 16, 16, 8))
    y = b.depthwise_conv2d("input", 3, stride=2, multiplier=2)  # 8x8x16 fits in 16x16x8 but
    g = b.finish(y)  # writes channels 2c, 2c+1 over input channels c / c+...: not in place
    assert analyze(g, in_place=True).op_bytes == [16 * 16 * 8 + 8 * 8 * 16]


def test_residual_input_counted_once_and_project_conv_accumulates_in_place():
    b = GraphBuilder("res", (1, 8, 8, 4))
    x = "input"
    e = b.conv2d(x, 24, 1)  # expand
    d = b.depthwise_conv2d(e, 3)
    p = b.conv2d(d, 4, 1, act=None)  # project
    y = b.add(p, x)
    g = b.finish(y)
    small, big = 8 * 8 * 4, 8 * 8 * 24
    paper = analyze(g, in_place=True).op_bytes
    assert paper == [small + big, small + big + 8 * 8, small + big, small]
    plain = analyze(g, in_place=False).op_bytes
    assert plain == [small + big, small + 2 * big, small + big + small, 3 * small]


def test_blocks_sum_to_totals():
    r = profile(get_architecture("mcunet-320kb-1mb"))
    assert sum(b.macs for b in r.blocks) == r.total_macs
    assert sum(b.weight_bytes for b in r.blocks) == r.weight_bytes
    assert max(b.peak_bytes for b in r.blocks) == r.peak_bytes


@pytest.mark.parametrize("name", ["mobilenetv2", "mnasnet", "fbnet-a", "mcunet-320kb-1mb"])
def test_plain_rule_never_below_paper_rule(name):
    g = get_architecture(name)
    paper, plain = analyze(g, True).op_bytes, analyze(g, False).op_bytes
    assert all(p <= q for p, q in zip(paper, plain))
