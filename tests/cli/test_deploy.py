"""``patchnet compile`` / ``run`` / ``micro``: archive contents, a QEMU run checked against the
host reference, and one-line errors."""

from __future__ import annotations

import json
import re
import shlex
import tarfile

import numpy as np
import pytest

from tests.cli.test_cli import _one_line_error, run_cli
from tests.conftest import model_path

KWS = "mlperftiny_kws_ref_model.tflite"


@pytest.fixture(scope="module")
def kws_tar(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "kws.tar"
    from tvm_patchnet.deploy import compile_model

    compile_model(model_path(KWS), str(out), patches=2, split=2)
    return out


def test_archive_layout_and_metadata(kws_tar):
    with tarfile.open(kws_tar) as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile("metadata.json"))
    assert "codegen/host/src/model.c" in names and "codegen/host/include/model.h" in names
    assert "src/model.tflite" in names  # what was compiled, for the host reference
    assert meta["patch"]["patches"] == 2 and meta["patch"]["split"] == 2
    assert meta["arena_bytes"] > 0 and meta["weight_bytes"] > 0
    assert meta["version"] == 4 and len(meta["inputs"]) == len(meta["outputs"]) == 1
    assert meta["calls"][0]["name"] == "patch_stage" and len(meta["calls"]) >= meta["kernels"]  # kernels shared
    (x,), (y,) = meta["inputs"], meta["outputs"]
    assert (x["shape"], x["dtype"], y["shape"], y["dtype"]) == ([1, 49, 10, 1], "int8", [1, 12], "int8")
    assert isinstance(x["scale"], float) and isinstance(x["zero_point"], int)
    allocs = {a["name"]: a for a in meta["allocations"]}
    assert all(a["offset"] + a["bytes"] <= meta["arena_bytes"] for a in allocs.values())
    assert allocs[x["name"]]["bytes"] == 49 * 10  # the input lives in the arena
    assert meta["arena_lower_bound_bytes"] <= meta["arena_bytes"]


def test_compiled_arena_is_the_profiled_figure(kws_tar, capsys):
    """The arena in the archive is the number ``patchnet profile`` reports for the same setting."""
    with tarfile.open(kws_tar) as tar:
        meta = json.load(tar.extractfile("metadata.json"))
    code, out, _ = run_cli(capsys, "profile", model_path(KWS), "--patches", "2", "--split", "2", "--json")
    assert code == 0
    assert json.loads(out)["patch"]["arena_bytes_whole_input"] == meta["arena_bytes"]


@pytest.mark.slow
def test_run_on_emulated_cortex_m4_matches_the_host(kws_tar, capsys, tmp_path):
    x = np.random.default_rng(3).integers(-128, 128, size=(1, 49, 10, 1), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capsys, "run", str(kws_tar), "--input", str(tmp_path / "x.npy"), "--repeat", "2",
                           "--check", "--json", "--memory-map", "nucleo-f412zg")
    assert code == 0
    d = json.loads(out)
    assert d["board"] == "qemu-m4" and d["reference_match"] is True
    assert d["instructions"] > 100_000 and "cycles" not in d  # QEMU counts instructions, never cycles
    assert "cpu_hz" not in d and "milliseconds" not in d  # nor offers a clock to turn them into time
    assert d["arena_bytes"] == d["predicted_arena_bytes"]
    assert d["sram_bytes"] > d["arena_bytes"] and d["flash_bytes"] > 0
    # flash = the model's constants (metadata's weight_bytes) + code (kernels, firmware, RPC)
    assert 0 < d["weight_bytes"] < d["flash_bytes"] and d["code_bytes"] == d["flash_bytes"] - d["weight_bytes"]
    # measured SRAM = arena (input and output inside) + stack + a little firmware state (RPC buffers)
    assert 0 <= d["other_sram_bytes"] < 2048
    assert d["sram_bytes"] == d["arena_bytes"] + d["stack_peak_bytes"] + d["other_sram_bytes"]
    assert d["planner_peak_bytes"] > 0


def test_compile_errors(capsys, tmp_path):
    assert "is a cortex-m7 board, not cortex-m4" in _one_line_error(capsys, "compile", "mbv2-w0.35-r144", "--board",
                                                                    "nucleo-h743zi", "--target", "cortex-m4",
                                                                    "-o", str(tmp_path / "m.tar"))
    assert not (tmp_path / "m.tar").exists()
    assert "go together" in _one_line_error(capsys, "compile", model_path(KWS), "--patches", "2",
                                            "-o", str(tmp_path / "m.tar"))


def test_run_errors(capsys, tmp_path, kws_tar):
    assert "no such compiled model" in _one_line_error(capsys, "run", str(tmp_path / "none.tar"))
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    assert "not a compiled model archive" in _one_line_error(capsys, "run", str(tmp_path / "junk.tar"))
    np.save(tmp_path / "bad.npy", np.zeros((1, 10, 49, 1), np.int8))
    assert "the model expects [1, 49, 10, 1] int8" in _one_line_error(capsys, "run", str(kws_tar), "--input",
                                                                       str(tmp_path / "bad.npy"))


@pytest.mark.slow
def test_layer_by_layer_mbv2_does_not_fit_an_f412_and_says_what_would(capsys, tmp_path):
    tar = tmp_path / "mbv2.tar"
    assert run_cli(capsys, "compile", "mbv2-w0.35-r144", "-o", str(tar))[0] == 0
    line = _one_line_error(capsys, "run", str(tar), "--memory-map", "nucleo-f412zg")
    assert "does not fit" in line and "262,144 B of SRAM by" in line
    # the hint is the user's own command, runnable as printed, and the setting it names fits
    hint = re.search(r"try '(patchnet compile mbv2-w0\.35-r144 --patches (\d+) --split (\d+) --board qemu-m4)'",
                     line)
    assert hint, line
    fixed = tmp_path / "fixed.tar"
    argv = shlex.split(hint.group(1))[1:]
    assert run_cli(capsys, *argv, "-o", str(fixed))[0] == 0
    assert run_cli(capsys, "run", str(fixed), "--memory-map", "nucleo-f412zg")[0] == 0
