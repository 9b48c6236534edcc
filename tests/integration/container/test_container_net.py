"""Container nics through the CNI plugins, with real runc and crun, entirely inside a network
namespace each test creates: eveadm (and so the plugins) runs under `nsenter --net=/run/netns/NS`,
pings under `ip netns exec NS`. Not eveadm under `ip netns exec`: that also remounts /sys, and
the runtimes then find no cgroup mount.

The namespace holds a bridge with 10.77.0.1/24 (the gateway); no traffic leaves it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import netnstest
from clitest import SRC
from netnstest import NsCli
from eveadm.backends.container import cni
from eveadm.backends.host import wait_until

HERE = Path(__file__).resolve().parent
BRIDGE = "evtbr0"
GATEWAY = "10.77.0.1"
STATIC = "10.77.0.50"
LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(cni.CNI_DIR, "bridge")),
                                reason=cni.INSTALL_HINT)


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30)


@pytest.fixture
def netns(state_root):
    """A namespace with loopback and a bridge holding the gateway address; deleted afterwards."""
    name = f"eveadm-test-{secrets.token_hex(4)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", name, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        ip("-n", name, "link", "set", BRIDGE, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=60, **kw)


def nsenter(ns: str) -> list[str]:
    """Enter only the namespace's network (ip netns exec would also hide the cgroup mounts)."""
    return ["nsenter", f"--net=/run/netns/{ns}", "--"]


def reachable(ns: str, rootfs: Path, address: str) -> bool:
    """One ping from the namespace itself (the host has no ping: the image's static busybox)."""
    return in_ns(ns, str(rootfs / "bin" / "busybox"), "ping", "-c1", "-W2", address).returncode == 0


def bridge_ports(ns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(ip("-n", ns, "-j", "link", "show", "master", BRIDGE).stdout)}


def veths(ns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(ip("-n", ns, "-j", "link", "show", "type", "veth").stdout)}


def reserved(root: Path) -> dict[str, str]:
    """{address: container id} of host-local's reservations under the state root."""
    return {path.name: cid for path, cid, _ in cni.reservations(root)}


