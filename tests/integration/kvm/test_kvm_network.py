"""kvm nics end to end, real QEMU, entirely inside a network namespace each test creates.

The namespace holds a bridge with an address (the test's "host side"); eveadm runs inside it
(`ip netns exec NS python -m eveadm ...`), so its taps, the guest's traffic, the test's dnsmasq and
its ping never leave the namespace. The namespace is deleted at teardown (with whatever is left in it).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import uuid as _uuid
from pathlib import Path

import pytest

from kvmtest import REPO, log_bytes, qemus_under, wait_log
from netnstest import BUSYBOX
from eveadm.backends.host import wait_until

pytestmark = pytest.mark.kvm

SUBNET = ipaddress.ip_network("10.77.0.0/24")
BRIDGE_ADDR = "10.77.0.1/24"
GUEST_IP = re.compile(rb"EVEADM-GUEST-IP eth0 (\d+\.\d+\.\d+\.\d+)/(\d+)")


def sh(*argv, check=True, timeout=30) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, argv))} -> {proc.returncode}: {proc.stderr.decode()}"
    return proc


class Netns:
    def __init__(self, name: str):
        self.name = name

    def run(self, *argv, check=True, timeout=30) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout)

    def links(self) -> dict[str, dict]:
        """The namespace's links by name (iproute2's JSON output)."""
        out = json.loads(self.run("ip", "-j", "-d", "link", "show").stdout or b"[]")
        return {link["ifname"]: link for link in out}

    def taps(self) -> list[str]:
        return [name for name, link in self.links().items()
                if (link.get("linkinfo") or {}).get("info_kind") == "tun"]


@pytest.fixture
def netns():
    """A namespace with lo up and a bridge br0 at 10.77.0.1/24; deleted at teardown."""
    if not shutil.which("ip"):
        pytest.fail("ip is missing: apt-get install iproute2")
    if not shutil.which("ping"):
        pytest.fail("ping is missing: apt-get install iputils-ping")
    ns = Netns("eveadm-test-" + _uuid.uuid4().hex[:8])
    sh("ip", "netns", "add", ns.name)
    try:
        ns.run("ip", "link", "set", "dev", "lo", "up")
        ns.run("ip", "link", "add", "br0", "type", "bridge")
        ns.run("ip", "addr", "add", BRIDGE_ADDR, "dev", "br0")
        ns.run("ip", "link", "set", "dev", "br0", "up")
        yield ns
    finally:
        sh("ip", "netns", "delete", ns.name, check=False)


@pytest.fixture
def dnsmasq(netns, root):
    """The test's own dnsmasq, DHCP only (--port=0: no DNS), bound to br0 inside the namespace."""
    if not shutil.which("dnsmasq"):
        pytest.fail("dnsmasq is missing: apt-get install dnsmasq")
    leases = root / "dnsmasq.leases"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
         "--port=0", "--interface=br0", "--bind-interfaces", "--dhcp-authoritative",
         "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h", f"--dhcp-leasefile={leases}",
         "--log-dhcp", f"--log-facility={root / 'dnsmasq.log'}", "--user=root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # ready when it has written its log's start line (it opens the DHCP socket before)
        ok = wait_until(lambda: b"started" in log_bytes(root / "dnsmasq.log") or proc.poll() is not None, 10)
        assert ok and proc.poll() is None, f"dnsmasq did not start: {proc.stderr.read().decode() if proc.poll() is not None else 'no start line'}"
        yield leases
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ev(ns: Netns, root: Path, *args, stdin: bytes | None = None, check: bool = True):
    """eveadm inside the namespace."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("EVEADM_ROOT", None)
    env["EVEADM_CREATE_RETRY_DELAY"] = "0"
    proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-m", "eveadm", "--root", str(root),
                           *map(str, args)], input=stdin, capture_output=True, env=env, timeout=180)
    if check:
        assert proc.returncode == 0, f"eveadm {' '.join(map(str, args))} -> {proc.returncode}: {proc.stderr.decode()}"
    return proc


def payload(guest: Path, extra: str = "", **over) -> bytes:
    p = {"brand": "kvm", "kernel": str(guest / "vmlinuz"), "initrd": str(guest / "initramfs.cpio.gz"),
         "cmdline": "console=ttyS0 quiet panic=-1 eveadm.net " + extra}
    p.update(over)
    return json.dumps(p).encode()


def guest_ip(log_path, count: int = 1) -> ipaddress.IPv4Interface:
    text = wait_log(log_path, b"EVEADM-GUEST-IP eth0", count=count)
    found = GUEST_IP.findall(text)
    assert len(found) >= count, text[-600:]
    addr, prefix = found[count - 1]
    return ipaddress.ip_interface(f"{addr.decode()}/{prefix.decode()}")


def lease_of(leases: Path, mac: str) -> str | None:
    """dnsmasq's lease file: `<expiry> <mac> <ip> <hostname> <client id>` per line."""
    for line in log_bytes(leases).decode().splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == mac:
            return words[2]
    return None


