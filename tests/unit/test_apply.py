"""`eveadm apply`: plans from the node and a desired-state file, converges, and plans nothing the
second time; --dry-run changes nothing; --prune never touches a domain made by hand."""

import json
import sqlite3

import pytest

NODE = """
domains:
  - alias: web
    brand: "null"
    ram: 256
    tags: {role: web}
  - alias: db
    brand: "null"
    state: stopped
    nics: [{bridge: br0}]
"""


def write(tmp_path, text: str, name: str = "node.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def apply(cli, path, *extra):
    return cli.json("apply", "-f", path, "-j", *extra)


def actions(result) -> list[tuple[str, str]]:
    return [(s["action"], s["target"]) for s in result["steps"]]


def snapshot(cli) -> tuple:
    """Everything apply could change: the records and the journal."""
    db = sqlite3.connect(cli.root / "eveadm.db")
    try:
        rows = db.execute("SELECT * FROM domains ORDER BY uuid").fetchall()
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        db.close()
    return rows, events


def test_converges_from_empty_and_the_second_run_plans_nothing(cli, tmp_path):
    path = write(tmp_path, NODE)
    result = apply(cli, path)
    assert actions(result) == [("create", "web"), ("create", "db")]
    assert all(s["status"] == "done" for s in result["steps"]) and result["error"] is None
    web, db = cli.json("get", "web"), cli.json("get", "db")
    assert (web["state"], web["ram"], web["tags"]) == ("running", 256, {"role": "web", "managed_by": "eveadm-apply"})
    assert db["state"] == "stopped" and db["nics"][0]["bridge"] == "br0"
    assert apply(cli, path)["steps"] == []
    assert cli.ok("apply", "-f", path).stdout == "nothing to do: the node matches the desired state\n"


def test_a_partly_matching_node_gets_only_the_differences(cli, tmp_path):
    web = cli.create({"brand": "null", "alias": "web", "ram": 128})
    cli.create({"brand": "null", "alias": "db"})  # running, but the file wants it stopped
    result = apply(cli, write(tmp_path, NODE))
    assert actions(result) == [("update", "web"), ("update", "db"), ("stop", "db")]
    assert result["steps"][0]["detail"].startswith("ram, tags")
    # a running null domain takes ram at its next start: apply says so, and does not plan it again
    assert "pending until restart: ram" in result["steps"][0]["detail"]
    assert cli.json("get", "web")["pending_restart"]["ram"] == 256
    assert cli.json("get", "db")["state"] == "stopped"
    assert apply(cli, write(tmp_path, NODE))["steps"] == []
    assert cli.json("get", "web")["uuid"] == web["uuid"]  # matched by alias, not made anew


def test_dry_run_prints_the_plan_and_changes_nothing(cli, tmp_path):
    cli.create({"brand": "null", "alias": "web", "ram": 128})
    before = snapshot(cli)
    result = apply(cli, write(tmp_path, NODE), "--dry-run")
    assert result["dry_run"] is True and actions(result) == [("create", "db"), ("update", "web")]
    assert {s["status"] for s in result["steps"]} == {"planned"}
    assert snapshot(cli) == before
    human = cli.ok("apply", "-f", write(tmp_path, NODE), "-n").stdout.splitlines()
    assert human[0].startswith("planned   create") or human[0].startswith("planned   update")


def test_prune_deletes_only_what_apply_made(cli, tmp_path):
    apply(cli, write(tmp_path, NODE))
    by_hand = cli.create({"brand": "null", "alias": "by-hand"})
    smaller = write(tmp_path, 'domains:\n  - {alias: web, brand: "null", ram: 256, tags: {role: web}}\n', "small.yaml")
    assert actions(apply(cli, smaller)) == []  # without --prune, nothing is removed
    result = apply(cli, smaller, "--prune")
    assert actions(result) == [("delete", "db")]
    assert sorted(d["alias"] for d in cli.json("list", "-j")) == ["by-hand", "web"]
    assert cli.json("get", by_hand["uuid"])["state"] == "running"


def test_a_failing_step_stops_the_plan_and_a_fixed_file_resumes_it(cli, tmp_path):
    bad = write(tmp_path, """
domains:
  - {alias: a, brand: "null"}
  - {alias: b, brand: "null", nics: [{network: nosuch}]}
  - {alias: c, brand: "null"}
""")
    proc = cli("apply", "-f", bad, "-j")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "apply stopped: create b:" in proc.stderr and "network nosuch" in proc.stderr
    result = json.loads(proc.stdout)
    assert [s["status"] for s in result["steps"]] == ["done", "failed", "not done"]
    assert [d["alias"] for d in cli.json("list", "-j")] == ["a"]  # the truth: a exists, b and c do not
    fixed = write(tmp_path, bad.read_text().replace("nics: [{network: nosuch}]", "ram: 64"), "fixed.yaml")
    assert actions(apply(cli, fixed)) == [("create", "b"), ("create", "c")]


@pytest.mark.parametrize("text, message", [
    ("domains: [{brand: null, alias: x}]", 'quote "null"'),
    ("domains: [{brand: 'null'}]", "needs a uuid or an alias"),
    ("domains: [{brand: 'null', alias: x, state: paused}]", "state must be running or stopped"),
    ("domains: [{brand: 'null', alias: x}, {brand: 'null', alias: x}]", "names the same domain"),
    ("domains: [{brand: 'null', alias: x, ram: -1}]", "domains.0 (x): ram"),
    ("hosts: []", "unknown top-level key 'hosts'"),
    ("domains: [{brand: 'null', alias: x, when: 2026-12-02}]", "quote dates"),
    ("domains: [\n  - {brand: 'null'\n", "not valid YAML (line"),
    ('{"domains": [{"brand": "null", "alias": "x", "ram": NaN}]}', "NaN is not a JSON value"),
])
def test_a_bad_file_is_one_line_exit_3_and_changes_nothing(cli, tmp_path, text, message):
    cli.create({"brand": "null", "alias": "keep"})
    before = snapshot(cli)
    proc = cli("apply", "-f", write(tmp_path, text))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(cli) == before


def test_brand_cannot_change_through_apply(cli, tmp_path):
    cli.create({"brand": "null", "alias": "x"})
    before = snapshot(cli)
    proc = cli("apply", "-f", write(tmp_path, "domains: [{brand: rkt, alias: x, image: sha512-0123456789abcdef}]"))
    assert proc.returncode == 3 and "domain x: brand cannot change ('null' -> 'rkt')" in proc.stderr, proc.stderr
    assert snapshot(cli) == before


def test_the_python_api_checks_the_document_too(tmp_path):
    import eveadm

    node = eveadm.Node(root=tmp_path / "root")
    with pytest.raises(eveadm.ValidationError, match="needs a uuid or an alias"):
        node.apply({"domains": [{"brand": "null"}]})
    assert node.list() == []
    brands = {b["name"]: b for b in node.brands()}
    assert brands["null"] == {"name": "null", "family": "vm", "type_code": "NULL", "capabilities": ["kill"],
                              "available": True, "reason": None}
