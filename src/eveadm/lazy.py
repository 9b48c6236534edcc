"""Standard-library helpers that import their module on first use.

A command pays at start-up for every module imported on its way; `eveadm get`
and `eveadm list` never enter a lock or a transaction, yet the decorators that
define them would import contextlib (with functools) for every command.
"""

from __future__ import annotations


def contextmanager(func):
    """contextlib.contextmanager, with contextlib imported when the decorated function is first called."""

    def call(*args, **kwargs):
        from contextlib import contextmanager as real

        return real(func)(*args, **kwargs)

    call.__name__, call.__qualname__, call.__doc__ = func.__name__, func.__qualname__, func.__doc__
    return call
