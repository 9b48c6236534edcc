"""`eveadm stats` of a real container and a real QEMU guest: the counters move when the domain does work."""

from __future__ import annotations

import socket
from pathlib import Path

from eveadm.backends.host import wait_until

MiB = 2 ** 20


def stats(cli, uuid) -> dict:
    (row,) = cli.json("stats", "-j", uuid)
    return row


def test_container_cpu_and_disk_counters_grow_while_it_works(cli, rootfs):
    # waits for /go (which the test creates through the overlay), then spins and writes 4 MiB
    work = ("echo READY; while [ ! -e /go ]; do sleep 0.1; done; "
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; "
            "dd if=/dev/zero of=/work.bin bs=64k count=64 conv=fsync 2>/dev/null; echo WORK-DONE; "
            "trap 'exit 0' TERM; while true; do sleep 1 & wait; done")
    dom = cli.create({"brand": "container", "ram": 64, "image": str(rootfs), "cmd": ["/bin/sh", "-c", work]})
    uuid = dom["uuid"]
    log = lambda: cli("info", uuid, "--log").stdout  # noqa: E731
    assert wait_until(lambda: "READY" in log(), 30)
    before = stats(cli, uuid)
    assert before["state"] == "running" and before["brand"] == "container"
    assert before["memory_bytes"] > 0

    (Path(dom["backend"]["rootfs"]) / "go").touch()
    assert wait_until(lambda: "WORK-DONE" in log(), 120), log()
    after = stats(cli, uuid)
    assert after["cpu_seconds"] - before["cpu_seconds"] > 0.05, (before, after)
    assert after["disk_write_bytes"] - before["disk_write_bytes"] >= 4 * MiB, (before, after)
    assert after["time"] > before["time"]
    table = cli.ok("stats", uuid).stdout.splitlines()
    assert table[1].split()[:4] == [uuid, "-", "container", "running"]


def test_qemu_guest_cpu_and_disk_counters_grow_while_it_works(cli, guest):
    dom = cli.create({"brand": "kvm", "kernel": str(guest / "vmlinuz"), "initrd": str(guest / "initramfs.cpio.gz"),
                      "cmdline": "console=ttyS0 quiet panic=-1 eveadm.vda", "ram": 256, "disks": [{"size": 8}]})
    uuid, serial_log = dom["uuid"], Path(dom["backend"]["serial_log"])
    text = lambda: serial_log.read_bytes() if serial_log.exists() else b""  # noqa: E731
    # the guest wrote its disk at boot; its shell then prompts on the console
    assert wait_until(lambda: b"# " in text().partition(b"EVEADM-DISKS-DONE")[2], 120), text()[-800:]
    before = stats(cli, uuid)
    assert before["state"] == "running" and before["brand"] == "kvm"
    assert before["memory_bytes"] > 16 * MiB and before["disk_write_ops"] > 0

    # type a command on the guest's serial console; connected until it answers: QEMU drops what the guest
    # has not read yet when the client hangs up
    with socket.socket(socket.AF_UNIX) as console:
        console.connect(dom["backend"]["serial"])
        console.sendall(b"dd if=/dev/zero of=/dev/vda bs=64k count=32 conv=fsync 2>/dev/null; "
                        b"i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo WORK-$((6*7))-DONE\n")
        assert wait_until(lambda: b"WORK-42-DONE" in text(), 180), text()[-800:]
    after = stats(cli, uuid)
    assert after["cpu_seconds"] - before["cpu_seconds"] > 0.05, (before, after)
    assert after["disk_write_bytes"] - before["disk_write_bytes"] >= 2 * MiB, (before, after)
    assert after["disk_write_ops"] > before["disk_write_ops"]
    assert after["disk_read_bytes"] >= before["disk_read_bytes"]
