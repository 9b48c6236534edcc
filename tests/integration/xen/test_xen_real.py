"""brand xen against real Xen 4.17 (nested in QEMU TCG): the seed's exact commands, read back
from eveadm's command log, and their effects, checked with xl / xenstore in dom0."""

import json
import shlex
import sys
import uuid as uuidlib

import pytest

from xenvm import PCI_ADDR, REPO, ROOT

pytestmark = pytest.mark.xen

FEATURES = ("feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6",
            "feature-ipv4-csum-offload", "feature-ipv6-csum-offload")


def payload(dom0, alias, cmdline="quiet", nics=1):
    return {"brand": "xen", "alias": alias, "uuid": str(uuidlib.uuid4()), "virt_mode": "pv", "ram": 128,
            "kernel": str(dom0.art / "vmlinuz"), "initrd": str(dom0.art / "domu-initramfs.cpio.gz"),
            "cmdline": cmdline, "nics": [{"mac": f"02:16:3e:00:00:{i + 1:02x}"} for i in range(nics)],
            "stop_timeout": 20}


def offload_keys(domid, i=0):
    return ([f"/local/domain/0/backend/vif/{domid}/{i}/{f}" for f in FEATURES]
            + [f"/local/domain/{domid}/device/vif/{i}/{f}" for f in FEATURES])


DRIVE = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from eveadm.backends import facts
from eveadm.backends.base import Domain
from eveadm.backends.host import BackendContext
from eveadm.backends.xen import XenBackend
step, state = sys.argv[2], Path(sys.argv[3])
s = json.loads(state.read_text())
root = Path(s["root"])
dom = Domain(s["config"]["uuid"], s["config"], s.get("backend", {}), root / "domains" / s["config"]["uuid"],
             root / "run" / s["config"]["uuid"])
be = XenBackend(BackendContext(root), facts("xen"))
returned = None
if step == "create":
    be.check_available(); be.prepare(dom); returned = be.create_paused(dom)
    be.disable_vif_offload(dom, dom.backend["domid"])
elif step == "unpause":
    returned = be.unpause(dom)
elif step == "destroy":
    be.destroy(dom, 10); be.release(dom, delete=True)
st = be.status([dom])[dom.uuid]
s["backend"] = dom.backend
state.write_text(json.dumps(s))
print(json.dumps({"state": st.state, "domid": st.domain_id, "name": dom.name, "backend_domid": dom.backend.get("domid"),
                  "returned": returned and {"state": returned.state, "domid": returned.domain_id}}))
