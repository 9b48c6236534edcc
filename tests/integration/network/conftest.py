"""Network tests run eveadm inside a network namespace each test makes (`ip netns exec NS`, or, to
run containers, nsenter with a view of it: netnstest.ns_view), so bridges, dnsmasq's sockets,
nftables rules, containers' veths and VMs' taps exist only there; no traffic leaves it."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from eveadm.network import host as nethost
from netnstest import Namespace, NetnsCli, NsCli, delete_namespace, new_namespace, ns_view


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network tests need root (namespaces, bridges, nftables)"
    for program in ("ip", "nft", "dnsmasq"):
        if shutil.which(program) is None:
            return f"{program} not installed (apt-get install iproute2 nftables dnsmasq-base)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _missing()
    if why:
        for item in items:
            if "integration/network" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def ns():
    name = new_namespace()
    yield Namespace(name)
    delete_namespace(name)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    yield path
    for pid, name in nethost.our_dnsmasqs(str(path)).items():  # whatever a failed test left running
        nethost.stop_dnsmasq(str(path), name, pid)


@pytest.fixture
def cli(root, ns):
    return NetnsCli(root, ns.name)


# -- scenarios: containers and VMs on eveadm's networks, the CLI under nsenter ----------------------


@pytest.fixture
def world(ns, root, tmp_path):
    """The real CLI in the test's namespace, able to run containers and VMs there (netnstest.ns_view).
    At teardown every domain, then every network, is deleted; what a failed test left beyond that
    (containers, QEMUs) is killed before the namespace goes."""
    with ns_view(ns.name, tmp_path) as enter:
        cli = NsCli(enter, root)
        try:
            yield cli
        finally:
            for dom in json.loads(cli("list", "-j").stdout or "[]"):
                cli("delete", dom["uuid"])
            for net in json.loads(cli("network", "list", "-j").stdout or "[]"):
                cli("network", "delete", net["name"])
            _kill_leftovers(enter, root)


def _kill_leftovers(enter: list[str], root: Path) -> None:
    for runtime in ("runc", "crun"):
        state = root / "run" / "container" / runtime
        for cid in os.listdir(state) if state.is_dir() else []:
            subprocess.run(enter + [runtime, "--root", str(state), "delete", "--force", cid],
                           capture_output=True, timeout=30)
    needle = os.fsencode(str(root))
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except (OSError, ValueError):
            continue
        if (cmd.startswith(b"qemu-system") or b"conmon" in cmd.split(b"\0")[0]) and needle in cmd:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
