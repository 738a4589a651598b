"""Models with float32 inputs and outputs, several outputs and several inputs, compiled and run on
the emulated Cortex-M4F (qemu-m4) through ``patchnet run --input x.npz --check --json``: every
output equals TensorFlow Lite Micro's bit for bit (float32: the same floats, computed on the
board's FPU and software double), and the host reference agrees."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from tests.cli.test_cli import run_cli
from tests.conftest import tflm_trace
from tests.io_models import IO_MODELS
from tvm_patchnet.deploy import compile_model, run_model
from tvm_patchnet.frontend.tflite import load_tflite

from .conftest import NEEDS_GCC, NEEDS_QEMU

pytestmark = [NEEDS_GCC, NEEDS_QEMU, pytest.mark.slow]


def _tflm_outputs(buf: bytes, path: str, inputs) -> list[np.ndarray]:
    g = load_tflite(path)
    ref = tflm_trace(buf, inputs)
    return [ref(g.meta["tensor_index"][n]) for n in g.outputs]


def _equal(report_output: dict, want: np.ndarray) -> bool:
    got = np.asarray(report_output["values"], dtype=report_output["dtype"])
    return report_output["shape"] == list(want.shape) and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("key", list(IO_MODELS))
def test_io_model_on_qemu_equals_tflite_micro(key, tmp_path, capsys):
    buf, inputs = IO_MODELS[key](np.random.default_rng(23))
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    tar = tmp_path / "m.tar"
    compile_model(str(path), str(tar))
    names = [e["name"] for e in json.loads(_metadata(tar))["inputs"]]
    npz = tmp_path / "x.npz"
    if key == "two-inputs":
        np.savez(npz, *inputs)  # arr_0, arr_1: the inputs in order
    else:
        np.savez(npz, **dict(zip(names, inputs)))
    code, out, _ = run_cli(capsys, "run", str(tar), "--input", str(npz), "--check", "--json")
    assert code == 0
    d = json.loads(out)
    want = _tflm_outputs(buf, str(path), inputs)
    assert d["reference_match"] is True and d["mismatches"] == [] and len(d["outputs"]) == len(want)
    assert all(_equal(o, w) for o, w in zip(d["outputs"], want)), key
    assert d["input_bytes"] == sum(x.nbytes for x in inputs) and d["output_bytes"] == sum(w.nbytes for w in want)
    assert d["arena_bytes"] == d["predicted_arena_bytes"] and d["instructions"] > 0


def test_patched_float_model_and_text_report(tmp_path, capsys):
    """float32 in and out with the QUANTIZE inside a 2x2 patch stage; the text report prints
    every output."""
    buf, inputs = IO_MODELS["float-edges"](np.random.default_rng(29))
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    tar = tmp_path / "m.tar"
    compile_model(str(path), str(tar), patches=2, split=2)
    rep = run_model(str(tar), x=inputs[0], check=True)
    assert rep.reference_match is True and rep.patched
    assert all(y.tobytes() == w.tobytes() for y, w in zip(rep.arrays(), _tflm_outputs(buf, str(path), inputs)))
    buf, inputs = IO_MODELS["three-heads"](np.random.default_rng(29))
    path.write_bytes(buf)
    tar = tmp_path / "heads.tar"
    compile_model(str(path), str(tar))
    np.save(tmp_path / "x.npy", inputs[0])
    code, out, _ = run_cli(capsys, "run", str(tar), "--input", str(tmp_path / "x.npy"), "--check")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == "host int8 reference: identical"
    shown = [ln for ln in lines if ln.startswith("output '")]
    assert [ln.split(":")[0] for ln in shown] == ["output 't14' [1, 128, 3] int8", "output 't9' [1, 8, 8, 4] int8",
                                                  "output 't20' [1, 5] float32"]
    assert shown[0].endswith(", ...]") and not shown[2].endswith(", ...]")


def _metadata(tar) -> bytes:
    with tarfile.open(tar) as t:
        return t.extractfile("metadata.json").read()
