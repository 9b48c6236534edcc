"""Where vmadm users expect vmadm's behaviour (issue 12, section 2): kill's default signal, null aliases,
bad_properties, the model of added disks, nic mtu, and aliases that name one domain."""

import json
import subprocess
import sys

import pytest

import eveadm


@pytest.fixture
def node(tmp_path):
    return eveadm.Node(root=tmp_path / "root")


def test_kill_without_a_signal_sends_sigterm_and_s_kill_sends_sigkill(cli):
    term = cli.create({"brand": "null"})["uuid"]
    proc = cli.ok("kill", term)
    assert f"Sent SIGTERM to domain {term}" in proc.stderr
    assert "SIGTERM" in cli.json("get", term)["error"]["message"]
    killed = cli.create({"brand": "null"})["uuid"]
    cli.ok("kill", killed, "-s", "KILL")
    assert "SIGKILL" in cli.json("get", killed)["error"]["message"]
    events = [json.loads(line) for line in cli.ok("events", "-j").stdout.splitlines()]
    assert [(e["uuid"], e["signal"]) for e in events if e["type"] == "kill"] == [(term, "SIGTERM"),
                                                                                 (killed, "SIGKILL")]


def test_the_python_api_kills_with_sigterm_by_default(node):
    uuid = node.create({"brand": "null"})["uuid"]
    node.kill(uuid)
    assert "SIGTERM" in node.get(uuid)["error"]["message"]


def test_a_null_alias_is_absent_at_create_and_removes_the_alias_in_an_update(cli, node):
    assert cli("validate", "create", input='{"brand": "null", "alias": null}').returncode == 0
    dom = node.create({"brand": "null", "alias": None})
    assert "alias" not in dom and "alias" not in node.get(dom["uuid"])
    named = node.create({"brand": "null", "alias": "web"})["uuid"]
    assert node.validate({"alias": None}, "update", "null") == {"bad_properties": [], "bad_values": [],
                                                                "missing_properties": []}
    result = node.update("web", {"alias": None})
    assert "alias" not in result["domain"] and "alias" not in node.get(named)
    with pytest.raises(eveadm.NotFound):
        node.resolve("web")
    assert [d["alias"] for d in node.list(fields=["uuid", "alias"])] == [None, None]


def test_validate_update_refuses_an_unknown_brand(cli):
    proc = cli("validate", "update", "--brand", "nosuch", input='{"ram": 512}')
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("eveadm: unknown brand 'nosuch' (brands: kvm, xen, container, rkt, null")
    assert cli("validate", "update", "--brand", "null", input='{"ram": 512}').returncode == 0


def test_changing_uuid_or_brand_is_a_bad_property_not_a_bad_value(cli):
    cli.create({"brand": "null", "alias": "keep"})
    proc = cli("validate", "update", "--brand", "null",
               input='{"uuid": "00000000-0000-4000-8000-000000000000", "brand": "kvm", "image": "/srv"}')
    report = json.loads(proc.stdout)
    assert proc.returncode == 3
    assert report == {"bad_properties": ["uuid", "brand", "image"], "bad_values": [], "missing_properties": []}
    proc = cli("update", "keep", "-f", "-", input='{"brand": "kvm", "tags": {"a": 1}}')
    assert proc.returncode == 3
    assert "brand cannot be changed after create" in proc.stderr
    assert "tags cannot be changed after create (use set_tags/remove_tags)" in proc.stderr
    assert cli.json("get", "keep")["brand"] == "null"


def test_unknown_nested_properties_are_bad_properties(cli):
    payload = {"brand": "null", "nics": [{"physical": "net0"}], "disks": [{"size": 1, "colour": "red"}],
               "pci_devices": [{"address": "0000:00:04.0", "rom": 1}], "cloud_init": {"vendor_data": ""}}
    report = json.loads(cli("validate", "create", input=json.dumps(payload)).stdout)
    assert report == {"bad_properties": ["nics.0.physical", "disks.0.colour", "pci_devices.0.rom",
                                         "cloud_init.vendor_data"],
                      "bad_values": [], "missing_properties": []}
    update = {"add_nics": [{"physical": "net0"}], "update_disks": [{"path": "/x", "colour": "red"}]}
    proc = cli("validate", "update", "--brand", "null", input=json.dumps(update))
    report = json.loads(proc.stdout)
    assert proc.returncode == 3
    assert report["bad_properties"] == ["add_nics.0.physical", "update_disks.0.colour"]
    assert report["bad_values"] == []
    proc = cli("create", input=json.dumps({"brand": "null", "nics": [{"physical": "net0"}]}))
    assert proc.returncode == 3 and "unknown properties: nics.0.physical" in proc.stderr