'''


def test_offload_keys_are_zero_while_still_paused(dom0):
    """Backend primitives directly: after create_paused + the offload writes the domain is
    still paused and xenstore holds 0 in all 10 keys of its VIF; then unpause runs it."""
    cfg = payload(dom0, "paused1")
    cfg.update(disks=[], pci_devices=[], vcpus=1)
    work = dom0.vm.workdir
    (work / "drive.py").write_text(DRIVE)
    (work / "drive.json").write_text(json.dumps({"root": "/run/eveadm-direct", "config": cfg}))

    def step(name):
        rc, out, err = dom0.vm.run(f"{sys.executable} {dom0.vm.gpath(work / 'drive.py')} {REPO / 'src'} {name} "
                                   f"{dom0.vm.gpath(work / 'drive.json')}", timeout=120)
        assert rc == 0, err
        return json.loads(out.strip().splitlines()[-1])

    st = step("create")
    name, domid = st["name"], st["domid"]
    # create_paused returns what xl lists, and the offload writes leave it paused
    assert st["returned"] == {"state": "paused", "domid": domid} and st["state"] == "paused"
    assert domid == st["backend_domid"] and domid > 0
    assert "p" in dom0.xl_flags(name)
    for key in offload_keys(domid):
        assert dom0.xenstore(key) == "0", key
    st = step("unpause")
    assert st["returned"] == {"state": "running", "domid": domid}
    assert "p" not in dom0.xl_flags(name)
    assert step("destroy")["state"] == "absent"
    assert dom0.xl_flags(name) is None


def test_lifecycle_through_the_cli(dom0):
    p = payload(dom0, "web")
    u = p["uuid"]
    name = f"web.{u[:8]}"
    cfg = f"{ROOT}/domains/{u}/xl.cfg"

    # create --paused: `xl create CFG -p` then `xl domid NAME`; xl shows it paused
    n0 = len(dom0.commands())
    rec = json.loads(dom0.ok("create", "--paused", "-j", payload=p).stdout)
    assert rec["state"] == "paused"
    cmds = dom0.argvs()[n0:]
    assert cmds[:2] == [["xl", "create", cfg, "-p"], ["xl", "domid", name]]
    assert "p" in dom0.xl_flags(name)
    domid = rec["domain_id"]
    assert isinstance(domid, int) and domid > 0
    text = dom0.check(f"cat {cfg}")
    assert f'name = "{name}"' in text and 'type = "pv"' in text and "mac=02:16:3e:00:00:01" in text

    # start: 10 xenstore writes for the VIF, then `xl unpause NAME`; the guest boots
    n0 = len(dom0.commands())
    dom0.ok("start", u)
    cmds = dom0.argvs()[n0:]
    writes = [c for c in cmds if c[:2] == ["xenstore", "write"]]
    assert writes == [["xenstore", "write", k, "0"] for k in offload_keys(domid)]
    assert cmds.index(["xl", "unpause", name]) > cmds.index(writes[-1])
    for key in offload_keys(domid)[:5]:  # the backend side: no guest driver rewrites these
        assert dom0.xenstore(key) == "0"
    assert json.loads(dom0.ok("get", u).stdout)["state"] == "running"
    dom0.wait_console(name)
    info = json.loads(dom0.ok("info", u).stdout)
    assert info["runtime"]["xl"]["domid"] == domid and info["runtime"]["cfg"] == cfg
    assert info["host"]["xen_version"].startswith("4.17") and info["console_log"].endswith(f"guest-{name}.log")
    assert "EVEADM-GUEST-READY" in dom0.ok("info", u, "--log", "50").stdout

    # graceful stop: `xl shutdown NAME`; the PV guest powers off
    n0 = len(dom0.commands())
    dom0.ok("stop", u)
    cmds = dom0.argvs()[n0:]
    assert ["xl", "shutdown", name] in cmds and ["xl", "shutdown", "-F", name] not in cmds
    assert dom0.xl_flags(name) is None
    assert json.loads(dom0.ok("get", u).stdout)["state"] == "stopped"

    # stop -F: straight to `xl shutdown -F NAME`
    dom0.ok("start", u)
    n0 = len(dom0.commands())
    dom0.ok("stop", "-F", u)
    cmds = dom0.argvs()[n0:]
    assert ["xl", "shutdown", "-F", name] in cmds and ["xl", "shutdown", name] not in cmds
    assert dom0.xl_flags(name) is None

    # the guest powered off behind eveadm's back: stopped, not failed
    dom0.ok("start", u)
    dom0.check(f"xl shutdown -w {name}")
    got = json.loads(dom0.ok("get", u).stdout)
    assert got["state"] == "stopped", got

    # destroyed behind eveadm's back: the next get says so
    dom0.ok("start", u)
    dom0.check(f"xl destroy {name}")
    n0 = len(dom0.commands())
    got = json.loads(dom0.ok("get", u).stdout)
    assert got["state"] == "failed"
    assert "destroyed" in got["error"]["message"] or "vanished" in got["error"]["message"], got["error"]
    assert dom0.argvs()[n0:].count(["xl", "list"]) == 1  # one listing answers for every xen domain

    # delete: gone from eveadm, from Xen and from disk
    dom0.ok("start", u)
    dom0.ok("delete", u)
    assert dom0.xl_flags(name) is None
    assert dom0.eveadm("get", u).returncode == 4
    assert dom0.sh(f"test -e {ROOT}/domains/{u}")[0] != 0


def test_stop_of_a_paused_domain_is_one_destroy(dom0):
    """A paused guest cannot act on a shutdown request: the engine's ladder goes straight to destroy."""
    p = payload(dom0, "idle", nics=0)
    u = p["uuid"]
    name = f"idle.{u[:8]}"
    dom0.ok("create", "--paused", payload=p)
    n0 = len(dom0.commands())
    dom0.ok("stop", u)
    cmds = dom0.argvs()[n0:]
    assert ["xl", "destroy", name] in cmds and not [c for c in cmds if c[:2] == ["xl", "shutdown"]]
    assert dom0.xl_flags(name) is None
    assert json.loads(dom0.ok("get", u).stdout)["state"] == "stopped"
    dom0.ok("delete", u)


def test_guest_crash_is_failed(dom0):
    p = payload(dom0, "crashy", cmdline="quiet eveadm.crash", nics=0)
    u = p["uuid"]
    dom0.ok("create", payload=p)
    dom0.wait_console(f"crashy.{u[:8]}", "sysrq")  # the panic is on the console
    got = dom0.vm.wait_for(
        f"cd / && PYTHONPATH={shlex.quote(str(REPO / 'src'))} {sys.executable} -m eveadm --root {ROOT} get {u}",
        lambda rc, out: rc == 0 and json.loads(out[out.index("{"):])["state"] == "failed", 60)
    got = json.loads(got[got.index("{"):])
    assert "crash" in got["error"]["message"], got["error"]
    dom0.ok("delete", u)


def test_pci_assignable_add_and_remove(dom0):
    assert PCI_ADDR not in dom0.ok("pci", "list").stdout.split()
    n0 = len(dom0.commands())
    dom0.ok("pci", "assignable-add", PCI_ADDR)
    assert PCI_ADDR in dom0.ok("pci", "list").stdout.split()
    assert PCI_ADDR in dom0.check("xl pci-assignable-list")
    assert dom0.check(f"readlink /sys/bus/pci/devices/{PCI_ADDR}/driver").strip().endswith("pciback")
    dom0.ok("pci", "assignable-remove", PCI_ADDR)
    assert PCI_ADDR not in dom0.ok("pci", "list").stdout.split()
    assert dom0.argvs()[n0:] == [
        ["xl", "pci-assignable-add", PCI_ADDR], ["xl", "pci-assignable-list"],
        ["xl", "pci-assignable-rem", "-r", PCI_ADDR], ["xl", "pci-assignable-list"]]


def test_pci_devices_are_assigned_at_start_and_released_at_stop(dom0):
    p = payload(dom0, "pcidom", nics=0)
    p["pci_devices"] = [{"address": PCI_ADDR}]
    u = p["uuid"]
    name = f"pcidom.{u[:8]}"
    n0 = len(dom0.commands())
    dom0.ok("create", payload=p)
    cmds = dom0.argvs()[n0:]
    create = cmds.index(["xl", "create", f"{ROOT}/domains/{u}/xl.cfg", "-p"])
    assert cmds[:create] == [["xl", "pci-assignable-list"], ["xl", "pci-assignable-add", PCI_ADDR]]
    assert PCI_ADDR in dom0.check(f"xl pci-list {name}")
    n0 = len(dom0.commands())
    dom0.ok("stop", "-F", u)
    assert ["xl", "pci-assignable-rem", "-r", PCI_ADDR] in dom0.argvs()[n0:]
    assert PCI_ADDR not in dom0.check("xl pci-assignable-list")
    dom0.ok("delete", u)
