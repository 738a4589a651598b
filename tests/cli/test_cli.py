"""``patchnet profile``: output, stable JSON, plot, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import model_path
from tvm_patchnet.cli.main import main
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.runtime import run_graph


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_is_stable_and_complete(capsys):
    code, out, _ = run_cli(capsys, "profile", "mobilenetv2", "--resolution", "224", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["peak_bytes"] == 1_404_928 and d["version"] == 1
    assert {"peak_bytes", "total_macs", "blocks", "layers"} <= d.keys()
    assert {"index", "peak_bytes", "macs"} <= d["blocks"][0].keys()
    assert {"name", "op", "input_shape", "output_shape", "macs", "weight_bytes", "activation_bytes"} <= d["layers"][0].keys()
    assert d["blocks"][0]["peak_bytes"] == 551_936


def test_profile_table_and_plot(capsys, tmp_path):
    png = tmp_path / "sub" / "fig1.png"
    code, out, _ = run_cli(capsys, "profile", model_path("mlperftiny_vww_96_int8.tflite"), "--plot", str(png))
    assert code == 0
    assert "peak activation memory" in out and "conv2d" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_is_fast_and_works():
    r = subprocess.run([sys.executable, "-m", "tvm_patchnet.cli.main", "--help"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and "profile" in r.stdout


#: what progress prints on a non-terminal for long work (tvm_patchnet.progress), before an error
PROGRESS_LINE = re.compile(r"( \.\.\.|: done in \d+\.\d s)$")


def _one_line_error(capsys, *argv) -> str:
    """The error, one line; before it only progress lines (what was running when it failed)."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) >= 1 and all(PROGRESS_LINE.search(x) for x in lines[:-1]), err
    assert lines[-1].startswith("patchnet "), err
    return lines[-1]


def test_unknown_architecture(capsys):
    line = _one_line_error(capsys, "profile", "resnet9000")
    assert "unknown architecture 'resnet9000'" in line and "mobilenetv2" in line


def test_missing_and_corrupt_files(capsys, tmp_path):
    assert "no such file" in _one_line_error(capsys, "profile", str(tmp_path / "nope.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(os.urandom(300))
    assert "not a TFLite flatbuffer" in _one_line_error(capsys, "profile", str(bad))
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(Path(model_path("mlperftiny_vww_96_int8.tflite")).read_bytes()[:4000])
    assert "corrupt TFLite file" in _one_line_error(capsys, "profile", str(cut))
    assert "unknown model format" in _one_line_error(capsys, "profile", str(tmp_path / "model.pb"))


def test_bad_resolution_and_nothing_written(capsys, tmp_path):
    png = tmp_path / "p.png"
    line = _one_line_error(capsys, "profile", "mobilenetv2", "--resolution", "8", "--plot", str(png))
    assert "mobilenetv2" in line
    assert not png.exists() and os.listdir(tmp_path) == []


def test_unsupported_ops_are_all_listed(capsys, tmp_path):
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    buf = Path(model_path("mlperftiny_ad01_int8.tflite")).read_bytes()
    m = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    m.operatorCodes[0].builtinCode = schema.BuiltinOperator.LSTM
    m.operatorCodes[0].deprecatedBuiltinCode = schema.BuiltinOperator.LSTM
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path = tmp_path / "lstm.tflite"
    path.write_bytes(bytes(b.Output()))
    uses = [i for i, op in enumerate(m.subgraphs[0].operators) if op.opcodeIndex == 0]
    line = _one_line_error(capsys, "profile", str(path))
    assert f"{len(uses)} unsupported op(s)" in line
    for i in uses:
        assert f"op {i} LSTM" in line


def test_wrong_input_shape_and_dtype():
    g = load_tflite(model_path("mlperftiny_kws_ref_model.tflite"))
    with pytest.raises(PatchnetError, match=r"shape \[1, 10, 49, 1\], expected \[1, 49, 10, 1\]"):
        run_graph(g, [np.zeros((1, 10, 49, 1), np.int8)])
    with pytest.raises(PatchnetError, match="dtype float32, expected int8"):
        run_graph(g, [np.zeros((1, 49, 10, 1), np.float32)])


def test_readme_json_table_lists_every_key(capsys):
    """The README's --json table names exactly the keys ``profile --json`` prints."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    table = text.split("### `--json` (stable, version 1)", 1)[1].split("\n## ", 1)[0]
    documented = {k.strip("`[]") for row in table.splitlines() if row.startswith("| `")
                  for k in row.split("|")[1].replace(" ", "").split(",")}
    _, out, _ = run_cli(capsys, "profile", "mobilenetv2", "--patches", "2", "--split", "2", "--json")
    assert documented == set(json.loads(out))


def test_readme_layout_lists_every_module():
    """Every module and package of tvm_patchnet appears in the README's layout table."""
    from pathlib import Path

    root = Path(__file__).parents[2]
    table = root.joinpath("README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(?:tvm_patchnet/)?([a-z_]+)(?:\.py|/)`", table))
    pkg = root / "tvm_patchnet"
    modules = {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"} | {p.name for p in pkg.iterdir()
                                                                             if (p / "__init__.py").exists()}
    assert not modules - named, sorted(modules - named)
