"""EVE's machine defaults on real QEMU (TCG here): the test guest boots with them, VNC brings a tablet
and moves to a free display, and virt_mode fml without firmware boots through the host's OVMF."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kvmtest import READY, boot, wait_log
from eveadm.backends.kvm import argv as kvm_argv
from eveadm.backends.kvm.qmp import qmp

pytestmark = pytest.mark.kvm


def free_display() -> int:
    """A VNC display whose port and the next one nobody listens on (5950-5998)."""
    for display in range(50, 98):
        try:
            for port in (5900 + display, 5901 + display):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return display
    pytest.fail("no two free VNC ports in 5950-5999")


def test_the_guest_boots_with_eves_machine_defaults_and_a_vnc_tablet(backend, make_dom):
    dom = make_dom(vnc_port=0)
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], READY)
    argv = Path(dom.backend["argv_file"]).read_text()
    for option in ("-machine q35,hpet=off", "-rtc base=utc,driftfix=slew", "-global ICH9-LPC.disable_s3=1",
                   "-global ICH9-LPC.disable_s4=1"):
        assert option in argv
    hpet, mice, vnc = qmp(dom.backend["qmp"], ("qom-get", {"path": "/machine", "property": "hpet"}),
                          "query-mice", "query-vnc")
    assert hpet is False
    assert [m["absolute"] for m in mice if "Tablet" in m["name"]] == [True]
    assert vnc["enabled"] and vnc["host"] == "127.0.0.1"
    backend.destroy(dom)


def test_a_vnc_display_in_use_moves_to_the_next_free_one(backend, make_dom):
    display = free_display()
    first, second = make_dom(vnc_port=5900 + display), make_dom(vnc_port=5900 + display)
    for dom in (first, second):
        backend.prepare(dom)
        backend.create_paused(dom)  # QEMU's VNC server listens from start-up: no need to boot
    services = [qmp(dom.backend["qmp"], "query-vnc")[0]["service"] for dom in (first, second)]
    assert services == [str(5900 + display), str(5901 + display)]
    for dom in (first, second):
        backend.destroy(dom)


@pytest.mark.skipif(not os.path.isfile(kvm_argv.OVMF_CODE), reason="needs the ovmf package (scripts/setup.sh)")
def test_fml_without_firmware_boots_the_guest_through_the_hosts_ovmf(backend, make_dom):
    dom = make_dom(virt_mode="fml")
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], READY, timeout=240)  # UEFI under TCG: slower than SeaBIOS
    block = qmp(dom.backend["qmp"], "query-block")[0]
    files = {b["device"]: (b.get("inserted") or {}).get("file") for b in block}
    assert files["pflash0"] == kvm_argv.OVMF_CODE
    assert files["pflash1"] == str(dom.data_dir / "OVMF_VARS.fd")
    backend.destroy(dom)
    removed = backend.release(dom, delete=True)
    assert str(dom.data_dir / "OVMF_VARS.fd") in removed
