"""Fault injection for the test suite: die (SIGKILL) at a named point of a command.

The proofs that an interrupted command leaves a truthful record and no orphan
walk every point a command passes: first a run with EVEADM_FAULT_TRACE=FILE
writes each point it reaches, one per line; then one run per line with
EVEADM_FAULT=POINT@N kills the process the N-th time it reaches POINT.

Points:
  store.insert, store.save, store.remove          a record write, just after it commits
  run:PROGRAM, run:PROGRAM:after                  an external command, before it starts / after it ends
  backend.PRIMITIVE, backend.PRIMITIVE:after      a backend primitive (create_paused, unpause, ...)

With neither variable set (every normal run) a point costs one test of a
module global.
"""

from __future__ import annotations

import os

_KILL_AT = os.environ.get("EVEADM_FAULT") or None
_TRACE = os.environ.get("EVEADM_FAULT_TRACE") or None
ACTIVE = bool(_KILL_AT or _TRACE)
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Reached a point: trace it, or die here if it is the one asked for."""
    if not ACTIVE:
        return
    count = _seen[name] = _seen.get(name, 0) + 1
    label = f"{name}@{count}"
    if _TRACE:
        with open(_TRACE, "a") as fh:
            fh.write(label + "\n")
    if _KILL_AT is not None and _KILL_AT in (label, name if count == 1 else None):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


PRIMITIVES = ("prepare", "create_paused", "unpause", "shutdown", "destroy", "release", "kill")


class FaultyBackend:
    """Wraps a backend so each lifecycle primitive passes the points backend.NAME and backend.NAME:after.
    Used only when fault injection is active."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        attr = getattr(self._backend, name)
        if name not in PRIMITIVES:
            return attr

        def call(*args, **kwargs):
            point(f"backend.{name}")
            result = attr(*args, **kwargs)
            point(f"backend.{name}:after")
            return result

        return call
