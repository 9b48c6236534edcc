"""Networks as objects (issue 10), on the host side: what `eveadm network` makes in a namespace
(bridge, gateway address, dnsmasq, masquerade rule), and that it removes, restores and refuses
what it should."""

import json
import os

from netnstest import BUSYBOX, new_namespace, run

from eveadm.backends.host import pid_alive, wait_until
from eveadm.network import leases, lookup

LAN = {"name": "lan", "type": "local", "subnet": "10.77.0.0/24"}


def create(cli, payload):
    return json.loads(cli.ok("network", "create", "-j", input=json.dumps(payload)).stdout)


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")


def masquerades(ns) -> list[str]:
    """The comments of the masquerade rules in table ip eveadm."""
    return [r.get("comment", "") for r in ns.nat_rules() if any("masquerade" in e for e in r["expr"])]


def test_local_network_create_list_update_delete(cli, ns, root):
    net = create(cli, {**LAN, "dns": ["192.0.2.53"]})
    assert net["bridge"] == "ev-lan" and net["gateway"] == "10.77.0.1" and net["up"] is True
    # the bridge, with the gateway address, up
    assert ns.addresses("ev-lan") == ["10.77.0.1/24"]
    assert ns.link("ev-lan")["linkinfo"]["info_kind"] == "bridge"
    # dnsmasq serving the bridge only, with the network's upstream resolver
    pid = net["dnsmasq_pid"]
    argv = cmdline(pid)
    assert os.path.basename(argv[0]) == "dnsmasq" and "--interface=ev-lan" in argv and "--server=192.0.2.53" in argv
    assert "--dhcp-range=10.77.0.128,10.77.0.254,255.255.255.0,1h" in argv  # the upper half: the lower is static
    # NAT for the subnet, in eveadm's own table
    [comment] = masquerades(ns)
    assert comment.endswith(" lan")
    # what other backends read
    assert lookup(str(root), "lan") == {"name": "lan", "type": "local", "bridge": "ev-lan",
                                        "subnet": "10.77.0.0/24", "gateway": "10.77.0.1", "dns": ["10.77.0.1"],
                                        "mtu": None, "static_range": ["10.77.0.2", "10.77.0.127"],
                                        "dhcp_range": ["10.77.0.128", "10.77.0.254"]}
    assert lookup(str(root), "nope") is None

    table = cli.ok("network", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "BRIDGE", "SUBNET", "GATEWAY", "MTU", "STATE", "DOMAINS"]
    assert table[1].split() == ["lan", "local", "ev-lan", "10.77.0.0/24", "10.77.0.1", "-", "up", "0"]
    assert [n["name"] for n in json.loads(cli.ok("network", "list", "-j").stdout)] == ["lan"]
    got = json.loads(cli.ok("network", "get", "lan").stdout)
    assert got["subnet"] == "10.77.0.0/24" and got["domains"] == []

    # update: the bridge takes the MTU, dnsmasq is started anew with it
    out = json.loads(cli.ok("network", "update", "lan", "mtu=1400", "-j").stdout)
    assert out["changed"] == ["mtu"]
    assert ns.link("ev-lan")["mtu"] == 1400
    new_pid = out["network"]["dnsmasq_pid"]
    assert new_pid != pid and not pid_alive(pid)
    assert "--dhcp-option=option:mtu,1400" in cmdline(new_pid)
    assert lookup(str(root), "lan")["mtu"] == 1400

    removed = json.loads(cli.ok("network", "delete", "lan", "-j").stdout)["removed"]
    assert set(removed) == {"dnsmasq", "nft rules", "bridge ev-lan"}
    assert "ev-lan" not in ns.bridges()
    assert wait_until(lambda: not pid_alive(new_pid), 5)
    assert not ns.has_table()  # its last rule gone, eveadm's table goes too
    assert cli.ok("network", "list", "-j").stdout.strip() == "[]"
    assert not (root / "networks" / "lan").exists()
    journal = [json.loads(line) for line in cli.ok("events", "-j").stdout.splitlines()]
    assert [e["type"] for e in journal if e["uuid"] == "network:lan"] == [
        "network.create", "network.update", "network.delete"]


