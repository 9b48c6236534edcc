"""brand xen's live changes (change_live) against a scripted xl: which xl command each change issues,
what waits for a restart and why, and what the record is told runs after a failure half-way.
(The real-Xen harness checks mem-set and block-attach on a nested Xen.)"""

import json
import sys

import pytest

from eveadm.backends import facts
from eveadm.backends.base import Domain
from eveadm.backends.host import BackendContext
from eveadm.backends.xen import XenBackend
from eveadm.errors import LiveChangeFailed, NotLive

U = "5b255ec1-7c74-416b-8c95-8871153134c2"
NAME = "web.5b255ec1"

# keeps what is attached in a JSON file; `fail` names xl commands (with their last argument) that fail
FAKE_XL = r"""
import json, sys
path = sys.argv[1]
st = json.load(open(path))
cmd, args = sys.argv[2], sys.argv[3:]
if " ".join([cmd, args[-1]]) in st.get("fail", []):
    sys.stderr.write("libxl: error: libxl_device.c:1300: device_backend_callback: unable to remove device\n")
    sys.exit(1)
if cmd == "mem-set":
    st["memory"] = args[1]
elif cmd == "vcpu-set":
    st["vcpus"] = int(args[1])
elif cmd == "block-attach":
    st["vbds"].append(args[1])
elif cmd == "block-detach":
    st["vbds"] = [v for v in st["vbds"] if "vdev=" + args[1] + "," not in v]
elif cmd == "network-attach":
    st["vifs"].append(args[1:])
elif cmd == "network-detach":
    st["vifs"] = [v for v in st["vifs"] if "mac=" + args[1] not in v]
json.dump(st, open(path, "w"))
"""


@pytest.fixture
def xen(tmp_path, monkeypatch):
    """(backend, domain, read the xl state, set the failing commands)."""
    state = tmp_path / "xl-state.json"
    state.write_text(json.dumps({"vbds": [], "vifs": []}))
    (tmp_path / "fake_xl.py").write_text(FAKE_XL)
    xl = tmp_path / "xl"
    xl.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "fake_xl.py"} {state} "$@"\n')
    xl.chmod(0o755)
    monkeypatch.setenv("EVEADM_XEN_XL", str(xl))
    boot_disk = tmp_path / "boot.img"
    boot_disk.write_bytes(b"\0" * 512)
    config = {"uuid": U, "brand": "xen", "alias": "web", "virt_mode": "pvh", "kernel": "/k", "ram": 256,
              "max_ram": 512, "vcpus": 1, "max_vcpus": 2, "vnc_port": -1, "pci_devices": [],
              "disks": [{"path": str(boot_disk), "model": "virtio", "media": "disk"}],
              "nics": [{"mac": "02:00:00:00:00:01", "bridge": "br0"}]}
    be = XenBackend(BackendContext(tmp_path / "root"), facts("xen"))
    dom = Domain(U, config, {"domid": 7, "name": NAME}, tmp_path / "domains" / U, tmp_path / "run" / U)

    def fail(*commands):
        state.write_text(json.dumps(dict(json.loads(state.read_text()), fail=list(commands))))

    return be, dom, lambda: json.loads(state.read_text()), fail


def calls(be) -> list[list[str]]:
    log = be.ctx.command_log
    return [json.loads(line)["argv"][1:] for line in log.read_text().splitlines()] if log.exists() else []


def test_memory_and_vcpus_change_up_to_the_boot_time_maximum(xen):
    be, dom, xl_state, _ = xen
    assert "maxvcpus = 2" in be.render(dom).splitlines()
    be.change_live(dom, "ram", 256, 512)
    be.change_live(dom, "vcpus", 1, 2)
    assert calls(be) == [["mem-set", NAME, "512m"], ["vcpu-set", NAME, "2"]]
    assert (xl_state()["memory"], xl_state()["vcpus"]) == ("512m", 2)
    with pytest.raises(NotLive, match=r"above the boot-time maximum \(max_ram 512\)"):
        be.change_live(dom, "ram", 256, 1024)
    with pytest.raises(NotLive, match=r"above the boot-time maximum \(max_vcpus 2\)"):
        be.change_live(dom, "vcpus", 1, 3)
    with pytest.raises(NotLive, match="changes at the next start"):
        be.change_live(dom, "max_ram", 512, 1024)
    assert len(calls(be)) == 2  # nothing was asked of xl for what waits


