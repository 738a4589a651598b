"""``--patches auto`` never strands a model that fits layer by layer; an explicit setting that
cannot run is an error naming the largest split that can."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import _one_line_error, run_cli
from tests.conftest import model_path
from tvm_patchnet.analysis.liveness import analyze
from tvm_patchnet.errors import PatchnetError, StageError
from tvm_patchnet.frontend import load_model
from tvm_patchnet.patch.planner import stage_of
from tvm_patchnet.patch.search import largest_split, resolve

HELLO = "tflm_hello_world_int8.tflite"  # fully connected only: nothing can run per patch
KWS = "mlperftiny_kws_ref_model.tflite"  # patches run, but do not lower its peak
VWW = "mlperftiny_vww_96_int8.tflite"  # patches help


def test_auto_falls_back_to_layer_by_layer_and_says_why():
    hello = load_model(model_path(HELLO))
    r = resolve(hello, "auto", "auto")
    assert r.plan is None and "no patch setting can run" in r.note and "fully_connected" in r.note
    kws = load_model(model_path(KWS))
    r = resolve(kws, "auto", "auto")
    assert r.plan is None and "patches do not lower it" in r.note
    assert f"peak {analyze(kws, in_place=True).peak_bytes:,} B" in r.note
    vww = load_model(model_path(VWW))
    assert resolve(vww, "auto", "auto").plan.peak_bytes < analyze(vww, in_place=True).peak_bytes


def test_a_budget_that_fits_layer_by_layer_needs_no_patches_and_one_that_nothing_meets_is_an_error():
    hello = load_model(model_path(HELLO))
    r = resolve(hello, "auto", "auto", sram_bytes=8192)  # the budget holds the arena and the 4 KB minimum stack
    assert r.plan is None and "fits 8,192 B of SRAM" in r.note
    with pytest.raises(PatchnetError, match="cannot run per patch"):
        resolve(hello, "auto", "auto", sram_bytes=16)  # neither layer by layer nor patched


def test_largest_split_is_the_last_stage_that_runs():
    g = load_model("mnasnet", resolution=96)
    n = largest_split(g)
    assert n >= 1
    stage_of(g, n)  # runs
    with pytest.raises(StageError):
        stage_of(g, n + 1)
    assert largest_split(load_model(model_path(HELLO))) == 0


def test_explicit_setting_that_cannot_run_names_the_largest_split():
    g = load_model("mnasnet", resolution=96)  # SE blocks (global pooling) from block 4
    n = largest_split(g)
    with pytest.raises(StageError) as e:
        resolve(g, 2, n + 3)
    msg = str(e.value)
    assert f"the largest split that can run per patch is {n}" in msg and f"block {n}" in msg
    assert "(avg_pool2d)" in msg and "global pooling" in msg  # the SE block's pool, by name
    with pytest.raises(StageError, match="no split of this model can run per patch"):
        resolve(load_model(model_path(HELLO)), 2, 1)


def test_profile_prints_the_fallback_in_one_line(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "profile", model_path(HELLO), "--patches", "auto", "--split", "auto")
    assert code == 0 and "patch-based inference: layer by layer (peak 32 B): no patch setting can run" in out
    assert "no split of this model" in _one_line_error(capsys, "profile", model_path(HELLO), "--patches", "2",
                                                       "--split", "1")


def test_compile_auto_on_a_model_patches_cannot_help_compiles_layer_by_layer(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compile", model_path(HELLO), "--patches", "auto", "--split", "auto",
                             "-o", str(tmp_path / "m.tar"))
    assert code == 0, err
    first, note = out.strip().splitlines()
    assert "layer by layer" in first and note.startswith("patches: layer by layer (peak 32 B)")
