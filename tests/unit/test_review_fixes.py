"""Regression tests for races and holes found in review of the engine."""

import json

import eveadm
from eveadm.backends.base import ABSENT, BackendContext, Status
from eveadm.backends.null import NullBackend


def test_stale_status_is_not_applied_to_a_domain_a_command_just_changed(tmp_path):
    node = eveadm.Node(root=tmp_path)
    dom = node.create({"brand": "null", "autoboot": False})
    stale = node.engine.store.get(dom["uuid"])      # what a slow `list` read before...
    node.start(dom["uuid"])                          # ...a start finished meanwhile
    node.engine._settle(stale, Status(ABSENT))       # ...and its out-of-date status arrives
    assert node.get(dom["uuid"])["state"] == "running"


def test_start_of_a_failed_domain_that_still_exists_replaces_it(cli):
    import sqlite3

    dom = cli.create({"brand": "null"})
    db = sqlite3.connect(cli.root / "eveadm.db")   # as after a stop killed half-way
    db.execute("UPDATE domains SET state='stopping' WHERE uuid=?", (dom["uuid"],))
    db.commit()
    assert cli.json("get", dom["uuid"])["state"] == "failed"
    cli.ok("start", dom["uuid"])
    sim = NullBackend(BackendContext(cli.root))
    live = [r for r in sim.db.execute("SELECT uuid, state FROM sim WHERE state IS NOT NULL")]
    assert live == [(dom["uuid"], "running")]
    types = [json.loads(l)["type"] for l in cli.ok("events", "-j", dom["uuid"]).stdout.splitlines()]
    assert "stop.forced" in types or "stop.destroyed" in types


def test_booting_left_by_a_killed_start_is_resolved(cli):
    import sqlite3

    dom = cli.create({"brand": "null"})
    db = sqlite3.connect(cli.root / "eveadm.db")
    db.execute("UPDATE domains SET state='booting' WHERE uuid=?", (dom["uuid"],))
    db.commit()
    assert cli.json("get", dom["uuid"])["state"] == "running"


def test_reboot_clears_pending_restart(cli):
    dom = cli.create({"brand": "null"})
    assert cli.json("update", dom["uuid"], "vcpus=2", "-j")["domain"]["pending_restart"] == ["vcpus"]
    cli.ok("reboot", dom["uuid"])
    assert "pending_restart" not in cli.json("get", dom["uuid"])


def test_lookup_output_keys_are_checked_and_nested(cli):
    dom = cli.create({"brand": "null", "tags": {"role": "db"}})
    proc = cli("lookup", "-j", "-o", "bogus")
    assert proc.returncode == 2 and 'invalid output key: "bogus"' in proc.stderr
    assert cli.json("lookup", "-j", "-o", "uuid,tags.role") == [{"uuid": dom["uuid"], "tags.role": "db"}]


def test_scalar_payload_properties_are_list_keys(cli, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    cli.create({"brand": "null", "workdir": "/srv", "alias": "w"})
    assert cli.ok("list", "-H", "-o", "alias,workdir", "workdir=/srv").stdout.split() == ["w", "/srv"]


def test_duplicates_backward_ranges_and_nan_are_refused(cli):
    for payload, needle in [
        ({"brand": "null", "nics": [{"mac": "02:00:00:00:00:01"}, {"mac": "02:00:00:00:00:01"}]},
         "nics.1.mac 02:00:00:00:00:01 is used twice"),
        ({"brand": "null", "pci_devices": [{"address": "0000:00:04.0"}, {"address": "0000:00:04.0"}]},
         "pci_devices.1.address"),
        ({"brand": "null", "cpus": "5-1"}, "range 5-1 goes backwards"),
    ]:
        proc = cli("create", input=json.dumps(payload))
        assert proc.returncode == 3 and needle in proc.stderr, proc.stderr
    proc = cli("create", input='{"brand": "null", "tags": {"a": NaN}}')
    assert proc.returncode == 3 and "NaN is not a JSON value" in proc.stderr
    assert cli.ok("list", "-H").stdout == ""


def test_control_characters_and_bad_vnc_ports_are_refused(cli, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    proc = cli("validate", "create", input=json.dumps({"brand": "kvm", "kernel": str(kernel), "cmdline": "a\nb"}))
    assert proc.returncode == 3 and "cmdline" in proc.stdout and "control characters" in proc.stdout
    proc = cli("validate", "create", input=json.dumps({"brand": "kvm", "kernel": str(kernel), "vnc_port": 5}))
    assert proc.returncode == 3 and "5900 + display number" in proc.stdout
    proc = cli("validate", "create", input=json.dumps({"brand": "rkt", "image": "--insecure"}))
    assert proc.returncode == 3 and "read as an option" in proc.stdout


def test_list_asks_each_backend_once_for_all_its_domains(tmp_path, monkeypatch):
    from eveadm.backends.null import NullBackend as NB

    node = eveadm.Node(root=tmp_path)
    for _ in range(5):
        node.create({"brand": "null"})
    node.create({"brand": "null", "autoboot": False})  # stopped: nothing to ask
    calls = []
    real = NB.status
    def counting(self, doms):
        doms = list(doms)
        calls.append(len(doms))
        return real(self, doms)

    monkeypatch.setattr(NB, "status", counting)
    assert len(eveadm.Node(root=tmp_path).list()) == 6
    assert calls == [5]
