"""Networking end to end (issue 10): containers and a VM on eveadm's own networks, through the real
CLI, with real runc/crun, the CNI plugins, QEMU, dnsmasq and nftables; all of it inside network
namespaces the test makes (the `world` fixture: eveadm under nsenter in the namespace `ns`).

What a container does is checked from inside it: `inside()` runs the container's own busybox in
its network and mount namespaces, so it resolves names with the resolv.conf eveadm gave it."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path

import pytest

from eveadm.backends.container import cni
from eveadm.backends.host import wait_until
from eveadm.network import host as nethost
from eveadm.network import lookup
from netnstest import BUSYBOX, delete_namespace, new_namespace, run

pytestmark = pytest.mark.skipif(not Path(cni.CNI_DIR, "bridge").exists(), reason=cni.INSTALL_HINT)

LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"
UPSTREAM = ["192.0.2.53"]  # dnsmasq's upstream: an address no namespace routes to (nothing leaves)
GUEST_IP = re.compile(rb"EVEADM-GUEST-IP eth0 (\d+\.\d+\.\d+\.\d+)/(\d+)")


def local(name: str, subnet: str) -> dict:
    return {"name": name, "type": "local", "subnet": subnet, "dns": UPSTREAM}


def make_network(cli, payload: dict) -> dict:
    """Create it; what backends read of it (network.lookup: bridge, gateway, static and DHCP ranges)."""
    cli.ok("network", "create", input=json.dumps(payload))
    return lookup(str(cli.root), payload["name"])


def container(cli, rootfs: Path, alias: str, nics: list[dict]) -> dict:
    return cli.create({"brand": "container", "ram": 64, "image": str(rootfs), "alias": alias, "nics": nics,
                       "cmd": ["/bin/sh", "-c", LOOP]})


def address(cli, ident: str) -> str | None:
    """nics.0.ip as `get` shows it."""
    return cli.json("get", ident)["nics"][0].get("ip")


def inside(cli, ident: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """The container's own busybox, run in its network and mount namespaces."""
    pid = cli.json("get", ident)["backend"]["pid"]
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", "--", "/bin/busybox", *argv],
                          capture_output=True, text=True, timeout=timeout)


def pings(cli, ident: str, target: str) -> bool:
    return inside(cli, ident, "ping", "-c1", "-W2", target).returncode == 0


def resolves(cli, ident: str, name: str) -> str | None:
    """The address `name` resolves to inside the container (through its resolv.conf), or None."""
    out = inside(cli, ident, "nslookup", name).stdout
    if "Name:" not in out:
        return None
    answer = out.split("Name:", 1)[1]  # what precedes is the server that answered
    found = re.findall(r"Address(?: \d+)?:\s*(\d+\.\d+\.\d+\.\d+)", answer)
    return found[0] if found else None


def in_range(ip: str, rng: list[str]) -> bool:
    first, last = (ipaddress.IPv4Address(a) for a in rng)
    return first <= ipaddress.IPv4Address(ip) <= last


def nothing_left(ns, root: Path) -> None:
    """No tap, veth, bridge, dnsmasq, nft rule or address reservation of eveadm's in the namespace."""
    assert ns.taps() == set(), ns.taps()
    assert ns.veths() == set(), ns.veths()
    assert ns.bridges() == [], ns.bridges()
    assert not ns.has_table(), ns.nat_rules()
    assert nethost.our_dnsmasqs(str(root)) == {}
    assert cni.reservations(root) == []


# ---------------------------------------------------------------------------------------------
def test_two_containers_on_a_local_network_reach_and_resolve_each_other(world, ns, root, rootfs):
    cli = world
    lan = make_network(cli, local("lan", "10.81.0.0/24"))
    alpha = container(cli, rootfs, "alpha", [{"network": "lan"}])
    beta = container(cli, rootfs, "beta", [{"network": "lan"}])

    ips = {"alpha": address(cli, "alpha"), "beta": address(cli, "beta")}
    assert ips["alpha"] != ips["beta"]
    assert all(ip and in_range(ip, lan["static_range"]) for ip in ips.values()), ips  # IPAM: the static half
    rows = cli.ok("list", "-H", "-p", "-o", "alias,nics.0.ip", "-s", "alias").stdout.split()
    assert rows == [f"alpha:{ips['alpha']}", f"beta:{ips['beta']}"]
    assert ns.ports("ev-lan") == {cni.veth_name(alpha["uuid"], 0), cni.veth_name(beta["uuid"], 0)}

    for me, peer in (("alpha", "beta"), ("beta", "alpha")):
        assert pings(cli, me, lan["gateway"]), f"{me} cannot reach the gateway"
        assert pings(cli, me, ips[peer]), f"{me} cannot reach {peer}"
        assert resolves(cli, me, peer) == ips[peer], inside(cli, me, "nslookup", peer)
        assert pings(cli, me, peer), f"{me} cannot reach {peer} by name"


