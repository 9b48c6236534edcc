"""Reads agree with the backend, and commands left half-way are settled: stale statuses, killed starts,
failed domains that still exist, pending changes."""


import json

import eveadm
from eveadm.backends.base import ABSENT, Status
from eveadm.backends.host import BackendContext
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


def test_reboot_takes_the_pending_change(cli):
    dom = cli.create({"brand": "null"})
    assert cli.json("update", dom["uuid"], "vcpus=2", "-j")["domain"]["pending_restart"] == {"vcpus": 2}
    assert cli.json("get", dom["uuid"])["vcpus"] == 1
    cli.ok("reboot", dom["uuid"])
    shown = cli.json("get", dom["uuid"])
    assert "pending_restart" not in shown and shown["vcpus"] == 2


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
