"""The installed `eveadm` launcher: it ends the process without tearing the interpreter down, so
everything a command prints must still arrive, with the command's exit code."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import eveadm

LAUNCHER = [sys.executable, str(Path(sysconfig.get_path("scripts")) / "eveadm")]
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # output waits in buffers


def run(root, *args):
    return subprocess.run(LAUNCHER + ["--root", str(root), *args], capture_output=True, text=True, env=BUFFERED)


def test_the_installed_script_is_the_launcher():
    text = Path(LAUNCHER[1]).read_text()
    assert "os._exit(code)" in text and "import re" not in text


def test_output_and_exit_codes_arrive(tmp_path):
    node = eveadm.Node(root=tmp_path)
    uuids = {node.create({"brand": "null", "alias": f"l{i}", "tags": {"pad": "x" * 200}})["uuid"] for i in range(300)}
    listed = run(tmp_path, "list", "-j")  # ~150 KB through a pipe: all of it, then exit 0
    assert listed.returncode == 0 and {d["uuid"] for d in json.loads(listed.stdout)} == uuids
    one = sorted(uuids)[0]
    got = run(tmp_path, "get", one)  # a short output, still in the buffer when the command ends
    assert got.returncode == 0 and json.loads(got.stdout)["uuid"] == one
    missing = run(tmp_path, "get", "nosuch")
    assert missing.returncode == 4 and missing.stderr == "eveadm: no domain with UUID or alias 'nosuch'\n"
    bad = run(tmp_path, "list", "-o", "nosuch")
    assert bad.returncode == 2 and bad.stdout == "" and "nosuch" in bad.stderr


def test_a_reader_that_goes_away_ends_nothing_badly(tmp_path):
    node = eveadm.Node(root=tmp_path)
    for i in range(2000):
        node.create({"brand": "null", "alias": f"p{i}", "autoboot": False})
    proc = subprocess.Popen(LAUNCHER + ["--root", str(tmp_path), "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=BUFFERED)
    assert proc.stdout.readline().startswith(b"UUID")
    proc.stdout.close()  # as `eveadm list | head -1`
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


def test_output_that_cannot_be_written_is_one_line_and_a_failure(tmp_path):
    uuid = eveadm.Node(root=tmp_path).create({"brand": "null"})["uuid"]
    # buffered, the write fails at the launcher's last flush; unbuffered, inside the command
    for env in (BUFFERED, dict(BUFFERED, PYTHONUNBUFFERED="1")):
        # stats and events --follow stream (each write flushed) until stopped: a refused write ends them
        for argv in (["get", uuid], ["list", "-j"], ["--version"], ["stats"], ["events", "--follow", "-j"]):
            with open("/dev/full", "w") as full:
                proc = subprocess.run(LAUNCHER + ["--root", str(tmp_path), *argv], stdout=full,
                                      stderr=subprocess.PIPE, text=True, env=env, timeout=30)
            assert (proc.returncode, proc.stderr) == (1, "eveadm: cannot write the output: No space left on device\n"), \
                (argv, env.get("PYTHONUNBUFFERED"))
