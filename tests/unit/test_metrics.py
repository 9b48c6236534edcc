"""`eveadm stats` and the agent's Prometheus metrics on the null brand: names, labels and types as Prometheus
reads them (prometheus_client's own parser), the counts the journal gives, and the stats readers' parsing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid as uuidlib

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import eveadm
from clitest import free_port
from eveadm import metrics
from eveadm.agent import Agent
from eveadm.backends.base import STATS_FIELDS
from eveadm.backends.container import stats as container_stats
from eveadm.backends.host import BackendContext, guest_side_traffic
from eveadm.backends.kvm import stats as kvm_stats
from eveadm.backends.null import NullBackend
from eveadm.backends.xen import parse_xentop

DOMAIN_LABELS = {"uuid", "alias", "brand"}


class CountingNull(NullBackend):
    """The null brand with counters: every running domain reports each stats field, a different number each."""

    def stats(self, doms):
        return {d.uuid: {field: float(i + 1) for i, field in enumerate(STATS_FIELDS)} for d in doms}


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("EVEADM_CREATE_RETRY_DELAY", "0")
    return eveadm.Node(root=tmp_path / "root", backends={"null": CountingNull(BackendContext(tmp_path / "root"))})


def scrape(collector) -> dict:
    """{family name: family} of one scrape, parsed as Prometheus parses the text format."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(collector)
    return {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}


def value(families, name, **labels):
    """The value of the one sample of `name` whose labels include `labels`."""
    found = [s.value for family in families.values() for s in family.samples
             if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_every_domain_has_its_state_and_running_ones_their_counters(node):
    web = node.create({"brand": "null", "alias": "web"})["uuid"]
    idle = node.create({"brand": "null", "autoboot": False})["uuid"]
    fams = scrape(metrics.NodeCollector(lambda: node))

    assert fams["eveadm_domain_state"].type == "gauge"
    for uuid, now in ((web, "running"), (idle, "stopped")):
        states = {s.labels["state"]: s.value for s in fams["eveadm_domain_state"].samples if s.labels["uuid"] == uuid}
        assert states == {now: 1.0}, "one series per domain, labelled with its state"
    assert {s.labels["alias"] for s in fams["eveadm_domain_state"].samples} == {"web", ""}

    expected = {"eveadm_domain_cpu_seconds": "counter", "eveadm_domain_memory_bytes": "gauge",
                "eveadm_domain_disk_read_bytes": "counter", "eveadm_domain_disk_write_bytes": "counter",
                "eveadm_domain_disk_read_ops": "counter", "eveadm_domain_disk_write_ops": "counter",
                "eveadm_domain_network_receive_bytes": "counter", "eveadm_domain_network_transmit_bytes": "counter"}
    for i, (name, kind) in enumerate(expected.items()):
        assert fams[name].type == kind, name
        sample_name = name + "_total" if kind == "counter" else name
        assert [(s.name, s.labels, s.value) for s in fams[name].samples] == [
            (sample_name, {"uuid": web, "alias": "web", "brand": "null"}, float(i + 1))], "only the running domain"
    for name in ("eveadm_domain_restarts", "eveadm_domain_boot_failures"):
        assert fams[name].type == "counter"
        assert {s.labels["uuid"]: s.value for s in fams[name].samples} == {web: 0, idle: 0}, "0 from the start"
        assert all(set(s.labels) == DOMAIN_LABELS for s in fams[name].samples)
    assert {(s.labels["uuid"], s.labels["rung"]) for s in fams["eveadm_domain_stop_escalations"].samples} == {
        (u, r) for u in (web, idle) for r in ("forced", "destroy")}
    assert fams["eveadm_command_duration_seconds"].type == "histogram"
    assert value(fams, "eveadm_command_duration_seconds_count", command="start") == 1  # web's create
    assert value(fams, "eveadm_scrape_read_seconds") > 0


def test_a_restart_by_the_agent_is_counted_once_across_scrapes(node, tmp_path):
    crashy = node.create({"brand": "null", "on_crash": "restart"})["uuid"]
    collector = metrics.NodeCollector(lambda: node)
    assert value(scrape(collector), "eveadm_domain_restarts_total", uuid=crashy) == 0
    NullBackend(BackendContext(tmp_path / "root")).crash(crashy)
    Agent(node, interval=0, log=lambda msg: None).tick()
    assert node.get(crashy)["state"] == "running"
    fams = scrape(collector)
    assert value(fams, "eveadm_domain_restarts_total", uuid=crashy) == 1
    assert value(fams, "eveadm_command_duration_seconds_count", command="start") == 2  # create + restart
    assert value(scrape(collector), "eveadm_domain_restarts_total", uuid=crashy) == 1, "each event counts once"
    assert value(scrape(metrics.NodeCollector(lambda: node)), "eveadm_domain_restarts_total", uuid=crashy) == 1, \
        "a new collector (an agent restarted) counts the journal again"


def test_only_a_stop_that_climbs_past_a_rung_is_an_escalation(node, tmp_path):
    stubborn = node.create({"brand": "null", "alias": "stubborn"})["uuid"]
    forced = node.create({"brand": "null"})["uuid"]
    NullBackend(BackendContext(tmp_path / "root")).behave(stubborn, ignore_shutdown=True)
    node.stop(stubborn, timeout=0.05)  # graceful ignored -> forced
    node.stop(forced, force=True)  # -F: forced is where this stop starts
    fams = scrape(metrics.NodeCollector(lambda: node))
    assert value(fams, "eveadm_domain_stop_escalations_total", uuid=stubborn, rung="forced") == 1
    assert value(fams, "eveadm_domain_stop_escalations_total", uuid=stubborn, rung="destroy") == 0
    assert value(fams, "eveadm_domain_stop_escalations_total", uuid=forced, rung="forced") == 0
    assert value(fams, "eveadm_command_duration_seconds_count", command="stop") == 2
    assert value(fams, "eveadm_command_duration_seconds_bucket", command="stop", le="+Inf") == 2


def test_a_boot_that_fails_after_its_tries_is_one_boot_failure(node, tmp_path, monkeypatch):
    monkeypatch.setenv("EVEADM_CREATE_TRIES", "2")
    uuid = str(uuidlib.uuid4())
    NullBackend(BackendContext(tmp_path / "root")).behave(uuid, fail_create=2)
    with pytest.raises(eveadm.errors.BackendError):
        node.create({"brand": "null", "uuid": uuid})
    collector = metrics.NodeCollector(lambda: node)
    assert value(scrape(collector), "eveadm_domain_boot_failures_total", uuid=uuid) == 1, "two tries, one boot"
    node.start(uuid)
    fams = scrape(collector)
    assert value(fams, "eveadm_domain_boot_failures_total", uuid=uuid) == 1
    assert value(fams, "eveadm_domain_state", uuid=uuid, state="running") == 1


def test_a_deleted_domain_leaves_the_metrics(node):
    uuid = node.create({"brand": "null"})["uuid"]
    collector = metrics.NodeCollector(lambda: node)
    scrape(collector)
    node.delete(uuid)
    fams = scrape(collector)
    assert not [s for s in fams["eveadm_domain_state"].samples if s.labels["uuid"] == uuid]
    assert uuid not in collector.journal.restarts and uuid not in collector.journal.boot_failures


def test_the_agent_serves_metrics_on_loopback_when_given_only_a_port(cli):
    import urllib.request

    from eveadm.backends.host import wait_until

    cli.create({"brand": "null", "alias": "served"})
    port = free_port()
    agent = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "agent", "--interval", "0.2",
                              "--metrics", str(port)], env=cli.env, stderr=subprocess.PIPE, text=True)
    try:
        def served():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    return resp.read().decode()
            except OSError:
                return None

        assert wait_until(lambda: served() is not None, 30)
        fams = {f.name: f for f in text_string_to_metric_families(served())}
        assert value(fams, "eveadm_domain_state", alias="served", state="running") == 1
        assert "process_cpu_seconds" in fams, "the agent's own cost"
        with socket.socket() as s:  # bound on loopback only
            s.settimeout(2)
            addresses = [a for a in _own_addresses() if not a.startswith("127.")]
            if addresses:
                assert s.connect_ex((addresses[0], port)) != 0
    finally:
        agent.terminate()
        rc = agent.wait(30)
    assert rc == 0
    assert f"metrics on http://127.0.0.1:{port}/metrics" in agent.stderr.read()


