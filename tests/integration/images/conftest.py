"""Fixtures for the image store: a real registry (Debian's docker-registry) on 127.0.0.1 at a free
port, plain HTTP, started from its own config file and stopped after; filled with `skopeo copy`
from an OCI layout built from the busybox root filesystem. Every test gets its own state root;
the domains it made are deleted and the mounts under it removed afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from clitest import Cli, free_port
from eveadm.backends.host import wait_until

REGISTRY_START = 30  # s


class Registry:
    """One docker-registry process serving `storage` on 127.0.0.1:port."""

    def __init__(self, workdir: Path):
        if not shutil.which("docker-registry"):
            pytest.fail("docker-registry is missing: apt-get install docker-registry (scripts/setup.sh --tests)")
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True)
        self.log = open(workdir / "registry.log", "wb")
        for _ in range(3):  # a free port can be taken before the registry binds it: then a new port
            self.port = free_port()
            self.host = f"127.0.0.1:{self.port}"
            config = workdir / "config.yml"
            config.write_text(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {self.storage}\n  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n")
            self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=self.log,
                                         stderr=subprocess.STDOUT)
            answered = wait_until(self._answers_or_ended, REGISTRY_START)
            if answered and self.proc.poll() is None:
                return
            if self.proc.poll() is None:
                break  # alive and silent: no second try
        self.stop()
        pytest.fail(f"docker-registry did not answer on {self.host}: {(workdir / 'registry.log').read_text()}")

    def _answers_or_ended(self) -> bool:
        if self.proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def push(self, layout: Path, ref: str, tag: str = "latest") -> str:
        """skopeo copy the layout's image to REF on this registry; returns its manifest digest."""
        digest_file = self.storage.parent / "pushed-digest"
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "--digestfile", str(digest_file),
                        f"oci:{layout}:{tag}", f"docker://{self.host}/{ref}"], check=True, timeout=120)
        return digest_file.read_text().strip()

    def blob_data(self, digest: str) -> Path:
        hexpart = digest.removeprefix("sha256:")
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def registry(oci_layout, tmp_path_factory):
    """A registry shared by the tests that do not change its storage, holding busybox:1."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.digest = reg.push(oci_layout, "busybox:1")
    yield reg
    reg.stop()


@pytest.fixture
def own_registry(oci_layout, tmp_path):
    """A registry of the test's own (whose storage it may damage), holding busybox:1."""
    reg = Registry(tmp_path / "registry")
    reg.digest = reg.push(oci_layout, "busybox:1")
    yield reg
    reg.stop()


@pytest.fixture
def root():
    """A short private state root (overlay mount options stay short); its domains go at teardown."""
    path = Path(tempfile.mkdtemp(prefix="evi-", dir="/tmp"))
    yield path
    cli = Cli(path)
    listed = cli("list", "-j")
    if listed.returncode == 0:
        for dom in json.loads(listed.stdout or "[]"):
            cli("delete", dom["uuid"], timeout=120)
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for target in reversed(mounts):
        if target.startswith(str(path) + "/"):
            subprocess.run(["umount", "--lazy", target], capture_output=True, timeout=30)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def icli(root, registry, tmp_path):
    """The CLI on the test's root; skopeo reads a registries.conf that marks the test registry insecure
    (plain HTTP), as an operator's /etc/containers/registries.conf.d would (setting image.registries_conf)."""
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    return Cli(root, env={"EVEADM_IMAGE_REGISTRIES_CONF": str(conf), "EVEADM_CONTAINER_RUNTIME": "runc"})
