"""Fixtures for the container brand: a real busybox root filesystem, an OCI image
layout made from it, and one backend per runtime (runc as is, crun through the
hybrid-cgroup workaround when the host needs it).

Every test gets its own state root; whatever a test leaves running is removed
afterwards (containers deleted with their runtime, overlay mounts unmounted).
"""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path

import pytest

from clitest import remove_container_leftovers
from eveadm.backends.base import Domain
from eveadm.backends.host import BackendContext
from eveadm.backends.container import ContainerBackend

REPO = Path(__file__).resolve().parents[3]
RUNTIMES = ("runc", "crun")

pytestmark = pytest.mark.container


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)


@pytest.fixture
def state_root(tmp_path):
    root = tmp_path / "root"
    yield root
    remove_container_leftovers(root)


@pytest.fixture(params=RUNTIMES)
def runtime(request, monkeypatch):
    monkeypatch.setenv("EVEADM_CONTAINER_RUNTIME", request.param)
    return request.param


@pytest.fixture
def ecli(cli, runtime, state_root):
    """The shared Cli, on this directory's cleaned-up root, with the runtime under test."""
    cli.root = state_root
    cli.env["EVEADM_CONTAINER_RUNTIME"] = runtime
    return cli


@pytest.fixture
def backend(state_root, runtime) -> ContainerBackend:
    b = ContainerBackend(BackendContext(state_root))
    b.check_available()
    assert b.runtime().name == runtime
    return b


def container_config(image, cmd=None, **extra) -> dict:
    """A normalized container config, shaped as schema.normalize leaves it."""
    uid = str(uuidlib.uuid4())
    cfg = {
        "uuid": uid, "brand": "container", "vcpus": 1, "ram": 64, "disks": [], "nics": [],
        "pci_devices": [], "image": str(image), "env": {}, "terminal": False, "readonly_root": False,
        "cloud_init": {}, "autoboot": True, "stop_timeout": 10, "on_crash": "halt",
        "customer_metadata": {}, "tags": {},
    }
    if cmd is not None:
        cfg["cmd"] = cmd
    cfg.update(extra)
    return cfg


@pytest.fixture
def cconfig():
    """container_config as a fixture (test modules here are not a package)."""
    return container_config


@pytest.fixture
def make_domain(state_root):
    def make(config: dict) -> Domain:
        u = config["uuid"]
        return Domain(u, config, {}, state_root / "domains" / u, state_root / "run" / u)
    return make


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
