"""Patch planner: the single source of truth for patch-based memory and compute.

Given an int8 graph, a split point ``n`` (the leading blocks ``0..n-1`` run patch by patch;
the stem conv is block 0) and a ``p x p`` grid of output tiles, the planner infers, for every
tensor of the patch stage and every tile, the region the tile needs (receptive field, stride,
padding and dilation for windows; the same region for elementwise ops; the region shifted by
(-top, -left) for a PAD over H and W, whose out-of-map part is its fill; the same rows and
columns, every channel, for a leading TRANSPOSE that turns an NCHW stage input into NHWC),
and from those:

- the input patch size and the patch buffer of every stage tensor (the largest region over the
  tiles: what the patched TIR allocates, checked in tests against the lowered PrimFunc);
- the per-patch peak memory, by the same liveness analysis as the profiler, on a graph whose
  stage tensors have their patch sizes and whose stage output is the full-size buffer every tile
  writes into;
- the whole-network peak (patch stage, then the rest layer by layer);
- the MACs executed with overlap (clipping respected) against the per-layer MACs.

Tiles follow TIR's ``split``: a tile is ``ceil(H / p)`` rows high, the last ones may be shorter.
Regions are not clipped at the map's borders: stage intermediates are stored with margins
(``kernels/frame.py``) that hold what padding means, filled, not computed. Margins reach as far
as whole tiles do (with uneven tiles the last op computes whole tiles, see ``stage.py``), so TIR
never clips a region under a predicate, which its buffer compaction would bound loosely (a
stride-2 VALID window once got a plane of 41x41 for the planner's 9x9). Buffer sizes come from
the unclipped regions (what TIR allocates), MACs from the regions clipped to the map.
As in the paper (Sec. 3.1), the stage input is counted at patch size: an image can be produced
patch by patch (camera lines, JPEG decoding), so only one input patch needs to be in SRAM.
Every stage tensor is NHWC except the stage input, which may be NCHW when the stage reads it
only through such a TRANSPOSE (``PatchPlan.input_layout``): its patch keeps that layout.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np

from ..analysis.liveness import analyze, plane_hw
from ..analysis.profile import op_macs
from ..errors import PatchnetError, StageError
from ..graph import Graph, Op, pad_hw

#: Ops a patch stage may contain, and how each maps an output region to its input regions.
_WINDOWED = ("conv2d", "depthwise_conv2d", "avg_pool2d", "max_pool2d")
_ELEMENTWISE = ("add", "mul", "quantize")
#: a PAD over H and W: the output region shifted by (-top, -left); what falls outside the input
#: map is the PAD's fill, computed, never read (``kernels/layout.py``)
_SHIFT = ("pad",)
#: a TRANSPOSE NCHW -> NHWC of the stage input: the output region's rows and columns, every
#: channel, gathered from the input read in place (``kernels/layout.py``)
_GATHER = ("transpose",)
#: the one TRANSPOSE a stage may hold: channels last
TO_NHWC = (0, 2, 3, 1)
#: value a windowed reader needs in the margin of its input (conv: the input's zero point)
_FILL = {"avg_pool2d": 0, "max_pool2d": -128}


@dataclass(frozen=True)
class Region:
    """Rows ``r0..r1`` and columns ``c0..c1`` (half-open) of a feature map."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def h(self) -> int:
        return self.r1 - self.r0

    @property
    def w(self) -> int:
        return self.c1 - self.c0

    def union(self, o: Region) -> Region:
        return Region(min(self.r0, o.r0), max(self.r1, o.r1), min(self.c0, o.c0), max(self.c1, o.c1))


@dataclass
class Tile:
    """One output tile and the region of every stage tensor it needs."""

    row: int
    col: int
    regions: dict[str, Region]


