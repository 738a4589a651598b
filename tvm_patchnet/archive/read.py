"""Reading an untrusted archive: format members only, nothing followed, metadata validated."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile

from ..errors import PatchnetError
from .layout import MAX_BYTES, MAX_MEMBERS, bad_member, member_kind
from .schema import check_declared_sizes, validate_metadata


def read_archive(path: str, into: str) -> dict:
    """Copy the members of archive ``path`` (a tar, gzip tar or folder) into folder ``into`` and
    return its validated metadata. One-line :class:`PatchnetError` for anything else."""
    if not os.path.lexists(path):
        raise PatchnetError(f"{path}: no such compiled model")
    os.makedirs(into, exist_ok=True)
    real = os.path.realpath(path)  # the path the user gave may be a link; nothing inside is followed
    try:
        if os.path.isdir(real):
            _copy_folder(real, into)
        elif os.path.isfile(real):
            _extract_tar(real, into)
        else:
            raise PatchnetError(f"{path}: not a compiled model (not a regular file or folder)")
    except OSError as e:
        raise PatchnetError(f"{path}: cannot read the archive ({e.strerror or e})") from None
    meta_path = os.path.join(into, "metadata.json")
    if not os.path.isfile(meta_path):
        raise PatchnetError(f"{path}: no metadata.json (not made by 'patchnet compile')")
    with open(meta_path, "rb") as f:
        raw = f.read()
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise PatchnetError(f"{path}: metadata.json is not JSON ({str(e).splitlines()[0]})") from None
    problems = validate_metadata(meta) or check_declared_sizes(meta, into)
    if problems:
        raise PatchnetError(f"{path}: invalid metadata.json:\n" + "\n".join(f"  {p}" for p in problems))
    return meta


def _extract_tar(path: str, into: str) -> None:
    try:
        with tarfile.open(path) as tar:
            _extract_members(tar, path, into)
    except (tarfile.TarError, EOFError) as e:
        raise PatchnetError(f"{path}: not a compiled model archive ({str(e).splitlines()[0]})") from None


def _extract_members(tar: tarfile.TarFile, path: str, into: str) -> None:
    """Regular files with format names only, written by us (never ``extractall``)."""
    members = tar.getmembers()
    if len(members) > MAX_MEMBERS:
        raise PatchnetError(f"{path}: {len(members)} members; a compiled model has at most {MAX_MEMBERS}")
    total, seen = 0, set()
    for m in members:
        kind = member_kind(m.name)
        if kind is None:
            raise bad_member(path, m.name, "is not a file of the format")
        if kind == "dir":
            if not m.isdir():
                raise bad_member(path, m.name, "should be a folder")
            continue
        if not m.isreg():
            raise bad_member(path, m.name, "is not a regular file (links and devices are refused)")
        name = m.name.removeprefix("./")
        if name in seen:
            raise bad_member(path, m.name, "appears twice")
        seen.add(name)
        total += m.size
        if total > MAX_BYTES:
            raise PatchnetError(f"{path}: members exceed {MAX_BYTES:,} B; not a compiled model (refused)")
        dst = os.path.join(into, *name.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "xb") as out:
            shutil.copyfileobj(tar.extractfile(m), out)


def _copy_folder(path: str, into: str) -> None:
    """Copy a folder archive's regular files; a symbolic link anywhere is refused, not followed."""
    total, count = 0, 0
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            st = os.lstat(full)
            kind = member_kind(rel)
            if stat.S_ISLNK(st.st_mode):
                raise bad_member(path, rel, "is a symbolic link (not followed)")
            if kind is None:
                raise bad_member(path, rel, "is not a file of the format")
            if (kind == "dir") != stat.S_ISDIR(st.st_mode) or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise bad_member(path, rel, "has the wrong type (regular files and folders only)")
            count += 1
            total += st.st_size if kind == "file" else 0
            if count > MAX_MEMBERS or total > MAX_BYTES:
                raise PatchnetError(f"{path}: more than {MAX_MEMBERS} members or {MAX_BYTES:,} B; refused")
            dst = os.path.join(into, rel)
            if kind == "dir":
                os.makedirs(dst, exist_ok=True)
                continue
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as src, open(dst, "xb") as out:
                shutil.copyfileobj(src, out)
