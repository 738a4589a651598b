"""``rewrite.fold_pad``: which PADs fold into the next op's padding, and that the folded graph
computes exactly what TensorFlow Lite Micro computes on the original file.

Each case is a small TFLite model (``tests/pad_models.py``); the folded graph comes from
``load_model`` (import, then ``rewrite.simplify``), the unfolded one from ``load_tflite``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tflm_trace
from tests.pad_models import Net, stem_model
from tvm_patchnet.analysis.blocks import assign_blocks
from tvm_patchnet.frontend import load_model
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.rewrite import REWRITES, fold_pad, simplify
from tvm_patchnet.runtime import run_graph


def _load(tmp_path, buf: bytes, name: str = "m"):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    return str(path), load_tflite(str(path)), load_model(str(path))


def _check_outputs(path: str, folded, seed: int = 0) -> None:
    """Every graph output of ``folded`` equals TFLite Micro's on the original file, bit for bit."""
    x = np.random.default_rng(seed).integers(-128, 128, size=folded.t(folded.inputs[0]).shape, dtype=np.int8)
    ref = tflm_trace(path, [x])
    got = run_graph(folded, [x])
    for name, y in zip(folded.outputs, got):
        want = ref(folded.meta["tensor_index"][name])
        assert len(np.unique(want)) > 8, f"degenerate output {name}: the comparison would prove little"
        assert np.array_equal(y.reshape(want.shape), want), f"{name} differs from TFLite Micro"


def _kinds(g) -> list[str]:
    return [op.kind for op in g.ops]


def test_the_stem_folds_every_pad(tmp_path):
    path, raw, g = _load(tmp_path, stem_model())
    assert _kinds(raw).count("pad") == 3 and len(raw.ops) == 12
    assert "pad" not in _kinds(g) and len(g.ops) == 9
    pads = {op.name: op.attrs["padding"] for op in g.ops if "padding" in op.attrs}
    # PAD((0,1),(0,1)) + VALID -> bottom/right 1; PAD((1,1),(1,1)) + VALID -> 1 on every side
    assert pads["conv_2d_1"] == (0, 0, 1, 1)
    assert pads["depthwise_conv_2d_4"] == pads["depthwise_conv_2d_7"] == (1, 1, 1, 1)
    assert pads["depthwise_conv_2d_2"] == (1, 1, 1, 1)  # its own SAME padding, untouched
    # the conv reads the PAD's input now; names of kept tensors, inputs, outputs unchanged
    assert g.ops[0].inputs[0] == raw.inputs[0] == g.inputs[0] and g.outputs == raw.outputs
    removed = {op.outputs[0] for op in raw.ops if op.kind == "pad"}
    assert set(raw.tensors) - set(g.tensors) == removed
    assert set(g.meta["tensor_index"]) == set(raw.meta["tensor_index"]) - removed
    assert all(g.meta["tensor_index"][n] == raw.meta["tensor_index"][n] for n in g.meta["tensor_index"])
    # blocks: what the importer's rule gives the folded graph, and the same count as before
    blocks = [op.block for op in g.ops]
    assign_blocks(g)
    assert [op.block for op in g.ops] == blocks and g.num_blocks == raw.num_blocks == 4
    g.validate()
    _check_outputs(path, g)


def test_the_rewrite_leaves_its_input_alone_and_is_listed(tmp_path):
    _, raw, _ = _load(tmp_path, stem_model())
    before = [(op.inputs[0], dict(op.attrs), op.block) for op in raw.ops]
    folded = simplify(raw)
    assert len(folded.ops) == 9
    assert [(op.inputs[0], dict(op.attrs), op.block) for op in raw.ops] == before and len(raw.ops) == 12
    assert fold_pad(folded) is folded  # nothing left to do: the same graph back
    assert [name for name, _ in REWRITES] == ["fold_pad"]


def _pad_then(kind: str, zp: int = -5, pads=(1, 1, 1, 1), pool=3, padding="VALID", stride=1, **pad_kw) -> bytes:
    """18x18x4 -> PAD -> ``kind`` -> CONV 1x1."""
    n = Net((1, 18, 18, 4), seed=21, zero_point=zp)
    n.pad(*pads, **pad_kw)
    if kind == "conv":
        n.conv(8, 3, stride, padding)
    elif kind == "dw":
        n.dw(3, stride, padding)
    else:
        n.pool(kind, pool, stride, padding)
    return n.conv(8, 1).finish()