@dataclass
class PatchPlan:
    """Everything about one (p, n) setting. Bytes are int8 activation bytes; MACs are MACs."""

    model: str
    patches: int
    split: int
    stage_ops: list[int]
    stage_input: str
    stage_output: str
    tile_hw: tuple[int, int]
    tiles: list[Tile]
    #: rows and columns of the largest input patch
    input_patch: tuple[int, int]
    #: per-patch shape of every stage tensor, in its layout (NHWC; the stage input: ``input_layout``)
    patch_shapes: dict[str, tuple[int, ...]]
    patch_buffer_bytes: dict[str, int]
    patch_stage_peak_bytes: int
    rest_peak_bytes: int
    peak_bytes: int
    per_layer_peak_bytes: int
    stage_macs: int
    stage_macs_patched: int
    total_macs: int
    total_macs_patched: int
    op_macs_patched: dict[int, int] = field(default_factory=dict)
    margins: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    fills: dict[str, int] = field(default_factory=dict)
    #: per-patch peak bytes of each stage block (the stage output buffer included)
    patch_block_peaks: dict[int, int] = field(default_factory=dict)
    #: uneven tiles: bytes of the whole-tile buffer the last op writes before the copy into the
    #: stage output (0 when the tiles divide the output evenly)
    tile_buffer: int = 0
    #: every buffer the patched stage allocates, NHWC int8 shape: intermediates (a conv
    #: accumulated into a residual skip has none), ``<out>#tile`` (uneven tiles) and
    #: ``<out>#scratch`` (the channel plane of an in-place depthwise conv)
    stage_buffers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: layout of the stage input: "NHWC", or "NCHW" when a TRANSPOSE turns it NHWC in the stage
    input_layout: str = "NHWC"

    @property
    def stage_mac_overhead(self) -> float:
        return self.stage_macs_patched / self.stage_macs - 1.0 if self.stage_macs else 0.0

    @property
    def mac_overhead(self) -> float:
        return self.total_macs_patched / self.total_macs - 1.0 if self.total_macs else 0.0

    @property
    def workspace_bytes(self) -> int:
        """Bytes of all stage buffers allocated at once, each its own (the Relax host build's
        stage; the generated C overlaps them by their lifetimes, see ``memory.plan``)."""
        return sum(int(np.prod(s)) for s in self.stage_buffers.values())

    def to_json(self) -> dict:
        return {
            "patches": self.patches,
            "split": self.split,
            "input_patch": list(self.input_patch),
            "tile": list(self.tile_hw),
            "patch_stage_peak_bytes": self.patch_stage_peak_bytes,
            "rest_peak_bytes": self.rest_peak_bytes,
            "peak_bytes": self.peak_bytes,
            "per_layer_peak_bytes": self.per_layer_peak_bytes,
            "memory_reduction": round(self.per_layer_peak_bytes / self.peak_bytes, 3),
            "stage_macs": self.stage_macs,
            "stage_macs_patched": self.stage_macs_patched,
            "total_macs": self.total_macs,
            "total_macs_patched": self.total_macs_patched,
            "stage_mac_overhead": round(self.stage_mac_overhead, 4),
            "mac_overhead": round(self.mac_overhead, 4),
            "workspace_bytes": self.workspace_bytes,
            "patch_block_peaks": {str(b): v for b, v in sorted(self.patch_block_peaks.items())},
        }


def stage_of(graph: Graph, split: int) -> tuple[list[int], str, str]:
    """Op indices of blocks ``< split``, the stage's one activation input and its output.

    Raises :class:`PatchnetError` when the stage is not a single-input, single-output region
    of the graph that patches can run (the message names the op and block).
    """
    nb = graph.num_blocks
    if not 1 <= split < nb:
        raise PatchnetError(f"{graph.name}: split {split} out of range: it must be 1..{nb - 1} ({nb} blocks)")
    ops = [i for i, op in enumerate(graph.ops) if op.block < split]
    if ops != list(range(len(ops))):
        raise StageError(f"{graph.name}: blocks 0..{split - 1} are not the leading ops of the graph")
    produced = {n for i in ops for n in graph.ops[i].outputs}
    consumers = graph.consumers()
    escaping = [n for n in produced if any(c >= len(ops) for c in consumers[n]) or n in graph.outputs]
    if len(escaping) != 1:
        raise StageError(
            f"{graph.name}: split {split} cuts {len(escaping)} tensors ({', '.join(sorted(escaping)[:4])}); "
            "the patch stage must hand exactly one tensor to the rest of the network"
        )
    external = {n for i in ops for n in graph.activation_inputs(graph.ops[i]) if n not in produced}
    if len(external) != 1:
        raise StageError(f"{graph.name}: the patch stage reads {len(external)} inputs; it must read one")
    stage_in = external.pop()
    nchw = input_layout(graph, ops, stage_in) == "NCHW"
    for i in ops:
        why = _obstacle(graph, graph.ops[i], stage_in, nchw)
        if why:
            op = graph.ops[i]
            hint = f"; choose a split <= {op.block}" if op.block else ""
            raise StageError(f"{graph.name}: op {i} '{op.name}' ({op.kind}) in block {op.block} {why}{hint}")
    return ops, stage_in, escaping[0]


