"""Attach the calling terminal to a serial console exposed as a unix socket.

QEMU's socket chardev serves one client at a time (a second client gets no
output until the first leaves), so attaching takes an exclusive lock next to
the socket and fails fast when someone else is attached.

On a TTY the terminal is put in raw mode and restored in `finally`; Ctrl-]
detaches. When stdin is not a TTY (scripts, tests) bytes are piped both ways;
Ctrl-] in the input also detaches, and end of input detaches once the console
has been quiet for a moment (so the answer to the last command is printed).
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import sys
from pathlib import Path

from .errors import BackendError, Conflict

DETACH = b"\x1d"  # Ctrl-]
QUIET_AFTER_EOF = 0.5  # s of console silence after end of input before detaching


def attach(sock_path: str | Path, lock_path: str | Path, *, name: str = "",
           stdin=None, stdout=None, stderr=None) -> int:
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    in_fd = stdin.fileno()
    out_fd = stdout.fileno()

    lock = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise Conflict(f"console of {name or sock_path} is already attached ({holder})") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()

        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(sock_path))
        except OSError as exc:
            conn.close()
            raise BackendError(f"cannot attach to the console of {name or sock_path}: {exc.strerror}") from None
        try:
            if os.isatty(in_fd):
                return _attach_tty(conn, in_fd, out_fd, stderr, name)
            return _pipe(conn, in_fd, out_fd)
        finally:
            conn.close()
    finally:
        lock.close()


def _attach_tty(conn: socket.socket, in_fd: int, out_fd: int, stderr, name: str) -> int:
    import termios
    import tty

    saved = termios.tcgetattr(in_fd)
    stderr.write(f"Connected to {name or 'console'}; press Ctrl-] to detach\r\n")
    stderr.flush()
    try:
        tty.setraw(in_fd)
        while True:
            ready, _, _ = select.select([conn, in_fd], [], [])
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    return _closed(stderr)
                _write_all(out_fd, data)
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data or _forward(conn, data):
                    return 0
    finally:
        termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        stderr.write("\r\nDetached\n")
        stderr.flush()


def _pipe(conn: socket.socket, in_fd: int, out_fd: int) -> int:
    watch = [conn, in_fd]
    eof = False
    while True:
        ready, _, _ = select.select(watch, [], [], QUIET_AFTER_EOF if eof else None)
        if not ready:
            return 0  # end of input and the console went quiet
        if conn in ready:
            data = conn.recv(65536)
            if not data:
                return 0
            _write_all(out_fd, data)
        if in_fd in ready:
            data = os.read(in_fd, 4096)
            if not data:
                eof = True
                watch = [conn]
                continue
            if _forward(conn, data):
                return 0


def _forward(conn: socket.socket, data: bytes) -> bool:
    """Send typed input to the console, up to Ctrl-]; return True when the user detached."""
    head, detach, _ = data.partition(DETACH)
    if head:
        conn.sendall(head)
    return bool(detach)


def _closed(stderr) -> int:
    stderr.write("\r\nconsole closed (the domain stopped)\r\n")
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
