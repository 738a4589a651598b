"""Calibration from the command line and the float check: a small CNN trained here on generated
patterns (seconds on CPU), exported to ONNX, quantized with ``--calibration`` on samples of its
own input distribution, run on qemu-m4 with ``--check --check-float``; the random-calibration
warning; one-line errors for bad calibration data; ``compile_model`` with a graph quantized in
Python (stored in the archive as ``src/graph.npz``, the host reference of ``run --check``)."""

from __future__ import annotations

import json
import runpy
import shlex
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.cli.test_cli import _one_line_error, run_cli
from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU

RES = 24
CLASSES = 4
#: per-channel offsets and gain of the inputs: far from the standard normal a random calibration assumes
OFFSET = np.array([1.5, -0.5, 0.8], np.float32).reshape(1, 3, 1, 1)


def _patterns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` NCHW float32 images of four classes (horizontal, vertical, diagonal stripes, a blob)
    with random phase, period, tint and noise; and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:RES, 0:RES].astype(np.float32)
    labels = rng.integers(0, CLASSES, n)
    out = np.empty((n, 3, RES, RES), np.float32)
    for i, k in enumerate(labels):
        period, phase = rng.uniform(3, 7), rng.uniform(0, 2 * np.pi)
        if k == 0:
            p = np.sin(2 * np.pi * yy / period + phase)
        elif k == 1:
            p = np.sin(2 * np.pi * xx / period + phase)
        elif k == 2:
            p = np.sin(2 * np.pi * (xx + yy) / period + phase)
        else:
            cy, cx = rng.uniform(6, RES - 6, 2)
            p = 2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0) - 0.5
        tint = rng.uniform(0.6, 1.4, (3, 1, 1)).astype(np.float32)
        out[i] = 2.0 * p[None] * tint + rng.normal(0, 0.3, (3, RES, RES))
    return out + OFFSET, labels


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, model.onnx, calib.npz, test images NCHW, test labels, float accuracy)."""
    d = tmp_path_factory.mktemp("calib")
    torch.manual_seed(0)
    x, y = _patterns(768, seed=1)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    for _ in range(6):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    net.eval()
    xtest, ytest = _patterns(64, seed=2)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(xtest)).argmax(1).numpy() == ytest).mean())
    onnx_path = str(d / "model.onnx")
    # the README's call: the default (dynamo) exporter writes the weights beside, in model.onnx.data
    torch.onnx.export(net, (torch.from_numpy(xtest[:1]),), onnx_path, input_names=["image"],
                      output_names=["logits"])
    assert (d / "model.onnx.data").exists()
    calib = str(d / "calib.npz")
    np.savez(calib, _patterns(64, seed=3)[0])  # real-distribution samples, NCHW
    return d, onnx_path, calib, xtest, ytest, acc


def _int8_nhwc(meta_input: dict, x_nchw: np.ndarray) -> np.ndarray:
    """An NCHW float image as the archive's int8 NHWC input (its scale and zero point)."""
    v = x_nchw.transpose(0, 2, 3, 1).astype(np.float64) / meta_input["scale"]
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + meta_input["zero_point"], -128, 127).astype(np.int8)


def _metadata(tar_path) -> dict:
    with tarfile.open(tar_path) as t:
        return json.load(t.extractfile("metadata.json"))


def test_model_trains(trained):
    assert trained[5] >= 0.9, trained[5]


def test_host_int8_tracks_float_only_with_calibration(trained, capsys):
    """On the host, over 16 test images: real calibration keeps the int8 graph on the float model;
    the 8 random normal samples do not see these inputs' ranges."""
    from tvm_patchnet.frontend import load_model
    from tvm_patchnet.frontend.float_exec import run_float
    from tvm_patchnet.frontend.torch_onnx import import_onnx
    from tvm_patchnet.lower import to_relax
    from tvm_patchnet.ptq import dequantize_output, quantize_input
    from tvm_patchnet.runtime import build, run_module

    _, onnx_path, calib, xtest, _, _ = trained
    x = xtest[:16].transpose(0, 2, 3, 1)
    ref = run_float(import_onnx(onnx_path), x)[0]
    stats = {}
    for name, cal in (("calibrated", calib), ("random", None)):
        g = load_model(onnx_path, calibration=cal)
        vm = build(to_relax(g))
        got = np.concatenate([dequantize_output(g, run_module(vm, [quantize_input(g, x[i:i + 1])])[0])
                              for i in range(len(x))])
        cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
        stats[name] = (cos, float((got.argmax(1) == ref.argmax(1)).mean()))
    sys.__stdout__.write(f"\nhost int8 vs float on 16 test images (cosine, top-1): {stats}\n")
    assert stats["calibrated"][0] >= 0.99 and stats["calibrated"][1] >= 0.9, stats
    assert stats["calibrated"][0] > stats["random"][0], stats
    assert "quantized on 8 random inputs" in capsys.readouterr().err


def test_random_calibration_warns_once(trained, capsys):
    _, onnx_path, calib, *_ = trained
    code, out, err = run_cli(capsys, "profile", onnx_path)
    assert code == 0 and "peak activation memory" in out
    assert err.strip().splitlines() == [
        "warning: model.onnx quantized on 8 random inputs; pass --calibration for real accuracy"]
    code, _, err = run_cli(capsys, "profile", onnx_path, "--calibration", calib)
    assert code == 0 and "warning" not in err
    code, out, err = run_cli(capsys, "-q", "profile", onnx_path)  # -q: results only
    assert code == 0 and "peak activation memory" in out and err == ""


def test_bad_calibration_is_one_line(trained, capsys, tmp_path):
    from PIL import Image

    _, onnx_path, calib, xtest, *_ = trained
    nhwc = tmp_path / "nhwc.npy"
    np.save(nhwc, xtest[:4].transpose(0, 2, 3, 1))
    line = _one_line_error(capsys, "profile", onnx_path, "--calibration", str(nhwc))
    assert "nhwc.npy" in line and "shape (4, 24, 24, 3)" in line and "(N, 3, 24, 24)" in line, line
    ints = tmp_path / "ints.npy"
    np.save(ints, (xtest[:4] * 10).astype(np.int32))
    line = _one_line_error(capsys, "profile", onnx_path, "--calibration", str(ints))
    assert "ints.npy" in line and "dtype int32" in line, line
    line = _one_line_error(capsys, "compile", onnx_path, "--calibration", str(tmp_path / "missing.npz"),
                           "-o", str(tmp_path / "m.tar"))
    assert "missing.npz: no such calibration file" in line, line
    assert not (tmp_path / "m.tar").exists()
    two = tmp_path / "two.npz"
    np.savez(two, x=xtest[:2], y=np.zeros(2))
    assert "holds 2 arrays" in _one_line_error(capsys, "profile", onnx_path, "--calibration", str(two))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty: calibration folder has no .npy or image files" in \
        _one_line_error(capsys, "profile", onnx_path, "--calibration", str(empty))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.full((30, 30, 3), 128, np.uint8)).save(imgs / "a.png")
    (imgs / "b.jpg").write_bytes(b"not a jpeg")
    line = _one_line_error(capsys, "profile", onnx_path, "--calibration", str(imgs), "--mean", "0.5,0.5,0.5",
                           "--std", "0.25")
    assert "b.jpg: cannot read the image" in line, line
    line = _one_line_error(capsys, "profile", onnx_path, "--calibration", str(imgs), "--mean", "0.5,0.5")
    assert "--mean: expected 1 or 3 numbers" in line, line
    assert "apply to a folder of images" in _one_line_error(capsys, "profile", onnx_path, "--calibration", calib,
                                                             "--mean", "0.5")
    line = _one_line_error(capsys, "profile", "mobilenetv2", "--calibration", calib)
    assert "apply to float models (.onnx)" in line, line


def test_image_folder_calibration(trained, capsys, tmp_path):
    """A folder of PNGs, resized and normalised per channel, calibrates the model."""
    from PIL import Image

    _, onnx_path, *_ = trained
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    code, _, err = run_cli(capsys, "profile", onnx_path, "--calibration", str(tmp_path), "--mean", "0.5,0.5,0.5",
                           "--std", "0.2,0.2,0.2")
    assert code == 0 and err == "", err


@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_calibrated_onnx_on_qemu_matches_float(trained, capsys, tmp_path):
    _, onnx_path, calib, xtest, ytest, _ = trained
    tar = tmp_path / "m.tar"
    code, out, err = run_cli(capsys, "compile", onnx_path, "--calibration", calib, "-o", str(tar))
    assert code == 0 and "warning" not in err, err
    assert "quantized on 64 calibration input(s) from calib.npz" in out
    meta = _metadata(tar)
    assert meta["source"] == {"file": "src/model.onnx", "graph": "src/graph.npz",
                              "calibration": {"source": "calib.npz", "samples": 64},
                              "compile_args": [onnx_path, "--calibration", calib]}  # for hints that run
    with tarfile.open(tar) as t:  # the float model travels whole: its external weights embedded
        assert "src/graph.npz" in t.getnames() and t.getmember("src/model.onnx").size > 10_000
    i = int(np.flatnonzero(ytest == 1)[0])
    x = tmp_path / "x.npy"
    np.save(x, xtest[i:i + 1])  # float NCHW, quantized by run as the int8 input below
    code, out, err = run_cli(capsys, "run", str(tar), "--input", str(x), "--check", "--check-float", "--json")
    assert code == 0, err
    rep = json.loads(out)
    sys.__stdout__.write(f"\nfloat_reference {rep['float_reference']}\n")
    xq = tmp_path / "xq.npy"
    np.save(xq, _int8_nhwc(meta["inputs"][0], xtest[i:i + 1]))
    code, out2, err = run_cli(capsys, "run", str(tar), "--input", str(xq), "--check-float")
    assert code == 0, err
    lines = out2.strip().splitlines()
    assert lines[-1].startswith("float reference: max |diff| ") and "top-1 agreement 100%" in lines[-1], lines
    assert rep["outputs"] == [_outputs_of(out2, rep)], "the float image and its int8 tensor ran the same"
    assert rep["reference_match"] is True and rep["mismatches"] == []
    fr = rep["float_reference"]
    assert fr["cosine"] >= 0.99 and fr["top1_agreement"] == 1.0, fr
    assert fr["max_abs_diff"] < 0.1 * fr["output_range"], fr
    assert fr["outputs"][0]["name"] == meta["outputs"][0]["name"]


def _outputs_of(text: str, rep: dict) -> dict:
    """The first output of a text report, as ``--json`` lists it (the model has four logits)."""
    line = next(ln for ln in text.splitlines() if ln.startswith("output "))
    values = [int(v) for v in line.split("[", 2)[2].rstrip("]").split(", ")]
    o = rep["outputs"][0]
    return {**o, "values": np.array(values, o["dtype"]).reshape(o["shape"]).tolist()}


def _readme_recipe() -> tuple[str, list[list[str]]]:
    """The README's PyTorch recipe: its Python block and its patchnet commands."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    part = text.split("## Your own PyTorch model", 1)[1].split("\n## ", 1)[0]
    code = part.split("```python\n", 1)[1].split("```", 1)[0]
    cmds = [shlex.split(ln[2:])[1:] for ln in part.splitlines() if ln.startswith("$ .venv/bin/patchnet ")]
    return code, cmds


@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_readme_recipe_runs_as_written(capsys, tmp_path, monkeypatch):
    code, cmds = _readme_recipe()
    assert [c[0] for c in cmds] == ["compile", "run"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.py").write_text(code)
    runpy.run_path(str(tmp_path / "recipe.py"))
    outs = []
    for argv in cmds:
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 0 and "warning" not in err, (argv, err)
        outs.append(out)
    assert "quantized on 64 calibration input(s) from calib.npz" in outs[0]
    lines = outs[1].strip().splitlines()
    sys.__stdout__.write(f"\nREADME recipe: {lines[-2:]}\n")
    assert lines[-2] == "host int8 reference: identical"
    cos = float(lines[-1].split("cosine ")[1].split(",")[0])
    assert lines[-1].startswith("float reference: max |diff| ") and cos >= 0.99, lines[-1]


def test_float_check_text():
    from tvm_patchnet.cli.run import format_float_check

    line = format_float_check({"max_abs_diff": 0.05, "output_range": 10.0, "cosine": 0.99991, "top1_agreement": 1.0})
    assert line == "max |diff| 0.05 (0.50% of the output range), cosine 0.999910, top-1 agreement 100%"


def test_check_float_without_float_model_is_one_line(capsys, tmp_path):
    from tests.conftest import model_path
    from tvm_patchnet.deploy import compile_model

    tar = tmp_path / "hello.tar"
    compile_model(model_path("tflm_hello_world_int8.tflite"), str(tar))
    line = _one_line_error(capsys, "run", str(tar), "--check-float")
    assert "int8 TFLite model" in line and "no float model" in line, line


def _python_graph(trained):
    """The trained model quantized in Python: import_onnx + ptq.quantize on an NCHW array."""
    from tvm_patchnet.frontend.torch_onnx import import_onnx
    from tvm_patchnet.ptq import quantize

    _, onnx_path, calib, *_ = trained
    return quantize(import_onnx(onnx_path), np.load(calib)["arr_0"])


def test_compile_model_takes_a_graph(trained, tmp_path):
    from tvm_patchnet.archive import load_graph
    from tvm_patchnet.deploy import compile_model
    from tvm_patchnet.runtime import run_graph

    g = _python_graph(trained)
    res = compile_model(g, str(tmp_path / "g"))
    assert res.metadata["source"] == {"graph": "src/graph.npz"}
    back = load_graph(str(tmp_path / "g" / "src" / "graph.npz"))
    x = np.random.default_rng(0).integers(-128, 128, g.t(g.inputs[0]).shape, dtype=np.int8)
    assert run_graph(back, [x])[0].tobytes() == run_graph(g, [x])[0].tobytes()
    assert [op.attrs for op in back.ops] == [op.attrs for op in g.ops]


def test_bad_stored_graph_is_one_line(trained, capsys, tmp_path):
    """src/graph.npz is untrusted: a tampered file fails in one line before any build."""
    from tvm_patchnet.deploy import compile_model

    out = tmp_path / "g"
    compile_model(_python_graph(trained), str(out))
    npz = out / "src" / "graph.npz"
    data = dict(np.load(npz))
    head = json.loads(data["graph.json"].tobytes())
    head["ops"][0]["attrs"]["strides"] = {"tuple": [0, 1]}
    data["graph.json"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
    np.savez(npz, **data)
    line = _one_line_error(capsys, "run", str(out), "--check")
    assert "src/graph.npz" in line and "stride" in line, line
    npz.write_bytes(b"PK\x03\x04 garbage")
    line = _one_line_error(capsys, "run", str(out), "--check")
    assert "src/graph.npz: not a valid patchnet int8 graph" in line, line
    line = _one_line_error(capsys, "run", str(out), "--check-float")
    assert "int8 graph built in Python" in line, line


@pytest.mark.slow
@NEEDS_GCC
@NEEDS_QEMU
def test_python_graph_runs_with_check(trained, capsys, tmp_path):
    from tvm_patchnet.deploy import compile_model

    tar = tmp_path / "g.tar"
    compile_model(_python_graph(trained), str(tar))
    code, out, err = run_cli(capsys, "run", str(tar), "--check")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "host int8 reference: identical"


def test_archive_rules_know_the_stored_graph(trained, tmp_path):
    """src/graph.npz is a member of the format (nothing near it is); source.graph names only it."""
    from tvm_patchnet.archive import member_kind, validate_metadata
    from tvm_patchnet.deploy import compile_model

    assert member_kind("src/graph.npz") == "file" and member_kind("./src/graph.npz") == "file"
    assert member_kind("src/graph.npy") is None and member_kind("src/graph.npz/x") is None
    meta = compile_model(_python_graph(trained), str(tmp_path / "g")).metadata
    assert validate_metadata(meta) == []
    bad = json.loads(json.dumps(meta))
    bad["source"] = {"graph": "src/../../etc/passwd", "calibration": {"source": "x.npz", "samples": 0}}
    problems = validate_metadata(bad)
    assert any("metadata.source.graph: expected src/graph.npz" in p for p in problems), problems
    assert any("metadata.source.calibration.samples" in p for p in problems), problems
