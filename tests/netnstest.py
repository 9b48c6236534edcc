"""Network namespaces for tests (a uniquely named module, importable from every test directory:
each directory has its own conftest.py, and all of them are importable as `conftest`).

- `new_namespace()` / `Namespace`: a namespace the test makes, and what tests read of it (links,
  bridge ports, veths, taps, addresses, eveadm's nftables table);
- `ns_view(netns, workdir)`: a mount namespace whose /sys/class/net shows that network namespace,
  so eveadm can run *containers* there: `ip netns exec` mounts a whole new /sys, which hides the
  host's cgroup mounts the runtimes need;
- `NsCli`: the real CLI run under `nsenter` into both.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from clitest import Cli

ARTIFACTS = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))
BUSYBOX = ARTIFACTS / "rootfs" / "bin" / "busybox"  # the host has no ping or nslookup of its own


def run(*argv, check=True, ns=None, timeout=30, input=None) -> subprocess.CompletedProcess:
    """A command (in the namespace `ns`), its output as text."""
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
    if check:
        assert proc.returncode == 0, f"{' '.join(full)} -> {proc.returncode}: {proc.stderr}"
    return proc


def new_namespace() -> str:
    """A new network namespace with loopback up; the caller deletes it (delete_namespace)."""
    name = "eveadm-test-" + os.urandom(4).hex()
    run("ip", "netns", "add", name)
    run("ip", "link", "set", "lo", "up", ns=name)
    return name


def delete_namespace(name: str) -> None:
    run("ip", "netns", "del", name, check=False)


class Namespace:
    """What the tests read of a namespace: links, ports, addresses, the eveadm nft table."""

    def __init__(self, name: str):
        self.name = name

    def run(self, *argv, check=True, timeout=30, input=None) -> subprocess.CompletedProcess:
        return run(*argv, check=check, ns=self.name, timeout=timeout, input=input)

    def links(self, *select: str) -> dict[str, dict]:
        """{name: iproute2's JSON of the link}, of the links `ip link show SELECT...` lists."""
        out = json.loads(self.run("ip", "-j", "-d", "link", "show", *select).stdout or "[]")
        return {entry["ifname"]: entry for entry in out}

    def link(self, ifname: str) -> dict | None:
        proc = self.run("ip", "-j", "-d", "link", "show", "dev", ifname, check=False)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def bridges(self) -> list[str]:
        return sorted(self.links("type", "bridge"))

    def ports(self, bridge: str) -> set[str]:
        return set(self.links("master", bridge))

    def veths(self) -> set[str]:
        return set(self.links("type", "veth"))

    def taps(self) -> set[str]:
        return {name for name, link in self.links().items()
                if (link.get("linkinfo") or {}).get("info_kind") == "tun"}

    def addresses(self, ifname: str) -> list[str]:
        out = json.loads(self.run("ip", "-j", "-4", "addr", "show", "dev", ifname).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for e in out for a in e["addr_info"]]

    def nat_rules(self) -> list[dict]:
        """Every rule of table ip eveadm, whatever its chain (none when the table is absent)."""
        proc = self.run("nft", "-j", "list", "table", "ip", "eveadm", check=False)
        if proc.returncode != 0:
            return []
        return [item["rule"] for item in json.loads(proc.stdout)["nftables"] if "rule" in item]

    def has_table(self) -> bool:
        return self.run("nft", "list", "table", "ip", "eveadm", check=False).returncode == 0

    def ping(self, address: str) -> bool:
        """One ping from the namespace itself (busybox's: the host may have no ping)."""
        return self.run(BUSYBOX, "ping", "-c1", "-W2", address, check=False).returncode == 0


@contextlib.contextmanager
def ns_view(netns: str, workdir: Path):
    """Yields the `nsenter` prefix of a mount namespace (kept in a file, shared by every command
    of the test) where /sys/class/net shows network namespace `netns` and everything else is the
    host's: eveadm's checks of a bridge or a tap read sysfs, and the container runtimes need the
    host's cgroup mounts. Mounts made in it (containers' overlays) live in it and go with it."""
    holder = Path("/run") / f"{netns}.mnt"
    holder.touch()
    sysfs = workdir / f"sysfs-{netns}"
    sysfs.mkdir()
    subprocess.run(["unshare", f"--mount={holder}", "--propagation", "private", "true"], check=True, timeout=30)
    try:
        enter = ["nsenter", f"--mount={holder}", f"--net=/run/netns/{netns}", "--"]
        subprocess.run(enter + ["mount", "-t", "sysfs", "sysfs", str(sysfs)], check=True, timeout=30)
        for sub in ("class/net", "devices/virtual/net"):
            subprocess.run(enter + ["mount", "--bind", str(sysfs / sub), f"/sys/{sub}"], check=True, timeout=30)
        yield enter
    finally:
        subprocess.run(["umount", str(holder)], capture_output=True, timeout=30)
        holder.unlink(missing_ok=True)


class NsCli(Cli):
    """The real CLI, run in the namespaces `enter` (an nsenter prefix) names."""

    def __init__(self, enter: list[str], root: Path, env: dict | None = None):
        super().__init__(root, env)
        self.enter = enter

    def __call__(self, *args, input=None, timeout=180, env=None):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run(
            self.enter + [sys.executable, "-m", "eveadm", "--root", str(self.root), *map(str, args)],
            input=input if input is not None else "", capture_output=True, text=True, timeout=timeout, env=e)


class NetnsCli(Cli):
    """The CLI under `ip netns exec` (enough for everything but containers)."""

    def __init__(self, root: Path, ns: str, env: dict | None = None):
        super().__init__(root, env)
        self.ns = ns

    def __call__(self, *args, input=None, timeout=120, env=None):
        return NsCli(["ip", "netns", "exec", self.ns], self.root, self.env)(
            *args, input=input, timeout=timeout, env=env)
