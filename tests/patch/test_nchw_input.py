"""Models whose input is NCHW, turned NHWC by a leading TRANSPOSE, patch like the others (issue 8).

The model (``tests/nchw_models.py``): (1, 3, 32, 32) NCHW -> TRANSPOSE perm [0, 2, 3, 1] -> CONV 3x3
s2 SAME -> DW -> CONV 1x1 -> ... -> MEAN -> FULLY_CONNECTED. Inside a patch stage the TRANSPOSE
is a region gather (``patch/planner.py``): a tile's NHWC region of its output is the same rows and
columns, every channel, of the NCHW input, which the stage reads in place (``kernels/layout.py``);
the input patch keeps the input's layout. Checked: host run against TensorFlow Lite Micro,
``--patches auto`` covering the TRANSPOSE with a lower peak, the memory plan of the NCHW input
patch, what TIR allocates, patched outputs bit for bit, other transposes refused in one line,
and (slow) the C model on qemu-m4, layer by layer and patched.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest

from relay_passes import PatchBasedInference
from tests.conftest import tflm_trace
from tests.memory.test_plan import stage_output_counted_throughout
from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU
from tests.nchw_models import TO_NHWC, nchw_model
from tests.pad_models import Net
from tvm_patchnet.cli.main import main
from tvm_patchnet.deploy import compile_model, run_model
from tvm_patchnet.errors import StageError
from tvm_patchnet.execution import plan_execution
from tvm_patchnet.frontend import load_model
from tvm_patchnet.lower import to_relax
from tvm_patchnet.memory import plan_memory
from tvm_patchnet.patch.planner import plan_patches, stage_of
from tvm_patchnet.patch.search import resolve
from tvm_patchnet.patch.stage import build_stage, lowered_allocations
from tvm_patchnet.runtime import build, run_graph, run_module

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def path(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("nchw") / "nchw.tflite"
    p.write_bytes(nchw_model())
    return str(p)


@functools.cache
def _input() -> np.ndarray:
    return np.random.default_rng(8).integers(-128, 128, size=SHAPE, dtype=np.int8)


@functools.cache
def _tflm(path: str) -> dict[str, np.ndarray]:
    """TensorFlow Lite Micro: graph tensor name -> value."""
    g = load_model(path)
    ref = tflm_trace(path, [_input()])
    return {n: ref(k) for n, k in g.meta["tensor_index"].items() if not g.t(n).const}


def test_host_run_is_bit_exact_with_tflite_micro(path):
    g = load_model(path)
    assert g.t(g.inputs[0]).shape == SHAPE and [op.kind for op in g.ops][:2] == ["transpose", "conv2d"]
    assert g.ops[0].block == g.ops[1].block == 0  # the TRANSPOSE joins the stem's block
    want = _tflm(path)
    got = run_graph(g, [_input()], trace=True)
    for tensor, y in got.items():  # every op output
        assert np.array_equal(y.reshape(want[tensor].shape), want[tensor]), tensor
    assert len(np.unique(want[g.outputs[0]])) >= 8


def test_auto_patches_over_the_transpose(path):
    g = load_model(path)
    plan = resolve(g, "auto", "auto").plan
    assert plan is not None and plan.patches > 1
    assert 0 in plan.stage_ops and plan.stage_input == g.inputs[0] and plan.input_layout == "NCHW"
    assert plan.patch_stage_peak_bytes < plan.per_layer_peak_bytes
    assert plan.peak_bytes < plan.per_layer_peak_bytes
    # the input patch keeps the input's layout: every channel of the rows and columns a tile reads
    ih, iw = plan.input_patch
    assert plan.patch_shapes[plan.stage_input] == (1, 3, ih, iw) and ih < 32 and iw < 32
    assert plan.patch_shapes[g.ops[0].outputs[0]][1:] >= (ih, iw, 3)  # NHWC, margins included


def test_profile_reports_the_patched_stage(path, capsys):
    assert main(["profile", path, "--patches", "auto", "--split", "auto", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    p = d["patch"]
    assert p["patches"] > 1 and p["peak_bytes"] < d["peak_bytes"] == p["per_layer_peak_bytes"]
    assert set(p["patch_block_peaks"]) == {str(b) for b in range(p["split"])}
    assert p["patch_block_peaks"]["0"] == p["patch_stage_peak_bytes"]  # the transpose's block
    assert main(["profile", path, "--patches", "auto", "--split", "auto"]) == 0
    assert f"input patch {p['input_patch'][0]}x{p['input_patch'][1]}" in capsys.readouterr().out


def test_memory_plan_counts_the_nchw_input_patch(path):
    g = load_model(path)
    plan = resolve(g, "auto", "auto").plan
    mp = plan_memory(g, plan)  # input_mode "patch": one input patch in the arena
    sizes = {a.name: a.size for a in mp.allocations}
    ih, iw = plan.input_patch
    assert sizes[plan.stage_input] == 3 * ih * iw
    assert mp.arena_bytes == mp.lower_bound_bytes == plan.peak_bytes == stage_output_counted_throughout(g, plan)
    full = plan_memory(g, plan, input_mode="full")  # what compile places
    assert {a.name: a.size for a in full.allocations}[plan.stage_input] == 3 * 32 * 32
    assert full.arena_bytes == full.lower_bound_bytes == mp.arena_bytes_full_input


#: (p, n): what auto picks, the stem block alone, uneven tiles (16 / 3, 8 / 3, 8 / 5), up to block 4
SETTINGS = [(4, 3), (3, 1), (3, 2), (5, 4), (2, 5)]


@pytest.mark.parametrize("p, n", SETTINGS, ids=[f"p{p}-n{n}" for p, n in SETTINGS])
def test_stage_buffers_are_what_tir_allocates(path, p, n):
    g = load_model(path)
    plan = plan_patches(g, p, n)
    stage = build_stage(plan_execution(g, plan))
    allocs = lowered_allocations(stage.func)
    got = {stage.buffers[b]: shape for b, (shape, _, scope) in allocs.items() if scope == "global"}
    assert got == plan.stage_buffers  # the transposed patch among them, NHWC with its margins
    assert g.ops[0].outputs[0] in got


@functools.cache
def _unpatched(path: str) -> dict[str, np.ndarray]:
    g = load_model(path)
    return run_graph(g, [_input()], trace=True)


@pytest.mark.parametrize("p, n", SETTINGS, ids=[f"p{p}-n{n}" for p, n in SETTINGS])
def test_patched_outputs_equal_the_unpatched(path, p, n):
    g = load_model(path)
    stage_out = plan_patches(g, p, n).stage_output
    g2 = dataclasses.replace(g, outputs=[stage_out, *g.outputs])  # the stage output itself too
    plan = plan_patches(g2, p, n)
    outs = run_module(build(PatchBasedInference(g2, plan)(to_relax(g2))), [_input()])
    want, ref = _unpatched(path), _tflm(path)
    for tensor, y in zip(g2.outputs, outs):
        assert np.array_equal(y.reshape(want[tensor].shape), want[tensor]), f"p={p} n={n}: {tensor}"
        assert np.array_equal(y.reshape(ref[tensor].shape), ref[tensor]), f"p={p} n={n}: {tensor} != TFLM"


# ----------------------------------------------------------------------------- what stays refused
def _inner_transpose() -> bytes:
    """NHWC input -> CONV 3x3 | TRANSPOSE H <-> W -> CONV 3x3 | CONV 3x3: a stage tensor transposed."""
    n = Net((1, 8, 8, 4), seed=31)
    n.conv(8, 3).transpose((0, 2, 1, 3)).conv(8, 3).conv(8, 3)
    return n.finish()


def _channels_first() -> bytes:
    """NHWC input -> TRANSPOSE perm [0, 3, 1, 2] (channels first) -> CONV 3x3 | CONV 3x3."""
    n = Net((1, 8, 8, 4), seed=32)
    n.transpose((0, 3, 1, 2)).conv(8, 3).conv(8, 3)
    return n.finish()


def _input_read_twice() -> bytes:
    """NCHW input (1, 8, 8, 8) -> TRANSPOSE -> CONV 3x3 -> ADD(that, the NCHW input) -> CONV 3x3 |
    CONV 3x3 (the fork of the input keeps the ADD and the conv after it in block 0)."""
    n = Net((1, 8, 8, 8), seed=33)
    n.transpose(TO_NHWC).conv(8, 3)
    conv, shape = n.x, n.shape
    out = n._out(shape, n.scale, n.zp, "add")
    n.b.op("ADD", [conv, n.input], [out], {"fused_activation_function": None})
    return n.conv(8, 3).conv(8, 3).finish()


REFUSED = {
    "inner": (_inner_transpose, 2, (
        r"op 1 'transpose_\d+' \(transpose\) in block 1 transposes a stage tensor: cannot run per patch \(only a "
        r"TRANSPOSE of the stage input by perm \[0, 2, 3, 1\], NCHW to NHWC, can\); choose a split <= 1")),
    "channels-first": (_channels_first, 1, (
        r"op 0 'transpose_\d+' \(transpose\) in block 0 transposes the stage input by perm \[0, 3, 1, 2\]: "
        r"cannot run per patch")),
    "input-read-twice": (_input_read_twice, 1, (
        r"op 2 'add_\d+' \(add\) in block 0 reads the NCHW stage input directly \(not through its TRANSPOSE "
        r"to NHWC\): cannot run per patch")),
}


@pytest.mark.parametrize("name", REFUSED)
def test_other_transposes_stay_obstacles(name, tmp_path):
    make, split, message = REFUSED[name]
    f = tmp_path / "m.tflite"
    f.write_bytes(make())
    g = load_model(str(f))
    assert g.num_blocks > split
    with pytest.raises(StageError, match=message):
        stage_of(g, split)


# ----------------------------------------------------------------------------- on the board
@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_on_qemu_bit_exact_layer_by_layer_and_patched(path, tmp_path):
    g = load_model(path)
    want = _tflm(path)[g.outputs[0]]
    for patches, split in ((None, None), ("auto", "auto")):
        tar = str(tmp_path / f"{patches}.tar")
        meta = compile_model(path, tar, patches=patches, split=split).metadata
        plan = resolve(g, patches, split).plan
        assert (meta["patch"] is None) == (plan is None) and (plan is None) == (patches is None)
        # the arena the C declares is the memory plan's (the whole input in it, as compile places it)
        assert meta["arena_bytes"] == plan_memory(g, plan, input_mode="full").arena_bytes
        rep = run_model(tar, x=_input(), check=True)
        got = np.asarray(rep.outputs[0]["values"], np.int8)
        assert np.array_equal(got.reshape(want.shape), want), f"patches={patches}: board != TFLite Micro"
        assert rep.reference_match is True and rep.arena_bytes == rep.predicted_arena_bytes
