"""Models with explicit PAD ops patch like the built-in ones, and one rule sizes the depthwise plane.

Four TFLite models from ``tests/pad_models.py`` (issue 8):
- ``stem``: MCUNet / TinyEngine-style stem, PAD -> CONV s2 VALID -> DW -> PAD -> DW s2 VALID ->
  CONV: every PAD folds into the conv after it (``rewrite/fold_pad.py``);
- ``avg-pool``: PADs before average pools (one on the input, one inside): they stay and run
  inside the patch stage (``patch/planner.py``'s shift rule, ``kernels/layout.py``);
- ``plane``: a stride-2 VALID depthwise conv on an even map, which never reads the map's last row
  and column: the liveness scratch, the layer-by-layer kernel and the patch stage all size its
  channel plane by ``liveness.plane_hw`` (once 12,769 B of kernel against 12,996 B planned);
- ``dw-first``: a depthwise conv reading the model's input first: inside the stage it writes a
  per-patch buffer of its own, never over the caller's input (once a 225 B plane against 196 B).
Each: the folded graph's op count, host run against TensorFlow Lite Micro on the original file,
``patchnet profile --patches auto --split auto``, the patched stage (what TIR allocates, outputs
bit for bit) and, marked slow, the C model on qemu-m4, layer by layer and patched.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json

import numpy as np
import pytest

from relay_passes import PatchBasedInference
from tests.conftest import tflm_trace
from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU
from tests.pad_models import Net, avg_pool_model, dw_first_model, plane_model, stem_model
from tvm_patchnet.analysis.liveness import analyze, plane_bytes
from tvm_patchnet.builder import GraphBuilder
from tvm_patchnet.cli.main import main
from tvm_patchnet.codegen.c_kernels import emit_kernels
from tvm_patchnet.deploy import compile_model, run_model
from tvm_patchnet.errors import StageError
from tvm_patchnet.execution import plan_execution
from tvm_patchnet.frontend import load_model
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.lower import to_relax
from tvm_patchnet.patch.planner import plan_patches, stage_of
from tvm_patchnet.patch.stage import build_stage, lowered_allocations
from tvm_patchnet.runtime import build, run_graph, run_module
from tvm_patchnet.schedules.default import depthwise_in_place_kernel

#: name -> (model, ops after folding, PADs after folding, smallest split that covers the PADs
#: (or the plane's depthwise conv) of the original file)
MODELS = {
    "stem": (stem_model, 9, 0, 1),
    "avg-pool": (avg_pool_model, 11, 2, 2),
    "plane": (plane_model, 6, 0, 2),
    "dw-first": (dw_first_model, 7, 0, 1),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pad_models")
    out = {}
    for name, (make, *_) in MODELS.items():
        out[name] = str(d / f"{name.replace('-', '_')}.tflite")
        with open(out[name], "wb") as f:
            f.write(make())
    return out


@functools.cache
def _input(shape) -> np.ndarray:
    return np.random.default_rng(8).integers(-128, 128, size=shape, dtype=np.int8)


def _tflm(path: str, graph) -> dict[str, np.ndarray]:
    """TensorFlow Lite Micro on the original file: graph tensor name -> value."""
    ref = tflm_trace(path, [_input(graph.t(graph.inputs[0]).shape)])
    return {n: ref(k) for n, k in graph.meta["tensor_index"].items() if not graph.t(n).const}


@pytest.mark.parametrize("name", MODELS)
def test_folded_graph_runs_bit_exact_with_tflite_micro(files, name):
    _, n_ops, n_pads, _ = MODELS[name]
    raw, g = load_tflite(files[name]), load_model(files[name])
    assert len(g.ops) == n_ops and [op.kind for op in g.ops].count("pad") == n_pads
    assert len(raw.ops) - len(g.ops) == [op.kind for op in raw.ops].count("pad") - n_pads
    want = _tflm(files[name], g)
    got = run_graph(g, [_input(g.t(g.inputs[0]).shape)], trace=True)
    for tensor, y in got.items():  # every op output of the folded graph
        assert np.array_equal(y.reshape(want[tensor].shape), want[tensor]), f"{name}: {tensor} differs"
    assert len(np.unique(want[g.outputs[0]])) >= 8


@pytest.mark.parametrize("name", MODELS)
def test_profile_auto_patches_over_the_pad(files, name, capsys):
    cover = MODELS[name][3]
    assert main(["profile", files[name], "--patches", "auto", "--split", "auto", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    p = d["patch"]
    assert p["patches"] > 1 and p["split"] >= cover, p
    assert p["peak_bytes"] < d["peak_bytes"] == p["per_layer_peak_bytes"]


#: (model, p, n): the settings ``auto`` picks, uneven tiles, and the PAD reading the stage input
SETTINGS = [("stem", 4, 3), ("stem", 3, 2), ("avg-pool", 4, 2), ("avg-pool", 3, 1), ("avg-pool", 2, 2),
            ("plane", 5, 2), ("plane", 2, 2), ("dw-first", 2, 2), ("dw-first", 3, 2)]


@pytest.mark.parametrize("name, p, n", SETTINGS, ids=[f"{m}-p{p}-n{n}" for m, p, n in SETTINGS])
def test_stage_buffers_are_what_tir_allocates(files, name, p, n):
    g = load_model(files[name])
    plan = plan_patches(g, p, n)
    stage = build_stage(plan_execution(g, plan))
    allocs = lowered_allocations(stage.func)
    got = {stage.buffers[b]: shape for b, (shape, _, scope) in allocs.items() if scope == "global"}
    assert got == plan.stage_buffers  # intermediates, an uneven tile's buffer, depthwise planes
    if name == "plane":  # its stride-2 VALID depthwise conv runs in place, from a plane
        assert [t for t in got if t.endswith("#scratch")] == ["dw_6#scratch"]
    if name == "dw-first":  # the first depthwise conv reads the caller's input: not in place
        assert g.ops[0].outputs[0] in got and g.ops[0].outputs[0] + "#scratch" not in got


@pytest.mark.parametrize("name, p, n", SETTINGS, ids=[f"{m}-p{p}-n{n}" for m, p, n in SETTINGS])
def test_patched_stage_is_bit_exact_with_tflite_micro(files, name, p, n):
    g = load_model(files[name])
    want = _tflm(files[name], g)
    stage_out = plan_patches(g, p, n).stage_output
    g2 = dataclasses.replace(g, outputs=[stage_out, *g.outputs])  # the stage output itself too
    plan = plan_patches(g2, p, n)
    if name == "avg-pool":
        assert "pad" in [g.ops[i].kind for i in plan.stage_ops]
    outs = run_module(build(PatchBasedInference(g2, plan)(to_relax(g2))), [_input(g.t(g.inputs[0]).shape)])
    for tensor, y in zip(g2.outputs, outs):
        assert np.array_equal(y.reshape(want[tensor].shape), want[tensor]), f"{name} p={p} n={n}: {tensor}"


def test_a_pad_over_channels_stops_the_stage(tmp_path):
    n = Net((1, 18, 18, 4), seed=27)
    path = tmp_path / "channels.tflite"
    path.write_bytes(n.pad(1, 1, 1, 1, channels=(0, 2)).conv(8, 3, 1, "VALID").conv(8, 1).finish())
    g = load_model(str(path))
    assert [op.kind for op in g.ops] == ["pad", "conv2d", "conv2d"] and g.num_blocks == 2
    with pytest.raises(StageError, match=r"op 0 'pad_0' \(pad\) in block 0 pads batch or channels: cannot run"):
        stage_of(g, 1)


# ----------------------------------------------------------------------------- the plane rule
def _depthwise(h, w, k, s, d, padding):
    b = GraphBuilder("dw", (1, h, w, 3))
    return b.finish(b.depthwise_conv2d("input", k, stride=s, dilation=d, padding=padding))


def test_plane_rule_agrees_with_the_in_place_kernel():
    """The layer-by-layer in-place depthwise kernel's scratch (read back from the emitted C
    function) equals ``liveness.plane_bytes`` over strides, dilations, even and odd maps,
    SAME, VALID and lopsided explicit padding (what a folded PAD leaves)."""
    graphs = []
    for (h, w), k, s, d, pad in itertools.product([(8, 8), (9, 7)], [3, 5], [1, 2, 3], [1, 2],
                                                  ["same", "valid", (1, 0, 2, 1), (0, 2, 0, 0)]):
        t, left, b, r = {"same": (k, k, k, k), "valid": (0, 0, 0, 0)}.get(pad, pad)
        if (k - 1) * d + 1 <= min(h + t + b, w + left + r):  # the window fits the padded map
            graphs.append(_depthwise(h, w, k, s, d, pad))
    assert len(graphs) > 50
    kernels = emit_kernels({f"k{i}": depthwise_in_place_kernel(g, g.ops[0]).func for i, g in enumerate(graphs)})
    for i, g in enumerate(graphs):
        assert kernels[f"k{i}"].workspace_bytes == plane_bytes(g, g.ops[0]), (g.t("input").shape, g.ops[0].attrs)
    # the case: 114x114, 3x3 stride 2 VALID reads rows and columns 0..112
    g = _depthwise(114, 114, 3, 2, 1, "valid")
    assert plane_bytes(g, g.ops[0]) == 113 * 113 == 12_769
    assert analyze(g).scratch == {0: 12_769}


# ----------------------------------------------------------------------------- on the board
@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.parametrize("name", MODELS)
def test_on_qemu_bit_exact_layer_by_layer_and_patched(files, name, tmp_path):
    g = load_model(files[name])
    x = _input(g.t(g.inputs[0]).shape)
    want = _tflm(files[name], g)[g.outputs[0]]
    for patches, split in ((None, None), ("auto", "auto")):
        tar = str(tmp_path / f"{patches}.tar")
        meta = compile_model(files[name], tar, patches=patches, split=split).metadata
        assert (meta["patch"] is None) == (patches is None)
        rep = run_model(tar, x=x, check=True)
        got = np.asarray(rep.outputs[0]["values"], np.int8)
        assert np.array_equal(got.reshape(want.shape), want), f"{name} patches={patches}: board != TFLite Micro"
        assert rep.reference_match is True and rep.arena_bytes == rep.predicted_arena_bytes
