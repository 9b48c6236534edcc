"""PCI passthrough on kvm, for real: in a machine nested in QEMU TCG (an emulated VT-d and a spare
e1000, nestedvm.py), eveadm binds the e1000 to vfio-pci, a guest it starts there sees the device on
its PCI bus, and stop / delete give it back to e1000. About 3 minutes on two cores: the guest runs
under TCG inside TCG."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from nestedvm import E1000_ID, PCI_ADDR, NestedVM, build
from kvmtest import REPO

pytestmark = pytest.mark.kvm
ROOT = "/tmp/eveadm-root"  # on the nested machine's own tmpfs
GUEST_SEES_IT = 400  # s for the guest's kernel to list its PCI devices, under TCG in TCG


@pytest.fixture(scope="module")
def l1(tmp_path_factory):
    vm = NestedVM(build(), tmp_path_factory.mktemp("nested"))
    try:
        vm.boot(timeout=300)
        yield vm
    finally:
        vm.close()


def eveadm(vm: NestedVM, *args, payload: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "eveadm", "--root", ROOT, *map(str, args)]
    if payload is not None:
        path = vm.workdir / f"payload-{vm.seq + 1}.json"
        path.write_text(json.dumps(payload))
        argv += ["-f", str(path)]
    env = f"PYTHONPATH={shlex.quote(str(REPO / 'src'))} EVEADM_CREATE_RETRY_DELAY=1"
    rc, out, err = vm.run(f"cd / && {env} {shlex.join(argv)} </dev/null", timeout=600)
    return subprocess.CompletedProcess(argv, rc, out, err)


def ok(vm: NestedVM, *args, **kw) -> str:
    proc = eveadm(vm, *args, **kw)
    assert proc.returncode == 0, f"eveadm {' '.join(map(str, args))} -> {proc.returncode}: {proc.stderr}"
    return proc.stdout


def payload(guest, alias: str) -> dict:
    # no `quiet`: the guest's kernel prints each PCI device it finds ("pci 0000:00:01.0: [8086:100e]")
    return {"brand": "kvm", "alias": alias, "ram": 128, "kernel": str(guest / "vmlinuz"),
            "initrd": str(guest / "initramfs.cpio.gz"), "cmdline": "console=ttyS0 panic=-1",
            "pci_devices": [{"address": PCI_ADDR}]}


def test_the_device_goes_to_vfio_pci_the_guest_sees_it_and_delete_gives_it_back(l1, guest):
    assert l1.driver() == "e1000"
    assert PCI_ADDR not in ok(l1, "pci", "list", "--brand", "kvm").split()
    dom = json.loads(ok(l1, "create", "-j", payload=payload(guest, "pt")))
    assert dom["state"] == "running" and dom["backend"]["pci_added"] == [PCI_ADDR]
    assert l1.driver() == "vfio-pci"
    argv = l1.check(f"cat {dom['backend']['argv_file']}")
    assert argv.index("intel-iommu,caching-mode=on") < argv.index(f"vfio-pci,host={PCI_ADDR}")
    serial = dom["backend"]["serial_log"]
    log = l1.wait_for(f"cat {serial}", lambda rc, out: f"[{E1000_ID}]" in out, GUEST_SEES_IT)
    assert f"[{E1000_ID}] type 00 class 0x020000" in log  # an Ethernet controller on the guest's bus
    ok(l1, "delete", "pt")
    assert l1.driver() == "e1000"
    assert PCI_ADDR not in ok(l1, "pci", "list", "--brand", "kvm").split()


def test_stop_gives_back_what_eveadm_bound_and_keeps_what_the_operator_bound(l1, guest):
    ok(l1, "create", "--paused", payload=payload(guest, "mine"))
    assert l1.driver() == "vfio-pci"
    ok(l1, "stop", "mine")
    assert l1.driver() == "e1000"
    ok(l1, "pci", "assignable-add", PCI_ADDR, "--brand", "kvm")  # the operator's own choice
    ok(l1, "start", "mine")
    ok(l1, "stop", "-F", "mine")
    assert l1.driver() == "vfio-pci"
    ok(l1, "delete", "mine")
    assert l1.driver() == "vfio-pci"
    ok(l1, "pci", "assignable-remove", PCI_ADDR, "--brand", "kvm")
    assert l1.driver() == "e1000"
