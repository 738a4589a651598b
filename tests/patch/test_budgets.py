"""Budgets against what deploys: ``--sram`` and ``--patches auto`` judge a setting by the arena
``compile`` places (the whole input in SRAM) plus the minimum stack, not by the planner's peak
(one input patch); and every ``try 'patchnet compile ...'`` hint runs as printed and fits."""

from __future__ import annotations

import re
import shlex

import pytest

from microtvm_projects.project_api import board_budgets
from tests.cli.test_cli import _one_line_error, run_cli
from tests.conftest import model_path
from tvm_patchnet.archive import read_archive
from tvm_patchnet.deploy import STACK_MIN_BYTES
from tvm_patchnet.frontend import load_model
from tvm_patchnet.patch.search import AUTO_TOLERANCE, candidate_plans, deployable_arena, resolve

VWW = "mlperftiny_vww_96_int8.tflite"
KWS = "mlperftiny_kws_ref_model.tflite"


def _meta(tar) -> dict:
    return read_archive(str(tar), str(tar) + ".d")


@pytest.mark.parametrize("model, flags, budget", [
    ("mbv2-w0.35-r144", [], "128KB"),
    ("mbv2-w0.35-r144", [], "300KB"),  # layer by layer 290,304 B + stack fits
    (VWW, [], "56KB"),  # layer by layer (55,296 B) + stack does not: patched
])
def test_every_sram_success_deploys_within_the_budget(capsys, tmp_path, model, flags, budget):
    spec = model_path(model) if model.endswith(".tflite") else model
    code, out, err = run_cli(capsys, "compile", spec, *flags, "--sram", budget, "-o", str(tmp_path / "m.tar"))
    assert code == 0, err
    meta = _meta(tmp_path / "m.tar")
    limit = int(budget.removesuffix("KB")) * 1024
    assert meta["arena_bytes"] + STACK_MIN_BYTES <= limit, out
    assert "patches: " in out  # one line saying why


def test_a_budget_only_the_planner_peak_meets_is_refused():
    """MobileNetV2-224: 4x4 over 5 blocks peaks at 176,400 B by the paper's rule, but compile
    places 312,816 B; no setting deploys in 256 KB, so --sram 256KB is an error, not a success."""
    g = load_model("mobilenetv2", resolution=224)
    with pytest.raises(Exception, match="no patch setting fits 262,144 B") as e:
        resolve(g, "auto", "auto", 256 * 1024)
    assert "smallest deployable arena is 283,248 B" in str(e.value)
    r = resolve(g, "auto", "auto", 288 * 1024)
    assert r.arena_bytes == deployable_arena(g, r.plan) and r.arena_bytes + STACK_MIN_BYTES <= 288 * 1024


def test_an_explicit_setting_over_the_budget_is_an_error(capsys, tmp_path):
    line = _one_line_error(capsys, "compile", "mobilenetv2", "--resolution", "224", "--patches", "4", "--split", "5",
                           "--sram", "256KB", "-o", str(tmp_path / "m.tar"))
    assert "does not fit 262,144 B of SRAM" in line and "312,816 B" in line
    assert not (tmp_path / "m.tar").exists()


def test_auto_takes_the_fewest_macs_near_the_lowest_deployable_arena():
    g = load_model("mbv2-w0.35-r144")
    r = resolve(g, "auto", "auto")
    arenas = {(q.patches, q.split): deployable_arena(g, q) for q in candidate_plans(g)}
    lowest = min(arenas.values())
    assert r.arena_bytes <= lowest * (1 + AUTO_TOLERANCE)
    near = [q for q in candidate_plans(g) if arenas[(q.patches, q.split)] <= lowest * (1 + AUTO_TOLERANCE)]
    assert r.plan.mac_overhead == min(q.mac_overhead for q in near)
    assert "fewest MACs" in r.note or "lowest deployable arena" in r.note
    kws = resolve(load_model(model_path(KWS)), "auto", "auto")
    assert kws.plan is None and "patches do not lower it" in kws.note  # no gain: stays layer by layer


def _hint(line: str) -> list[str]:
    m = re.search(r"try '(patchnet compile [^']*)'", line)
    assert m, line
    argv = shlex.split(m.group(1))
    assert argv[:2] == ["patchnet", "compile"]
    return argv[1:]


@pytest.mark.parametrize("model, board", [
    (["mbv2-w0.35-r144"], "nucleo-f412zg"),
    # 1.69 MB of weights: an F412's flash is too small, an H743's is not; its 512 KB of SRAM needs patches
    (["mobilenetv2", "--resolution", "224", "--width", "0.35"], "nucleo-h743zi"),
])
def test_the_fit_hint_runs_as_printed_and_fits(capsys, tmp_path, model, board):
    line = _one_line_error(capsys, "compile", *model, "--board", board, "-o", str(tmp_path / "a.tar"))
    argv = _hint(line)
    assert argv[1:1 + len(model)] == model  # the user's own spec, as typed
    assert "mobilenetv2-w0.35" not in argv
    code, _, err = run_cli(capsys, *argv, "-o", str(tmp_path / "b.tar"))
    assert code == 0, err
    meta = _meta(tmp_path / "b.tar")
    assert meta["board"] == board
    assert meta["arena_bytes"] + STACK_MIN_BYTES <= board_budgets(board)["RAM"]


def test_a_model_whose_weights_exceed_the_flash_gets_no_patch_hint(capsys, tmp_path):
    line = _one_line_error(capsys, "compile", "mobilenetv2", "--resolution", "144", "--width", "0.35", "--board",
                           "nucleo-f412zg", "-o", str(tmp_path / "a.tar"))
    assert "of flash by" in line and "also exceed" in line and "try '" not in line


def test_the_fit_hint_never_repeats_the_failed_setting(capsys, tmp_path):
    # 2x2 over one block leaves the big later blocks as they are: it does not fit; the hint is another setting
    line = _one_line_error(capsys, "compile", "mbv2-w0.35-r144", "--patches", "2", "--split", "1", "--board",
                           "nucleo-f412zg", "-o", str(tmp_path / "a.tar"))
    argv = _hint(line)
    assert "--patches" in argv and argv[argv.index("--patches"):argv.index("--patches") + 4] != \
        ["--patches", "2", "--split", "1"]
