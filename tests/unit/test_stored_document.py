"""`get` prints the document stored with the record when reading changed nothing; it is always the
document computed from the record, whatever wrote the record last."""

import json
import sqlite3
import subprocess
import sys

import eveadm
from eveadm.backends.host import BackendContext
from eveadm.backends.null import NullBackend
from eveadm.jsontext import dumps


def same_as_computed(node, ident):
    """get_text is what dumps(get) prints; return whether the stored copy was used."""
    stored = node.engine.store.get(node.resolve(ident)).stored_document()
    text = node.get_text(ident)
    assert text == dumps(node.get(ident))
    return stored is not None and text == stored


def test_the_stored_copy_serves_get_and_follows_every_change(tmp_path):
    node = eveadm.Node(root=tmp_path)
    dom = node.create({"brand": "null", "alias": "doc", "tags": {"k": "v"}})
    assert same_as_computed(node, "doc")
    node.stop("doc")
    assert same_as_computed(node, "doc")
    node.update("doc", {"ram": 512, "set_tags": {"n": 1}})
    assert json.loads(node.get_text("doc"))["ram"] == 512 and same_as_computed(node, "doc")
    node.start("doc")
    assert same_as_computed(node, "doc")
    NullBackend(BackendContext(tmp_path)).crash(dom["uuid"], "boom")  # the read notices: not the stored copy
    text = node.get_text("doc")
    assert json.loads(text)["state"] == "failed" and text == dumps(node.get("doc"))
    assert same_as_computed(node, "doc")  # written again by that read


def test_a_write_that_does_not_set_it_clears_it(tmp_path):
    node = eveadm.Node(root=tmp_path)
    dom = node.create({"brand": "null", "alias": "old", "autoboot": False})
    db = sqlite3.connect(tmp_path / "eveadm.db")  # as an older eveadm, or a hand, would write
    db.execute("UPDATE domains SET alias='renamed', config=json_set(config, '$.alias', 'renamed') WHERE uuid=?",
               (dom["uuid"],))
    db.commit()
    assert node.engine.store.get(dom["uuid"]).stored_document() is None
    assert json.loads(node.get_text(dom["uuid"]))["alias"] == "renamed"


def test_a_domain_with_nics_is_computed_at_each_read(tmp_path):
    node = eveadm.Node(root=tmp_path)
    node.create({"brand": "null", "alias": "n", "nics": [{"mac": "02:00:00:00:00:01"}]})
    assert not same_as_computed(node, "n")


def test_a_store_from_before_the_copy_is_migrated(tmp_path):
    node = eveadm.Node(root=tmp_path)
    uuid = node.create({"brand": "null", "alias": "m"})["uuid"]
    db = sqlite3.connect(tmp_path / "eveadm.db")  # back to schema 3: no column, no trigger
    db.executescript("DROP TRIGGER domains_shown_stale; DROP INDEX domains_listing; "
                     "ALTER TABLE domains DROP COLUMN shown; "
                     "PRAGMA user_version=3;")
    db.close()
    node = eveadm.Node(root=tmp_path)
    assert not same_as_computed(node, uuid)  # no copy yet: computed
    node.stop(uuid)
    assert same_as_computed(node, uuid)


def test_get_of_an_unchanged_domain_imports_little(tmp_path):
    node = eveadm.Node(root=tmp_path)
    uuid = node.create({"brand": "null"})["uuid"]
    unused = ["json", "re", "argparse", "signal", "fcntl", "contextlib", "pathlib", "subprocess"]
    code = ("import sys; from eveadm.cli import main; rc = main(['--root', sys.argv[1], 'get', sys.argv[2]]); "
            f"print(rc, [m for m in {unused!r} if m in sys.modules], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), uuid], capture_output=True, text=True)
    assert json.loads(proc.stdout)["uuid"] == uuid
    assert proc.stderr == "0 []\n"