def test_a_vm_and_a_container_on_one_network_exchange_traffic(world, ns, root, rootfs, guest):
    cli = world
    lan = make_network(cli, local("lan", "10.82.0.0/24"))
    vm = cli.create({"brand": "kvm", "alias": "vm1", "ram": 256, "kernel": str(guest / "vmlinuz"),
                     "initrd": str(guest / "initramfs.cpio.gz"), "customer_metadata": {"role": "test"},
                     "cmdline": "console=ttyS0 quiet panic=-1 eveadm.cidata eveadm.net", "nics": [{"network": "lan"}]})
    web = container(cli, rootfs, "web", [{"network": "lan"}])
    tap = f"ek{vm['uuid'][:8]}.0"
    assert ns.ports("ev-lan") == {tap, cni.veth_name(web["uuid"], 0)}

    # the guest prints the address its DHCP client got (TCG: a slow boot)
    log = Path(vm["backend"]["serial_log"])
    assert wait_until(lambda: GUEST_IP.search(log.read_bytes()) is not None, 180), log.read_bytes()[-2000:]
    leased = GUEST_IP.search(log.read_bytes()).group(1).decode()
    assert in_range(leased, lan["dhcp_range"]), leased
    assert address(cli, "vm1") == leased  # get's nics.0.ip is dnsmasq's lease
    rows = cli.ok("list", "-H", "-p", "-o", "alias,nics.0.ip", "-s", "alias").stdout.split()
    assert rows == [f"vm1:{leased}", f"web:{address(cli, 'web')}"]

    # the container reaches the guest, and finds it by the name its DHCP client sent (the seed's hostname)
    assert pings(cli, "web", leased)
    assert resolves(cli, "web", "vm1") == leased

    cli.ok("delete", "vm1")
    cli.ok("delete", "web")
    assert ns.taps() == set() and ns.veths() == set() and ns.ports("ev-lan") == set()


