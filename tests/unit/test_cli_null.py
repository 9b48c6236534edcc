"""The whole CLI on the null brand: outputs, exit codes, lifecycle semantics."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BRANDS_DIR = str(Path(__file__).resolve().parents[1] / "brands")
TYPE_CODES = {"null": "NULL", "testbrand": "TEST"}


@pytest.fixture(params=["null", "testbrand"])
def brand(request, cli):
    """The lifecycle cases run on the null brand and on a brand defined only in tests/brands/testbrand.py,
    which reaches the CLI through the registry (EVEADM_BRAND_MODULES), as any new brand would."""
    cli.env["PYTHONPATH"] = BRANDS_DIR + os.pathsep + cli.env["PYTHONPATH"]
    cli.env["EVEADM_BRAND_MODULES"] = "testbrand"
    return request.param


def test_create_from_file_then_list_get_stop_start_update_delete(cli, brand, tmp_path):
    payload = tmp_path / "web.json"
    payload.write_text(json.dumps({"brand": brand, "alias": "web1", "ram": 512, "vcpus": 2}))
    proc = cli.ok("create", "-f", payload)
    uuid = re.search(r"Successfully created domain (\S+)", proc.stderr).group(1)
    assert UUID_RE.match(uuid) and proc.stdout == ""

    dom = cli.json("get", uuid)
    assert dom["state"] == "running" and dom["ram"] == 512 and dom["vcpus"] == 2
    assert dom["tried_count"] == 1 and dom["boot_failed"] is False
    assert dom["autoboot"] is True and dom["stop_timeout"] == 60

    table = cli.ok("list").stdout.splitlines()
    assert table[0] == "UUID                                  TYPE  RAM      STATE             ALIAS"
    assert table[1] == f"{uuid}  {TYPE_CODES[brand]}  512      running           web1"

    proc = cli.ok("stop", "web1")
    assert f"Stopped domain {uuid}" in proc.stderr
    dom = cli.json("get", uuid)
    assert dom["state"] == "stopped" and dom["autoboot"] is False and dom["exit_status"] == 0

    cli.ok("start", uuid)
    assert cli.json("get", uuid)["state"] == "running"

    result = cli.json("update", uuid, "ram=1024", "alias=web-one", "-j")
    assert result["applied_live"] == ["alias"] and result["restart_required"] == ["ram"]
    assert result["domain"]["pending_restart"] == {"ram": 1024}
    assert result["changes"]["ram"]["applied"] == "pending"
    assert "cannot change ram while it runs" in result["changes"]["ram"]["detail"]
    shown = cli.json("get", "web-one")  # what runs now, and separately what waits for a restart
    assert shown["ram"] == 512 and shown["pending_restart"] == {"ram": 1024}
    assert cli.ok("list", "-p", "-H", "-o", "ram").stdout == "512\n"
    cli.ok("stop", "web-one")
    shown = cli.json("get", "web-one")
    assert shown["ram"] == 1024 and "pending_restart" not in shown

    proc = cli.ok("delete", "web-one")
    assert f"Successfully deleted domain {uuid}" in proc.stderr
    proc = cli("get", uuid)
    assert proc.returncode == 4 and proc.stderr == f"eveadm: domain {uuid} not found\n"
    assert cli.ok("list", "-H").stdout == ""


def test_create_paused_then_start(cli, brand):
    dom = cli.create({"brand": brand}, "--paused")
    assert dom["state"] == "paused"
    cli.ok("start", dom["uuid"])
    assert cli.json("get", dom["uuid"])["state"] == "running"


def test_autoboot_false_leaves_domain_stopped(cli, brand):
    dom = cli.create({"brand": brand, "autoboot": False})
    assert dom["state"] == "stopped"


def test_noops_exit_zero_with_message(cli, brand):
    dom = cli.create({"brand": brand, "alias": "n"})
    proc = cli.ok("start", "n")
    assert "already running" in proc.stderr
    cli.ok("stop", "n")
    proc = cli.ok("stop", "n")
    assert "already stopped" in proc.stderr
    assert dom["uuid"] in proc.stderr


def test_destroy_is_delete(cli, brand):
    dom = cli.create({"brand": brand})
    cli.ok("destroy", dom["uuid"])
    assert cli("get", dom["uuid"]).returncode == 4


def test_existing_uuid_conflicts(cli, brand):
    dom = cli.create({"brand": brand})
    proc = cli("create", input=json.dumps({"brand": brand, "uuid": dom["uuid"]}))
    assert proc.returncode == 5 and "already exists" in proc.stderr


def test_create_retries_then_succeeds(cli):
    uuid = "11111111-2222-4333-8444-555555555555"
    cli.ok("create", input=json.dumps({"brand": "null", "uuid": uuid, "autoboot": False}))
    from eveadm.backends.host import BackendContext
    from eveadm.backends.null import NullBackend

    NullBackend(BackendContext(cli.root)).behave(uuid, fail_create=2)
    cli.ok("start", uuid)
    dom = cli.json("get", uuid)
    assert dom["state"] == "running" and dom["tried_count"] == 3
    events = [json.loads(line) for line in cli.ok("events", "-j", uuid).stdout.splitlines()]
    assert [e["attempt"] for e in events if e["type"] == "create.failed"] == [1, 2]


def test_create_fails_after_three_tries(cli):
    uuid = "11111111-2222-4333-8444-555555555556"
    cli.ok("create", input=json.dumps({"brand": "null", "uuid": uuid, "autoboot": False}))
    from eveadm.backends.host import BackendContext
    from eveadm.backends.null import NullBackend

    NullBackend(BackendContext(cli.root)).behave(uuid, fail_create=3)
    proc = cli("start", uuid)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(f"eveadm: domain {uuid}: create failed after 3 tries")
    dom = cli.json("get", uuid)
    assert dom["state"] == "failed" and dom["boot_failed"] is True and dom["tried_count"] == 3
    assert "simulated create failure" in dom["error"]["message"]


def test_crash_is_reported_failed_on_next_get(cli, brand):
    dom = cli.create({"brand": brand})
    cli.ok("kill", dom["uuid"], "-s", "KILL")
    got = cli.json("get", dom["uuid"])
    assert got["state"] == "failed" and "SIGKILL" in got["error"]["message"]


def test_guest_poweroff_is_reported_stopped(cli):
    dom = cli.create({"brand": "null"})
    from eveadm.backends.host import BackendContext
    from eveadm.backends.null import NullBackend

    NullBackend(BackendContext(cli.root)).poweroff(dom["uuid"], 3)
    got = cli.json("get", dom["uuid"])
    assert got["state"] == "stopped" and got["exit_status"] == 3 and "error" not in got


def test_stop_ladder_escalates_and_journals_each_phase(cli):
    dom = cli.create({"brand": "null", "stop_timeout": 1})
    from eveadm.backends.host import BackendContext
    from eveadm.backends.null import NullBackend

    NullBackend(BackendContext(cli.root)).behave(dom["uuid"], ignore_shutdown=True, ignore_force=True)
    cli.ok("stop", dom["uuid"], "-t", "0.2", env={"EVEADM_FORCE_TIMEOUT": "0.2"})
    types = [json.loads(line)["type"] for line in cli.ok("events", "-j", dom["uuid"]).stdout.splitlines()]
    i = types.index("stop.graceful_sent")
    assert types[i:i + 2] == ["stop.graceful_sent", "stop.forced"] and "stop.destroyed" in types[i:]
    assert cli.json("get", dom["uuid"])["state"] == "stopped"


def test_stop_force_skips_graceful(cli):
    dom = cli.create({"brand": "null"})
    cli.ok("stop", "-F", dom["uuid"])
    types = [json.loads(line)["type"] for line in cli.ok("events", "-j", dom["uuid"]).stdout.splitlines()]
    assert "stop.graceful_sent" not in types and "stop.forced" in types


def test_events_have_required_fields(cli):
    dom = cli.create({"brand": "null", "alias": "ev"})
    events = [json.loads(line) for line in cli.ok("events", "-j").stdout.splitlines()]
    states = [(e["previous_state"], e["state"]) for e in events if e["type"] == "state"]
    assert states == [("provisioning", "paused"), ("paused", "booting"), ("booting", "running")]
    for e in events:
        assert e["uuid"] == dom["uuid"] and e["alias"] == "ev"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e["time"])
    text = cli.ok("events", "ev").stdout.splitlines()
    assert len(text) == len(events) and all(dom["uuid"] in line for line in text)


def test_alias_resolution_and_ambiguity(cli):
    import sqlite3

    a = cli.create({"brand": "null", "alias": "twin"})
    assert cli("create", input='{"brand": "null", "alias": "twin"}').returncode == 5  # aliases are unique
    # a state root from before aliases were unique may name two domains so: get asks for the UUID
    b = cli.create({"brand": "null", "alias": "other"})
    with sqlite3.connect(cli.root / "eveadm.db") as db:
        db.execute("UPDATE domains SET alias='twin' WHERE uuid=?", (b["uuid"],))
    proc = cli("get", "twin")
    assert proc.returncode == 5 and "names 2 domains" in proc.stderr
    proc = cli("get", "nosuch")
    assert proc.returncode == 4
    assert cli.json("get", a["uuid"])["uuid"] == a["uuid"]


def test_update_tags_metadata_nics_disks(cli, tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(b"\0" * 1024)
    dom = cli.create({"brand": "null", "tags": {"role": "web", "tier": 1}, "nics": [{"bridge": "br0"}]})
    uuid = dom["uuid"]
    mac = dom["nics"][0]["mac"]
    assert re.match(r"^02(:[0-9a-f]{2}){5}$", mac)
    upd = {"set_tags": {"role": "db"}, "remove_tags": ["tier"], "set_customer_metadata": {"k": "v"},
           "add_nics": [{"bridge": "br1"}], "update_nics": [{"mac": mac, "mtu": 1400}],
           "add_disks": [{"path": str(img)}]}
    result = json.loads(cli.ok("update", uuid, "-j", input=json.dumps(upd)).stdout)
    d = result["domain"]
    assert d["tags"] == {"role": "db"} and d["customer_metadata"] == {"k": "v"}
    assert set(result["applied_live"]) == {"tags", "customer_metadata"}
    assert set(result["restart_required"]) == {"nics", "disks"}
    # the null brand changes nothing live: the record keeps what runs, the new lists wait
    assert len(d["nics"]) == 1 and "mtu" not in d["nics"][0] and d["disks"] == []
    nics, disks = d["pending_restart"]["nics"], d["pending_restart"]["disks"]
    assert [n.get("mtu") for n in nics] == [1400, None] and nics[1]["bridge"] == "br1"
    assert disks == [{"path": str(img), "format": "raw", "media": "disk", "model": "virtio",
                      "readonly": False, "boot": False}]
    cli.ok("stop", uuid)
    assert cli.json("get", uuid)["nics"] == nics
    d = cli.json("update", uuid, "-j", input=json.dumps({"remove_nics": [mac], "remove_disks": [str(img)]}))
    assert len(d["domain"]["nics"]) == 1 and d["domain"]["disks"] == []


def test_update_of_stopped_domain_applies_everything(cli):
    dom = cli.create({"brand": "null", "autoboot": False})
    res = cli.json("update", dom["uuid"], "vcpus=4", "-j")
    assert res["restart_required"] == [] and res["applied_live"] == ["vcpus"]


def test_pci_devices_change_only_while_stopped(cli):
    dom = cli.create({"brand": "null"})
    proc = cli("update", dom["uuid"], input=json.dumps({"pci_devices": [{"address": "0000:00:04.0"}]}))
    assert proc.returncode == 5 and "only while stopped" in proc.stderr


def test_help_and_completion(cli):
    for command in ("create", "start", "stop", "list", "lookup", "update", "validate", "events", "delete"):
        proc = cli.ok("help", command)
        assert "examples:" in proc.stdout and f"eveadm {command}" in proc.stdout
    assert "__names" not in cli.ok("help").stdout
    for shell, registers in (("bash", "complete "), ("zsh", "compdef "), ("fish", "complete --command eveadm")):
        assert registers in cli.ok("completion", shell).stdout


def complete(cli, line: str, env=None) -> list[str]:
    """What the shell would offer for `line` (argcomplete's protocol, as bash's hook calls it)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r") as out:
        e = {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line, "COMP_POINT": str(len(line)),
             "_ARGCOMPLETE_STDOUT_FILENAME": out.name, "_ARGCOMPLETE_IFS": "\n", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "eveadm"], env={**cli.env, **e}, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [w.strip() for w in out.read().split("\n") if w.strip()]


def test_completion_follows_the_parser_and_the_named_root(cli, tmp_path):
    assert {"create", "lookup", "doctor", "completion"} <= set(complete(cli, "eveadm "))
    assert "--timeout" in complete(cli, "eveadm stop --t")      # options come from the parser itself
    dom = cli.create({"brand": "null", "alias": "kompl"})  # k: no UUID starts with it
    offered = complete(cli, f"eveadm --root {cli.root} stop ")
    assert dom["uuid"] in offered and "kompl" in offered
    other = tmp_path / "other"
    assert complete(cli, "eveadm stop k", env={"EVEADM_ROOT": str(other)}) == []   # another root: not offered
    assert complete(cli, "eveadm stop k", env={"EVEADM_ROOT": str(cli.root)}) == ["kompl"]