def test_guest_gets_a_dhcp_address_on_a_bridge_and_answers_ping(netns, dnsmasq, root, guest):
    mac = "02:00:00:77:00:01"
    dom = json.loads(ev(netns, root, "create", "-j", stdin=payload(
        guest, alias="netvm", nics=[{"bridge": "br0", "mac": mac}])).stdout)
    uuid = dom["uuid"]
    tap = f"ek{uuid[:8]}.0"
    log = dom["backend"]["serial_log"]

    addr = guest_ip(log)
    assert addr.ip in SUBNET and addr.network == SUBNET, addr
    assert wait_until(lambda: lease_of(dnsmasq, mac) is not None, 5)
    assert lease_of(dnsmasq, mac) == str(addr.ip)
    netns.run("ping", "-c1", "-W2", str(addr.ip))

    links = netns.links()
    assert links[tap].get("master") == "br0", links[tap]
    assert links[tap]["linkinfo"]["info_kind"] == "tun"
    assert links[tap].get("ifalias", "").startswith(f"eveadm {uuid} ")
    info = json.loads(ev(netns, root, "info", uuid, "-j").stdout)
    nics = info["runtime"]["nics"]
    assert nics[0]["tap"] == tap and nics[0]["bridge"] == "br0" and nics[0]["mac"] == mac, nics
    assert nics[0]["tap_present"] is True

    ev(netns, root, "stop", uuid)
    assert tap not in netns.links(), "the tap outlived its stopped domain"

    ev(netns, root, "start", uuid)
    assert netns.links()[tap].get("master") == "br0"
    again = guest_ip(log, count=2)
    assert again.ip == addr.ip  # dnsmasq gives the same mac the same address
    netns.run("ping", "-c1", "-W2", str(again.ip))

    ev(netns, root, "delete", uuid)
    assert not netns.taps(), f"taps left after delete: {netns.taps()}"
    assert not qemus_under(root)


def test_static_address_and_mtu_from_the_nic(netns, root, guest):
    dom = json.loads(ev(netns, root, "create", "-j", stdin=payload(
        guest, extra="eveadm.ip=10.77.0.9/24 eveadm.gw=10.77.0.1",
        nics=[{"bridge": "br0", "mac": "02:00:00:77:00:02", "mtu": 1400}])).stdout)
    uuid = dom["uuid"]
    tap = f"ek{uuid[:8]}.0"
    assert guest_ip(dom["backend"]["serial_log"]) == ipaddress.ip_interface("10.77.0.9/24")
    assert netns.links()[tap]["mtu"] == 1400
    netns.run("ping", "-c1", "-W2", "10.77.0.9")
    ev(netns, root, "delete", uuid)
    assert not netns.taps()


def test_a_bridge_that_does_not_exist_is_refused_before_anything_is_made(netns, root, guest):
    body = payload(guest, nics=[{"bridge": "nosuchbr0", "mac": "02:00:00:77:00:03"}])
    proc = ev(netns, root, "validate", "create", stdin=body, check=False)
    assert proc.returncode == 3, proc.stderr.decode() + proc.stdout.decode()
    assert b"nosuchbr0" in proc.stdout + proc.stderr
    proc = ev(netns, root, "create", stdin=body, check=False)
    assert proc.returncode == 3, proc.stderr.decode()
    assert b"nosuchbr0" in proc.stderr and len(proc.stderr.decode().strip().splitlines()) == 1, proc.stderr
    assert json.loads(ev(netns, root, "list", "-j").stdout) == []
    assert not netns.taps() and not qemus_under(root)
    # an interface that exists but is no bridge is refused too
    netns.run("ip", "tuntap", "add", "dev", "notabr0", "mode", "tap")
    body = payload(guest, nics=[{"bridge": "notabr0", "mac": "02:00:00:77:00:04"}])
    proc = ev(netns, root, "create", stdin=body, check=False)
    assert proc.returncode == 3 and b"not a bridge" in proc.stderr, proc.stderr


