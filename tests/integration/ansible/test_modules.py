"""Each eveadm.edge module on its own, run by ad-hoc `ansible` on this machine against a state root
of the test's (null brand: no backend process), with eveadm's own CLI as the witness."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

from clitest import Cli

COLLECTION = Path(__file__).resolve().parents[3] / "ansible_collections" / "eveadm" / "edge"
NULL = {"brand": "null", "ram": 64}


class Node:
    """One node through ad-hoc `ansible localhost`, its root given by the modules' `root` option."""

    def __init__(self, tmp_path, env, ansible, interpreter=sys.executable):
        self.tmp, self.env, self.ansible, self.interpreter = tmp_path, env, ansible, interpreter
        self.root = tmp_path / "root"
        self.cli = Cli(self.root)

    def __call__(self, module: str, *flags: str, **args) -> dict:
        """The task's result, with `failed` set when it failed."""
        record = self.tmp / "record.json"
        record.unlink(missing_ok=True)
        proc = subprocess.run(
            [str(self.ansible), "localhost", "-m", f"eveadm.edge.{module}", "-a",
             json.dumps(dict(args, root=str(self.root))), "-e", f"ansible_python_interpreter={self.interpreter}",
             *flags], env=dict(self.env, EVEADM_TEST_RECORD=str(record)), cwd=self.tmp, capture_output=True,
            text=True, timeout=300)
        [entry] = json.loads(record.read_text())
        assert (entry["status"] == "failed") == (proc.returncode != 0), proc.stdout + proc.stderr
        return dict(entry["result"], failed=entry["status"] == "failed")

    def domains(self) -> dict[str, dict]:
        return {d["alias"]: d for d in self.cli.json("list", "-j")}


@pytest.fixture
def node(tmp_path, ansible_env, ansible_bin):
    return Node(tmp_path, ansible_env, ansible_bin / "ansible")


def test_domain_is_created_once_and_check_mode_only_says_it_would(node):
    would = node("domain", "--check", "--diff", alias="web", state="running", payload=dict(NULL, tags={"a": "1"}))
    assert would["changed"] and not would["failed"]
    assert would["diff"]["before"] == {} and would["diff"]["after"]["state"] == "running"
    assert node.domains() == {}

    made = node("domain", alias="web", state="running", payload=dict(NULL, tags={"a": "1"}))
    assert made["changed"] and made["domain"]["state"] == "running"
    assert node.domains()["web"]["uuid"] == made["domain"]["uuid"]
    again = node("domain", alias="web", state="running", payload=dict(NULL, tags={"a": "1"}))
    assert not again["changed"] and again["domain"]["uuid"] == made["domain"]["uuid"]


def test_a_changed_property_is_updated_and_tags_are_merged(node):
    node.cli.create(dict(NULL, alias="web", tags={"keep": "me"}))
    result = node("domain", "--diff", alias="web", payload={"ram": 128, "tags": {"role": "web"}})
    assert result["changed"] and result["changed_properties"] == ["ram", "tags"]
    assert result["restart_required"] == ["ram"], "a running null domain takes ram at its next start"
    assert result["diff"]["before"]["ram"] == 64 and result["diff"]["after"]["ram"] == 128
    web = node.cli.json("get", "web")
    assert web["tags"] == {"keep": "me", "role": "web"} and web["pending_restart"] == {"ram": 128}
    assert not node("domain", alias="web", payload={"ram": 128, "tags": {"role": "web"}})["changed"]

    restarted = node("domain", alias="web", state="restarted")
    assert restarted["changed"] and restarted["domain"]["ram"] == 128
    assert "pending_restart" not in node.cli.json("get", "web")


def test_stopped_creates_a_domain_that_never_boots_and_restarted_starts_it(node):
    made = node("domain", alias="cold", state="stopped", payload=NULL)
    assert made["changed"] and made["domain"]["state"] == "stopped" and made["domain"]["autoboot"] is False
    assert not any(e["type"] == "state" and e["state"] == "running" for e in
                   map(json.loads, node.cli.ok("events", "-j", "cold").stdout.splitlines()))
    assert not node("domain", alias="cold", state="stopped", payload=NULL)["changed"]
    assert node("domain", alias="cold", state="restarted")["domain"]["state"] == "running"
    assert not node("domain", alias="cold", state="running")["changed"]
    stopped = node("domain", alias="cold", state="stopped")
    assert stopped["changed"] and node.domains()["cold"]["state"] == "stopped"


def test_a_payload_file_on_the_node_and_a_domain_found_by_uuid(node, tmp_path):
    uuid = "5b0c6a34-2f0e-4d8e-9a51-7c1d2e3f4a5b"
    path = tmp_path / "vm.yaml"
    path.write_text(f'uuid: {uuid}\nbrand: "null"\nalias: first\nram: 64\n')
    assert node("domain", payload_file=str(path))["domain"]["uuid"] == uuid
    path.write_text(f'uuid: {uuid}\nbrand: "null"\nalias: renamed\nram: 64\n')
    renamed = node("domain", payload_file=str(path))
    assert renamed["changed"] and renamed["changed_properties"] == ["alias"]
    assert list(node.domains()) == ["renamed"]
    assert node("domain", "--check", uuid=uuid, state="absent")["changed"] and list(node.domains()) == ["renamed"]
    assert node("domain", uuid=uuid, state="absent")["changed"] and node.domains() == {}
    assert not node("domain", uuid=uuid, state="absent")["changed"]


