"""Fixtures for the kvm brand's integration tests: real QEMU (TCG here) booting the
small guest built by scripts/build-guest.sh.

Every test gets its own state root under /tmp and every QEMU whose command line
mentions that root is killed at teardown, whatever the test did, and the socket
directories made for its domains are removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from kvmtest import config, qemus_under, remove_socket_dirs_of
from eveadm.backends.base import Domain
from eveadm.backends.host import BackendContext, pid_alive, wait_until


@pytest.fixture
def root():
    """A short, private state root; kills every QEMU started under it at teardown."""
    path = Path(tempfile.mkdtemp(prefix="evk-", dir="/tmp"))
    try:
        yield path
    finally:
        for pid in qemus_under(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in qemus_under(path):
            wait_until(lambda: not pid_alive(pid), 5)
        remove_socket_dirs_of(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ctx(root) -> BackendContext:
    return BackendContext(root)


@pytest.fixture
def backend(ctx):
    from eveadm import backends

    return backends.load("kvm", ctx)


@pytest.fixture
def make_dom(root, guest):
    def make(**over) -> Domain:
        cfg = config(guest, **over)
        u = cfg["uuid"]
        return Domain(u, cfg, {}, root / "domains" / u, root / "run" / u)

    return make


