"""Patch planner: regions, buffers, MACs and memory on small graphs, computed by hand here.

Every expected figure below is derived in the comments next to it from the layer definitions
(kernel, stride, padding, dilation), not from the planner's own code. Conventions checked:
tiles are ``ceil(H / p)`` high (TIR's ``split``), the last ones shorter or empty; regions of stage
intermediates are unclipped (they reach into margins); the stage input patch is clipped to the
map; MACs count only in-map outputs (clipped regions) of every tile, overlap included.
"""

from __future__ import annotations

import pytest

from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.patch.planner import Region, plan_patches, stage_of
from tvm_patchnet.zoo import get_architecture


def _rows(plan, name):
    """Distinct (r0, r1) row spans of tensor ``name`` over the tiles, top to bottom."""
    return sorted({(t.regions[name].r0, t.regions[name].r1) for t in plan.tiles})


def _cols(plan, name):
    return sorted({(t.regions[name].c0, t.regions[name].c1) for t in plan.tiles})


def _tile(plan, row, col):
    (t,) = [t for t in plan.tiles if (t.row, t.col) == (row, col)]
    return t


# --------------------------------------------------------------------------------- graphs
def two_convs(side=16, cin=3):
    """Block 0: 3x3 s1 conv (SAME, pad 1) -> 8 ch; block 1: the same, 8 -> 8; block 2: 1x1 -> 4."""
    b = GraphBuilder("two_convs", (1, side, side, cin))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        x = b.conv2d(x, 8, 3)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


# ------------------------------------------------------------------------- two 3x3 convs
def test_two_3x3_convs_16x16_p2_regions_buffers_macs():
    g = two_convs()
    plan = plan_patches(g, 2, 2)
    assert plan.stage_ops == [0, 1]
    assert (plan.stage_input, plan.stage_output) == ("input", "conv_1:out")
    assert plan.tile_hw == (8, 8)
    assert sorted((t.row, t.col) for t in plan.tiles) == [(0, 0), (0, 1), (1, 0), (1, 1)]

    # tile (0, 0): output rows 0..8; conv_1 (3x3, pad 1) reads conv_0 rows 0-1 .. 7-1+2+1 = -1..9;
    # conv_0 reads input rows -2..10. Tile (1, 1): 8..16 -> 7..17 -> 6..18.
    t00, t11 = _tile(plan, 0, 0), _tile(plan, 1, 1)
    assert t00.regions["conv_1:out"] == Region(0, 8, 0, 8)
    assert t00.regions["conv_0:out"] == Region(-1, 9, -1, 9)
    assert t00.regions["input"] == Region(-2, 10, -2, 10)
    assert t11.regions["conv_1:out"] == Region(8, 16, 8, 16)
    assert t11.regions["conv_0:out"] == Region(7, 17, 7, 17)
    assert t11.regions["input"] == Region(6, 18, 6, 18)
    # mixed tile: rows of the top half, columns of the right half
    assert _tile(plan, 0, 1).regions["conv_0:out"] == Region(-1, 9, 7, 17)

    # buffers: conv_0 keeps its unclipped 10x10 region (one margin row/col each side);
    # the input patch is clipped: 0..10 and 6..16 are both 10 rows.
    assert plan.input_patch == (10, 10)
    assert plan.patch_shapes == {"input": (1, 10, 10, 3), "conv_0:out": (1, 10, 10, 8), "conv_1:out": (1, 8, 8, 8)}
    assert plan.patch_buffer_bytes == {"input": 300, "conv_0:out": 800, "conv_1:out": 512}
    assert plan.workspace_bytes == 800  # intermediates only
    assert plan.margins == {"conv_0:out": (1, 1, 1, 1)}
    assert plan.fills == {"conv_0:out": g.t("conv_0:out").zp} and g.t("conv_0:out").zp == -128  # relu6 output

    # MACs: conv_0 per output pixel 8 ch * 3*3*3 = 216, conv_1 8 * 3*3*8 = 576, conv_2 4 * 8 = 32.
    # conv_0 is computed on the clipped regions: rows 0..9 and 7..16 -> 9 x 9 per tile, 4 tiles.
    assert plan.op_macs_patched == {0: 4 * 81 * 216, 1: 256 * 576}
    assert plan.stage_macs == 256 * 216 + 256 * 576 == 202_752
    assert plan.stage_macs_patched == 324 * 216 + 256 * 576 == 217_440
    assert plan.total_macs == 202_752 + 256 * 32
    assert plan.total_macs_patched == 217_440 + 256 * 32
    assert plan.stage_mac_overhead == pytest.approx(68 * 216 / 202_752)
    assert plan.mac_overhead == pytest.approx(68 * 216 / (202_752 + 8192))

    # memory, layer by layer (paper rule): op0 768 + 2048, op1 2048 + 2048, op2 2048 + 1024
    assert plan.per_layer_peak_bytes == 4096
    assert plan.rest_peak_bytes == 3072
    assert plan.peak_bytes == max(plan.patch_stage_peak_bytes, 3072)
    # the last stage op: conv_0 patch (800) + the full output buffer (2048)
    assert plan.patch_block_peaks[1] == 800 + 2048