@pytest.mark.parametrize("check, args, message", [
    (False, {"alias": "x", "payload": {"brand": "null", "ram": 1}}, "invalid create payload: ram must be at least 16"),
    (True, {"alias": "x", "payload": {"brand": "null", "ram": 1}}, "invalid create payload: ram must be at least 16"),
    (False, {"alias": "keep", "payload": {"brand": "kvm"}}, "domain keep: brand cannot change ('null' -> 'kvm')"),
    (True, {"alias": "keep", "payload": {"ram": 1}}, "invalid update payload: ram must be at least 16"),
    (False, {"alias": "nosuch", "state": "running"}, "domain nosuch does not exist, and there is no payload"),
    (False, {"state": "running", "payload": {"brand": "null"}}, "give the domain's uuid or alias"),
    (False, {"alias": "keep", "payload": {"alias": "other"}}, "alias 'keep' differs from the payload's 'other'"),
])
def test_an_eveadm_error_fails_the_task_with_its_message_and_changes_nothing(node, check, args, message):
    node.cli.create(dict(NULL, alias="keep"))
    before = node.cli.json("list", "-j")
    result = node("domain", *(["--check"] if check else []), **args)
    assert result["failed"] and message in result["msg"] and not result["changed"], result
    assert node.cli.json("list", "-j") == before


def test_apply_plans_in_check_mode_converges_and_prunes_only_what_it_made(node):
    node.cli.create(dict(NULL, alias="by-hand"))
    desired = {"domains": [dict(NULL, alias="a"), dict(NULL, alias="b", state="stopped")]}
    planned = node("apply", "--check", "--diff", desired=desired)
    assert planned["changed"] and planned["dry_run"] and {s["status"] for s in planned["steps"]} == {"planned"}
    assert planned["diff"]["prepared"].splitlines() == ["create a (brand null, then running)",
                                                        "create b (brand null, then stopped)"]
    assert list(node.domains()) == ["by-hand"]

    done = node("apply", desired=desired)
    assert done["changed"] and [(s["action"], s["target"], s["status"]) for s in done["steps"]] == [
        ("create", "a", "done"), ("create", "b", "done")]
    assert {a: d["state"] for a, d in node.domains().items()} == {"by-hand": "running", "a": "running",
                                                                  "b": "stopped"}
    again = node("apply", desired=desired)
    assert (again["changed"], again["steps"]) == (False, [])

    pruned = node("apply", desired={"domains": []}, prune=True)
    assert sorted((s["action"], s["target"]) for s in pruned["steps"]) == [("delete", "a"), ("delete", "b")]
    assert list(node.domains()) == ["by-hand"]


def test_apply_from_a_file_stops_at_a_failing_step_and_reports_each(node, tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text('domains:\n'
                    '  - {alias: a, brand: "null"}\n'
                    '  - {alias: b, brand: "null", nics: [{network: nosuch}]}\n'
                    '  - {alias: c, brand: "null"}\n')
    result = node("apply", src=str(path))
    assert result["failed"] and result["msg"].startswith("apply stopped: create b:") and result["changed"]
    assert [s["status"] for s in result["steps"]] == ["done", "failed", "not done"]
    assert list(node.domains()) == ["a"]
    bad = node("apply", desired={"domains": [{"brand": "null"}]})
    assert bad["failed"] and "domains.0 needs a uuid or an alias" in bad["msg"]


def test_info_reports_domains_networks_and_brands(node):
    node.cli.create(dict(NULL, alias="web", nics=[{"bridge": "br0", "ip": "10.0.0.5"}], tags={"role": "web"}))
    node.cli.create(dict(NULL, alias="cold", autoboot=False))
    info = node("info")
    assert not info["changed"]
    by_alias = {d["alias"]: d for d in info["domains"]}
    assert {a: d["state"] for a, d in by_alias.items()} == {"web": "running", "cold": "stopped"}
    assert by_alias["web"]["nics"][0]["ip"] == "10.0.0.5" and by_alias["web"]["tags"] == {"role": "web"}
    assert info["networks"] == []
    brands = {b["name"]: b for b in info["host"]["brands"]}
    assert {"kvm", "xen", "container", "rkt", "null"} <= set(brands)
    assert brands["kvm"]["family"] == "vm" and "console" in brands["kvm"]["capabilities"]
    assert brands["null"]["available"] is True and brands["null"]["reason"] is None
    assert brands["container"]["available"] is True  # runc/crun are installed by setup
    assert info["host"]["root"] == str(node.root)
    assert [d["alias"] for d in node("info", filters=["state=running"])["domains"]] == ["web"]


def test_a_node_without_eveadm_fails_the_task_saying_so(tmp_path, ansible_env, ansible_bin):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python without eveadm
    result = Node(tmp_path, ansible_env, ansible_bin / "ansible", interpreter=str(bare / "bin" / "python"))("info")
    assert result["failed"] and result["msg"].startswith("eveadm is not installed on this node")


def test_the_collection_builds_and_documents_every_option(tmp_path, ansible_env, ansible_bin):
    proc = subprocess.run([str(ansible_bin / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path),
                           str(COLLECTION)], env=ansible_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "eveadm-edge-0.1.0.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"plugins/modules/{m}.py" for m in ("domain", "apply", "info")} | {"MANIFEST.json", "README.md",
                                                                                "meta/runtime.yml"} <= names
    assert not any("__pycache__" in name for name in names)
    proc = subprocess.run([str(ansible_bin / "ansible-doc"), "-j", "eveadm.edge.domain", "eveadm.edge.apply",
                           "eveadm.edge.info"], env=ansible_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = {name: entry["doc"] for name, entry in json.loads(proc.stdout).items()}
    assert set(docs["eveadm.edge.domain"]["options"]) == {"uuid", "alias", "state", "payload", "payload_file", "root"}
    assert set(docs["eveadm.edge.apply"]["options"]) == {"src", "desired", "prune", "root"}
    assert set(docs["eveadm.edge.info"]["options"]) == {"filters", "root"}
