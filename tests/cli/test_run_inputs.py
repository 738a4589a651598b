"""``patchnet run --input``: an .npy for a one-input model, an .npz (keys: the input names, or
arr_0, arr_1, ... in order) for several; a wrong key, shape or dtype is one line, before any build."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cli.test_cli import _one_line_error
from tests.io_models import two_inputs

FRAME, DEPTH = ((1, 8, 8, 4), np.int8), ((1, 8, 8, 2), np.float32)


@pytest.fixture(scope="module")
def two_input_tar(tmp_path_factory):
    from tvm_patchnet.deploy import compile_model

    d = tmp_path_factory.mktemp("inputs")
    buf, _ = two_inputs(np.random.default_rng(0))
    (d / "m.tflite").write_bytes(buf)
    compile_model(str(d / "m.tflite"), str(d / "m.tar"))
    return str(d / "m.tar")


def _zeros(spec):
    return np.zeros(*spec)


@pytest.mark.parametrize("arrays, expect", [
    ({"frame": _zeros(FRAME)},
     "inputs: missing 'depth' (the model's inputs: 'frame', 'depth', or arr_0.. in order)"),
    ({"frame": _zeros(FRAME), "depth": _zeros(DEPTH), "mask": _zeros(DEPTH)}, "inputs: unknown 'mask'"),
    ({"arr_0": _zeros(FRAME)}, "inputs: missing 'frame', 'depth'; unknown 'arr_0'"),
    ({"frame": _zeros(FRAME), "depth": np.zeros((1, 8, 8, 3), np.float32)},
     "input 'depth' has shape [1, 8, 8, 3] float32, the model expects [1, 8, 8, 2] float32"),
    ({"arr_0": _zeros(FRAME), "arr_1": np.zeros(DEPTH[0], np.float64)},
     "input 'depth' has shape [1, 8, 8, 2] float64, the model expects [1, 8, 8, 2] float32"),
])
def test_npz_problems_are_one_line(two_input_tar, tmp_path, capsys, arrays, expect):
    np.savez(tmp_path / "x.npz", **arrays)
    line = _one_line_error(capsys, "run", two_input_tar, "--input", str(tmp_path / "x.npz"))
    assert line.startswith(f"patchnet run: error: {expect}")


def test_npy_for_a_two_input_model_and_unreadable_files(two_input_tar, tmp_path, capsys):
    np.save(tmp_path / "x.npy", _zeros(FRAME))
    assert _one_line_error(capsys, "run", two_input_tar, "--input", str(tmp_path / "x.npy")) == (
        "patchnet run: error: one input given, the model takes 2: 'frame', 'depth' (pass them in an .npz)")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert "bad.npz: cannot read input" in _one_line_error(capsys, "run", two_input_tar, "--input",
                                                           str(tmp_path / "bad.npz"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "obj.npy: cannot read input" in _one_line_error(capsys, "run", two_input_tar, "--input",
                                                           str(tmp_path / "obj.npy"))


def test_default_inputs_are_seeded_in_each_inputs_dtype(two_input_tar, tmp_path):
    from tvm_patchnet.archive import read_archive
    from tvm_patchnet.deploy import model_inputs

    meta = read_archive(two_input_tar, str(tmp_path / "m"))
    frame, depth = model_inputs(meta, None)
    assert (frame.shape, frame.dtype, depth.shape, depth.dtype) == (FRAME[0], np.int8, DEPTH[0], np.float32)
    assert len(np.unique(frame)) > 100 and np.array_equal(model_inputs(meta, None)[1], depth)
