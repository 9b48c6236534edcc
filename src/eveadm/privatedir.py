"""The directories eveadm keeps state in are private, and refused when someone else could change them.

A state root in a shared place (/tmp, a group-writable directory) could be
prepared by another local user: a root or a `locks/` directory they own lets
them swap files for symlinks and have eveadm (often root) write or delete
through them. So every directory eveadm keeps state in is made 0700, and an
existing one is used only if it is a real directory (not a symlink) owned by
this user and not writable by group or others. Its ancestors must be owned by
root or by this user, and writable by others only with the sticky bit (as /tmp),
the rule OpenSSH's StrictModes applies. Files under them are opened with
O_NOFOLLOW (see `open_private`).
"""

from __future__ import annotations

import os
import stat

from .errors import EveadmError


class UnsafeDirectory(EveadmError):
    """A state directory another user could change."""


def ensure(path: str, *, check_ancestors: bool = False) -> str:
    """Make `path` (mode 0700, with its missing parents) or check the one there; return it."""
    path = os.path.abspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            ensure(parent, check_ancestors=check_ancestors)
        elif check_ancestors:
            _check_ancestors(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # another eveadm made it meanwhile: check it below
        except OSError as exc:
            raise EveadmError(f"cannot create {path}: {exc.strerror}") from None
        st = os.lstat(path)
    else:
        if check_ancestors:
            _check_ancestors(os.path.dirname(path))
    _check(path, st)
    return path


def _check(path: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDirectory(f"refusing state directory {path}: it is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"refusing state directory {path}: it is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(f"refusing state directory {path}: it belongs to uid {st.st_uid}, not to you "
                              f"(uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise UnsafeDirectory(f"refusing state directory {path}: group or others can write to it "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}; chmod 700 it)")


def _check_ancestors(path: str) -> None:
    """Every directory above the root: owned by root or by us; writable by others only if sticky."""
    path = os.path.realpath(path)
    while True:
        st = os.stat(path)
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafeDirectory(f"refusing a state root under {path}: it belongs to uid {st.st_uid}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafeDirectory(f"refusing a state root under {path}: others can write to it "
                                  f"(mode {stat.S_IMODE(st.st_mode):04o}) and it has no sticky bit")
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def open_private(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open for a file under a state directory: never through a symbolic link; created owner-only."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the file is a symbolic link
            raise UnsafeDirectory(f"refusing {path}: it is a symbolic link") from None
        raise


def write_private(path, data: str | bytes, *, sync: bool = False) -> None:
    """Replace the file at `path` with `data` at once (a temporary file renamed over it), owner-only
    (0600 even where an older file had another mode), never through a symbolic link; with `sync`,
    on disk before the rename."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT keeps the mode of a file a killed writer left
        os.write(fd, data.encode() if isinstance(data, str) else data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