def test_added_disks_without_a_model_take_the_first_disks_model(node):
    # stopped domains: the record then holds the change itself (a running one shows it pending)
    uuid = node.create({"brand": "null", "autoboot": False,
                        "disks": [{"size": 1, "model": "ide"}, {"size": 1, "model": "scsi"}]})["uuid"]
    disks = node.update(uuid, {"add_disks": [{"size": 2}, {"size": 3, "model": "virtio"},
                                             {"size": 4, "media": "cdrom"}]})["domain"]["disks"]
    assert [d["model"] for d in disks] == ["ide", "scsi", "ide", "virtio", "ide"]
    first_virtio = node.create({"brand": "null", "autoboot": False, "disks": [{"size": 1}]})["uuid"]
    disks = node.update(first_virtio, {"add_disks": [{"size": 2}, {"size": 1, "media": "cdrom"}]})["domain"]["disks"]
    assert [d["model"] for d in disks] == ["virtio", "virtio", "ide"]  # a cdrom keeps its own default
    bare = node.create({"brand": "null", "autoboot": False})["uuid"]
    assert node.update(bare, {"add_disks": [{"size": 2}]})["domain"]["disks"][0]["model"] == "virtio"


def test_a_cdrom_defaults_to_the_ide_model(node):
    dom = node.create({"brand": "null", "disks": [{"size": 1}, {"size": 1, "media": "cdrom"}]})
    assert [(d["media"], d["model"]) for d in dom["disks"]] == [("disk", "virtio"), ("cdrom", "ide")]


@pytest.mark.parametrize("mtu, ok", [(575, False), (576, True), (1500, True), (9000, True), (9001, False)])
def test_nic_mtu_is_checked_against_vmadms_range(node, mtu, ok):
    report = node.validate({"brand": "null", "nics": [{"mtu": mtu}]})
    if ok:
        assert report["bad_values"] == []
    else:
        assert report["bad_values"] == [{"property": "nics.0.mtu",
                                         "message": f"must be {'at least 576' if mtu < 576 else 'at most 9000'}"}]


def test_an_alias_in_use_is_refused_at_create_and_update(cli):
    first = cli.create({"brand": "null", "alias": "web"})["uuid"]
    proc = cli("create", input='{"brand": "null", "alias": "web"}')
    assert proc.returncode == 5 and proc.stderr == f"eveadm: alias 'web' is in use by domain {first}\n"
    assert [d["uuid"] for d in cli.json("list", "-j")] == [first]
    other = cli.create({"brand": "null", "alias": "db"})["uuid"]
    proc = cli("update", "db", "alias=web")
    assert proc.returncode == 5 and f"in use by domain {first}" in proc.stderr
    assert cli.json("get", other)["alias"] == "db"
    assert cli.json("update", "web", "alias=web", "-j")["domain"]["uuid"] == first  # its own alias: fine
    cli.ok("update", "web", "alias=www")
    cli.ok("update", "db", "alias=web")  # freed by the rename
    cli.ok("delete", "www")
    assert cli.create({"brand": "null", "alias": "www"})["alias"] == "www"  # freed by the delete


def test_concurrent_creates_with_one_alias_make_one_domain(cli):
    procs = [subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "create"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli.env) for _ in range(4)]
    for p in procs:
        p.stdin.write('{"brand": "null", "alias": "race"}')
        p.stdin.close()
    codes = sorted(p.wait(timeout=120) for p in procs)
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 5, 5, 5]
    assert [d["alias"] for d in cli.json("list", "-j")] == ["race"]
    assert not (cli.root / "locks" / "aliases.lock").exists()
