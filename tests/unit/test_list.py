"""`list` and `lookup` in vmadm's format: columns, padding, -p/-H/-o/-s/-j, filters, nested keys."""

import json

import pytest


@pytest.fixture
def three(cli):
    a = cli.create({"brand": "null", "alias": "web-a", "ram": 512, "tags": {"role": "web"},
                    "nics": [{"bridge": "br0", "mac": "02:00:00:00:00:0a"}]})
    b = cli.create({"brand": "null", "alias": "db", "ram": 2048, "tags": {"role": "db"},
                    "nics": [{"bridge": "br1"}, {"bridge": "br0"}]})
    c = cli.create({"brand": "null", "ram": 512, "autoboot": False})
    return cli, a, b, c


def test_default_columns_sorted_by_ram_then_uuid(three):
    cli, a, b, c = three
    lines = cli.ok("list").stdout.splitlines()
    first_two = sorted([a, c], key=lambda d: d["uuid"])
    expected = [f"{d['uuid']}  NULL  {str(d['ram']).ljust(7)}  {d['state'].ljust(16)}  {d.get('alias', '-')}".rstrip()
                for d in first_two + [b]]
    assert lines[1:] == expected


def test_parsable_and_no_header(three):
    cli, a, b, c = three
    out = cli.ok("list", "-p", "-o", "alias,state,ram", "-s", "-ram").stdout.splitlines()
    assert out[0] == "db:running:2048"
    assert sorted(out[1:]) == sorted(["web-a:running:512", ":stopped:512"])
    assert "UUID" not in cli.ok("list", "-H").stdout


def test_sort_descending_and_multiple_fields(three):
    cli, a, b, c = three
    out = cli.ok("list", "-H", "-o", "alias", "-s", "-ram,alias").stdout.splitlines()
    assert out == ["db", "web-a", "-"]


def test_exact_and_regex_filters(three):
    cli, a, b, c = three
    assert cli.ok("list", "-H", "-o", "alias", "state=running", "ram=512").stdout.split() == ["web-a"]
    assert cli.ok("list", "-H", "-o", "alias", "alias=~^WEB").stdout.split() == ["web-a"]
    assert cli.ok("list", "-H", "-o", "alias", "tags.role=db").stdout.split() == ["db"]
    both = cli.ok("list", "-H", "-o", "alias", "-s", "alias", "nics.*.bridge=br0").stdout.split()
    assert both == ["db", "web-a"]
    assert cli.ok("list", "-H", "-o", "alias", "nics.0.bridge=br0").stdout.split() == ["web-a"]
    assert cli.ok("list", "-H", "-o", "alias", "nics.*.mac=2:0:0:0:0:a").stdout.split() == ["web-a"]
    assert cli.ok("list", "-H", "type=NULL", "alias=nomatch").stdout == ""


def test_nested_columns(three):
    cli, a, b, c = three
    out = cli.ok("list", "-o", "alias,tags.role,nics.0.bridge", "-s", "alias", "state=running").stdout.splitlines()
    assert out[0] == "ALIAS       TAGS.ROLE             NICS.0.BRIDGE"
    assert out[1] == "db          db                    br1"


def test_json_list(three):
    cli, a, b, c = three
    objs = json.loads(cli.ok("list", "-j", "state=running").stdout)
    assert {o["alias"] for o in objs} == {"web-a", "db"}
    assert all(o["type"] == "NULL" for o in objs)


def test_lookup(three):
    cli, a, b, c = three
    assert sorted(cli.ok("lookup", "state=running").stdout.split()) == sorted([a["uuid"], b["uuid"]])
    assert cli.ok("lookup", "-1", "alias=db").stdout == b["uuid"] + "\n"
    proc = cli("lookup", "-1", "ram=512")
    assert proc.returncode == 1 and "found 2" in proc.stderr
    objs = json.loads(cli.ok("lookup", "-j", "-o", "uuid,alias", "alias=db").stdout)
    assert objs == [{"uuid": b["uuid"], "alias": "db"}]
    assert json.loads(cli.ok("lookup", "-j", "alias=none").stdout) == []


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
