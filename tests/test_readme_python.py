"""The README's Python API blocks run as written, one after the other (in the shared models'
folder, where their model file is)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import MODELS_DIR

README = Path(__file__).parents[1] / "README.md"


def test_python_api_blocks_run_as_written(monkeypatch, capsys):
    part = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, flags=re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(MODELS_DIR)
    scope: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    out = capsys.readouterr().out
    assert out.splitlines()[0].isdigit() and "for " in out  # the peak, then the loop nest
