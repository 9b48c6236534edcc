"""Real Xen for the xen brand: Xen 4.17 + a Debian PV dom0 booted nested in QEMU TCG.

One machine for the real-Xen module (booting costs ~10 s). eveadm itself runs *inside
dom0* (`python3 -m eveadm`, the host's interpreter and source tree seen over a
read-only virtio-9p export of the host's /, see xenvm.py), so it drives the real
xl / xenstore / xenconsoled with its default settings, exactly as on a Xen node.
Its state root is on dom0's own tmpfs; tests read it back through dom0.

Artifacts: scripts/build-xen.sh (cached under $EVEADM_ARTIFACTS/xen).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SRC = str(REPO / "src")
sys.path.insert(0, str(HERE))
from xenvm import Dom0, XenVM, expose_python  # noqa: E402

_times: dict = {}


def artifacts_dir() -> Path:
    base = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))
    return base / "xen"


@pytest.fixture(scope="session")
def xen_artifacts() -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("the xen stage needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
    out = artifacts_dir()
    t0 = time.monotonic()
    subprocess.run(["bash", str(REPO / "scripts" / "build-xen.sh"), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    _times["build"] = time.monotonic() - t0
    return out


@pytest.fixture(scope="module")
def dom0(xen_artifacts, tmp_path_factory):
    work = tmp_path_factory.mktemp("xen")
    # q35 + an emulated VT-d: libxl quarantines a device made assignable, which needs an IOMMU;
    # the spare e1000 is the device the pci tests hand to pciback
    vm = XenVM(xen_artifacts, work, machine="q35",
               extra_qemu=["-device", "intel-iommu,intremap=off", "-device", "e1000,addr=0x6"])
    _times["start"] = time.monotonic()
    try:
        _times["boot"] = vm.boot()
        # the host's Python, this source tree and the artifacts, at their host paths
        expose_python(vm, [REPO, xen_artifacts])
        yield Dom0(vm, xen_artifacts)
    finally:
        vm.close()
        _times["end"] = time.monotonic()


def pytest_terminal_summary(terminalreporter):
    if "start" in _times:
        end = _times.get("end", time.monotonic())
        terminalreporter.write_line(
            f"xen stage: {end - _times['start']:.1f}s wall (Xen+dom0 boot {_times.get('boot', 0):.1f}s, "
            f"artifacts {_times.get('build', 0):.1f}s)")