class Driver:
    """ContainerBackend steps run by netns_driver.py inside the namespace."""

    def __init__(self, ns: str, root: Path):
        self.ns, self.root = ns, root
        self.env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + str(HERE))

    def __call__(self, op: str, dom: dict | None = None, **extra) -> dict:
        req = {"root": str(self.root), "op": op, "config": (dom or {}).get("config"),
               "backend": (dom or {}).get("backend"), **extra}
        proc = subprocess.run(nsenter(self.ns) + [sys.executable, str(HERE / "netns_driver.py")],
                              input=json.dumps(req), env=self.env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{op}: {proc.stderr}"
        out = json.loads(proc.stdout)
        if dom is not None:
            dom["backend"] = out["backend"]
        return out


@pytest.fixture
def ns_view(netns, tmp_path):
    """The CLI's view of the test's namespace (netnstest.ns_view): its /sys/class/net, the host's
    cgroup mounts."""
    with netnstest.ns_view(netns, tmp_path) as enter:
        yield enter


def log_text(root: Path, uuid: str) -> str:
    from eveadm.backends.container import monitor

    try:
        return monitor.log_text((root / "run" / uuid / "console.log").read_bytes())
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
def test_two_containers_static_and_host_local(netns, state_root, runtime, rootfs, cconfig):
    drive = Driver(netns, state_root)
    first = {"config": cconfig(rootfs, ["/bin/sh", "-c", LOOP], alias="static-one",
                               nics=[{"bridge": BRIDGE, "ip": STATIC, "mac": "02:00:00:77:00:50"}])}
    probe = (f"until ping -c1 -W1 {STATIC}; do sleep 0.2; done && echo PEER-OK; "
             f"ping -c1 -W2 {GATEWAY} && echo GATEWAY-OK; "
             "echo META $(cat /run/eveadm/metadata.json); cat /etc/resolv.conf; echo HOST $(hostname); "
             "ip route 2>/dev/null || route -n; echo PROBE-DONE; " + LOOP)
    second = {"config": cconfig(rootfs, ["/bin/sh", "-c", probe], alias="dynamic-two",
                                customer_metadata={"role": "web"}, nics=[{"bridge": BRIDGE}])}

    out = drive("start", first)
    assert (out["paused"], out["state"]) == ("paused", "running")
    assert out["addresses"] == [STATIC]
    assert out["info"]["nics"][0]["veth"] == cni.veth_name(first["config"]["uuid"], 0)
    assert out["info"]["nics"][0]["bridge"] == BRIDGE
    out = drive("start", second)
    dynamic = out["addresses"][0]
    assert dynamic and dynamic.startswith("10.77.0.") and dynamic not in (STATIC, GATEWAY)
    uuids = {first["config"]["uuid"], second["config"]["uuid"]}
    assert bridge_ports(netns) == {cni.veth_name(u, 0) for u in uuids}
    assert set(reserved(state_root)) == {STATIC, dynamic}

    u2 = second["config"]["uuid"]
    assert wait_until(lambda: "PROBE-DONE" in log_text(state_root, u2), 20), log_text(state_root, u2)
    text = log_text(state_root, u2)
    assert "PEER-OK" in text
    assert 'META { "role": "web" }' in text
    assert f"nameserver {GATEWAY}" in text
    assert "HOST dynamic-two" in text
    assert reachable(netns, rootfs, STATIC) and reachable(netns, rootfs, dynamic)

    # stop releases the address and the veth; start wires it again, and it answers again
    drive("stop", second)
    assert wait_until(lambda: cni.veth_name(u2, 0) not in veths(netns), 10)
    assert set(reserved(state_root)) == {STATIC}
    assert not reachable(netns, rootfs, dynamic)
    out = drive("start", second)
    again = out["addresses"][0]
    assert again and reachable(netns, rootfs, again)

    for dom in (first, second):
        drive("delete", dom)
    assert wait_until(lambda: not veths(netns), 10), veths(netns)
    assert reserved(state_root) == {}


def test_doctor_finds_and_removes_nic_leftovers(netns, state_root, runtime, rootfs, cconfig):
    drive = Driver(netns, state_root)
    dom = {"config": cconfig(rootfs, ["/bin/sh", "-c", LOOP], nics=[{"bridge": BRIDGE}])}
    drive("start", dom)
    uuid = dom["config"]["uuid"]
    veth = cni.veth_name(uuid, 0)
    assert drive("orphans", known=[uuid])["orphans"] == [], "a known domain's nic is no orphan"
    found = {(kind, ident) for kind, ident, owner in drive("orphans", known=[])["orphans"] if owner == uuid}
    address = state_root / "cni" / "host-local" / f"eveadm-br-{BRIDGE}" / dom["backend"]["nics"][0]["ip"]
    assert {("veth", veth), ("address", str(address))} <= found
    drive("remove_orphans", known=[], kinds=["veth", "address"])
    assert veth not in veths(netns)
    assert not address.exists()
    drive("delete", dom)


def test_validate_refuses_an_address_outside_a_raw_bridges_subnet(netns, state_root, runtime, rootfs, cconfig):
    """The brand's own check: a raw bridge's address gives its subnet. A bridge that does not exist
    is the engine's to say (once, for every brand): the backend only notes it, and wiring refuses it."""
    drive = Driver(netns, state_root)
    cfg = cconfig(rootfs, ["/bin/true"], nics=[{"bridge": "nosuchbr0"}, {"bridge": BRIDGE, "ip": "10.99.0.5"}])
    errors = {where: why for where, why in drive("validate", {"config": cfg})["errors"]}
    assert errors == {"nics.1.ip": "10.99.0.5 is outside 10.77.0.0/24"}


def test_cli_nic_rewired_at_start_and_gone_at_delete(netns, ns_view, state_root, runtime, rootfs):
    cli = NsCli(ns_view, state_root)
    cli.env["EVEADM_CONTAINER_RUNTIME"] = runtime
    payload = {"brand": "container", "ram": 64, "image": str(rootfs), "alias": "web",
               "customer_metadata": {"k": "v"}, "nics": [{"bridge": BRIDGE}],
               "cmd": ["/bin/sh", "-c", "echo META $(cat /run/eveadm/metadata.json); " + LOOP]}
    bad = cli("create", input=json.dumps(dict(payload, nics=[{"bridge": "nosuchbr0"}])))
    assert bad.returncode == 3 and bad.stderr.count("nosuchbr0") == 1, bad.stderr
    dom = cli.create(payload)
    uuid = dom["uuid"]
    address = dom["backend"]["nics"][0]["ip"]
    assert address and reachable(netns, rootfs, address)
    assert wait_until(lambda: 'META { "k": "v" }' in log_text(state_root, uuid), 10)
    info = cli.json("info", uuid)["runtime"]
    assert info["nics"][0]["veth"] == cni.veth_name(uuid, 0) and info["nics"][0]["bridge"] == BRIDGE

    cli.ok("stop", uuid)
    assert wait_until(lambda: not veths(netns), 10)
    assert reserved(state_root) == {}
    cli.ok("start", uuid)
    address = cli.json("get", uuid)["backend"]["nics"][0]["ip"]
    assert reachable(netns, rootfs, address)

    cli.ok("delete", uuid)
    assert wait_until(lambda: not veths(netns), 10), veths(netns)
    assert reserved(state_root) == {}
    assert cli.ok("doctor").returncode == 0


def test_start_refuses_a_bridge_removed_since_create(netns, ns_view, state_root, runtime, rootfs):
    """validate saw the bridge; at the next start it is gone: the start fails saying so, and the bridge
    plugin (which makes a bridge it does not find) is never asked to."""
    ip("-n", netns, "link", "add", "evtbr1", "type", "bridge")
    ip("-n", netns, "link", "set", "evtbr1", "up")
    cli = NsCli(ns_view, state_root)
    cli.env["EVEADM_CONTAINER_RUNTIME"] = runtime
    dom = cli.create({"brand": "container", "ram": 64, "image": str(rootfs), "cmd": ["/bin/sh", "-c", LOOP],
                      "nics": [{"bridge": "evtbr1"}]})
    cli.ok("stop", dom["uuid"])
    ip("-n", netns, "link", "del", "evtbr1")
    proc = cli("start", dom["uuid"])
    assert proc.returncode != 0 and "bridge evtbr1 does not exist" in proc.stderr, proc.stderr
    assert subprocess.run(["ip", "-n", netns, "link", "show", "evtbr1"], capture_output=True).returncode != 0
    assert not veths(netns)
    cli.ok("delete", dom["uuid"])
