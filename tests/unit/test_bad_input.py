"""Bad input: one line on stderr (or the validate report), the documented exit code, nothing changed."""

import hashlib
import json
import os
import pty
import subprocess
import sys

import pytest

from clitest import SRC


def snapshot(root):
    """Everything in the state root that a command could change: records and journal."""
    import sqlite3

    if not (root / "eveadm.db").exists():
        return None
    db = sqlite3.connect(root / "eveadm.db")
    data = [list(db.execute("SELECT uuid, state, config, runtime, backend, modified FROM domains ORDER BY uuid")),
            list(db.execute("SELECT id, type, data FROM events ORDER BY id"))]
    db.close()
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


@pytest.fixture
def seeded(cli):
    dom = cli.create({"brand": "null", "alias": "keep"})
    return cli, dom["uuid"]


def one_error_line(proc, code):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("eveadm: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("args,stdin,code,needle", [
    (["create"], "{not json", 3, "not valid JSON"),
    (["create"], '{"brand": "null", "colour": "red"}', 3, "unknown properties: colour"),
    (["create"], '{"brand": "null", "ram": "lots"}', 3, "ram must be an integer"),
    (["create"], '{"brand": "null", "vcpus": 0}', 3, "vcpus must be at least 1"),
    (["create"], '{"brand": "hyperv"}', 3, "brand must be one of"),
    (["create"], '{"alias": "x"}', 3, "missing: brand"),
    (["create"], '[1, 2]', 3, "payload must be a JSON object"),
    (["create"], '{"brand": "null", "uuid": "ABCDEF00-0000-4000-8000-000000000000"}', 3, "uuid must be a lowercase"),
    (["create"], '{"brand": "null", "disks": [{"path": "relative.img"}]}', 3, "disks.0.path must be an absolute"),
    (["create"], '{"brand": "container"}', 3, "missing: image"),
    (["create"], '{"brand": "kvm", "image": "/x"}', 3, "image does not apply to brand kvm"),
    (["create", "-f", "/nonexistent/p.json"], "", 2, "cannot read payload file /nonexistent/p.json"),
    (["frobnicate"], "", 2, "invalid choice"),
    (["list", "--bogus"], "", 2, "unrecognized arguments"),
    (["stop"], "", 2, "required: uuid"),
    (["stop", "keep", "-t", "soon"], "", 2, "not a number of seconds"),
    (["get", "not/a/uuid"], "", 2, "neither a UUID nor an alias"),
    (["get", "00000000-0000-4000-8000-000000000000"], "", 4, "not found"),
    (["list", "colour=red"], "", 2, 'invalid filter key: "colour"'),
    (["list", "-o", "uuid,colour"], "", 2, 'invalid column key: "colour"'),
    (["list", "-s", "-colour"], "", 2, 'invalid sort key: "colour"'),
    (["list", "alias=~("], "", 2, "invalid regular expression"),
    (["lookup", "-o", "uuid"], "", 2, "-o needs -j"),
    (["update", "keep", "uuid=00000000-0000-4000-8000-000000000000"], "", 3, "uuid cannot be changed"),
    (["update", "keep", "ram=much"], "", 3, "ram must be an integer"),
    (["update", "keep", "justakey"], "", 2, "expected key=value"),
    (["update", "keep"], "{", 3, "not valid JSON"),
    (["kill", "keep", "-s", "NOPE"], "", 2, "unknown signal NOPE"),
    (["pci", "assignable-add", "00:04.0"], "", 2, "not a PCI address"),
])
def test_bad_input_changes_nothing(seeded, args, stdin, code, needle):
    cli, _ = seeded
    before = snapshot(cli.root)
    line = one_error_line(cli(*args, input=stdin), code)
    assert needle in line
    assert snapshot(cli.root) == before


def test_tty_stdin_is_refused(tmp_path):
    """`create` with no -f and a terminal on stdin must not hang waiting for input."""
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-m", "eveadm", "--root", str(tmp_path / "r"), "create"],
                          stdin=slave, capture_output=True, text=True, timeout=30, env=env)
    os.close(slave)
    os.close(master)
    assert proc.returncode == 2
    assert proc.stderr == "eveadm: no payload: pass -f FILE or pipe JSON on stdin\n"
    assert not (tmp_path / "r" / "eveadm.db").exists() or snapshot(tmp_path / "r") is not None


def test_unexpected_errors_never_show_a_traceback(cli):
    # a state root that is a file cannot be created: one line, exit 1
    cli.root.parent.mkdir(parents=True, exist_ok=True)
    cli.root.write_text("not a directory")
    line = one_error_line(cli("list"), 1)
    assert "state" in line


def test_debug_shows_tracebacks_of_internal_errors_only(cli, tmp_path, monkeypatch, capsys):
    cli.root.parent.mkdir(parents=True, exist_ok=True)
    cli.root.write_text("not a directory")
    proc = cli("--debug", "list")                # an error eveadm means: one line, even with --debug
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    proc = cli("list", "--debug")                # not the global option: a usage error, no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr

    from eveadm import cli as cli_mod, node as node_mod

    def broken(self, *args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(node_mod.Node, "list", broken)
    root = str(tmp_path / "r2")
    assert cli_mod.main(["--root", root, "list"]) == 1
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err
    try:
        cli_mod.main(["--root", root, "--debug", "list"])
    except RuntimeError:
        pass  # --debug lets an internal error's traceback out
    else:
        raise AssertionError("--debug hid the internal error")