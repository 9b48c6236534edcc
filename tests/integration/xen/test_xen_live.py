"""brand xen's live changes on real Xen 4.17 (nested in QEMU TCG): `update` of a running PV guest
issues `xl mem-set`, and Xen then has the new memory target; more than the boot-time maxmem waits.

`xl block-attach` is not tried here: the harness's minimal dom0 has no blkback, loop devices or
/etc/xen/scripts/block (only vif-bridge), so no vbd backend ever comes up, at boot or live.
tests/unit/test_xen_live_commands.py checks the commands against a scripted xl."""

import json
import uuid as uuidlib

import pytest

pytestmark = pytest.mark.xen


def test_memory_changes_while_the_guest_runs(dom0):
    u = str(uuidlib.uuid4())
    name = f"live.{u[:8]}"
    p = {"brand": "xen", "alias": "live", "uuid": u, "virt_mode": "pv", "ram": 128, "max_ram": 192,
         "kernel": str(dom0.art / "vmlinuz"), "initrd": str(dom0.art / "domu-initramfs.cpio.gz"),
         "cmdline": "quiet", "stop_timeout": 20}
    rec = json.loads(dom0.ok("create", "-j", payload=p).stdout)
    domid = rec["domain_id"]
    dom0.wait_console(name)

    n0 = len(dom0.commands())
    out = json.loads(dom0.ok("update", "-j", u, payload={"ram": 160}).stdout)
    assert out["changes"]["ram"]["applied"] == "live", out
    assert ["xl", "mem-set", name, "160m"] in dom0.argvs()[n0:]
    assert dom0.xenstore(f"/local/domain/{domid}/memory/target") == str(160 * 1024)

    out = json.loads(dom0.ok("update", "-j", u, payload={"ram": 256, "max_ram": 256}).stdout)
    assert out["changes"]["ram"]["detail"] == "pending until restart: above the boot-time maximum (max_ram 192)"
    got = json.loads(dom0.ok("get", u).stdout)
    assert got["ram"] == 160 and got["pending_restart"] == {"ram": 256, "max_ram": 256}
    assert dom0.xenstore(f"/local/domain/{domid}/memory/target") == str(160 * 1024)
    dom0.ok("delete", u)