def test_without_max_ram_memory_grows_only_at_a_restart(xen):
    be, dom, _, _ = xen
    del dom.config["max_ram"]
    be.change_live(dom, "ram", 256, 128)
    with pytest.raises(NotLive, match=r"max_ram 256"):
        be.change_live(dom, "ram", 128, 300)


def test_disks_used_in_place_are_attached_on_a_free_vdev_and_detached(xen, tmp_path):
    be, dom, xl_state, _ = xen
    boot = dom.config["disks"][0]
    extra = tmp_path / "extra.img"
    extra.write_bytes(b"\0" * 512)
    added = {"path": str(extra), "model": "virtio", "media": "disk", "readonly": True}
    be.change_live(dom, "disks", [boot], [boot, added])
    assert xl_state()["vbds"] == [f"format=raw,vdev=xvdb,access=ro,target={extra}"]
    dom.config["disks"] = [boot, added]
    # the boot disk goes; a disk added next must not take xvdb, which the running one has
    third = tmp_path / "third.img"
    third.write_bytes(b"\0" * 512)
    again = {"path": str(third), "model": "virtio", "media": "disk"}
    be.change_live(dom, "disks", [boot, added], [added, again])
    assert calls(be)[-2:] == [["block-detach", NAME, "xvda"],
                              ["block-attach", NAME, f"format=raw,vdev=xvdc,access=rw,target={third}"]]
    assert dom.backend["live"]["vdevs"] == {f"path {extra}": "xvdb", f"path {third}": "xvdc"}


def test_copies_and_changed_disks_wait_for_a_restart(xen, tmp_path):
    be, dom, _, _ = xen
    boot = dom.config["disks"][0]
    with pytest.raises(NotLive, match="only disks used in place"):
        be.change_live(dom, "disks", [boot], [boot, {"size": 16, "id": "blank-1", "model": "virtio"}])
    with pytest.raises(NotLive, match="a changed disk takes its new settings at the next start"):
        be.change_live(dom, "disks", [boot], [dict(boot, readonly=True)])
    assert calls(be) == []


def test_nics_are_attached_with_the_settings_a_start_gives_them(xen):
    be, dom, xl_state, _ = xen
    first = dom.config["nics"][0]
    second = {"mac": "02:00:00:00:00:02", "bridge": "br1", "mtu": 1400}
    be.change_live(dom, "nics", [first], [first, second])
    assert calls(be)[-1] == ["network-attach", NAME, "bridge=br1", "mac=02:00:00:00:00:02", "type=vif", "mtu=1400"]
    be.change_live(dom, "nics", [first, second], [second])
    assert calls(be)[-1] == ["network-detach", NAME, "02:00:00:00:00:01"]
    assert xl_state()["vifs"] == [["bridge=br1", "mac=02:00:00:00:00:02", "type=vif", "mtu=1400"]]


def test_a_failure_half_way_reports_what_runs(xen, tmp_path):
    be, dom, _, fail = xen
    boot = dom.config["disks"][0]
    extra = tmp_path / "extra.img"
    extra.write_bytes(b"\0" * 512)
    added = {"path": str(extra), "model": "virtio", "media": "disk"}
    fail(f"block-attach format=raw,vdev=xvdb,access=rw,target={extra}")
    with pytest.raises(LiveChangeFailed, match="xl block-attach") as err:
        be.change_live(dom, "disks", [boot], [added])
    assert err.value.in_effect == []  # the boot disk was detached, the new one did not attach
    dom.config["disks"] = []
    be.change_live(dom, "disks", [], [added])  # attached on a second try
    fail("block-detach " + dom.backend["live"]["vdevs"][f"path {extra}"])
    dom.config["disks"] = [added]
    with pytest.raises(LiveChangeFailed, match="unable to remove device") as err:
        be.change_live(dom, "disks", [added], [])
    assert err.value.in_effect == [added]
