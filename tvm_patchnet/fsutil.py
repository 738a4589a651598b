"""Writing the user's files safely: atomically (temp file in the same folder, then rename), with
the permissions the user's umask gives (as every tool's), and never over something the tool did
not write (the caller decides what that is; see :mod:`tvm_patchnet.archive`)."""

from __future__ import annotations

import os
import shutil
import tempfile

from .errors import PatchnetError


def umask() -> int:
    """The process umask (read by setting and restoring it: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def os_error(path: str, e: OSError) -> PatchnetError:
    """One line for a failed write or read: the path and the system's reason."""
    return PatchnetError(f"cannot write {path}: {e.strerror or e}")


def write_atomic(path: str, data: bytes | str) -> None:
    """Write ``path`` via a temporary file in its folder and a rename: a failure (or a signal)
    leaves either the old file or the new one, never half of one. Mode 0666 & ~umask.
    Refuses to replace a folder or a symbolic link (the rename would drop the link, not write
    through it)."""
    if os.path.islink(path) or os.path.isdir(path):
        raise PatchnetError(f"{path}: is a {'symbolic link' if os.path.islink(path) else 'folder'}; "
                            "choose another output file")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    except OSError as e:
        raise os_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise os_error(path, e) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def replace_folder(src: str, path: str) -> None:
    """Make ``path`` a copy of folder ``src``: staged next to ``path``, then swapped in by
    renames. An existing ``path`` (which the caller checked is the tool's own) is removed
    only once the new one is in place. Folders 0777 & ~umask, files 0666 & ~umask."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    name = os.path.basename(path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=f".{name}.partial-")
    except OSError as e:
        raise os_error(path, e) from None
    old = None
    try:
        shutil.copytree(src, staging, dirs_exist_ok=True)
        _apply_umask(staging)
        if os.path.isdir(path) and os.listdir(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old-")
            os.replace(path, old)  # onto an empty folder: allowed by rename(2)
        os.replace(staging, path)  # onto a missing or empty folder
        staging = None
    except OSError as e:
        if old and not os.path.exists(path):
            os.replace(old, path)  # put the earlier output back
            old = None
        raise os_error(path, e) from None
    finally:
        for d in (staging, old):
            if d:
                shutil.rmtree(d, ignore_errors=True)


def _apply_umask(root: str) -> None:
    dmode, fmode = 0o777 & ~umask(), 0o666 & ~umask()
    os.chmod(root, dmode)
    for d, dirs, files in os.walk(root):
        for x in dirs:
            os.chmod(os.path.join(d, x), dmode)
        for x in files:
            os.chmod(os.path.join(d, x), fmode)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