def test_stage_output_buffer_is_alive_during_the_whole_stage():
    # every tile writes into the full-size output buffer: from the second tile on it holds earlier
    # tiles' results while the first stage ops run, so it counts at every op of the stage
    plan = plan_patches(two_convs(), 2, 2)
    # op 0 (block 0): input patch 10*10*3 + conv_0 patch 10*10*8 + output buffer 16*16*8
    # op 1 (block 1): conv_0 patch + output buffer
    assert plan.patch_block_peaks == {0: 300 + 800 + 2048, 1: 800 + 2048}
    assert plan.patch_stage_peak_bytes == 3148
    assert plan.peak_bytes == 3148


# ---------------------------------------------------------------------------- stride 2
def test_stride_2_conv_in_the_stage():
    # 16x16 -> 3x3 s2 SAME conv -> 8x8 (TFLite SAME: pad top 0, bottom 1) -> 3x3 s1 conv -> 8x8
    b = GraphBuilder("s2", (1, 16, 16, 3))
    x = b.conv2d("input", 8, 3, stride=2)
    with b.new_block():
        x = b.conv2d(x, 8, 3)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    assert g.ops[0].attrs["padding"] == (0, 0, 1, 1)
    plan = plan_patches(g, 2, 2)
    assert plan.tile_hw == (4, 4)
    # tile row 0: out 0..4 -> conv_0 -1..5 -> input rows -1*2-0 = -2 .. (5-1)*2-0+2+1 = 11
    # tile row 1: out 4..8 -> conv_0 3..9 -> input 6..19
    assert _rows(plan, "conv_0:out") == [(-1, 5), (3, 9)]
    assert _rows(plan, "input") == [(-2, 11), (6, 19)]
    assert _cols(plan, "input") == [(-2, 11), (6, 19)]
    # input clipped: 0..11 (11 rows) and 6..16 (10 rows)
    assert plan.input_patch == (11, 11)
    assert plan.patch_shapes["conv_0:out"] == (1, 6, 6, 8)
    assert plan.margins == {"conv_0:out": (1, 1, 1, 1)}
    # conv_0 computed on 0..5 and 3..8: 5 x 5 per tile, 100 pixels for 64; 216 MACs per pixel
    assert plan.op_macs_patched[0] == 100 * 216
    assert plan.stage_macs == 64 * 216 + 64 * 576
    assert plan.stage_macs_patched == 100 * 216 + 64 * 576


