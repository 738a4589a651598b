"""tvmc-style conventions: --version, help on every option, choices listed, the board implies its
target, "did you mean" on unknown names, a model from a file named after the file."""

from __future__ import annotations

import argparse

import pytest

from tests.cli.test_cli import _one_line_error, run_cli
from tests.conftest import model_path
from tvm_patchnet import __version__
from tvm_patchnet.archive import read_archive
from tvm_patchnet.cli.main import build_parser, main
from tvm_patchnet.deploy import resolve_target_board
from tvm_patchnet.errors import PatchnetError

HELLO = "tflm_hello_world_int8.tflite"


def _subparsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _subparsers(sp, (*path, name))


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"patchnet {__version__}"


def test_every_option_has_help():
    missing = [(" ".join(path) or "patchnet", a.option_strings or a.dest)
               for path, p in _subparsers(build_parser()) for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help
               and (a.option_strings or path[:1] != ("micro",))]  # micro's positionals: its own module
    assert not missing, missing


@pytest.mark.parametrize("cmd, flag, names", [
    ("compile", "--board", ["qemu-m4", "nucleo-f412zg", "qemu-m7", "nucleo-f746zg", "nucleo-h743zi"]),
    ("compile", "--target", ["cortex-m4", "cortex-m7"]),
    ("run", "--board", ["qemu-m4", "nucleo-f412zg", "qemu-m7", "nucleo-f746zg", "nucleo-h743zi"]),
    ("run", "--memory-map", ["nucleo-f412zg", "nucleo-f746zg", "nucleo-h743zi"]),
])
def test_choices_are_listed_in_the_help(capsys, cmd, flag, names):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    part = text[text.index(flag + " ", text.index("options:")):]
    assert all(n in part[:400] for n in names), part[:400]
    parser = dict(_subparsers(build_parser()))[(cmd,)]
    assert list(next(a for a in parser._actions if flag in a.option_strings).choices) == names


def test_the_board_implies_its_target():
    assert resolve_target_board(None, "nucleo-f746zg") == ("cortex-m7", "nucleo-f746zg")
    assert resolve_target_board(None, None) == ("cortex-m4", "qemu-m4")
    assert resolve_target_board("cortex-m7", None) == ("cortex-m7", "qemu-m7")
    assert resolve_target_board("cortex-m7", "nucleo-h743zi") == ("cortex-m7", "nucleo-h743zi")
    with pytest.raises(PatchnetError, match="is a cortex-m7 board, not cortex-m4"):
        resolve_target_board("cortex-m4", "nucleo-f746zg")


def test_compile_for_a_board_builds_for_its_core(capsys, tmp_path):
    tar = tmp_path / "m.tar"
    code, out, err = run_cli(capsys, "compile", model_path(HELLO), "--board", "nucleo-f746zg", "-o", str(tar))
    assert code == 0, err
    meta = read_archive(str(tar), str(tmp_path / "x"))
    assert (meta["target"], meta["board"]) == ("cortex-m7", "nucleo-f746zg") and "for cortex-m7" in out
    line = _one_line_error(capsys, "compile", model_path(HELLO), "--board", "nucleo-f746zg", "--target",
                           "cortex-m4", "-o", str(tmp_path / "n.tar"))
    assert "nucleo-f746zg' is a cortex-m7 board, not cortex-m4" in line


def test_did_you_mean(capsys, tmp_path):
    line = _one_line_error(capsys, "profile", "mobilenetv3")
    assert "unknown architecture 'mobilenetv3' (did you mean 'mobilenetv2'?)" in line
    assert "(did you mean 'mbv2-w0.35-r144'?)" in _one_line_error(capsys, "profile", "mbv2-w035-r144")
    assert "did you mean" not in _one_line_error(capsys, "profile", "resnet9000")
    for cmd in (["compile", model_path(HELLO), "-o", str(tmp_path / "m.tar")], ["run", str(tmp_path / "m.tar")]):
        line = _usage_error(capsys, *cmd, "--board", "nucleo-f746")
        assert "unknown board 'nucleo-f746' (did you mean 'nucleo-f746zg'?)" in line
    assert "(did you mean 'nucleo-f412zg'?)" in _usage_error(capsys, "run", "m.tar", "--memory-map", "nucleo-f412")
    assert "(did you mean 'cortex-m7'?)" in _usage_error(capsys, "compile", "x.tflite", "--target", "cortex-m77")


def _usage_error(capsys, *argv) -> str:
    """argparse's error line (after the usage), exit code 2."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_model_from_a_file_is_named_after_the_file(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from tvm_patchnet.frontend import load_model

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 1, 1))
    path = tmp_path / "my_net.onnx"
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False)
    assert load_model(str(path), warn=lambda _: None).name == "my_net"  # not the exporter's "main_graph"
    code, out, _ = run_cli(capsys, "profile", str(path))
    assert code == 0 and out.startswith("model my_net:")
    assert load_model(model_path(HELLO)).name == "tflm_hello_world_int8"


@pytest.mark.parametrize("argv", [["-v", "profile", HELLO], ["profile", HELLO, "-v"], ["-q", "profile", HELLO],
                                  ["profile", "-q", HELLO], ["micro", "build", "p", "-q"], ["-q", "-v", "run", "m.tar"]])
def test_verbose_and_quiet_anywhere(argv):
    args = build_parser().parse_args(argv)
    assert args.verbose == ("-v" in argv) and args.quiet == ("-q" in argv)


def test_serial_port_reaches_a_nucleo_project_and_is_refused_on_qemu(capsys, tmp_path, monkeypatch):
    from tvm_patchnet import micro

    tar = tmp_path / "m.tar"
    assert run_cli(capsys, "compile", model_path(HELLO), "-o", str(tar))[0] == 0
    line = _one_line_error(capsys, "run", str(tar), "--serial-port", "/dev/ttyACM0")
    assert "--serial-port applies to Nucleo boards, not qemu-m4" in line
    seen = {}

    def create(src, board, project, memory_map=None, **options):
        seen.update(board=board, **options)
        raise PatchnetError("stop here")

    monkeypatch.setattr(micro, "create_project", create)
    _one_line_error(capsys, "run", str(tar), "--board", "nucleo-f412zg", "--serial-port", "/dev/ttyACM1",
                    "--serial-number", "0669FF")
    assert seen == {"board": "nucleo-f412zg", "serial_port": "/dev/ttyACM1", "serial_number": "0669FF"}