def _is_gather(graph: Graph, op: Op, stage_in: str) -> bool:
    """Whether ``op`` is a TRANSPOSE of the 4-D stage input that moves channels last."""
    return (op.kind in _GATHER and op.inputs[0] == stage_in and len(graph.t(stage_in).shape) == 4
            and tuple(op.attrs["perm"]) == TO_NHWC)


def input_layout(graph: Graph, ops: list[int], stage_in: str) -> str:
    """Layout of the stage input: "NCHW" when a stage op transposes it channels last, else "NHWC"."""
    return "NCHW" if any(_is_gather(graph, graph.ops[i], stage_in) for i in ops) else "NHWC"


def _obstacle(graph: Graph, op: Op, stage_in: str, nchw: bool) -> str | None:
    """Why ``op`` cannot run per patch (None if it can); ``nchw``: the stage input is NCHW."""
    if op.kind in _GATHER:
        if _is_gather(graph, op, stage_in):
            return None
        what = f"the stage input by perm {list(op.attrs['perm'])}" if op.inputs[0] == stage_in else "a stage tensor"
        return (f"transposes {what}: cannot run per patch (only a TRANSPOSE of the stage input by perm "
                f"{list(TO_NHWC)}, NCHW to NHWC, can)")
    if nchw and stage_in in op.inputs:
        return "reads the NCHW stage input directly (not through its TRANSPOSE to NHWC): cannot run per patch"
    if len(graph.t(op.outputs[0]).shape) != 4 or op.kind not in _WINDOWED + _ELEMENTWISE + _SHIFT:
        return "cannot run per patch"
    if op.kind == "pad" and pad_hw(op) is None:
        return "pads batch or channels: cannot run per patch"
    if op.kind in _WINDOWED:
        _, h, w, _ = graph.t(op.inputs[0]).shape
        kh, kw = graph.t(op.inputs[1]).shape[1:3] if "conv" in op.kind else op.attrs["pool"]
        pad = op.attrs["padding"]
        if (kh, kw) == (h + pad[0] + pad[2], w + pad[1] + pad[3]) and h * w > 1:
            return "reads the whole feature map (global pooling, e.g. an SE block): cannot run per patch"
    return None


def _input_regions(graph: Graph, op: Op, out: Region) -> dict[str, Region]:
    """The region of each activation input that ``op`` needs to produce ``out``."""
    res = {}
    for name in graph.activation_inputs(op):
        if op.kind in _WINDOWED:
            kh, kw = graph.t(op.inputs[1]).shape[1:3] if "conv" in op.kind else op.attrs["pool"]
            sh, sw = op.attrs["strides"]
            dh, dw = op.attrs.get("dilation", (1, 1))
            top, left = op.attrs["padding"][:2]
            r = Region(out.r0 * sh - top, (out.r1 - 1) * sh - top + (kh - 1) * dh + 1,
                       out.c0 * sw - left, (out.c1 - 1) * sw - left + (kw - 1) * dw + 1)
        elif op.kind == "pad":
            top, left = pad_hw(op)[:2]
            r = Region(out.r0 - top, out.r1 - top, out.c0 - left, out.c1 - left)
        elif op.kind in _GATHER:  # NCHW -> NHWC: the same rows and columns, every channel
            r = out
        elif graph.t(name).shape[1:3] == (1, 1) and graph.t(op.outputs[0]).shape[1:3] != (1, 1):
            r = Region(0, 1, 0, 1)  # broadcast operand (per-channel scale)
        else:
            r = out
        res[name] = r
    return res


def _regions(graph: Graph, ops: list[int], stage_out: str, out: Region) -> dict[str, Region]:
    """The region of every stage tensor that output region ``out`` of the stage needs, unclipped:
    regions may reach past the map into margins."""
    regions = {stage_out: out}
    for i in reversed(ops):
        op = graph.ops[i]
        for name, r in _input_regions(graph, op, regions[op.outputs[0]]).items():
            regions[name] = regions[name].union(r) if name in regions else r
    return regions


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """An NCHW shape in NHWC order."""
    return tuple(shape[p] for p in TO_NHWC)


def _clip(r: Region, h: int, w: int) -> Region:
    return Region(max(r.r0, 0), min(r.r1, h), max(r.c0, 0), min(r.c1, w))