# ------------------------------------------------------------------ dilation 2, depthwise
def test_dilated_depthwise_in_the_stage():
    # conv 3x3 s1 (pad 1) -> depthwise 3x3 dilation 2 (effective 5x5, SAME pad 2) on 16x16
    b = GraphBuilder("dil", (1, 16, 16, 4))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        x = b.depthwise_conv2d(x, 3, dilation=2)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    assert g.ops[1].attrs["padding"] == (2, 2, 2, 2)
    plan = plan_patches(g, 2, 2)
    # dw tile 0..8 -> conv_0 rows 0-2 .. 7-2+2*2+1 = -2..10 (12 rows); tile 8..16 -> 6..18
    assert _rows(plan, "conv_0:out") == [(-2, 10), (6, 18)]
    # conv_0 (pad 1) -> input -3..11 and 5..19, clipped 0..11 and 5..16: 11 rows each
    assert _rows(plan, "input") == [(-3, 11), (5, 19)]
    assert plan.input_patch == (11, 11)
    assert plan.patch_shapes == {"input": (1, 11, 11, 4), "conv_0:out": (1, 12, 12, 8),
                                 "dwconv_0:out": (1, 8, 8, 8)}
    assert plan.margins == {"conv_0:out": (2, 2, 2, 2)}
    assert plan.fills == {"conv_0:out": g.t("conv_0:out").zp}
    # conv_0 computed on 0..10 and 6..16 (10 rows / cols each): 400 pixels, 8*9*4 = 288 MACs each;
    # depthwise: 8 * 9 = 72 MACs per pixel, no overlap (it is the stage output)
    assert plan.op_macs_patched == {0: 400 * 288, 1: 256 * 72}
    assert plan.stage_macs == 256 * 288 + 256 * 72


def test_depthwise_stride_2_region():
    # depthwise 3x3 s2 SAME on 16x16 -> 8x8 (pad top 0, bottom 1), p = 4: tiles of 2 rows
    b = GraphBuilder("dws2", (1, 16, 16, 8))
    x = b.depthwise_conv2d("input", 3, stride=2)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    plan = plan_patches(g, 4, 1)
    assert plan.tile_hw == (2, 2)
    # out rows 2k..2k+2 -> input 4k .. (2k+1)*2+3 = 4k+5
    assert _rows(plan, "input") == [(0, 5), (4, 9), (8, 13), (12, 17)]
    assert plan.input_patch == (5, 5)  # the last one clipped to 12..16 (4 rows)
    # depthwise stage output only: no overlap, no overhead
    assert plan.op_macs_patched == {0: 64 * 8 * 9}
    assert plan.stage_mac_overhead == 0


# ---------------------------------------------------------------------------- pooling
def test_pooling_in_the_stage_regions_margins_fills():
    # conv 3x3 (pad 1) -> max pool 3x3 s2 SAME (pad 0/1) -> avg pool 3x3 s1 SAME (pad 1), 16 -> 8
    b = GraphBuilder("pool", (1, 16, 16, 4))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        x = b.max_pool2d(x, 3, 2, "same")
        x = b.avg_pool2d(x, 3, 1, "same")
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    assert g.ops[1].attrs["padding"] == (0, 0, 1, 1) and g.ops[2].attrs["padding"] == (1, 1, 1, 1)
    plan = plan_patches(g, 2, 2)
    assert plan.stage_output == "avg_pool2d_0:out" and plan.tile_hw == (4, 4)
    # avg 0..4 -> max -1..5 -> conv_0 -2..(5-1)*2+3 = 11 -> input -3..12
    # avg 4..8 -> max 3..9 -> conv_0 6..19 -> input 5..20
    assert _rows(plan, "max_pool2d_0:out") == [(-1, 5), (3, 9)]
    assert _rows(plan, "conv_0:out") == [(-2, 11), (6, 19)]
    assert _rows(plan, "input") == [(-3, 12), (5, 20)]
    assert plan.input_patch == (12, 12)  # 0..12 and 5..16
    assert plan.patch_shapes["conv_0:out"] == (1, 13, 13, 8)
    assert plan.patch_shapes["max_pool2d_0:out"] == (1, 6, 6, 8)
    # margins (top, left, bottom, right): conv_0 reaches -2 and 19 on a 16-map, max pool -1 and 9 on 8
    assert plan.margins == {"conv_0:out": (2, 2, 3, 3), "max_pool2d_0:out": (1, 1, 1, 1)}
    # margins hold what padding means to the reader: -128 for max pooling, 0 for average pooling
    assert plan.fills == {"conv_0:out": -128, "max_pool2d_0:out": 0}
    # pooling has no MACs; conv_0 computed on 0..11 / 6..16: 11*11 + 11*10 + 10*11 + 10*10 pixels
    assert plan.op_macs_patched == {0: 441 * 288, 1: 0, 2: 0}


