"""Shared fixtures (helpers live in clitest.py so test modules can import them by a unique name).

The test artifacts are built by the project's scripts into $EVEADM_ARTIFACTS once and reused
(each script returns at once when its output is already there)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from clitest import ARTIFACTS, Cli

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path / "root")


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The busybox root filesystem of the test containers (scripts/build-rootfs.sh)."""
    out = ARTIFACTS / "rootfs"
    subprocess.run([str(SCRIPTS / "build-rootfs.sh"), str(out)], check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def oci_layout(rootfs) -> Path:
    """An OCI layout of that root filesystem (tag latest; its cmd prints EVEADM-OCI-READY)."""
    layout = ARTIFACTS / "oci-busybox"
    subprocess.run([str(SCRIPTS / "build-rootfs.sh"), "--oci", str(layout), str(rootfs)], check=True,
                   capture_output=True, timeout=600)
    return layout


@pytest.fixture(scope="session")
def guest() -> Path:
    """Kernel + initramfs of the kvm test guest (scripts/build-guest.sh): virtio_net, udhcpc, its
    address on ttyS0."""
    if not shutil.which("qemu-system-x86_64"):
        pytest.fail("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    out = ARTIFACTS / "guest"
    proc = subprocess.run(["sh", str(SCRIPTS / "build-guest.sh"), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"build-guest.sh failed: {proc.stderr}"
    assert (out / "vmlinuz").is_file() and (out / "initramfs.cpio.gz").is_file()
    return out
