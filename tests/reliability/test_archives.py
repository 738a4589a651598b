"""Archives are untrusted input, and outputs never replace what patchnet did not write.

Bad archives are built here from one good one: shell injection through member names, path
traversal, links and devices, lying or malformed metadata, C that does not compile. Every one
must fail with the project's own error (exit 2, one line per problem), run nothing, write nothing
outside its temp folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile

import pytest

from tests.cli.test_cli import _one_line_error, run_cli
from tests.conftest import model_path
from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU

HELLO = "tflm_hello_world_int8.tflite"
INJECTED = "codegen/host/src/z`touch${IFS}$PATCHNET_PWNED`.c"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One compiled model as a .tar and as a folder."""
    from tvm_patchnet.deploy import compile_model

    d = tmp_path_factory.mktemp("good")
    compile_model(model_path(HELLO), str(d / "m.tar"))
    compile_model(model_path(HELLO), str(d / "m"))
    return d


def _errors(capsys, *argv) -> list[str]:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    return err.strip().splitlines()


def _retar(src: str, dst: str, extra: list[tuple[tarfile.TarInfo, bytes | None]] = (), drop=(), edit=None):
    """Copy tar ``src`` to ``dst`` without the members in ``drop``, with ``edit(name, data)``
    applied to file contents, plus ``extra`` members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            if m.name in drop:
                continue
            data = tin.extractfile(m).read() if m.isreg() else None
            if data is not None and edit:
                data = edit(m.name, data)
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
        for info, data in extra:
            if data is not None:
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data) if data is not None else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


# -- names reach no shell -----------------------------------------------------------------------
@NEEDS_GCC
@NEEDS_QEMU
def test_member_name_with_shell_commands_is_refused_and_runs_nothing(good, tmp_path, capsys, monkeypatch):
    pwned = tmp_path / "PWNED"
    monkeypatch.setenv("PATCHNET_PWNED", str(pwned))
    evil = tmp_path / "evil.tar"
    _retar(str(good / "m.tar"), str(evil), [(_member(INJECTED), b"int z;\n")])
    line = _one_line_error(capsys, "run", str(evil))
    assert "is not a file of the format" in line and "refused" in line
    # the same name in a folder archive, and in a codegen folder given to `micro create-project`
    folder = tmp_path / "evil-folder"
    shutil.copytree(good / "m", folder)
    (folder / INJECTED).write_text("int z;\n")
    assert "is not a file of the format" in _one_line_error(capsys, "run", str(folder))
    from tvm_patchnet import micro

    codegen = tmp_path / "codegen"
    shutil.copytree(good / "m" / "codegen" / "host" / "src", codegen)
    (codegen / os.path.basename(INJECTED)).write_text("int z;\n")
    with pytest.raises(micro.MicroError, match="is not a source name the board build accepts"):
        micro.create_project(str(codegen), "qemu-m4", str(tmp_path / "proj"))
    assert not pwned.exists()


def test_the_board_build_lists_its_sources_without_a_shell():
    """rules.mk compiles the MODEL_SRCS that generate_project wrote, never what `find` prints."""
    from microtvm_projects.project_api import COMMON_DIR

    with open(os.path.join(COMMON_DIR, "rules.mk")) as f:
        rules = f.read()
    assert "$(shell" not in rules and "$(MODEL_SRCS)" in rules


@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink", "hardlink", "device", "fifo", "unknown",
                                  "duplicate", "file-as-folder"])
def test_members_outside_the_format_are_refused(good, tmp_path, capsys, case):
    members = {
        "traversal": (_member("codegen/host/src/../../../../escape.c"), b"x"),
        "absolute": (_member("/tmp/escape.c"), b"x"),
        "symlink": (_member("codegen/host/src/link.c", tarfile.SYMTYPE, "/etc/passwd"), None),
        "hardlink": (_member("codegen/host/src/hard.c", tarfile.LNKTYPE, "metadata.json"), None),
        "device": (_member("codegen/host/src/dev.c", tarfile.CHRTYPE), None),
        "fifo": (_member("codegen/host/src/fifo.c", tarfile.FIFOTYPE), None),
        "unknown": (_member("notes.txt"), b"hello"),
        "duplicate": (_member("codegen/host/src/model.c"), b"int again;\n"),
        "file-as-folder": (_member("codegen/host/include", tarfile.REGTYPE), b""),
    }
    bad = tmp_path / "bad.tar"
    _retar(str(good / "m.tar"), str(bad), [members[case]])
    line = _one_line_error(capsys, "run", str(bad))
    assert "refused" in line, line
    assert not (tmp_path.parent / "escape.c").exists() and not os.path.exists("/tmp/escape.c")


def test_folder_archive_links_are_not_followed(good, tmp_path, capsys):
    secret = tmp_path / "secret.c"
    secret.write_text("int secret;\n")
    linked_file = tmp_path / "a"
    shutil.copytree(good / "m", linked_file)
    os.symlink(secret, linked_file / "codegen" / "host" / "src" / "extra.c")
    assert "symbolic link (not followed)" in _one_line_error(capsys, "run", str(linked_file))
    linked_dir = tmp_path / "b"
    shutil.copytree(good / "m", linked_dir)
    shutil.rmtree(linked_dir / "src")
    os.symlink(tmp_path, linked_dir / "src")
    assert "symbolic link (not followed)" in _one_line_error(capsys, "run", str(linked_dir))


# -- metadata is validated ----------------------------------------------------------------------
def _with_metadata(good, tmp_path, change) -> str:
    with tarfile.open(good / "m.tar") as tar:
        meta = json.load(tar.extractfile("metadata.json"))
    raw = change(meta)
    out = tmp_path / "lying.tar"
    _retar(str(good / "m.tar"), str(out),
           edit=lambda name, data: (raw if isinstance(raw, bytes) else json.dumps(raw).encode())
           if name == "metadata.json" else data)
    return str(out)


def _drop(key):
    def change(m):
        m.pop(key)
        return m

    return change


def _set(path, value):
    def change(m):
        *head, last = path
        d = m
        for k in head:
            d = d[k]
        d[last] = value
        return m

    return change


@pytest.mark.parametrize("change, expect", [
    (lambda m: b"{not json", "metadata.json is not JSON"),
    (lambda m: b"[" * 100_000, "metadata.json is not JSON"),
    (lambda m: [1, 2], "expected an object"),
    (_drop("outputs"), "metadata.outputs: missing"),
    (_set(("outputs", 0, "shape"), [1, 7]), "metadata.outputs: 7 B, but model.h defines TVMGEN_OUTPUT_BYTES 1"),
    (_set(("outputs", 0, "dtype"), "float32"), "metadata.outputs: 4 B, but model.h defines TVMGEN_OUTPUT_BYTES 1"),
    (lambda m: {**m, "outputs": m["outputs"] * 2},
     "metadata.outputs: 2 output(s), but model.h defines TVMGEN_NUM_OUTPUTS 1"),
    (_set(("inputs",), []), "metadata.inputs: expected a list (1 to 64 entries)"),
    (_set(("inputs", 0, "shape"), [1, -3]), "metadata.inputs[0].shape: expected a shape"),
    (_set(("inputs", 0, "shape"), [1 << 20, 1 << 20]), "metadata.inputs[0].shape: expected a shape"),
    (_set(("arena_bytes",), 1 << 20), "metadata.arena_bytes: 1,048,576 B, but model.h defines TVMGEN_ARENA_BYTES"),
    (_set(("arena_bytes",), "big"), "metadata.arena_bytes: expected an integer"),
    (_set(("inputs", 0, "dtype"), "float64"), "metadata.inputs[0].dtype: expected one of int8, float32"),
    (_set(("board",), "qemu-m7"), "qemu-m7 is not a cortex-m4 board"),
    (_set(("board",), "pdp-11"), "metadata.board: expected one of"),
    (_set(("version",), 2), "expected 'tvm-patchnet compiled model' version 4 (or 3)"),
    (_set(("source",), {"file": "../../etc/passwd"}), "metadata.source.file: expected src/model.tflite"),
    (_set(("patch",), {"patches": "two"}), "metadata.patch.patches: expected an integer"),
    (_set(("inputs", 0, "scale"), float("nan")), "metadata.inputs[0].scale: expected a positive number"),
])
def test_malformed_metadata_gives_one_line_per_problem(good, tmp_path, capsys, change, expect):
    lines = _errors(capsys, "run", _with_metadata(good, tmp_path, change))
    assert any(expect in ln for ln in lines), lines


def test_several_problems_are_listed_each_on_its_line(good, tmp_path, capsys):
    def change(m):
        m.pop("outputs")
        m["inputs"][0]["shape"] = [0]
        m["kernels"] = -1
        return m

    lines = _errors(capsys, "run", _with_metadata(good, tmp_path, change))
    assert lines[0].endswith("invalid metadata.json:") and len(lines) == 4, lines


# -- bad C ----------------------------------------------------------------------------------
@NEEDS_GCC
def test_c_that_does_not_compile_shows_the_compiler_error_and_keeps_the_log(good, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(good / "m", bad)
    with open(bad / "codegen" / "host" / "src" / "model.c", "a") as f:
        f.write("\nnot_a_type broken;\n")
    lines = _errors(capsys, "run", str(bad))
    assert "build failed" in lines[0]
    assert any("model.c:" in ln and "error: unknown type name 'not_a_type'" in ln for ln in lines), lines
    log = lines[-1].split("full log: ")[1].split(" ")[0]
    try:
        with open(log) as f:
            assert "not_a_type" in f.read()
    finally:
        os.unlink(log)
    kept = tmp_path / "kept"
    lines = _errors(capsys, "run", str(bad), "--keep-build", str(kept))
    assert lines[-1].endswith(str(kept / "project" / "build" / "build.log"))
    assert (kept / "project" / "build" / "build.log").is_file()


# -- outputs --------------------------------------------------------------------------------
def test_compile_never_replaces_a_users_folder_or_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    line = _one_line_error(capsys, "compile", model_path(HELLO), "-o", "victim")
    assert "not an earlier 'patchnet compile' output" in line and "keep.txt" in line
    assert (victim / "keep.txt").read_text() == "mine" and os.listdir(victim) == ["keep.txt"]
    assert "is the current folder" in _one_line_error(capsys, "compile", model_path(HELLO), "-o", ".")
    (tmp_path / "user.tar").write_bytes(b"my data")
    assert "not an earlier 'patchnet compile' archive" in _one_line_error(capsys, "compile", model_path(HELLO),
                                                                           "-o", "user.tar")
    assert (tmp_path / "user.tar").read_bytes() == b"my data"
    assert "unsupported archive suffix" in _one_line_error(capsys, "compile", model_path(HELLO), "-o", "m.zip")
    assert sorted(os.listdir(tmp_path)) == ["user.tar", "victim"]  # nothing else written


def test_compile_replaces_its_own_earlier_output_only(good, tmp_path, capsys):
    out = tmp_path / "m"
    shutil.copytree(good / "m", out)
    assert run_cli(capsys, "compile", model_path(HELLO), "-o", str(out))[0] == 0
    (out / "codegen" / "notes.txt").write_text("added by the user")
    assert "it holds codegen/notes.txt" in _one_line_error(capsys, "compile", model_path(HELLO), "-o", str(out))
    assert (out / "codegen" / "notes.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no staging folders left


def test_gzip_archive_and_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert run_cli(capsys, "compile", model_path(HELLO), "-o", str(tmp_path / "m.tar.gz"))[0] == 0
        assert run_cli(capsys, "compile", model_path(HELLO), "-o", str(tmp_path / "d"))[0] == 0
    finally:
        os.umask(old)
    with open(tmp_path / "m.tar.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        assert "metadata.json" in tar.getnames()
    assert stat.S_IMODE(os.stat(tmp_path / "m.tar.gz").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "metadata.json").st_mode) == 0o640
    from tvm_patchnet.archive import read_archive

    assert read_archive(str(tmp_path / "m.tar.gz"), str(tmp_path / "x"))["model"] == "tflm_hello_world_int8"


def test_one_line_errors_instead_of_tracebacks(capsys, tmp_path):
    assert "cannot write /proc/x.tar" in _one_line_error(capsys, "compile", model_path(HELLO), "-o", "/proc/x.tar")
    for action in ("build", "flash"):
        line = _one_line_error(capsys, "micro", action, str(tmp_path / "nosuchdir"))
        assert "not a board project" in line
    assert "'0' is not a positive size" in _one_line_error(capsys, "compile", model_path(HELLO), "--sram", "0",
                                                          "-o", str(tmp_path / "m.tar"))
    assert "--timeout must be a positive number" in _one_line_error(capsys, "run", str(tmp_path / "m.tar"),
                                                                    "--timeout", "0")


def test_compile_checks_the_boards_memory(capsys, tmp_path):
    """Layer by layer, MobileNetV2-w0.35 r144 needs 290 kB of arena: an F412 (256 KB) is refused
    at compile time, with run's message and a patch setting to try."""
    line = _one_line_error(capsys, "compile", "mbv2-w0.35-r144", "--board", "nucleo-f412zg",
                           "-o", str(tmp_path / "m.tar"))
    assert line.startswith("patchnet compile: error: nucleo-f412zg: does not fit:")
    assert "262,144 B of SRAM by" in line and "try 'patchnet compile mbv2-w0.35-r144 --patches" in line
    assert not (tmp_path / "m.tar").exists()
