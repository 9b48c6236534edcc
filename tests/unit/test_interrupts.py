"""SIGINT and SIGTERM stop a command at a safe point: the record stays truthful, nothing is left half-made,
and the exit code is 128 + the signal."""

import json
import signal
import subprocess
import sys
import time

from eveadm.backends.host import BackendContext, wait_until
from eveadm.backends.null import NullBackend


def start(cli, *args, env=None):
    return subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), *args],
                            env={**cli.env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def event_seen(cli, uuid, etype):
    return any(json.loads(line)["type"] == etype for line in cli.ok("events", "-j", uuid).stdout.splitlines())


def test_ctrl_c_during_a_stop_abandons_it_and_the_domain_stays_running(cli):
    dom = cli.create({"brand": "null", "alias": "stubborn"})
    NullBackend(BackendContext(cli.root)).behave(dom["uuid"], ignore_shutdown=True)
    proc = start(cli, "stop", "stubborn", "-t", "60")
    try:
        assert wait_until(lambda: event_seen(cli, dom["uuid"], "stop.graceful_sent"), 20)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
    finally:
        proc.kill()
    assert rc == 130 and time.monotonic() - t0 < 5      # not the 60 s graceful budget
    assert "interrupted by SIGINT" in proc.stderr.read()
    got = cli.json("get", "stubborn")
    assert got["state"] == "running" and got["autoboot"] is True   # the stop did not happen
    assert event_seen(cli, dom["uuid"], "stop.interrupted")


def test_sigterm_between_create_retries_leaves_nothing_running(cli):
    uuid = "aaaaaaaa-1111-4111-8111-000000000009"
    cli.ok("create", input=json.dumps({"brand": "null", "uuid": uuid, "autoboot": False}))
    sim = NullBackend(BackendContext(cli.root))
    sim.behave(uuid, fail_create=5)
    proc = start(cli, "start", uuid, env={"EVEADM_CREATE_RETRY_DELAY": "60"})
    try:
        assert wait_until(lambda: event_seen(cli, uuid, "create.failed"), 20)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        proc.kill()
    assert rc == 143
    got = cli.json("get", uuid)
    assert got["state"] == "stopped" and got["autoboot"] is False
    assert sim.status([type("D", (), {"uuid": uuid})()])[uuid].state == "absent"
    assert cli.ok("doctor").stderr.strip() == "no drift found"


def test_a_permanent_error_is_not_retried(tmp_path, monkeypatch):
    import pytest

    import eveadm
    from eveadm.errors import PermanentError
    from fakebackend import FakeBackend, Scripted

    script = Scripted()

    def handler(call):
        if call.name == "create_paused":
            raise PermanentError("no such program in the image: /no/such")
        return script(call)

    fake = FakeBackend(handler)
    monkeypatch.setenv("EVEADM_CREATE_RETRY_DELAY", "30")
    node = eveadm.Node(root=tmp_path, backends={"null": fake})
    t0 = time.monotonic()
    with pytest.raises(PermanentError, match="after a permanent error"):
        node.create({"brand": "null", "alias": "p"})
    assert time.monotonic() - t0 < 5 and [c.name for c in fake.calls].count("create_paused") == 1
    failed = [e for e in node.events() if e["type"] == "create.failed"]
    assert len(failed) == 1 and failed[0]["retry"] is False
