"""`validate create|update`: JSON report on stdout with dotted paths, exit 3; silent exit 0 when valid."""

import json

import pytest


def test_valid_payload_prints_nothing(cli):
    proc = cli("validate", "create", input='{"brand": "null", "alias": "ok"}')
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_report_lists_every_problem_with_dotted_paths(cli, tmp_path):
    payload = {"brand": "kvm", "colour": 1, "vcpus": 999,
               "disks": [{"size": 10}, {"path": "/does/not/exist.img"}, {"model": "floppy", "size": 1}],
               "nics": [{"mac": "AA:BB"}], "pci_devices": [{"address": "0000:00:04.0"}, {}]}
    proc = cli("validate", "create", input=json.dumps(payload))
    assert proc.returncode == 3 and proc.stderr == ""
    report = json.loads(proc.stdout)
    assert report["bad_properties"] == ["colour"]
    assert report["missing_properties"] == []
    props = [b["property"] for b in report["bad_values"]]
    assert props == ["vcpus", "disks.1.path", "disks.2.model", "nics.0.mac", "pci_devices.1.address"]
    assert "does not exist" in report["bad_values"][1]["message"]


def test_missing_properties(cli):
    report = json.loads(cli("validate", "create", input='{"alias": "x"}').stdout)
    assert report == {"bad_properties": [], "bad_values": [], "missing_properties": ["brand"]}


def test_malformed_json_report(cli):
    proc = cli("validate", "create", input="{")
    assert proc.returncode == 3
    report = json.loads(proc.stdout)
    assert report["bad_values"][0]["message"].startswith("not valid JSON")


def test_validate_update(cli):
    assert cli("validate", "update", "--brand", "null", input='{"ram": 512, "set_tags": {"a": 1}}').returncode == 0
    proc = cli("validate", "update", "--brand", "null", input='{"brand": "kvm", "ram": -1, "zzz": 1}')
    report = json.loads(proc.stdout)
    assert proc.returncode == 3 and report["bad_properties"] == ["brand", "zzz"]  # brand: fixed at create
    assert [b["property"] for b in report["bad_values"]] == ["ram"]


def test_render_null(cli):
    proc = cli("validate", "create", "--render", input='{"brand": "null", "alias": "r"}')
    assert proc.returncode == 0 and "null brand: nothing runs" in proc.stdout


def test_validate_changes_nothing(cli):
    cli("validate", "create", input='{"brand": "null"}')
    assert not (cli.root / "eveadm.db").exists()


def test_control_characters_and_bad_vnc_ports_are_refused(cli, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    proc = cli("validate", "create", input=json.dumps({"brand": "kvm", "kernel": str(kernel), "cmdline": "a\nb"}))
    assert proc.returncode == 3 and "cmdline" in proc.stdout and "control characters" in proc.stdout
    proc = cli("validate", "create", input=json.dumps({"brand": "kvm", "kernel": str(kernel), "vnc_port": 5}))
    assert proc.returncode == 3 and "5900 + display number" in proc.stdout
    proc = cli("validate", "create", input=json.dumps({"brand": "rkt", "image": "--insecure"}))
    assert proc.returncode == 3 and "read as an option" in proc.stdout


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


HOSTILE = [
    ('{"brand":"null","tags":{"a":1e400}}', "too large"),
    ('{"brand":"null","tags":{"a":123456789012345678901234567890}}', "beyond 64 bits"),
    ('{"brand":"null","tags":{"a":"\\ud800"}}', "lone surrogate"),
    ('{"brand":"null","env":{"A":"x\\u0000y"}}', "NUL"),
    ('{"brand":"null","alias":".."}', "must not be . or .."),
    ('{"brand":"null","alias":"aaaaaaaa-1111-4111-8111-000000000009"}', "look like a UUID"),
    ('{"brand":"container","image":"/","cmd":["/bin/true"]}', "host's /"),
    ('{"brand":"container","image":"/srv/../etc","cmd":["/bin/true"]}', "must not contain .."),
    ('{"brand":"null","disks":[{"path":"/"}]}', "host's /"),
    ('{"brand":"null","disks":[{"path":"/tmp/../etc/passwd"}]}', "must not contain .."),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"brand":"null","tags":' + '{"a":' * 40 + "1" + "}" * 41, "nested deeper"),
]


@pytest.mark.parametrize("payload, words", HOSTILE)
def test_hostile_payloads_are_refused_with_exit_3_and_change_nothing(cli, payload, words):
    for args in (("validate", "create"), ("create",)):
        proc = cli(*args, input=payload)
        assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
        assert words in proc.stdout + proc.stderr
    assert cli.json("list", "-j") == []


def test_the_python_api_refuses_values_json_has_not(tmp_path):
    import eveadm

    node = eveadm.Node(root=tmp_path)
    for payload in ({1: 2}, {"brand": "null", "tags": {1: "x"}}, {"brand": "null", "env": {"A": ("t",)}},
                    {"brand": "null", "tags": {"a": 10 ** 30}}, {"brand": "null", "tags": {"a": float("nan")}},
                    {"brand": "null", "cmd": ("/bin/true",)}, {"brand": "null", "tags": {"a": b"bytes"}}):
        with pytest.raises(eveadm.ValidationError):
            node.create(payload)
    dom = node.create({"brand": "null"})
    with pytest.raises(eveadm.ValidationError):
        node.update(dom["uuid"], {"set_tags": {"a": {1, 2}}})
    assert [d["uuid"] for d in node.list()] == [dom["uuid"]]


def test_blank_disks_get_stable_ids_when_added(tmp_path):
    import eveadm

    node = eveadm.Node(root=tmp_path)
    dom = node.create({"brand": "null", "autoboot": False, "disks": [{"size": 1}, {"size": 2, "id": "mine"}]})
    first, given = dom["disks"]
    assert first["id"].startswith("blank-") and given["id"] == "mine"
    added = node.update(dom["uuid"], {"add_disks": [{"size": 3}]})["domain"]["disks"]
    assert [d["id"] for d in added[:2]] == [first["id"], "mine"] and added[2]["id"].startswith("blank-")
    with pytest.raises(eveadm.ValidationError, match="used twice"):
        node.update(dom["uuid"], {"add_disks": [{"size": 1, "id": "mine"}]})