def test_pooling_readers_disagreeing_on_the_fill_is_an_error():
    # the same tensor read by a padded max pool (fill -128) and a padded conv (fill = its zero point)
    b = GraphBuilder("fills", (1, 16, 16, 4))
    x = b.conv2d("input", 8, 3, act=None)
    with b.new_block():
        m = b.max_pool2d(x, 3, 1, "same")
        c = b.depthwise_conv2d(x, 3, act=None)
        x = b.add(m, c)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    assert g.t("conv_0:out").zp != -128  # so the conv (fill = zero point) and max pool (-128) disagree
    with pytest.raises(PatchnetError, match="conv_0:out.*padded differently"):
        plan_patches(g, 2, 2)


# ------------------------------------------------------------------ residual inside the stage
def test_residual_add_inside_the_stage():
    # block 0: conv 3x3 -> 8; block 1: depthwise 3x3 -> 1x1 conv -> add with block 0's output
    b = GraphBuilder("res", (1, 16, 16, 3))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        h = b.depthwise_conv2d(x, 3)
        h = b.conv2d(h, 8, 1, act=None)
        y = b.add(h, x)
    with b.new_block():
        y = b.conv2d(y, 4, 1)
    g = b.finish(y)
    ops, stage_in, stage_out = stage_of(g, 2)
    assert (ops, stage_in, stage_out) == ([0, 1, 2, 3], "input", "add_0:out")
    plan = plan_patches(g, 2, 2)
    t = _tile(plan, 0, 0)
    # conv_0's output is needed by the add (the tile itself) and by the depthwise conv (tile +- 1):
    # the union, -1..9
    assert t.regions["add_0:out"] == Region(0, 8, 0, 8)
    assert t.regions["conv_1:out"] == Region(0, 8, 0, 8)
    assert t.regions["dwconv_0:out"] == Region(0, 8, 0, 8)
    assert t.regions["conv_0:out"] == Region(-1, 9, -1, 9)
    assert t.regions["input"] == Region(-2, 10, -2, 10)
    assert plan.patch_shapes == {"input": (1, 10, 10, 3), "conv_0:out": (1, 10, 10, 8),
                                 "dwconv_0:out": (1, 8, 8, 8), "conv_1:out": (1, 8, 8, 8),
                                 "add_0:out": (1, 8, 8, 8)}
    assert plan.margins == {"conv_0:out": (1, 1, 1, 1), "dwconv_0:out": (0, 0, 0, 0), "conv_1:out": (0, 0, 0, 0)}
    assert plan.workspace_bytes == 800 + 512 + 512
    # MACs: conv_0 9x9 per tile (overlap), depthwise 72 and 1x1 conv 64 per pixel without overlap
    assert plan.op_macs_patched == {0: 324 * 216, 1: 256 * 72, 2: 256 * 64, 3: 0}
    # per patch, with the 16x16x8 output buffer (2048) alive throughout: op 0: input 300 + conv_0
    # 800; op 1: conv_0 + dw 512; op 2: conv_0 + dw + conv_1 512 (no accumulation into the skip:
    # different patch sizes); op 3: conv_0 + conv_1 (the output is full size, nothing in place)
    assert plan.patch_block_peaks == {0: 300 + 800 + 2048, 1: 800 + 512 + 512 + 2048}
    assert plan.patch_stage_peak_bytes == 3872


def test_residual_whose_skip_needs_a_wider_region_than_the_main_path():
    # the skip (identity) enters after a 5x5 depthwise: conv_0's region is set by the main path,
    # the 3x3 conv before it by the union of both
    b = GraphBuilder("res5", (1, 12, 12, 4))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        h = b.depthwise_conv2d(x, 5)
        y = b.add(h, x)
    with b.new_block():
        y = b.conv2d(y, 4, 1)
    g = b.finish(y)
    plan = plan_patches(g, 3, 2)  # tiles of 4 rows
    # tile row 1: add 4..8; depthwise (pad 2) needs conv_0 2..10, the add needs 4..8 -> 2..10
    assert _rows(plan, "conv_0:out") == [(-2, 6), (2, 10), (6, 14)]
    assert plan.margins["conv_0:out"] == (2, 2, 2, 2)
    assert plan.patch_shapes["conv_0:out"] == (1, 8, 8, 8)


