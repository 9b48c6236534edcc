"""Fixtures of the stats and metrics tests: a private state root whose domains (real containers, a real
QEMU guest) are all removed afterwards, the test guest and root filesystem, the agent with --metrics, and
a real Prometheus server (the Debian package's binary) on a free loopback port with its own config and
storage in the test's directory, stopped at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from clitest import Cli, free_port, remove_container_leftovers
from eveadm.backends.host import pid_alive, wait_until

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "integration" / "kvm"))  # kvmtest: the kvm tests' QEMU helpers

from kvmtest import qemus_under, remove_socket_dirs_of  # noqa: E402


@pytest.fixture
def cli():
    """The CLI on a short private state root (QEMU's socket paths stay short); at the end every domain
    under it is deleted, and whatever a failed test left (QEMUs, containers, monitors, mounts) removed."""
    root = Path(tempfile.mkdtemp(prefix="evm-", dir="/tmp"))
    c = Cli(root)
    try:
        yield c
    finally:
        listed = c("list", "-j")
        for dom in json.loads(listed.stdout) if listed.returncode == 0 else []:
            c("delete", dom["uuid"], timeout=120)
        _remove_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    for pid in qemus_under(root):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10)
    remove_socket_dirs_of(root)
    remove_container_leftovers(root)


class Agent:
    """`eveadm agent --metrics 127.0.0.1:PORT` in a subprocess; its log in `log`."""

    def __init__(self, cli: Cli, workdir: Path, interval: float = 1.0):
        self.port = free_port()
        self.log = workdir / "agent.log"
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "agent", "--interval",
                                      str(interval), "--metrics", f"127.0.0.1:{self.port}"],
                                     env=cli.env, stdout=self._out, stderr=subprocess.STDOUT)
        assert wait_until(lambda: b"metrics on" in self.log.read_bytes() or self.proc.poll() is not None, 60)
        assert self.proc.poll() is None, f"the agent ended: {self.log.read_text()}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self._out.close()


@pytest.fixture
def agent(cli, tmp_path):
    started = Agent(cli, tmp_path)
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.stop()


class Prometheus:
    """A real Prometheus server on 127.0.0.1, scraping `targets` every second."""

    def __init__(self, workdir: Path, targets: list[str]):
        exe = shutil.which("prometheus") or pytest.fail("prometheus is missing: apt-get install prometheus")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "eveadm", "static_configs": [{"targets": targets}]}],
        }))
        self.log = workdir / "prometheus.log"
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([exe, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                     stdout=self._out, stderr=subprocess.STDOUT)
        assert wait_until(self.ready, 60), f"prometheus did not get ready: {self.log.read_text()[-2000:]}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus ended: {self.log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector of a PromQL expression now: [{"metric": {labels}, "value": [time, "text"]}]."""
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        finally:
            self._out.close()


@pytest.fixture
def prometheus(tmp_path):
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        server = Prometheus(tmp_path, targets)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