def _own_addresses() -> list[str]:
    proc = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    return [line.split()[3].split("/")[0] for line in proc.stdout.splitlines() if len(line.split()) > 3]


def test_the_agent_exits_1_in_one_line_when_the_metrics_port_is_taken(cli):
    uuid = cli.create({"brand": "null", "autoboot": False})["uuid"]
    cli.ok("update", uuid, "autoboot=true")  # the agent would boot it: it must not get that far
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = cli("agent", "--metrics", f"127.0.0.1:{busy.getsockname()[1]}", timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("eveadm: cannot serve metrics on 127.0.0.1:")
    assert "Traceback" not in proc.stderr
    assert cli.json("get", uuid)["state"] == "stopped"


@pytest.mark.parametrize("address, why", [(":9464", "no host"), ("::1:9464", "brackets"), ("web:0", "not a port"),
                                          ("127.0.0.1:70000", "not a port"), ("127.0.0.1:", "not a port")])
def test_a_bad_metrics_address_is_a_usage_error(cli, address, why):
    proc = cli("agent", "--metrics", address)
    assert proc.returncode == 2 and why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_stats_lists_active_domains_and_a_named_one_whatever_its_state(cli):
    on = cli.create({"brand": "null", "alias": "on"})["uuid"]
    off = cli.create({"brand": "null", "alias": "off", "autoboot": False})["uuid"]
    rows = cli.json("stats", "-j")
    assert [(r["uuid"], r["state"], r["brand"], r["alias"]) for r in rows] == [(on, "running", "null", "on")]
    assert isinstance(rows[0]["time"], float) and not set(rows[0]) & set(STATS_FIELDS), "null knows no counters"
    assert [r["state"] for r in cli.json("stats", "-j", "off")] == ["stopped"]
    table = cli.ok("stats").stdout.splitlines()
    assert table[0].split() == ["UUID", "ALIAS", "BRAND", "STATE", "CPU-SEC", "CPU%", "MEMORY", "DISK-READ",
                                "DISK-WRITE", "NET-RX", "NET-TX"]
    assert table[1].split()[:4] == [on, "on", "null", "running"] and off not in "".join(table)
    missing = cli("stats", "nothing-here")
    assert missing.returncode == 4 and missing.stdout == ""
    assert cli("stats", "-w", "0").returncode == 2


def test_commands_other_than_the_metrics_agent_never_import_prometheus_client(cli):
    cli.create({"brand": "null"})
    code = ("import sys; from eveadm import cli; rc = cli.main(['--root', sys.argv[1], 'stats']); "
            "assert 'prometheus_client' not in sys.modules, 'imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(cli.root)], env=cli.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- the brands' readers ------------------------------------------------------------------------------

def test_cgroup_v1_counters_and_the_disk_bytes_of_the_containers_processes(tmp_path):
    cpu, mem, pids = (tmp_path / n for n in ("cpuacct", "memory", "pids"))
    for d in (cpu, mem, pids):
        d.mkdir()
    (cpu / "cpuacct.usage").write_text("2500000000\n")
    (mem / "memory.usage_in_bytes").write_text("10485760\n")
    (mem / "memory.stat").write_text("cache 123\ntotal_inactive_file 4194304\n")
    (pids / "cgroup.procs").write_text(f"{os.getpid()}\n")  # this test's process stands in for the container's
    (tmp_path / "written").write_bytes(b"x" * 4096)
    before = {k: int(v) for k, v in (line.split(": ") for line in open("/proc/self/io").read().splitlines())}
    got = container_stats.cgroup_stats([str(cpu), str(mem), str(pids)])
    assert (got["cpu_seconds"], got["memory_bytes"]) == (2.5, 6 * 2 ** 20)
    assert got["disk_read_bytes"] >= before["read_bytes"] and got["disk_write_bytes"] >= before["write_bytes"]
    assert "disk_write_ops" not in got, "v1 counts no requests per process: unknown, so absent"


def test_cgroup_v2_counters_are_read_from_the_unified_hierarchy(tmp_path):
    (tmp_path / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (tmp_path / "memory.current").write_text("8388608\n")
    (tmp_path / "memory.stat").write_text("anon 100\ninactive_file 1048576\n")
    (tmp_path / "io.stat").write_text("254:0 rbytes=512 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                                      "8:0 rbytes=0 wbytes=4096 rios=0 wios=1 dbytes=0 dios=0\n")
    assert container_stats.cgroup_stats([str(tmp_path)]) == {
        "cpu_seconds": 1.5, "memory_bytes": 7 * 2 ** 20, "disk_read_bytes": 512, "disk_write_bytes": 12288,
        "disk_read_ops": 1, "disk_write_ops": 3}


def test_qemu_counters_sum_every_block_device_and_read_the_process():
    answer = [{"device": "drive0", "stats": {"rd_bytes": 100, "wr_bytes": 200, "rd_operations": 1, "wr_operations": 2}},
              {"device": "drive1", "stats": {"rd_bytes": 5, "wr_bytes": 0, "rd_operations": 1, "wr_operations": 0}}]
    assert kvm_stats.block_totals(answer) == {"disk_read_bytes": 105, "disk_write_bytes": 200, "disk_read_ops": 2,
                                              "disk_write_ops": 2}
    me = kvm_stats.process_stats(os.getpid())
    assert me["cpu_seconds"] > 0 and me["memory_bytes"] > 2 ** 20
    assert kvm_stats.process_stats(2 ** 22 + 1) == {}  # above pid_max: no such process
    assert guest_side_traffic(["no-such-tap0"]) == {}
    loopback = guest_side_traffic(["lo"])
    assert loopback["net_rx_bytes"] >= 0 and loopback["net_tx_bytes"] >= 0


XENTOP = """\
      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID
  Domain-0 -----r         41    0.0    1048576   50.0   no limit       n/a     2    0        0        0    0        0        0        0          0          0    0
web.0a1b2c3d --b---          7    0.0     262144   12.5     263168      12.5     1    1       12       34    1        0       56       78        900       1600    0
"""


def test_xentop_batch_output_gives_each_domain_its_counters():
    table = parse_xentop(XENTOP)
    assert table["web.0a1b2c3d"] == {
        "cpu_seconds": 7.0, "memory_bytes": 262144 * 1024, "net_tx_bytes": 12 * 1024, "net_rx_bytes": 34 * 1024,
        "disk_read_ops": 56, "disk_write_ops": 78, "disk_read_bytes": 900 * 512, "disk_write_bytes": 1600 * 512}
    assert table["Domain-0"]["memory_bytes"] == 2 ** 30
    assert parse_xentop("") == {} and parse_xentop("garbage line\n") == {}


def test_stats_json_is_strict_json(cli):
    cli.create({"brand": "null"})
    assert json.loads(cli.ok("stats", "-j").stdout, parse_constant=lambda c: pytest.fail(c))