# ------------------------------------------------------------------------- uneven tiles
def test_uneven_tiles_10x10_p3():
    g = two_convs(side=10, cin=4)
    plan = plan_patches(g, 3, 2)
    # ceil(10 / 3) = 4: tiles 0..4, 4..8, 8..10 (4, 4, 2 rows)
    assert plan.tile_hw == (4, 4)
    assert len(plan.tiles) == 9
    assert _rows(plan, "conv_1:out") == [(0, 4), (4, 8), (8, 10)]
    assert _cols(plan, "conv_1:out") == [(0, 4), (4, 8), (8, 10)]
    assert _tile(plan, 2, 2).regions["conv_1:out"] == Region(8, 10, 8, 10)
    # conv_0: -1..5, 3..9, 7..11 (6, 6, 4 rows); input -2..6, 2..10, 6..12 -> clipped 6, 8, 4
    assert _rows(plan, "conv_0:out") == [(-1, 5), (3, 9), (7, 11)]
    assert _rows(plan, "input") == [(-2, 6), (2, 10), (6, 12)]
    assert plan.input_patch == (8, 8)
    assert plan.patch_shapes["conv_0:out"] == (1, 6, 6, 8)
    assert plan.patch_shapes["conv_1:out"] == (1, 4, 4, 8)
    # margins hold what whole tiles reach (the last op computes tile 8..12 whole): conv_0 7..13
    assert plan.margins == {"conv_0:out": (1, 1, 3, 3)}
    # conv_0 computed rows: 0..5 (5), 3..9 (6), 7..10 (3) -> 14 rows and 14 cols over the tiles
    # -> 196 pixels for 100; 8 * 9 * 4 = 288 MACs each
    assert plan.op_macs_patched[0] == 196 * 288
    assert plan.op_macs_patched[1] == 100 * 8 * 9 * 8


def test_trailing_tiles_left_empty_by_the_split_are_skipped():
    # 9x9 output, p = 4: ceil(9/4) = 3 -> tiles at 0, 3, 6; the 4th would start at 9: empty
    b = GraphBuilder("nine", (1, 9, 9, 4))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    plan = plan_patches(g, 4, 1)
    assert plan.tile_hw == (3, 3)
    assert len(plan.tiles) == 9
    assert _rows(plan, "conv_0:out") == [(0, 3), (3, 6), (6, 9)]
    assert plan.op_macs_patched == {0: 81 * 8 * 9 * 4}  # single-op stage: every pixel once


def test_non_square_map_tiles_rows_and_columns_separately():
    # 20 x 6 output, p = 4: rows ceil(20/4) = 5 (5,5,5,5), columns ceil(6/4) = 2 (2,2,2, 4th empty)
    b = GraphBuilder("rect", (1, 20, 6, 4))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    plan = plan_patches(g, 4, 1)
    assert plan.tile_hw == (5, 2)
    assert len(plan.tiles) == 12
    assert _cols(plan, "conv_0:out") == [(0, 2), (2, 4), (4, 6)]
    # input columns: -1..3, 1..5, 3..7 -> clipped 3, 4, 3; rows -1..6, 4..11, .. -> 6, 7, 7, 6
    assert plan.input_patch == (7, 4)


def test_p1_is_the_whole_map_with_margins():
    g = two_convs()
    plan = plan_patches(g, 1, 2)
    assert plan.tile_hw == (16, 16) and len(plan.tiles) == 1
    assert plan.input_patch == (16, 16)
    assert plan.patch_shapes["conv_0:out"] == (1, 18, 18, 8)  # margins of one on each side
    assert plan.stage_macs_patched == plan.stage_macs
    assert plan.mac_overhead == 0


