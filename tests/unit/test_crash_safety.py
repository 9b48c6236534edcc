"""A command killed half-way leaves nothing that `eveadm doctor --fix` cannot repair (docs/contract.md, Concurrency)."""

import json
import signal
import subprocess
import sys

from eveadm.backends.host import BackendContext, wait_until
from eveadm.backends.null import NullBackend


def test_killed_stop_is_reported_and_repaired(cli):
    dom = cli.create({"brand": "null", "alias": "stubborn"})
    NullBackend(BackendContext(cli.root)).behave(dom["uuid"], ignore_shutdown=True)
    stop = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "stop", "stubborn", "-t", "60"],
                            env=cli.env, stderr=subprocess.DEVNULL)
    sent = lambda: "stop.graceful_sent" in cli.ok("events", "-j", "stubborn").stdout  # noqa: E731
    assert wait_until(sent, 30)
    stop.send_signal(signal.SIGKILL)
    stop.wait(10)

    got = cli.json("get", "stubborn")  # the killed command's lock is gone with it
    assert got["state"] == "failed" and "interrupted while stopping" in got["error"]["message"]
    proc = cli("doctor")
    assert proc.returncode == 1 and "failed but still present in null" in proc.stdout
    cli.ok("doctor", "--fix")
    assert cli.json("get", "stubborn")["state"] == "stopped"
    assert cli("doctor").returncode == 0


def test_leftover_directories_are_found_and_removed(cli):
    cli.create({"brand": "null"})
    orphan = cli.root / "domains" / "99999999-0000-4000-8000-000000000000"
    orphan.mkdir(parents=True)
    proc = cli("doctor")
    assert proc.returncode == 1 and str(orphan) in proc.stdout
    cli.ok("doctor", "--fix")
    assert not orphan.exists()


def test_killed_create_is_settled_on_next_read(cli):
    """A create killed before the backend made anything: provisioning -> failed, not stuck."""
    import sqlite3

    dom = cli.create({"brand": "null", "autoboot": False})
    db = sqlite3.connect(cli.root / "eveadm.db")
    db.execute("UPDATE domains SET state='provisioning' WHERE uuid=?", (dom["uuid"],))
    db.commit()
    got = cli.json("get", dom["uuid"])
    assert got["state"] == "failed" and "interrupted" in got["error"]["message"]
    cli.ok("start", dom["uuid"])
    assert cli.json("get", dom["uuid"])["state"] == "running"
    events = [json.loads(l) for l in cli.ok("events", "-j", dom["uuid"]).stdout.splitlines()]
    assert ("provisioning", "failed") in [(e.get("previous_state"), e.get("state")) for e in events]
