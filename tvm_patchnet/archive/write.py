"""Writing an archive without replacing anything patchnet did not write (see the package doc)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile

from ..errors import PatchnetError
from ..fsutil import replace_folder, write_atomic
from .layout import ARCHIVE_SUFFIXES, FORMAT, member_kind


def output_kind(path: str) -> str:
    """"tar", "tar.gz" or "folder" for an output path; one-line error for other archive suffixes."""
    low = path.lower().rstrip("/")
    if low.endswith(".tar"):
        return "tar"
    if low.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if low.endswith(ARCHIVE_SUFFIXES):
        raise PatchnetError(f"-o {path}: unsupported archive suffix; use .tar, .tar.gz / .tgz or a folder name")
    return "folder"


def check_output(path: str) -> str:
    """Raise unless ``path`` may be written: missing, an empty folder, or an earlier output of
    this format holding nothing else. Returns :func:`output_kind`. Call before long work."""
    kind = output_kind(path)
    full = os.path.abspath(path)
    if os.path.islink(path):
        raise PatchnetError(f"-o {path}: is a symbolic link; choose another output")
    if kind == "folder":
        cwd = os.getcwd()
        if full == cwd or cwd.startswith(full + os.sep):
            raise PatchnetError(f"-o {path}: is the current folder (or holds it); choose a new folder name")
        if os.path.exists(full) and not os.path.isdir(full):
            raise PatchnetError(f"-o {path}: exists and is not a folder; choose another output")
        if os.path.isdir(full) and os.listdir(full):
            why = _foreign_folder(full)
            if why:
                raise PatchnetError(f"-o {path}: folder is not empty and is not an earlier 'patchnet compile' output "
                                    f"({why}); nothing was written: choose another folder")
    elif os.path.exists(full):
        if not os.path.isfile(full):
            raise PatchnetError(f"-o {path}: exists and is not a file; choose another output")
        why = _foreign_tar(full)
        if why:
            raise PatchnetError(f"-o {path}: exists and is not an earlier 'patchnet compile' archive ({why}); "
                                "nothing was written: choose another file")
    return kind


def write_archive(folder: str, path: str) -> None:
    """Write the archive staged in ``folder`` to ``path`` (see :func:`output_kind`), atomically."""
    kind = check_output(path)
    if kind == "folder":
        replace_folder(folder, path)
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as tar:
        for entry in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, entry), arcname=entry, filter=_normalise)
    write_atomic(path, buf.getvalue())


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _foreign_folder(path: str) -> str | None:
    """Why folder ``path`` is not an earlier output (None if it is one)."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            mode = os.lstat(full).st_mode
            want = member_kind(rel)
            if want is None or (want == "dir") != stat.S_ISDIR(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return f"it holds {rel}"
    if not os.path.isfile(os.path.join(path, "metadata.json")):
        return "it has no metadata.json"
    with open(os.path.join(path, "metadata.json"), "rb") as f:
        return None if _is_our_metadata(f.read(1 << 20)) else "its metadata.json is not patchnet's"


def _foreign_tar(path: str) -> str | None:
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            bad = next((m.name for m in members if member_kind(m.name) is None), None)
            if bad:
                return f"it holds {bad}"
            meta = tar.extractfile("metadata.json") if "metadata.json" in tar.getnames() else None
            return None if meta and _is_our_metadata(meta.read(1 << 20)) else "no patchnet metadata.json"
    except (tarfile.TarError, OSError, EOFError):
        return "not a tar archive"


def _is_our_metadata(raw: bytes) -> bool:
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    # version 1 (before FORMAT was written) is recognised by its fields
    return isinstance(meta, dict) and (meta.get("format") == FORMAT or {"version", "arena_bytes"} <= set(meta))
