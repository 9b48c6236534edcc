"""Cloud-init as EVE users expect it (issue 12, section 2): a Xen domain's NoCloud seed is the IDE
cdrom hdc, and a container's user data lines KEY=VALUE (and Key:Value) are environment variables."""

import pytest

from eveadm.backends import facts
from eveadm.backends.base import Domain
from eveadm.backends.container.spec import build_spec, user_data_env
from eveadm.backends.host import BackendContext
from eveadm.backends.xen import XenBackend

U = "4a144db0-6b63-405a-b884-7760042023b1"


def xen_dom(tmp_path, **cfg):
    config = {"uuid": U, "brand": "xen", "vcpus": 1, "ram": 256, "virt_mode": "pvh", "disks": [], "nics": [],
              "pci_devices": [], "vnc_port": -1, "cloud_init": {"user_data": "#cloud-config\n"}}
    config.update(cfg)
    return Domain(U, config, {}, tmp_path / "domains" / U, tmp_path / "run" / U)


def disk_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("disk = "))


@pytest.mark.parametrize("mode", ["hvm", "fml", "pvh", "pv"])
def test_the_xen_seed_is_the_ide_cdrom_hdc(tmp_path, mode):
    extra = {"kernel": "/k/vmlinuz"} if mode == "pv" else {}
    d = xen_dom(tmp_path, virt_mode=mode, **extra)
    text = XenBackend(BackendContext(tmp_path / "root"), facts("xen")).render_cfg(d)
    seed = tmp_path / "domains" / U / "cidata.iso"
    assert disk_line(text) == f"disk = [ 'format=raw, vdev=hdc, access=ro, devtype=cdrom, target={seed}' ]"


def test_the_domains_own_disks_leave_hdc_to_the_seed(tmp_path):
    disks = [tmp_path / f"d{i}.img" for i in range(4)]
    for path in disks:
        path.write_bytes(b"\0" * 512)
    d = xen_dom(tmp_path, virt_mode="hvm", disks=[{"path": str(p), "format": "raw", "media": "disk",
                                                   "model": "ide", "readonly": False} for p in disks])
    be = XenBackend(BackendContext(tmp_path / "root"), facts("xen"))
    line = disk_line(be.render_cfg(d))
    vdevs = [part.split(",")[2] for part in line.split("'")[1::2] if not part.startswith("format=")]
    assert vdevs == ["hda", "hdb", "hdd", "hde"] and line.count("vdev=hdc") == 1
    d.config.pop("cloud_init")  # no seed: the disks keep their letters in order
    vdevs = [part.split(",")[2] for part in disk_line(be.render_cfg(d)).split("'")[1::2]]
    assert vdevs == ["hda", "hdb", "hdc", "hdd"]


def test_user_data_key_value_lines_are_variables():
    text = ("#cloud-config\nA=1\nEMPTY=\nurl=http://h:80/p?a=b\nname: a=b\n  Key : Val  \nSPACED=a b\n"
            "not a variable\nB = x\n=x\n:y\n")
    assert user_data_env(text) == {"A": "1", "EMPTY": "", "url": "http://h:80/p?a=b", "name": "a=b",
                                   "Key": "Val", "SPACED": "a b"}


def test_a_containers_environment_has_user_data_variables_under_the_payloads_env():
    config = {"uuid": U, "brand": "container", "cmd": ["/bin/sh"], "env": {"B": "from env"},
              "cloud_init": {"user_data": "A=1\nB=from user data\nC: three\n"}}
    spec = build_spec(config, rootfs="/r", hostname="h", cgroups_path="/c")
    env = dict(item.split("=", 1) for item in spec["process"]["env"])
    assert (env["A"], env["B"], env["C"]) == ("1", "from env", "three")
