"""SIGINT and SIGTERM during a command: stop at a safe point, never half-way through a primitive.

The CLI calls `install()`. A signal is recorded when it arrives; it interrupts
at once only while the engine waits (for a domain to go, between create
retries, following the journal), and otherwise at the engine's next safe point
(`check()`), so a record write, a backend primitive or a command eveadm is
running always completes. The engine then puts the record and the backend in a
truthful state (see docs/design.md, "Interrupts") and the CLI exits with
128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

from .errors import Interrupted
from .lazy import contextmanager

_received: int | None = None
_waiting = False


def install() -> None:
    import signal  # here, not above: the engine imports this module on every command, reads included

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def _handler(signo, frame) -> None:
    global _received
    _received = signo
    if _waiting:
        raise Interrupted(signo)


def received() -> int | None:
    return _received


def check() -> None:
    """A safe point: raise Interrupted if a signal arrived."""
    if _received:
        raise Interrupted(_received)


@contextmanager
def waiting():
    """A wait that a signal may cut short at once."""
    global _waiting
    check()
    outer, _waiting = _waiting, True
    try:
        yield
    finally:
        _waiting = outer
