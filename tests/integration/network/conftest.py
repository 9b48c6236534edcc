"""Network tests run eveadm inside a network namespace each test makes (`ip netns exec NS`), so
bridges, dnsmasq's sockets and nftables rules exist only there; no traffic leaves it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clitest import Cli
from eveadm.network import host as nethost

BUSYBOX = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts")) / "rootfs" / "bin" / "busybox"


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


def run(*argv, check=True, ns=None, timeout=30):
    """A command (in the namespace `ns`), its output as text."""
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(full)} -> {proc.returncode}: {proc.stderr}"
    return proc


def new_namespace() -> str:
    name = "eveadm-test-" + os.urandom(4).hex()
    run("ip", "netns", "add", name)
    run("ip", "link", "set", "lo", "up", ns=name)
    return name


class NetnsCli(Cli):
    """The CLI, run inside a network namespace."""

    def __init__(self, root: Path, ns: str, env: dict | None = None):
        super().__init__(root, env)
        self.ns = ns

    def __call__(self, *args, input=None, timeout=120, env=None):
        e = dict(self.env)
        e.update(env or {})
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "eveadm", "--root", str(self.root),
                *map(str, args)]
        return subprocess.run(argv, input=input if input is not None else "", capture_output=True, text=True,
                              timeout=timeout, env=e)


class Namespace:
    """What the tests read of a namespace: links, addresses, the eveadm nft table."""

    def __init__(self, name: str):
        self.name = name

    def link(self, ifname: str) -> dict | None:
        proc = run("ip", "-j", "-d", "link", "show", "dev", ifname, ns=self.name, check=False)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def bridges(self) -> list[str]:
        return [e["ifname"] for e in json.loads(run("ip", "-j", "link", "show", "type", "bridge", ns=self.name).stdout)]

    def addresses(self, ifname: str) -> list[str]:
        out = json.loads(run("ip", "-j", "-4", "addr", "show", "dev", ifname, ns=self.name).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for e in out for a in e["addr_info"]]

    def nat_rules(self) -> list[dict]:
        """The rules of table ip eveadm (none when the table is absent)."""
        proc = run("nft", "-j", "list", "table", "ip", "eveadm", ns=self.name, check=False)
        if proc.returncode != 0:
            return []
        return [item["rule"] for item in json.loads(proc.stdout)["nftables"] if "rule" in item]

    def has_table(self) -> bool:
        return run("nft", "list", "table", "ip", "eveadm", ns=self.name, check=False).returncode == 0


@pytest.fixture
def ns():
    name = new_namespace()
    yield Namespace(name)
    run("ip", "netns", "del", name, check=False)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    yield path
    for pid, name in nethost.our_dnsmasqs(str(path)).items():  # whatever a failed test left running
        nethost.stop_dnsmasq(str(path), name, pid)


@pytest.fixture
def cli(root, ns):
    return NetnsCli(root, ns.name)
