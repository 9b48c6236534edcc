"""The Python API: eveadm.Node, plain dicts, typed exceptions mapped to exit codes."""

import pytest

import eveadm
from eveadm.store import SCHEMA_VERSION


def test_node_lifecycle(tmp_path):
    node = eveadm.Node(root=tmp_path)
    dom = node.create({"brand": "null", "alias": "api"})
    assert dom["state"] == "running"
    assert node.stop("api")["state"] == "stopped"
    assert node.start("api")["state"] == "running"
    assert node.update("api", {"vcpus": 2})["restart_required"] == ["vcpus"]
    assert [d["alias"] for d in node.list(["state=running"])] == ["api"]
    assert node.lookup(["alias=api"]) == [dom["uuid"]]
    assert any(e["type"] == "state" for e in node.events(dom["uuid"]))
    node.delete(dom["uuid"])
    with pytest.raises(eveadm.NotFound):
        node.get(dom["uuid"])


@pytest.mark.parametrize("exc,code", [(eveadm.ValidationError, 3), (eveadm.NotFound, 4), (eveadm.Conflict, 5),
                                      (eveadm.LockHeld, 5), (eveadm.Timeout, 6), (eveadm.BackendError, 1),
                                      (eveadm.UsageError, 2)])
def test_exceptions_map_to_exit_codes(exc, code):
    assert exc("x").exit_code == code and issubclass(exc, eveadm.EveadmError)


def test_validation_error_carries_report(tmp_path):
    node = eveadm.Node(root=tmp_path)
    with pytest.raises(eveadm.ValidationError) as info:
        node.create({"brand": "null", "bogus": 1})
    assert info.value.report["bad_properties"] == ["bogus"]
    assert node.list() == []


def test_schema_is_versioned(tmp_path):
    import sqlite3

    eveadm.Node(root=tmp_path).list()
    db = sqlite3.connect(tmp_path / "eveadm.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    import sqlite3

    eveadm.Node(root=tmp_path).list()
    db = sqlite3.connect(tmp_path / "eveadm.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    with pytest.raises(eveadm.EveadmError, match="newer than this eveadm"):
        eveadm.Node(root=tmp_path).list()