def test_doctor_removes_taps_eveadm_made_for_unknown_domains_and_no_other(netns, root, guest):
    from eveadm.backends.host import BackendContext
    from eveadm.backends.kvm import nics

    # make the root (and its store) as a create would, then the taps a killed create would leave
    ev(netns, root, "list")
    lost = str(_uuid.uuid4())
    digest = nics.root_digest(BackendContext(root))
    netns.run("ip", "tuntap", "add", "dev", f"ek{lost[:8]}.0", "mode", "tap")
    netns.run("ip", "link", "set", "dev", f"ek{lost[:8]}.0", "alias", f"eveadm {lost} {digest}")
    # not ours: a tap with eveadm's prefix but no alias, and one of another state root
    netns.run("ip", "tuntap", "add", "dev", "ek00000000.0", "mode", "tap")
    netns.run("ip", "tuntap", "add", "dev", "ek11111111.0", "mode", "tap")
    netns.run("ip", "link", "set", "dev", "ek11111111.0", "alias", f"eveadm {_uuid.uuid4()} {'0' * 16}")

    # a create killed between `ip tuntap add` and the alias: the tap is named only in the intent record
    unlabelled = str(_uuid.uuid4())
    (root / "run" / unlabelled).mkdir(parents=True)
    (root / "run" / unlabelled / "taps").write_text(f"ek{unlabelled[:8]}.0\n")
    netns.run("ip", "tuntap", "add", "dev", f"ek{unlabelled[:8]}.0", "mode", "tap")

    report = ev(netns, root, "doctor", check=False)
    text = report.stdout + report.stderr
    assert f"ek{lost[:8]}.0".encode() in text and f"ek{unlabelled[:8]}.0".encode() in text, text
    assert b"ek00000000.0" not in text and b"ek11111111.0" not in text
    ev(netns, root, "doctor", "--fix", check=False)
    left = netns.taps()
    assert f"ek{lost[:8]}.0" not in left and f"ek{unlabelled[:8]}.0" not in left
    assert "ek00000000.0" in left and "ek11111111.0" in left
    again = ev(netns, root, "doctor", check=False)
    assert b"tap " not in again.stdout + again.stderr, again.stdout


# -- metadata in the NoCloud seed (no traffic: these run in the test's own process) --------------------

def iso_file(iso: Path, name: str) -> str:
    """A file of the seed ISO, read with isoinfo (genisoimage's reader), by its Rock Ridge name."""
    proc = sh("isoinfo", "-i", iso, "-R", "-x", f"/{name}")
    return proc.stdout.decode()


def iso_names(iso: Path) -> set[str]:
    out = sh("isoinfo", "-i", iso, "-R", "-f").stdout.decode()
    return {line.strip().lstrip("/") for line in out.splitlines() if line.strip()}


def test_seed_carries_hostname_customer_metadata_and_static_network_config(ctx, make_dom):
    from eveadm.backends.vm import cloudinit

    dom = make_dom(alias="meta-vm", customer_metadata={"role": "db", "user-script": "echo hi"},
                   nics=[{"mac": "02:00:00:77:00:05", "ip": "10.77.0.20/24", "gateway": "10.77.0.1"},
                         {"mac": "02:00:00:77:00:06", "ip": "10.78.0.20"},
                         {"mac": "02:00:00:77:00:07"}])
    assert cloudinit.wanted(dom.config)
    iso = cloudinit.build(ctx, dom)
    assert iso_names(iso) == {"user-data", "meta-data", "customer-metadata.json", "network-config"}
    meta = iso_file(iso, "meta-data")
    assert f"instance-id: {dom.uuid}\n" in meta and "local-hostname: meta-vm\n" in meta
    assert json.loads(iso_file(iso, "customer-metadata.json")) == {"role": "db", "user-script": "echo hi"}
    # meta-data is YAML whose customer_metadata value is JSON: cloud-init sees the same keys
    line = next(ln for ln in meta.splitlines() if ln.startswith("customer_metadata: "))
    assert json.loads(line.split(": ", 1)[1]) == {"role": "db", "user-script": "echo hi"}
    net = json.loads(iso_file(iso, "network-config"))
    assert net["version"] == 2
    eths = net["ethernets"]
    assert eths["nic0"] == {"match": {"macaddress": "02:00:00:77:00:05"}, "addresses": ["10.77.0.20/24"],
                            "routes": [{"to": "default", "via": "10.77.0.1"}]}
    assert eths["nic1"]["addresses"] == ["10.78.0.20/24"] and "routes" not in eths["nic1"]
    assert eths["nic2"] == {"match": {"macaddress": "02:00:00:77:00:07"}, "dhcp4": True}