def _fills(graph: Graph, ops: list[int], stage_in: str) -> dict[str, int]:
    """Margin fill of every stage intermediate read by a padded window: what its padding means
    to that reader (zero point for convolutions, -128 for max pooling, 0 for average pooling)."""
    fills: dict[str, int] = {}
    for i in ops:
        op = graph.ops[i]
        if op.kind not in _WINDOWED or not any(op.attrs["padding"]):
            continue
        name = op.inputs[0]
        if name == stage_in:
            continue
        fill = _FILL.get(op.kind, graph.t(name).zp)
        if fills.setdefault(name, fill) != fill:
            raise StageError(f"{graph.name}: tensor '{name}' is padded differently by its readers "
                                f"(op '{op.name}'); this stage cannot run per patch")
    return fills


def plan_patches(graph: Graph, patches: int, split: int) -> PatchPlan:
    """Plan ``patches x patches`` tiles over blocks ``0..split-1`` of ``graph``."""
    if patches < 1:
        raise PatchnetError(f"{graph.name}: patches must be >= 1, got {patches}")
    ops, stage_in, stage_out = stage_of(graph, split)
    layout = input_layout(graph, ops, stage_in)
    _, oh, ow, _ = graph.t(stage_out).shape
    if patches > min(oh, ow):
        raise PatchnetError(f"{graph.name}: {patches}x{patches} patches exceed the {oh}x{ow} output of block {split - 1}")
    th, tw = -(-oh // patches), -(-ow // patches)
    tiles = []
    for ty in range(patches):
        for tx in range(patches):
            if ty * th >= oh or tx * tw >= ow:
                continue  # TIR's split leaves trailing tiles empty when ceil(H/p) * (p-1) >= H
            out = Region(ty * th, min((ty + 1) * th, oh), tx * tw, min((tx + 1) * tw, ow))
            tiles.append(Tile(ty, tx, _regions(graph, ops, stage_out, out)))
    # With uneven tiles the last op computes whole tiles (``stage.py``): in TIR every tile of the
    # p x p loop, empty ones included, reaches as far as a whole tile's region, and margins must
    # hold that, or TIR clips the region under a predicate and compacts loosely.
    reach = [t.regions for t in tiles]
    if oh % patches or ow % patches:
        reach += [_regions(graph, ops, stage_out, Region(ty * th, (ty + 1) * th, tx * tw, (tx + 1) * tw))
                  for ty in range(patches) for tx in range(patches)]
    # Margins: how far any tile's region of a tensor reaches past its map (top, left, bottom, right).
    margins = {}
    for name in tiles[0].regions:
        if name in (stage_in, stage_out):
            continue
        _, h, w, _ = graph.t(name).shape
        rs = [r[name] for r in reach]
        margins[name] = (max(0, -min(r.r0 for r in rs)), max(0, -min(r.c0 for r in rs)),
                         max(0, max(r.r1 for r in rs) - h), max(0, max(r.c1 for r in rs) - w))
    shapes = {}
    for name in tiles[0].regions:
        nchw = name == stage_in and layout == "NCHW"
        _, h, w, c = _nhwc(graph.t(name).shape) if nchw else graph.t(name).shape
        # the stage input is read in place (no margins, no copy): its patch is the in-map region
        rs = [_clip(t.regions[name], h, w) if name == stage_in else t.regions[name] for t in tiles]
        ph, pw = max(r.h for r in rs), max(r.w for r in rs)
        shapes[name] = (1, c, ph, pw) if nchw else (1, ph, pw, c)
        if name == stage_in:
            input_patch = (ph, pw)
    buffer_bytes = {n: s[1] * s[2] * s[3] * graph.t(n).nbytes // graph.t(n).size for n, s in shapes.items()}

    op_macs_patched = {}
    for i in ops:
        op = graph.ops[i]
        full = graph.t(op.outputs[0]).shape
        per_pixel = op_macs(graph, op) // (full[1] * full[2])
        computed = [_clip(t.regions[op.outputs[0]], full[1], full[2]) for t in tiles]  # margins are filled
        op_macs_patched[i] = sum(per_pixel * r.h * r.w for r in computed)
    stage_macs = sum(op_macs(graph, graph.ops[i]) for i in ops)
    total_macs = sum(op_macs(graph, op) for op in graph.ops)
    stage_patched = sum(op_macs_patched.values())

    full = analyze(graph, in_place=True)
    rest = max(full.op_bytes[len(ops):], default=0)
    tile_buffer = th * tw * graph.t(stage_out).shape[3] if (oh % patches or ow % patches) else 0
    patch_graph = _patch_graph(graph, ops, stage_in, stage_out, shapes, (th, tw) if tile_buffer else None)
    patch_live = analyze(patch_graph, in_place=True)
    # The full-size stage output holds the tiles already computed while the next tile runs:
    # it is alive from the stage's first op, not only from the op that writes it.
    out_first = patch_live.span[stage_out][0]
    op_bytes = [b + (graph.t(stage_out).nbytes if k < out_first else 0) for k, b in enumerate(patch_live.op_bytes)]
    stage_peak = max(op_bytes)
    stage_buffers = {n: shapes[n] for n in shapes if n not in (stage_in, stage_out, *patch_live.accumulate)}
    if tile_buffer:
        stage_buffers[stage_out + "#tile"] = (1, th, tw, graph.t(stage_out).shape[3])
    for k in patch_live.scratch:
        stage_buffers[patch_graph.ops[k].outputs[0] + "#scratch"] = (1, *plane_hw(patch_graph, patch_graph.ops[k]), 1)
    block_peaks = {}
    for k, op in enumerate(patch_graph.ops):
        block_peaks[op.block] = max(block_peaks.get(op.block, 0), op_bytes[k])
    return PatchPlan(
        model=graph.name, patches=patches, split=split, stage_ops=ops, stage_input=stage_in, stage_output=stage_out,
        tile_hw=(th, tw), tiles=tiles, input_patch=input_patch, patch_shapes=shapes,
        patch_buffer_bytes=buffer_bytes, patch_stage_peak_bytes=stage_peak, rest_peak_bytes=rest,
        peak_bytes=max(stage_peak, rest), per_layer_peak_bytes=full.peak_bytes, stage_macs=stage_macs,
        stage_macs_patched=stage_patched, total_macs=total_macs,
        total_macs_patched=total_macs - stage_macs + stage_patched, op_macs_patched=op_macs_patched,
        margins=margins, fills=_fills(graph, ops, stage_in), patch_block_peaks=block_peaks, tile_buffer=tile_buffer,
        stage_buffers=stage_buffers, input_layout=layout,
    )


def patch_graph(graph: Graph, plan: PatchPlan) -> Graph:
    """The stage as one tile runs it (see :func:`_patch_graph`), uneven tiles' buffer included:
    the graph whose liveness decides what runs in place inside the stage."""
    return _patch_graph(graph, plan.stage_ops, plan.stage_input, plan.stage_output, plan.patch_shapes,
                        plan.tile_hw if plan.tile_buffer else None)


def _patch_graph(graph: Graph, ops: list[int], stage_in: str, stage_out: str, shapes, tile=None) -> Graph:
    """The stage as one patch sees it: tensors at patch size, the output buffer at full size,
    windows without padding (they read margins, or the stage input's patch, which their guards
    clip: a patch holds every tap its window reads, which sizes an in-place depthwise conv's
    plane, ``liveness.plane_hw``).

    With ``tile`` (uneven tiles) the last op writes a whole-tile buffer that a copy moves into
    the output, as the patched TIR does.
    """
    tensors = {}
    for i in ops:
        for n in graph.ops[i].inputs:
            if n and n not in tensors:
                tensors[n] = graph.t(n)
        for n in graph.ops[i].outputs:
            tensors[n] = graph.t(n)
    for n, s in shapes.items():
        if n != stage_out:
            t = copy.copy(tensors[n])
            t.shape = s
            tensors[n] = t
    stage_ops = [replace(graph.ops[i], attrs={**graph.ops[i].attrs, "padding": (0, 0, 0, 0)})
                 if graph.ops[i].kind in _WINDOWED else graph.ops[i] for i in ops]
    if tile:
        last = stage_ops[-1]
        tile_name = stage_out + "#tile"
        tensors[tile_name] = copy.copy(graph.t(stage_out))
        tensors[tile_name].shape = (1, *tile, graph.t(stage_out).shape[3])
        stage_ops[-1] = Op(last.name, last.kind, last.inputs, [tile_name], last.attrs, last.block)
        stage_ops.append(Op(last.name + "_copy", "copy", [tile_name], [stage_out], {}, last.block))
    # The stage reads its input from the caller's buffer (the whole input, or a patch streamed in),
    # never from a per-patch buffer of its own: no stage op writes over it (liveness "read-only").
    return Graph(graph.name + "-patch", tensors, stage_ops, [stage_in], [stage_out], meta={"read_only": [stage_in]})