# (case, model, PADs left after folding)
CASES = [
    ("conv-stride-2", lambda: _pad_then("conv", pads=(0, 1, 0, 1), stride=2), 0),
    ("conv-same-plus-pad", lambda: _pad_then("conv", pads=(2, 0, 1, 3), padding="SAME"), 0),
    ("depthwise", lambda: _pad_then("dw", pads=(1, 1, 1, 1), stride=2), 0),
    # max pool ignores padded taps: exact when the fill is -128, which never wins
    ("max-pool-fill-minus-128", lambda: _pad_then("MAX_POOL_2D", zp=-128), 0),
    ("max-pool-other-fill", lambda: _pad_then("MAX_POOL_2D", zp=-5), 1),
    # a 2x2 window at padding 2 would lie wholly in the padding: TFLite refuses such a pool
    ("max-pool-window-in-padding", lambda: _pad_then("MAX_POOL_2D", zp=-128, pads=(2, 0, 2, 0), pool=2), 1),
    # average pool divides by its in-map taps: the PAD's values count, its padding would not
    ("avg-pool", lambda: _pad_then("AVERAGE_POOL_2D"), 1),
    ("channels-padded", lambda: _pad_then("conv", channels=(0, 2)), 1),
    # PADV2: its constant is the fill; a conv's padding means the zero point, a max pool's -128
    ("padv2-zero-point", lambda: _pad_then("conv", value=-5), 0),
    ("padv2-other-fill-conv", lambda: _pad_then("conv", value=-128), 1),
    ("padv2-minus-128-max-pool", lambda: _pad_then("MAX_POOL_2D", zp=-5, value=-128), 0),
]


@pytest.mark.parametrize("case, make, left", CASES, ids=[c[0] for c in CASES])
def test_pad_folds_only_where_exact(tmp_path, case, make, left):
    path, raw, g = _load(tmp_path, make(), case)
    assert _kinds(g).count("pad") == left and len(g.ops) == len(raw.ops) - (1 - left)
    _check_outputs(path, g)


def test_a_pad_read_by_two_convs_folds_into_both(tmp_path):
    n = Net((1, 16, 16, 4), seed=22)
    fork = n.pad(1, 1, 1, 1).state()
    a = n.dw(3, 2, "VALID").x
    b = n.resume(fork).conv(6, 3).x
    path, _, g = _load(tmp_path, n.finish([a, b]))
    assert _kinds(g) == ["depthwise_conv2d", "conv2d"]
    assert [op.attrs["padding"] for op in g.ops] == [(1, 1, 1, 1), (2, 2, 2, 2)]  # VALID + 1, SAME 1 + 1
    _check_outputs(path, g)


def test_a_pad_read_by_a_conv_and_an_average_pool_stays(tmp_path):
    n = Net((1, 16, 16, 4), seed=23)
    fork = n.pad(1, 1, 1, 1).state()
    a = n.conv(6, 3, 1, "VALID").x
    b = n.resume(fork).pool("AVERAGE_POOL_2D", 3).x
    path, _, g = _load(tmp_path, n.finish([a, b]))
    assert _kinds(g) == ["pad", "conv2d", "avg_pool2d"]
    _check_outputs(path, g)


def test_a_pad_that_is_a_graph_output_stays(tmp_path):
    n = Net((1, 16, 16, 4), seed=24)
    p = n.pad(1, 1, 1, 1).x
    path, _, g = _load(tmp_path, n.conv(6, 3, 1, "VALID").finish([p, n.x]))
    assert _kinds(g) == ["pad", "conv2d"]
    _check_outputs(path, g)


def test_a_chain_of_pads_folds_from_the_conv_back(tmp_path):
    n = Net((1, 16, 16, 4), seed=25)
    path, _, g = _load(tmp_path, n.pad(1, 0, 0, 0).pad(0, 2, 1, 1).conv(6, 3, 2, "VALID").finish())
    assert _kinds(g) == ["conv2d"] and g.ops[0].attrs["padding"] == (1, 1, 2, 1)
    _check_outputs(path, g)


def test_a_pad_that_requantizes_stays(tmp_path):
    # TFLite's PAD keeps the quantization; a graph whose PAD changes it (written by another tool)
    # is not folded: the conv would read the input with the wrong scale and zero point
    n = Net((1, 16, 16, 4), seed=26)
    _, _, g = _load(tmp_path, n.pad(1, 1, 1, 1, quant=(0.03, -5)).conv(6, 3, 1, "VALID").finish())
    assert _kinds(g) == ["pad", "conv2d"]