def test_no_static_address_means_no_network_config_and_the_uuid_is_the_hostname(ctx, make_dom):
    from eveadm.backends.vm import cloudinit

    dom = make_dom(customer_metadata={"k": "v"})
    iso = cloudinit.build(ctx, dom)
    assert "network-config" not in iso_names(iso)
    assert f"local-hostname: {dom.uuid}\n" in iso_file(iso, "meta-data")
    assert not cloudinit.wanted(make_dom().config)  # nothing to tell the guest: no seed, no cdrom


def test_guest_reads_its_hostname_from_the_seed(backend, make_dom):
    from kvmtest import boot

    dom = make_dom(alias="named-guest", customer_metadata={"k": "v"}, extra_cmdline="eveadm.cidata")
    boot(backend, dom)
    try:
        text = wait_log(dom.backend["serial_log"], b"EVEADM-GUEST-HOSTNAME")
        assert b"EVEADM-GUEST-HOSTNAME named-guest" in text
    finally:
        backend.destroy(dom)
        backend.release(dom, delete=True)


# -- nics on an eveadm network object (eveadm.network), inside the namespace ------------------------------

@pytest.fixture
def lan(netns, root):
    """A `local` network `lan` (bridge, dnsmasq, NAT) made by eveadm inside the namespace; deleted
    (dnsmasq stopped) at teardown, before the namespace goes."""
    body = json.dumps({"name": "lan", "type": "local", "subnet": "10.78.0.0/24"}).encode()
    proc = ev(netns, root, "network", "create", "-f", "-", stdin=body, check=False)
    if proc.returncode != 0:
        pytest.fail(f"eveadm network create failed: {proc.stderr.decode()}")
    try:
        yield json.loads(ev(netns, root, "network", "get", "lan").stdout)
    finally:
        for dom in json.loads(ev(netns, root, "list", "-j", check=False).stdout or b"[]"):
            ev(netns, root, "delete", dom["uuid"], check=False)
        ev(netns, root, "network", "delete", "lan", check=False)


def test_guest_on_a_local_network_gets_the_address_eveadm_reports(netns, root, guest, lan):
    dom = json.loads(ev(netns, root, "create", "-j", stdin=payload(guest, alias="onlan",
                                                                   nics=[{"network": "lan"}])).stdout)
    uuid, mac = dom["uuid"], dom["nics"][0]["mac"]
    tap = f"ek{uuid[:8]}.0"
    addr = guest_ip(dom["backend"]["serial_log"])
    assert addr.ip in ipaddress.ip_network(lan["subnet"]), addr
    assert netns.links()[tap].get("master") == lan["bridge"]
    leased = json.loads(ev(netns, root, "network", "leases", "lan", "-j").stdout)
    assert leased.get(mac) == str(addr.ip), leased

    def reported() -> str | None:
        return json.loads(ev(netns, root, "info", uuid).stdout)["runtime"]["nics"][0]["ip"]

    assert wait_until(lambda: reported() is not None, 5)
    nic = json.loads(ev(netns, root, "info", uuid).stdout)["runtime"]["nics"][0]
    assert nic == {"mac": mac, "tap": tap, "bridge": lan["bridge"], "network": "lan", "mtu": None,
                   "ip": str(addr.ip), "tap_present": True}
    got = json.loads(ev(netns, root, "get", uuid).stdout)
    if "ip" in got["nics"][0]:  # get's nics.N.ip, once the engine asks nic_addresses
        assert got["nics"][0]["ip"] == str(addr.ip)
    netns.run("ping", "-c1", "-W2", str(addr.ip))

    ev(netns, root, "delete", uuid)
    assert not netns.taps()