def test_bad_input_is_refused_and_changes_nothing(cli, ns):
    create(cli, LAN)
    before = cli.ok("network", "list", "-j").stdout
    bad = [
        ({**LAN, "name": "lan2", "subnet": "10.77.0.128/25"}, 3, "overlaps network lan"),
        ({"name": "lan3", "type": "local", "subnet": "10.78.0.1/24"}, 3, "CIDR"),
        ({"name": "lan3", "type": "local", "subnet": "300.1.0.0/16"}, 3, "CIDR"),
        ({"name": "lan3", "type": "mesh"}, 3, "type must be one of switch, local"),
        ({"name": "lan3", "type": "local"}, 3, "missing: subnet"),
        ({"name": "lan3", "type": "switch", "uplink": "nosuch0"}, 3, "nosuch0 is not an interface"),
        ({"name": "lan3", "type": "local", "subnet": "10.79.0.0/24", "mtu": 100}, 3, "mtu must be"),
        ({"name": "lan3", "type": "local", "subnet": "10.79.0.0/24", "color": "red"}, 3, "unknown properties"),
        ({"name": "bad name", "type": "switch"}, 3, "name must be"),
        (LAN, 5, "already exists"),
    ]
    for payload, code, text in bad:
        proc = cli("network", "create", input=json.dumps(payload))
        assert proc.returncode == code, (payload, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and text in proc.stderr, proc.stderr
    assert cli.ok("network", "list", "-j").stdout == before
    assert sorted(ns.bridges()) == ["ev-lan"]
    assert len(masquerades(ns)) == 1

    # domains' nics: a network that does not exist, an address outside it, both network and bridge
    for nic, text in [({"network": "nope"}, "nics.0.network nope is not a network"),
                      ({"network": "lan", "ip": "10.9.0.5"}, "nics.0.ip 10.9.0.5 is not in network lan"),
                      ({"network": "lan", "ip": "10.77.0.1"}, "gateway"),
                      ({"network": "lan", "ip": "10.77.0.300"}, "must be an IPv4 address"),
                      ({"network": "lan", "ip": "10.77.0.200"}, "DHCP pool (10.77.0.128-10.77.0.254)"),
                      ({"network": "lan", "ip": "10.77.0.7/16"}, "is not in network lan"),
                      ({"network": "lan", "bridge": "ev-lan"}, "names both a network and a bridge")]:
        proc = cli("create", input=json.dumps({"brand": "null", "alias": "x", "nics": [nic]}))
        assert proc.returncode == 3 and text in proc.stderr, (nic, proc.stderr)
    assert cli.ok("list", "-j").stdout.strip() == "[]"

    # in use: delete refused, naming the domain; an update cannot move a nic off the subnet
    dom = cli.create({"brand": "null", "alias": "web", "nics": [{"network": "lan", "ip": "10.77.0.5"}]})
    proc = cli("create", input=json.dumps({"brand": "null", "alias": "db", "nics": [{"network": "lan",
                                                                                   "ip": "10.77.0.5"}]}))
    assert proc.returncode == 3 and "10.77.0.5 on network lan is already used by web" in proc.stderr
    proc = cli("network", "delete", "lan")
    assert proc.returncode == 5 and "used by 1 domain(s): web" in proc.stderr
    assert json.loads(cli.ok("network", "get", "lan").stdout)["domains"] == [dom["uuid"]]
    proc = cli("update", "web", input=json.dumps({"add_nics": [{"network": "lan", "ip": "10.1.0.9"}]}))
    assert proc.returncode == 3 and "is not in network lan" in proc.stderr
    proc = cli("network", "update", "lan", "subnet=10.80.0.0/24")
    assert proc.returncode == 3 and "cannot be changed" in proc.stderr
    assert cli("network", "get", "nope").returncode == 4
    cli.ok("delete", "web")
    cli.ok("network", "delete", "lan")


def test_network_up_restores_bridge_dnsmasq_and_nat(cli, ns, root):
    net = create(cli, LAN)
    os.kill(net["dnsmasq_pid"], 15)
    assert wait_until(lambda: not pid_alive(net["dnsmasq_pid"]), 5)
    run("ip", "link", "del", "ev-lan", ns=ns.name)  # as after a reboot: no bridge, no address
    run("nft", "delete", "table", "ip", "eveadm", ns=ns.name)
    got = json.loads(cli.ok("network", "get", "lan").stdout)
    assert got["up"] is False and got["dnsmasq_pid"] is None

    made = json.loads(cli.ok("network", "up", "-j").stdout)
    assert made == {"lan": ["bridge ev-lan", "nft rules", "dnsmasq"]}
    assert ns.addresses("ev-lan") == ["10.77.0.1/24"]
    assert len(masquerades(ns)) == 1
    got = json.loads(cli.ok("network", "get", "lan").stdout)
    assert got["up"] is True and pid_alive(got["dnsmasq_pid"])
    assert json.loads(cli.ok("network", "up", "-j").stdout) == {"lan": []}  # all there: nothing remade
    cli.ok("network", "delete", "lan")


def test_switch_network_enslaves_its_uplink_and_releases_it(cli, ns):
    # the operator's port: one end of a veth pair (this kernel may have no dummy driver)
    run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0peer", ns=ns.name)
    net = create(cli, {"name": "sw", "type": "switch", "uplink": "up0", "mtu": 1500})
    assert net["bridge"] == "ev-sw" and "subnet" not in net and "dnsmasq_pid" not in net
    assert ns.link("up0")["master"] == "ev-sw"
    assert ns.addresses("ev-sw") == [] and not ns.has_table()
    proc = cli("network", "create", input=json.dumps({"name": "sw2", "type": "switch", "uplink": "up0"}))
    assert proc.returncode == 3 and "already the uplink of network sw" in proc.stderr
    cli.ok("network", "delete", "sw")
    assert "ev-sw" not in ns.bridges()
    assert ns.link("up0") is not None and "master" not in ns.link("up0")  # the operator's port stays


def test_doctor_finds_and_removes_what_a_killed_create_left(cli, ns, root):
    # killed after dnsmasq started, before the record was written: bridge, rule, dnsmasq, no network
    proc = cli("network", "create", input=json.dumps(LAN), env={"EVEADM_FAULT": "run:dnsmasq:after@1"})
    assert proc.returncode == -9 or proc.returncode == 137, proc
    assert cli.ok("network", "list", "-j").stdout.strip() == "[]"
    assert "ev-lan" in ns.bridges() and len(masquerades(ns)) == 1
    run("ip", "link", "add", "ev-foreign", "type", "bridge", ns=ns.name)  # not eveadm's: never touched

    proc = cli("doctor")
    assert proc.returncode == 1
    findings = proc.stdout
    assert "network: dnsmasq pid" in findings and "of network lan" in findings
    assert "network: nft rule handle" in findings and "network: bridge ev-lan of network lan" in findings
    assert "left over from a deleted network" in findings
    assert "ev-foreign" not in findings

    cli.ok("doctor", "--fix")
    assert ns.bridges() == ["ev-foreign"]
    assert masquerades(ns) == []
    assert not (root / "networks" / "lan").exists()
    from eveadm.network import host as nethost

    assert nethost.our_dnsmasqs(str(root)) == {}
    assert cli("doctor").returncode == 0


def test_dhcp_lease_from_dnsmasq_seen_through_leases(cli, ns, root):
    """A client namespace on a veth into the bridge gets an address from dnsmasq, and leases() and
    `network leases` report it; the client's name then resolves through dnsmasq."""
    if not BUSYBOX.exists():
        import pytest

        pytest.skip(f"no busybox at {BUSYBOX} (for udhcpc)")
    create(cli, LAN)
    client = new_namespace()
    try:
        run("ip", "link", "add", "vh-lan", "type", "veth", "peer", "name", "eth0", "netns", client, ns=ns.name)
        run("ip", "link", "set", "vh-lan", "master", "ev-lan", "up", ns=ns.name)
        run("ip", "link", "set", "eth0", "up", ns=client)
        mac = json.loads(run("ip", "-j", "link", "show", "dev", "eth0", ns=client).stdout)[0]["address"]
        # -s /bin/true: take the lease, configure nothing (the test sets the address itself)
        out = run(BUSYBOX, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "1", "-s", "/bin/true",
                  "-x", "hostname:client1", ns=client, timeout=60)
        assert "obtained" in out.stdout + out.stderr, out
        got = leases(str(root), "lan")
        assert list(got) == [mac]
        ip = got[mac]
        assert ip.startswith("10.77.0.") and (ip + " obtained") in out.stdout + out.stderr
        assert json.loads(cli.ok("network", "leases", "lan", "-j").stdout) == {mac: ip}

        run("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=client)
        answer = run(BUSYBOX, "nslookup", "client1", "10.77.0.1", ns=client, check=False)
        assert ip in answer.stdout, answer
        ping = run(BUSYBOX, "ping", "-c", "1", "-W", "5", "10.77.0.1", ns=client, check=False)
        assert ping.returncode == 0, ping
    finally:
        run("ip", "netns", "del", client, check=False)
    cli.ok("network", "delete", "lan")


def test_registered_names_resolve_through_dnsmasq(cli, ns, root):
    """A name a backend registers for a static address resolves at the gateway, survives a restart of
    dnsmasq by `network up`, and is gone once dropped."""
    import sys

    if not BUSYBOX.exists():
        import pytest

        pytest.skip(f"no busybox at {BUSYBOX} (for nslookup)")
    create(cli, LAN)

    def names(call: str):
        code = f"import sys; from eveadm.network import names; print(names.{call})"
        run(sys.executable, "-c", code, ns=ns.name)

    def resolve(name: str) -> str:
        return run(BUSYBOX, "nslookup", name, "10.77.0.1", ns=ns.name, check=False).stdout

    names(f"set_name({str(root)!r}, 'lan', 'u1/0', 'web1', '10.77.0.9')")
    assert "10.77.0.9" in resolve("web1")
    pid = json.loads(cli.ok("network", "get", "lan").stdout)["dnsmasq_pid"]
    os.kill(pid, 15)
    assert wait_until(lambda: not pid_alive(pid), 5)
    cli.ok("network", "up")
    assert "10.77.0.9" in resolve("web1")
    names(f"drop_name({str(root)!r}, 'lan', 'u1/0')")
    assert "10.77.0.9" not in resolve("web1")
    cli.ok("network", "delete", "lan")


def test_concurrent_creates_of_overlapping_subnets_admit_one(cli, ns):
    """The overlap check and the insert happen under one lock: of two creates racing for overlapping
    subnets, exactly one succeeds and the other is refused with exit 3."""
    from concurrent.futures import ThreadPoolExecutor

    payloads = [{"name": "a", "type": "local", "subnet": "10.81.0.0/16"},
                {"name": "b", "type": "local", "subnet": "10.81.7.0/24"}]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda p: cli("network", "create", input=json.dumps(p)), payloads))
    assert sorted(p.returncode for p in procs) == [0, 3], [p.stderr for p in procs]
    [kept] = json.loads(cli.ok("network", "list", "-j").stdout)
    assert ns.bridges() == [kept["bridge"]] and len(masquerades(ns)) == 1
    cli.ok("network", "delete", kept["name"])
