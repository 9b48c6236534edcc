"""Live changes to a running kvm domain, end to end through the CLI on real QEMU: the test guest
(booted with eveadm.hotplug) prints `EVEADM-GUEST-DEVICES block=.. net=.. cpus=..` on its console
whenever its devices change, so the test sees what the guest sees.

One guest serves every check (a TCG boot is slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid as _uuid
from pathlib import Path

import pytest

from kvmtest import BOOT_TIMEOUT, REPO, log_bytes
from eveadm.backends.host import wait_until
from eveadm.backends.kvm.qmp import qmp

pytestmark = pytest.mark.kvm

MiB = 1024 * 1024
DEVICES = re.compile(rb"EVEADM-GUEST-DEVICES block=(\S*) net=(\S*) cpus=(\d+)")


def ev(root: Path, *args, stdin: dict | None = None, check: bool = True):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("EVEADM_ROOT", None)
    proc = subprocess.run([sys.executable, "-m", "eveadm", "--root", str(root), *map(str, args)],
                          input=json.dumps(stdin).encode() if stdin is not None else None,
                          capture_output=True, env=env, timeout=180)
    if check:
        assert proc.returncode == 0, f"eveadm {' '.join(map(str, args))} -> {proc.returncode}: {proc.stderr.decode()}"
    return proc


def update(root: Path, uuid: str, change: dict) -> dict:
    return json.loads(ev(root, "update", "-j", uuid, stdin=change).stdout)["changes"]


def get(root: Path, uuid: str) -> dict:
    return json.loads(ev(root, "get", uuid).stdout)


def guest_devices(log: str, block: str, net: str, cpus: int | None = None) -> dict:
    """Wait until the guest's latest device report says `block` and `net` (and `cpus`)."""
    def last():
        found = DEVICES.findall(log_bytes(log))
        return tuple(x.decode() for x in found[-1]) if found else None

    def matches():
        now = last()
        return now is not None and now[:2] == (block, net) and (cpus is None or now[2] == str(cpus))

    assert wait_until(matches, BOOT_TIMEOUT, cap=0.2), f"the guest reports {last()}, not block={block} net={net}"
    return {"block": block, "net": net}


@pytest.fixture
def bridge():
    name = "evhp" + _uuid.uuid4().hex[:8]
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "delete", name], check=False)


def test_disks_nics_memory_and_vcpus_change_while_the_guest_runs(root, guest, bridge):
    payload = {"brand": "kvm", "alias": "hot", "kernel": str(guest / "vmlinuz"),
               "initrd": str(guest / "initramfs.cpio.gz"), "cmdline": "console=ttyS0 quiet panic=-1 eveadm.hotplug",
               "ram": 256, "max_ram": 384, "vcpus": 1, "max_vcpus": 2, "disks": [{"size": 8}]}
    dom = json.loads(ev(root, "create", "-j", stdin=payload).stdout)
    uuid, log, sock = dom["uuid"], dom["backend"]["serial_log"], dom["backend"]["qmp"]
    guest_devices(log, "vda", "", cpus=1)
    # the balloon took the guest down to ram before it ran
    assert wait_until(lambda: qmp(sock, "query-balloon")[0]["actual"] == 256 * MiB, 30, cap=0.2)

    # a disk and a nic (a tap on a bridge, as at boot) are hot-added: the guest sees both
    mac = "02:00:00:00:4b:01"
    changes = update(root, uuid, {"add_disks": [{"size": 8}], "add_nics": [{"mac": mac, "bridge": bridge}]})
    assert changes["disks"]["applied"] == "live" and changes["nics"]["applied"] == "live", changes
    guest_devices(log, "vda,vdb", "eth0")
    shown = get(root, uuid)
    tap = shown["backend"]["hotplug"]["nics"][mac]["tap"]
    assert Path(f"/sys/class/net/{tap}/master").resolve().name == bridge
    assert len(shown["disks"]) == 2 and [n["mac"] for n in shown["nics"]] == [mac]
    assert "pending_restart" not in shown

    # memory moves within the boot-time maximum; above it, it waits for a restart and get says so
    assert update(root, uuid, {"ram": 320})["ram"]["applied"] == "live"
    assert qmp(sock, "query-balloon")[0]["actual"] == 320 * MiB
    changes = update(root, uuid, {"ram": 512, "max_ram": 512})
    assert changes["ram"] == {"applied": "pending",
                              "detail": "pending until restart: above the boot-time maximum (max_ram 384)"}
    shown = get(root, uuid)
    assert (shown["ram"], shown["max_ram"]) == (320, 384)
    assert shown["pending_restart"] == {"ram": 512, "max_ram": 512}
    assert qmp(sock, "query-balloon")[0]["actual"] == 320 * MiB

    # a vCPU is hot-added up to max_vcpus; more waits for a restart
    assert update(root, uuid, {"vcpus": 2})["vcpus"]["applied"] == "live"
    assert len(qmp(sock, "query-cpus-fast")[0]) == 2
    guest_devices(log, "vda,vdb", "eth0", cpus=2)
    changes = update(root, uuid, {"vcpus": 3, "max_vcpus": 3})
    assert changes["vcpus"]["applied"] == "pending" and "max_vcpus 2" in changes["vcpus"]["detail"]
    assert len(qmp(sock, "query-cpus-fast")[0]) == 2
    shown = get(root, uuid)
    assert shown["vcpus"] == 2 and shown["pending_restart"]["vcpus"] == 3

    # the disk q35 booted with sits on its root bus: its removal waits; the hot-added ones go now
    boot_disk, hot_disk = shown["disks"]
    changes = update(root, uuid, {"disks": [hot_disk]})
    assert changes["disks"]["applied"] == "pending" and "root bus" in changes["disks"]["detail"]
    changes = update(root, uuid, {"disks": [boot_disk], "remove_nics": [mac]})
    assert changes["disks"]["applied"] == "live" and changes["nics"]["applied"] == "live", changes
    guest_devices(log, "vda", "")
    assert not Path(f"/sys/class/net/{tap}").exists()
    shown = get(root, uuid)
    assert shown["disks"] == [boot_disk] and shown["nics"] == []

    # what waited takes effect at the next start
    ev(root, "stop", "-F", uuid)
    shown = get(root, uuid)
    assert (shown["ram"], shown["max_ram"], shown["vcpus"]) == (512, 512, 3) and "pending_restart" not in shown
    ev(root, "delete", uuid)
