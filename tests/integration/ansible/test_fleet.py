"""The eveadm.edge collection end to end: `ansible-playbook` (ansible-core) drives three nodes on this
machine, two through the `local` connection (one given its state root by EVEADM_ROOT in the play's
environment, one by the modules' `root` option) and one through SSH to an sshd this test starts on
127.0.0.1, and creates, stops, restarts and removes real containers on them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clitest import Cli, free_port
from eveadm.backends.host import wait_until

pytestmark = pytest.mark.container

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SSHD = "/usr/sbin/sshd"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
NODES = ("node1", "node2", "node3")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def sshd(tmp_path):
    """An sshd of its own on 127.0.0.1 at a free port: its own config, host key and
    authorized_keys (a throwaway client key for root), in the foreground; stopped at the end."""
    if not os.access(SSHD, os.X_OK) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("sshd or ssh is missing: scripts/setup.sh --tests installs openssh-server")
    d = tmp_path / "sshd"
    d.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"eveadm-test-{key}", "-f", str(d / key)],
                       check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the keys sit under /tmp, which StrictModes refuses (world-writable); nobody else uses this sshd
StrictModes no
""")
    key_type, key = (d / "host_key.pub").read_text().split()[:2]
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: proc.poll() is not None or accepts(port), 30) and proc.poll() is None, \
            (d / "sshd.log").read_text()
        yield {"port": port, "key": d / "client_key", "known_hosts": d / "known_hosts"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


class Fleet:
    """Three nodes, their state roots, and ansible-playbook runs against them."""

    def __init__(self, tmp_path: Path, env: dict, playbook: Path, rootfs: Path, sshd: dict):
        self.tmp = tmp_path
        self.playbook = playbook
        self.roots = {name: tmp_path / name for name in NODES}
        self.cli = {name: Cli(root) for name, root in self.roots.items()}
        self.runs = 0
        ssh_args = (f"-F /dev/null -o UserKnownHostsFile={sshd['known_hosts']} -o GlobalKnownHostsFile=/dev/null "
                    "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
        inventory = {"all": {
            "vars": {"ansible_python_interpreter": sys.executable, "rootfs": str(rootfs)},
            "hosts": {
                "node1": {"ansible_connection": "local", "eveadm_env": {"EVEADM_ROOT": str(self.roots["node1"])}},
                "node2": {"ansible_connection": "local", "eveadm_root": str(self.roots["node2"])},
                "node3": {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": sshd["port"],
                          "ansible_user": "root", "ansible_ssh_private_key_file": str(sshd["key"]),
                          "ansible_ssh_common_args": ssh_args,
                          "eveadm_env": {"EVEADM_ROOT": str(self.roots["node3"])}},
            },
        }}
        self.inventory = tmp_path / "inventory.json"  # JSON is YAML: the yaml inventory plugin reads it
        self.inventory.write_text(json.dumps(inventory))
        self.env = env

    def play(self, name: str, *extra: str) -> tuple[dict[str, int], list[dict]]:
        """Run playbooks/NAME; returns ({host: changed} from the PLAY RECAP, every task result)."""
        self.runs += 1
        record = self.tmp / f"run{self.runs}.json"
        proc = subprocess.run(
            [str(self.playbook), "-i", str(self.inventory), str(HERE / "playbooks" / name), *extra],
            env=dict(self.env, EVEADM_TEST_RECORD=str(record)), cwd=self.tmp, capture_output=True, text=True,
            timeout=900)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        recap = {m[0]: (int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in RECAP.findall(proc.stdout)}
        assert sorted(recap) == list(NODES) and all(ok > 0 and not (unr or failed) for ok, _, unr, failed in
                                                    recap.values()), output[-6000:]
        return {host: changed for host, (_, changed, _, _) in recap.items()}, json.loads(record.read_text())

    def domains(self, node: str) -> dict[str, dict]:
        return {d["alias"]: d for d in self.cli[node].json("list", "-j")}

    def listings(self) -> dict[str, list]:
        return {node: self.cli[node].json("list", "-j") for node in NODES}

    def remove_all(self) -> None:
        """Whatever a failed run left, deleted through eveadm."""
        for node, cli in self.cli.items():
            if (self.roots[node] / "eveadm.db").exists():
                for dom in cli.json("list", "-j"):
                    cli("delete", dom["uuid"])


@pytest.fixture
def fleet(tmp_path, ansible_env, ansible_bin, rootfs, sshd):
    f = Fleet(tmp_path, ansible_env, ansible_bin / "ansible-playbook", rootfs, sshd)
    yield f
    f.remove_all()


def results(record: list[dict], task: str) -> dict[str, dict]:
    return {r["host"]: r["result"] for r in record if r["task"] == task}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_playbook_converges_three_nodes_and_a_second_run_changes_nothing(fleet):
    empty = fleet.listings()
    assert empty == {node: [] for node in NODES}

    # check mode: every node would change, and none does
    changed, _ = fleet.play("site.yml", "--check", "--diff")
    assert all(changed[node] > 0 for node in NODES), changed
    assert fleet.listings() == empty

    changed, record = fleet.play("site.yml")
    assert all(changed[node] > 0 for node in NODES), changed
    pids = {}
    for node in NODES:
        doms = fleet.domains(node)
        assert {a: d["state"] for a, d in doms.items()} == {"web": "running", "worker": "running", "batch": "running"}
        assert doms["web"]["env"] == {"GREETING": "hello"} and doms["web"]["tags"] == {"role": "web"}
        assert doms["batch"]["tags"] == {"managed_by": "eveadm-apply"}, "made by apply, so apply may prune it"
        assert all(alive(d["pid"]) for d in doms.values()), "real container processes"
        pids[node] = {a: d["pid"] for a, d in doms.items()}
    # each node has its own root: the same aliases, different domains
    assert len({fleet.domains(node)["web"]["uuid"] for node in NODES}) == 3
    info = results(record, "What the node runs")
    for node in NODES:
        assert sorted(d["alias"] for d in info[node]["domains"]) == ["batch", "web", "worker"]
        assert info[node]["host"]["root"] == str(fleet.roots[node])
        assert "container" in [b["name"] for b in info[node]["host"]["brands"]]
    applied = results(record, "Batch through eveadm apply")
    assert all([(s["action"], s["target"], s["status"]) for s in applied[n]["steps"]] == [("create", "batch", "done")]
               for n in NODES), applied

    changed, record = fleet.play("site.yml")
    assert changed == {node: 0 for node in NODES}
    assert all(results(record, "Web restarts into a change it could not take while running")[n] for n in NODES)

    # a new greeting (env waits for a restart) and a stopped worker: check mode first
    before = fleet.listings()
    change = ("-e", "greeting=bonjour", "-e", "worker_state=stopped")
    changed, record = fleet.play("site.yml", "--check", "--diff", *change)
    assert all(changed[node] > 0 for node in NODES), changed
    assert fleet.listings() == before
    web = results(record, "Web runs")
    for node in NODES:
        assert web[node]["changed_properties"] == ["env"]
        assert (web[node]["diff"]["before"]["env"], web[node]["diff"]["after"]["env"]) == (
            {"GREETING": "hello"}, {"GREETING": "bonjour"})

    changed, record = fleet.play("site.yml", *change)
    assert all(changed[node] > 0 for node in NODES), changed
    assert all(results(record, "Web runs")[n]["restart_required"] == ["env"] for n in NODES)
    for node in NODES:
        doms = fleet.domains(node)
        web = doms["web"]
        assert (web["state"], web["env"], web.get("pending_restart")) == ("running", {"GREETING": "bonjour"}, None)
        assert web["pid"] != pids[node]["web"] and alive(web["pid"]), "restarted: a new process"
        assert not alive(pids[node]["web"])
        assert doms["worker"]["state"] == "stopped"
        assert wait_until(lambda: not alive(pids[node]["worker"]), 10), "the worker's process ended"
        assert doms["batch"]["pid"] == pids[node]["batch"], "untouched"

    changed, _ = fleet.play("site.yml", *change)
    assert changed == {node: 0 for node in NODES}

    changed, _ = fleet.play("teardown.yml")
    assert all(changed[node] > 0 for node in NODES)
    assert fleet.listings() == {node: [] for node in NODES}
    assert not any(alive(pid) for node in NODES for pid in pids[node].values())
    changed, _ = fleet.play("teardown.yml")
    assert changed == {node: 0 for node in NODES}
