"""Attach the calling terminal to a console exposed as a unix socket: the one relay.

Two kinds of socket: a plain byte stream (QEMU's socket chardev: the kvm serial
console), and conmon's attach socket (`framing="conmon"`: SOCK_SEQPACKET, every
packet from conmon starts with one byte naming the stream, 2 stdout / 3 stderr;
what is sent to it is raw input for the container's terminal). Terminal size
changes are passed on through `resize(rows, cols)` when the caller gives one
(conmon: a line on its ctl fifo).

QEMU's socket chardev serves one client at a time (a second client gets no
output until the first leaves), so attaching takes an exclusive lock next to
the socket and fails fast when someone else is attached (for every kind, so
two operators never type into one console unknowingly).

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

from ..errors import BackendError, Conflict

DETACH = b"\x1d"  # Ctrl-]
QUIET_AFTER_EOF = 0.5  # s of console silence after end of input before detaching


def attach(sock_path: str | Path, lock_path: str | Path, *, name: str = "",
           stdin=None, stdout=None, stderr=None, framing: str = "stream", resize=None) -> int:
    """Relay the calling terminal (or pipes) to the console at `sock_path` until Ctrl-] or it closes."""
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

        conn = _Console(sock_path, framing, name)
        try:
            if os.isatty(in_fd):
                return _attach_tty(conn, in_fd, out_fd, stderr, name, resize)
            return _pipe(conn, in_fd, out_fd)
        finally:
            conn.close()
    finally:
        lock.close()


class _Console:
    """The connected console socket: `recv()` gives output bytes (None at the end), `send()` input."""

    def __init__(self, path: str | Path, framing: str, name: str):
        if framing not in ("stream", "conmon"):
            raise ValueError(f"unknown console framing {framing!r}")
        self.framing = framing
        kind = socket.SOCK_SEQPACKET if framing == "conmon" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_UNIX, kind)
        path = str(path)
        dir_fd = None
        try:
            if len(os.fsencode(path)) >= 108:  # sun_path holds 108 bytes: go through the directory's fd
                dir_fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
                path = f"/proc/self/fd/{dir_fd}/{os.path.basename(path)}"
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise BackendError(f"cannot attach to the console of {name or path}: "
                               f"{exc.strerror or exc}") from None
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> bytes | None:
        data = self.sock.recv(65536)
        if not data:
            return None
        return data[1:] if self.framing == "conmon" else data  # conmon: drop the stream byte

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def _attach_tty(conn: _Console, in_fd: int, out_fd: int, stderr, name: str, resize) -> int:
    import signal
    import termios
    import tty

    saved = termios.tcgetattr(in_fd)
    stderr.write(f"Connected to {name or 'console'}; press Ctrl-] to detach\r\n")
    stderr.flush()
    winch_r = winch_w = None
    old_winch = None
    if resize is not None:  # a size change wakes the loop through a pipe; the handler only writes
        winch_r, winch_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_winch = signal.signal(signal.SIGWINCH, lambda *_: _poke(winch_w))
        _poke(winch_w)  # send the current size first
    watch = [conn, in_fd] + ([winch_r] if winch_r is not None else [])
    try:
        tty.setraw(in_fd)
        while True:
            ready, _, _ = select.select(watch, [], [])
            if conn in ready:
                data = conn.recv()
                if data is None:
                    return _closed(stderr)
                _write_all(out_fd, data)
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data or _forward(conn, data):
                    return 0
            if winch_r is not None and winch_r in ready:
                while True:
                    try:
                        if not os.read(winch_r, 512):
                            break
                    except BlockingIOError:
                        break
                size = os.get_terminal_size(in_fd)
                resize(size.lines, size.columns)
    finally:
        termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
        for fd in (winch_r, winch_w):
            if fd is not None:
                os.close(fd)
        stderr.write("\r\nDetached\n")
        stderr.flush()


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"w")
    except OSError:
        pass  # already poked: one wake-up is enough


def _pipe(conn: _Console, in_fd: int, out_fd: int) -> int:
    watch = [conn, in_fd]
    eof = False
    while True:
        ready, _, _ = select.select(watch, [], [], QUIET_AFTER_EOF if eof else None)
        if not ready:
            return 0  # end of input and the console went quiet
        if conn in ready:
            data = conn.recv()
            if data is None:
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


def _forward(conn: _Console, data: bytes) -> bool:
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
