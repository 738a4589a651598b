"""What a compiled-model archive holds: member names, limits, the targets and boards it names."""

from __future__ import annotations

import re

from ..errors import PatchnetError

FORMAT = "tvm-patchnet compiled model"
#: 3: "inputs" / "outputs" lists (int8 or float32) replace "input" / "output"; 4: "calls" (the kernel
#: calls of a run: name, kernel, graph ops, MACs; ``run --profile`` needs them)
METADATA_VERSION = 4
READABLE_VERSIONS = (3, 4)  #: versions ``run`` still reads (3: everything but ``--profile``)
TARGET_BOARDS = {"cortex-m4": ("qemu-m4", "nucleo-f412zg"), "cortex-m7": ("qemu-m7", "nucleo-f746zg", "nucleo-h743zi")}
IO_ITEMSIZE = {"int8": 1, "float32": 4}  #: dtypes of inputs and outputs, bytes per element
IO_DTYPES = tuple(IO_ITEMSIZE)
MAX_IO = 64  #: inputs (outputs) a model may have

GRAPH_MEMBER = "src/graph.npz"  #: the int8 graph the C was built from, when no model file rebuilds it
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_FILES = re.compile(rf"metadata\.json|src/model\.(tflite|onnx)|src/graph\.npz|codegen/host/src/{_NAME}\.[ch]|"
                    rf"codegen/host/include/{_NAME}\.h")
_DIRS = ("codegen", "codegen/host", "codegen/host/src", "codegen/host/include", "src")
MAX_MEMBERS = 512
MAX_BYTES = 1 << 30  #: all members together (weights live in C sources; the model file in src/)
ARCHIVE_SUFFIXES = (".zip", ".gz", ".bz2", ".xz", ".zst", ".7z", ".tbz2", ".txz", ".tar.bz2", ".tar.xz")


def member_kind(name: str) -> str | None:
    """"file" or "dir" for a name the format defines (``./`` prefixes allowed), else None."""
    name = name.removeprefix("./")
    name = name.rstrip("/") if name not in ("", "/") else name
    if name in ("", ".") or name in _DIRS:
        return "dir"
    return "file" if _FILES.fullmatch(name) else None


def bad_member(source: str, name: str, why: str) -> PatchnetError:
    return PatchnetError(f"{source}: member {name!r} {why}; not a 'patchnet compile' archive (refused)")