def test_nat_takes_a_container_out_with_the_hosts_address(world, ns, root, rootfs):
    """The test's namespace plays the host; a second one plays the outside, on a veth with a default
    route to it. The outside sees the container's traffic from the host's address only."""
    cli = world
    outside = new_namespace()
    try:
        run("ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", outside, ns=ns.name)
        run("ip", "addr", "add", "203.0.113.1/24", "dev", "ext0", ns=ns.name)
        run("ip", "link", "set", "ext0", "up", ns=ns.name)
        run("ip", "route", "add", "default", "via", "203.0.113.2", ns=ns.name)
        run("ip", "addr", "add", "203.0.113.2/24", "dev", "eth0", ns=outside)
        run("ip", "link", "set", "eth0", "up", ns=outside)
        run("ip", "addr", "add", "198.51.100.7/32", "dev", "lo", ns=outside)  # beyond the link: routed
        # the outside counts what arrives, by source
        run("nft", "-f", "-", ns=outside, input=(
            "table ip watch {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
            '  ip saddr 203.0.113.1 icmp type echo-request counter comment "host"\n'
            '  ip saddr 10.84.0.0/24 counter comment "subnet"\n }\n}\n'))

        make_network(cli, local("lan", "10.84.0.0/24"))
        container(cli, rootfs, "app", [{"network": "lan"}])
        assert pings(cli, "app", "198.51.100.7")

        counters = {}
        for item in json.loads(run("nft", "-j", "list", "table", "ip", "watch", ns=outside).stdout)["nftables"]:
            rule = item.get("rule")
            if rule:
                counters[rule["comment"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        assert counters["host"] >= 1 and counters["subnet"] == 0, counters
    finally:
        delete_namespace(outside)


def test_containers_on_two_local_networks_cannot_reach_each_other(world, ns, root, rootfs):
    cli = world
    red = make_network(cli, local("red", "10.85.0.0/24"))
    blue = make_network(cli, local("blue", "10.86.0.0/24"))
    container(cli, rootfs, "r1", [{"network": "red"}])
    container(cli, rootfs, "b1", [{"network": "blue"}])
    r1, b1 = address(cli, "r1"), address(cli, "b1")

    # each reaches its own gateway, and the host reaches both: the network works
    assert pings(cli, "r1", red["gateway"]) and pings(cli, "b1", blue["gateway"])
    assert ns.ping(r1) and ns.ping(b1)
    # but the host does not route between them
    assert not pings(cli, "r1", b1)
    assert not pings(cli, "b1", r1)
    assert resolves(cli, "r1", "b1") is None  # nor does one network's dnsmasq know the other's names


def test_stop_start_rewires_and_delete_leaves_nothing_behind(world, ns, root, rootfs):
    cli = world
    lan = make_network(cli, local("lan", "10.87.0.0/24"))
    web = container(cli, rootfs, "web", [{"network": "lan"}])
    veth = cni.veth_name(web["uuid"], 0)

    def dns(name: str) -> str:
        return run(BUSYBOX, "nslookup", name, lan["gateway"], ns=ns.name, check=False).stdout

    first = address(cli, "web")
    assert ns.ping(first) and ns.ports("ev-lan") == {veth}
    assert first in dns("web")

    cli.ok("stop", "web")
    assert ns.ports("ev-lan") == set() and ns.veths() == set()
    assert not ns.ping(first)
    assert address(cli, "web") is None
    assert first not in dns("web")  # its name goes with its address

    cli.ok("start", "web")
    again = address(cli, "web")
    assert again and in_range(again, lan["static_range"])
    assert ns.ping(again) and ns.ports("ev-lan") == {veth}
    assert again in dns("web")

    # a second container too, then delete: domains first, then the network
    container(cli, rootfs, "db", [{"network": "lan"}])
    cli.ok("delete", "web")
    cli.ok("delete", "db")
    assert ns.ports("ev-lan") == set() and ns.veths() == set()
    cli.ok("network", "delete", "lan")
    nothing_left(ns, root)
    assert cli("doctor").returncode == 0


def test_refusals_change_nothing_on_the_host(world, ns, root, rootfs):
    """Each refusal of the issue, on real domains: one line, its exit code, nothing made or changed."""
    cli = world
    make_network(cli, local("lan", "10.88.0.0/24"))
    container(cli, rootfs, "web", [{"network": "lan"}])
    container(cli, rootfs, "db", [{"network": "lan", "ip": "10.88.0.20"}])

    def snapshot():
        return (cli.ok("list", "-j").stdout, cli.ok("network", "list", "-j").stdout, ns.veths(), ns.bridges(),
                ns.ports("ev-lan"), sorted(r["handle"] for r in ns.nat_rules()), nethost.our_dnsmasqs(str(root)),
                sorted(str(p) for p, _, _ in cni.reservations(root)))

    before = snapshot()
    body = {"brand": "container", "ram": 64, "image": str(rootfs), "cmd": ["/bin/true"]}
    refusals = [
        (["create"], dict(body, nics=[{"network": "nope"}]), 3, "nics.0.network nope is not a network"),
        (["create"], dict(body, nics=[{"network": "lan", "ip": "10.99.0.5"}]), 3, "is not in network lan"),
        (["create"], dict(body, nics=[{"network": "lan", "ip": "10.88.0.200"}]), 3, "DHCP pool"),
        (["create"], dict(body, nics=[{"network": "lan", "ip": "10.88.0.20"}]), 3, "already used by db"),
        (["update", "web"], {"add_nics": [{"network": "nope"}]}, 3, "nope is not a network"),
        (["network", "create"], local("lan2", "10.88.0.0/16"), 3, "overlaps network lan"),
        (["network", "delete", "lan"], None, 5, "used by 2 domain(s): "),
    ]
    for argv, payload, code, words in refusals:
        proc = cli(*argv, input=json.dumps(payload) if payload is not None else None)
        assert proc.returncode == code, (argv, payload, proc.returncode, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
        assert snapshot() == before, (argv, payload)
    assert set(proc.stderr.split(": ")[-1].strip().split(", ")) == {"web", "db"}  # delete named both
    assert pings(cli, "web", "db")  # and what was there still works
