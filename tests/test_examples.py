"""The documented examples run and check themselves."""

import runpy
import sys

import pytest


@pytest.mark.slow
def test_patch_api_example(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["patch_api.py", "mbv2-w0.35-r144", "--patches", "3", "--split", "4"])
    runpy.run_path("examples/patch_api.py", run_name="__main__")
    out = capsys.readouterr().out
    assert "patched outputs identical to per-layer execution: True" in out
    assert "for " in out  # the printed TIR shows the tile loops