# ---------------------------------------------------------------------------------- errors
def test_split_out_of_range():
    g = two_convs()  # 3 blocks: valid splits are 1 and 2
    for split in (0, 3, -1):
        with pytest.raises(PatchnetError, match=f"split {split} out of range"):
            plan_patches(g, 2, split)


def test_patches_must_be_positive():
    with pytest.raises(PatchnetError, match="patches must be >= 1"):
        plan_patches(two_convs(), 0, 1)


def test_more_patches_than_output_pixels():
    g = two_convs()  # stage output 16x16
    assert plan_patches(g, 16, 2).tile_hw == (1, 1)
    with pytest.raises(PatchnetError, match=r"17x17 patches exceed the 16x16 output of block 1"):
        plan_patches(g, 17, 2)


def test_non_square_map_limits_patches_by_its_short_side():
    b = GraphBuilder("rect", (1, 20, 6, 4))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    g = b.finish(x)
    plan_patches(g, 6, 1)
    with pytest.raises(PatchnetError, match="7x7 patches exceed the 20x6 output"):
        plan_patches(g, 7, 1)


def _se_graph():
    """Block 1 holds an SE-style module without the logistic: global average pool, two 1x1
    convs on the 1x1 map, broadcast multiply."""
    b = GraphBuilder("se", (1, 16, 16, 3))
    x = b.conv2d("input", 8, 3)
    with b.new_block():
        h = b.depthwise_conv2d(x, 3)
        s = b.global_avg_pool(h)
        s = b.conv2d(s, 4, 1, act="relu")
        s = b.conv2d(s, 8, 1, act=None)
        x = b.mul(h, s)
    with b.new_block():
        x = b.conv2d(x, 4, 1)
    return b.finish(x)


def test_global_average_pool_in_the_stage_names_the_op_and_block():
    g = _se_graph()
    assert g.ops[2].kind == "avg_pool2d" and g.ops[2].block == 1
    with pytest.raises(PatchnetError) as e:
        plan_patches(g, 2, 2)
    msg = str(e.value)
    assert "avg_pool2d_0" in msg and "block 1" in msg and "split <= 1" in msg
    assert "global pooling" in msg
    # one block earlier, the SE module is outside the stage: fine
    assert plan_patches(g, 2, 1).stage_ops == [0]


def test_real_se_block_in_the_stage_is_refused_with_its_block():
    g = get_architecture("mnasnet", resolution=96)  # MnasNet-A1: first SE module in block 4
    se_blocks = sorted({op.block for op in g.ops if op.kind == "logistic"})
    assert se_blocks[0] == 4
    assert plan_patches(g, 2, 4).split == 4
    for split in (5, 7):
        with pytest.raises(PatchnetError, match=r"in block 4 .*choose a split <= 4"):
            plan_patches(g, 2, split)


# ------------------------------------------------------------------- MobileNetV2, Table 1
def test_mobilenetv2_224_table1():
    g = get_architecture("mobilenetv2", resolution=224)
    plan = plan_patches(g, 4, 5)
    # Stage = blocks 0..4, output 28x28x32, tiles of 7. Back through the 3x3 layers (1x1 convs
    # keep the size): block 4 dw s2 -> (7-1)*2+3 = 15, block 3 dw s1 -> 17, block 2 dw s2 -> 35,
    # block 1 dw s1 -> 37, stem s2 -> 75.
    side = 7
    for stride in (2, 1, 2, 1, 2):
        side = (side - 1) * stride + 3
    assert plan.tile_hw == (7, 7)
    assert plan.input_patch == (side, side) == (75, 75)
    # per layer: block 2's expand conv at 112x112, 16 -> 96 channels
    assert plan.per_layer_peak_bytes == 112 * 112 * (16 + 96) == 1_404_928
    # whole network: block 5's in-place depthwise conv at 28x28 (192 channels, a 28x28 channel
    # plane of scratch) beside the 32-channel skip, after the stage
    assert plan.peak_bytes == 28 * 28 * (32 + 192 + 1) == 176_400
    assert plan.mac_overhead <= 0.10
    assert plan.per_layer_peak_bytes / plan.peak_bytes == pytest.approx(8.0, rel=0.01)  # paper: 1372 / 172 kB
