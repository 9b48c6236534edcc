"""A xen nic naming an eveadm network, against real Xen (nested in QEMU TCG): eveadm makes the
network's bridge in dom0, renders the vif onto it, and libxl's vif-bridge hotplug script joins the
guest's backend interface (vifD.0) to it.

dom0 needs the kernel's `bridge` module (scripts/build-xen.sh puts it in dom0's initramfs) and
iproute2's `ip` (eveadm reads links as `ip -j` JSON; dom0's own `ip` is busybox's): the host's is
bound over it, with its libraries, which expose_python already makes visible. The PV guest has no
network driver (its initramfs carries no modules, and xen-netfront is one in Debian's kernel), so
no traffic crosses the bridge: the backend interface exists and joins the bridge whether or not a
frontend ever connects (xen-netback makes it when the backend device is probed)."""

import json

import pytest

from xenvm import ROOT

pytestmark = pytest.mark.xen


@pytest.fixture(scope="module")
def bridges(dom0):
    """dom0 able to make bridges with iproute2; skipped, saying why, when its kernel cannot."""
    rc, out = dom0.sh("ip link add evprobe0 type bridge && ip link del evprobe0")
    if rc != 0:
        pytest.skip("dom0 cannot make a bridge: scripts/build-xen.sh must put the `bridge` module in its "
                    f"initramfs ({out.strip()[-200:]})")
    # (dom0's shell runs busybox's applet for a bare `ip`; eveadm's commands find /bin/ip)
    dom0.check("rm -f /bin/ip && touch /bin/ip && mount --bind /host/bin/ip /bin/ip && /bin/ip -j link show lo")
    return dom0


def test_a_vif_joins_its_networks_bridge_in_dom0(bridges):
    dom0 = bridges
    dom0.ok("network", "create", payload={"name": "sw", "type": "switch", "mtu": 1400})
    assert dom0.sh("test -d /sys/class/net/ev-sw/bridge")[0] == 0
    p = {"brand": "xen", "alias": "vifnet", "virt_mode": "pv", "ram": 128, "stop_timeout": 20,
         "kernel": str(dom0.art / "vmlinuz"), "initrd": str(dom0.art / "domu-initramfs.cpio.gz"), "cmdline": "quiet",
         "nics": [{"network": "sw", "mac": "02:16:3e:00:02:01"}]}
    rec = json.loads(dom0.ok("create", "-j", payload=p).stdout)
    uuid, domid = rec["uuid"], rec["domain_id"]
    cfg = dom0.check(f"cat {ROOT}/domains/{uuid}/xl.cfg")
    assert "vif = [ 'bridge=ev-sw,mac=02:16:3e:00:02:01,type=vif,mtu=1400' ]" in cfg.splitlines(), cfg

    vif = f"vif{domid}.0"
    dom0.vm.wait_for("ls /sys/class/net/ev-sw/brif", lambda rc, out: vif in out.split(), 60)
    assert dom0.check(f"cat /sys/class/net/{vif}/mtu").strip() == "1400"  # the network's MTU, through the vif
    proc = dom0.eveadm("network", "delete", "sw")
    assert proc.returncode == 5 and "vifnet" in proc.stderr, proc.stderr

    dom0.ok("delete", uuid)
    assert vif not in dom0.check("ls /sys/class/net/ev-sw/brif").split()
    dom0.ok("network", "delete", "sw")
    assert dom0.sh("test -e /sys/class/net/ev-sw")[0] != 0