def test_static_address_on_a_network_goes_into_the_seed_with_its_prefix_gateway_and_dns(netns, root, guest, lan):
    dom = json.loads(ev(netns, root, "create", "-j", stdin=payload(
        guest, alias="staticvm", nics=[{"network": "lan", "ip": "10.78.0.50"}])).stdout)
    iso = Path(dom["backend"]["cidata"])
    net = json.loads(iso_file(iso, "network-config"))
    assert net["ethernets"]["nic0"] == {
        "match": {"macaddress": dom["nics"][0]["mac"]}, "addresses": ["10.78.0.50/24"],
        "routes": [{"to": "default", "via": lan["gateway"]}], "nameservers": {"addresses": [lan["gateway"]]}}
    assert "local-hostname: staticvm\n" in iso_file(iso, "meta-data")
    info = json.loads(ev(netns, root, "info", dom["uuid"]).stdout)
    assert info["runtime"]["nics"][0]["ip"] == "10.78.0.50"

    # the network's dnsmasq answers for the static address it never leased, until the domain goes
    def lookup(name: str) -> str:
        return netns.run(BUSYBOX, "nslookup", name, lan["gateway"], check=False).stdout.decode()

    assert "10.78.0.50" in lookup("staticvm")
    ev(netns, root, "stop", "-F", dom["uuid"])
    assert "10.78.0.50" not in lookup("staticvm")


def test_nics_naming_an_unknown_network_or_an_address_outside_it_are_refused(netns, root, guest, lan):
    for nic, words in (({"network": "nosuchnet"}, b"nosuchnet"),
                       ({"network": "lan", "ip": "10.99.0.5"}, b"10.99.0.5")):
        proc = ev(netns, root, "create", stdin=payload(guest, nics=[nic]), check=False)
        assert proc.returncode == 3, (nic, proc.stderr)
        assert words in proc.stderr, proc.stderr
    assert json.loads(ev(netns, root, "list", "-j").stdout) == []
    assert not netns.taps() and not qemus_under(root)


# -- SIGKILL at every kill point of a create with a nic (issue 9's walk, inside the namespace) ------------

def test_create_with_a_nic_killed_at_every_point_leaves_no_tap(netns, root, guest):
    from clitest import Cli
    from faultwalk import check_after_kill, killed_at, trace, usable_or_gone

    class NetnsCli(Cli):
        def __call__(self, *args, input=None, timeout=120, env=None):
            e = dict(self.env)
            e.update(env or {})
            return subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-m", "eveadm",
                                   "--root", str(self.root), *map(str, args)],
                                  input=input if input is not None else "", capture_output=True, text=True,
                                  timeout=timeout, env=e)

    cli = NetnsCli(root / "state")

    def body(uuid: str) -> str:
        return json.dumps({"uuid": uuid, "brand": "kvm", "kernel": str(guest / "vmlinuz"),
                           "initrd": str(guest / "initramfs.cpio.gz"), "cmdline": "console=ttyS0 quiet panic=-1",
                           "stop_timeout": 0, "nics": [{"bridge": "br0"}]})

    def tap_of(uuid: str) -> str:
        return f"ek{uuid[:8]}.0"

    bystander = cli.create(json.loads(body(str(_uuid.uuid4()))))
    first = str(_uuid.uuid4())
    points = trace(cli, ["create"], body(first))
    print(f"create with a nic: {len(points)} kill points")
    assert [p for p in points if p.startswith("run:ip")], points  # the taps are made by eveadm's own commands
    cli.ok("delete", first)
    for point in points:
        uuid = str(_uuid.uuid4())
        killed_at(cli, point, ["create"], body(uuid))
        state = check_after_kill(cli, point, uuid, bystander["uuid"], "running")
        taps = netns.taps()
        assert tap_of(bystander["uuid"]) in taps, f"{point}: the bystander's tap is gone"
        if state in ("running", "paused"):
            assert tap_of(uuid) in taps, f"{point}: {state} without its tap"
        elif state is None:
            assert tap_of(uuid) not in taps, f"{point}: no record, but its tap is left"
        usable_or_gone(cli, point, uuid, state)
        assert tap_of(uuid) not in netns.taps(), f"{point}: tap left after delete"
    assert netns.links()[tap_of(bystander["uuid"])].get("master") == "br0"
    cli.ok("delete", bystander["uuid"])
    assert not netns.taps()
