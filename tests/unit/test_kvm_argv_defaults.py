"""The kvm machine defaults EVE gives every VM (issue 12, section 2), read off the QEMU argv eveadm
renders, without QEMU: the real boots with them are tests/integration/kvm."""

import os
import stat
import uuid as uuidlib

import pytest

from eveadm import schema
from eveadm.backends import facts
from eveadm.backends.base import Domain
from eveadm.backends.host import BackendContext
from eveadm.backends.kvm import argv as kvm_argv
from eveadm.backends.kvm.backend import KvmBackend


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("EVEADM_KVM_SOCKET_DIR", str(tmp_path / "sock"))
    return BackendContext(tmp_path / "root")


def make_dom(ctx, **payload):
    cfg = schema.normalize({"uuid": str(uuidlib.uuid4()), "brand": "kvm", **payload})
    return Domain(cfg["uuid"], cfg, {}, ctx.root / "domains" / cfg["uuid"], ctx.root / "run" / cfg["uuid"])


def groups(ctx, **payload):
    return kvm_argv.groups(ctx, make_dom(ctx, **payload))


def values(gs, option):
    return [g[1] for g in gs if g[0] == option]


def test_every_vm_gets_eves_clock_sleep_and_hpet_defaults(ctx):
    gs = groups(ctx, accel="tcg")
    assert values(gs, "-machine") == ["q35,hpet=off"]
    assert values(gs, "-rtc") == ["base=utc,driftfix=slew"]
    assert values(gs, "-global") == ["ICH9-LPC.disable_s3=1", "ICH9-LPC.disable_s4=1",
                                     "kvm-pit.lost_tick_policy=delay"]
    assert values(gs, "-cpu") == []
    assert not [v for v in values(gs, "-device") if v.startswith("intel-iommu")]  # no PCI device passed through


def test_kvm_acceleration_runs_the_host_cpu(ctx):
    assert values(groups(ctx, accel="kvm"), "-cpu") == ["host"]


def test_a_guest_that_keeps_local_time_gets_a_localtime_rtc(ctx):
    assert values(groups(ctx, accel="tcg", clock="localtime"), "-rtc") == ["base=localtime,driftfix=slew"]


def test_machine_pc_disables_sleep_states_on_its_piix(ctx):
    gs = groups(ctx, accel="tcg", machine="pc")
    assert values(gs, "-machine") == ["pc,hpet=off"]
    assert values(gs, "-global") == ["PIIX4_PM.disable_s3=1", "PIIX4_PM.disable_s4=1",
                                     "kvm-pit.lost_tick_policy=delay"]


def test_passed_through_pci_devices_get_an_emulated_iommu_before_every_device(ctx):
    gs = groups(ctx, accel="kvm", pci_devices=[{"address": "0000:00:04.0"}], vnc_port=0)
    devices = values(gs, "-device")
    assert devices[0] == "intel-iommu,caching-mode=on"
    assert "vfio-pci,host=0000:00:04.0,id=hostdev0" in devices
    pc = values(groups(ctx, accel="kvm", machine="pc", pci_devices=[{"address": "0000:00:04.0"}]), "-device")
    assert not [d for d in pc if d.startswith("intel-iommu")]  # intel-iommu is a q35 device


@pytest.mark.parametrize("port, display", [(0, "127.0.0.1:0,to=99"), (5903, "127.0.0.1:3,to=99"),
                                           (6100, "127.0.0.1:200,to=299")])
def test_vnc_brings_a_video_card_a_usb_tablet_and_moves_to_a_free_display(ctx, port, display):
    gs = groups(ctx, accel="tcg", vnc_port=port)
    assert values(gs, "-vnc") == [display]
    assert [d for d in values(gs, "-device") if d.split(",")[0] in ("VGA", "qemu-xhci", "usb-tablet")] == [
        "VGA", "qemu-xhci,id=usb", "usb-tablet,bus=usb.0"]
    assert not [d for d in values(groups(ctx, accel="tcg"), "-device") if "usb" in d or d == "VGA"]


def test_a_cdrom_without_a_model_is_a_sata_cdrom_on_q35s_ahci(ctx, tmp_path):
    iso = tmp_path / "installer.iso"
    iso.write_bytes(b"\0" * 2048)
    gs = groups(ctx, accel="tcg", disks=[{"size": 1}, {"path": str(iso), "media": "cdrom"},
                                         {"path": str(iso), "media": "cdrom", "model": "scsi"}])
    devices = values(gs, "-device")
    assert "virtio-blk-pci,drive=drive0,id=disk0" in devices
    assert "ide-cd,bus=ide.0,drive=drive1,id=disk1" in devices
    assert "scsi-cd,bus=scsi0.0,drive=drive2,id=disk2" in devices  # a model given is honoured
    pc = values(groups(ctx, accel="tcg", machine="pc", disks=[{"path": str(iso), "media": "cdrom"}]), "-device")
    assert "ide-cd,bus=ide.0,unit=0,drive=drive0,id=disk0" in pc


@pytest.mark.parametrize("machine,second", [("q35", "bus=ide.1"), ("pc-q35-7.2", "bus=ide.1"),
                                            ("pc", "bus=ide.0,unit=1"), ("pc-i440fx-7.2", "bus=ide.0,unit=1")])
def test_versioned_machine_names_get_their_family_s_ide_layout(ctx, machine, second):
    devices = values(groups(ctx, accel="tcg", machine=machine, disks=[{"size": 1, "model": "ide"}] * 2), "-device")
    assert f"ide-hd,{second},drive=drive1,id=disk1" in devices


def test_the_seed_is_sata_for_a_guest_that_boots_from_ide_else_virtio_scsi(ctx):
    seed = {"cloud_init": {"user_data": "#cloud-config\n"}}
    ide = values(groups(ctx, accel="tcg", disks=[{"size": 1, "model": "ide"}], **seed), "-device")
    assert "ide-cd,bus=ide.1,drive=drive1,id=disk1" in ide
    virtio = values(groups(ctx, accel="tcg", disks=[{"size": 1}], **seed), "-device")
    assert "scsi-cd,bus=scsi0.0,drive=drive1,id=disk1" in virtio


def test_more_ide_disks_than_the_machine_has_ports_are_refused(ctx):
    backend = KvmBackend(ctx, facts("kvm"))
    six = make_dom(ctx, disks=[{"size": 1, "model": "ide"} for _ in range(6)]).config
    assert backend.validate(six) == []
    seven = make_dom(ctx, disks=[{"size": 1, "model": "ide"} for _ in range(6)],
                     cloud_init={"user_data": ""}).config
    assert [p for p, _ in backend.validate(seven)] == ["disks"]
    assert "machine q35 has 6 IDE/SATA ports" in backend.validate(seven)[0][1]
    five_on_pc = make_dom(ctx, machine="pc", disks=[{"size": 1, "model": "ide"} for _ in range(5)]).config
    assert "machine pc has 4 IDE/SATA ports" in backend.validate(five_on_pc)[0][1]
    five_on_i440fx = make_dom(ctx, machine="pc-i440fx-7.2", disks=[{"size": 1, "model": "ide"} for _ in range(5)])
    assert "machine pc-i440fx-7.2 has 4 IDE/SATA ports" in backend.validate(five_on_i440fx.config)[0][1]


def test_fml_without_firmware_boots_the_hosts_ovmf_with_its_own_variables(ctx):
    dom = make_dom(ctx, accel="tcg", virt_mode="fml")
    gs = kvm_argv.groups(ctx, dom)
    assert values(gs, "-drive")[:2] == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={kvm_argv.OVMF_CODE}",
        f"if=pflash,format=raw,unit=1,file={dom.data_dir / 'OVMF_VARS.fd'}"]
    assert values(gs, "-bios") == []
    firmware = values(groups(ctx, accel="tcg", virt_mode="fml", firmware="/etc/hostname"), "-bios")
    assert firmware == ["/etc/hostname"]


def test_fml_under_kvm_hides_the_hypervisor(ctx):
    assert values(groups(ctx, accel="kvm", virt_mode="fml"), "-cpu") == ["host,kvm=off,hv_vendor_id=eveadm"]
    assert values(groups(ctx, accel="kvm", virt_mode="hvm"), "-cpu") == ["host"]


def test_fml_without_firmware_needs_the_ovmf_package(ctx, monkeypatch, tmp_path):
    backend = KvmBackend(ctx, facts("kvm"))
    code, store = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    monkeypatch.setenv("EVEADM_KVM_OVMF_CODE", str(code))
    monkeypatch.setenv("EVEADM_KVM_OVMF_VARS", str(store))
    cfg = make_dom(ctx, virt_mode="fml").config
    [(prop, message)] = backend.validate(cfg)
    assert prop == "firmware" and f"{code} is missing: apt-get install ovmf" in message
    code.write_bytes(b"code")
    store.write_bytes(b"vars")
    assert backend.validate(cfg) == []


def test_the_uefi_variables_are_the_domains_own_until_delete(ctx, monkeypatch, tmp_path):
    template = tmp_path / "VARS.fd"
    template.write_bytes(b"template")
    monkeypatch.setenv("EVEADM_KVM_OVMF_VARS", str(template))
    backend = KvmBackend(ctx, facts("kvm"))
    dom = make_dom(ctx, accel="tcg", virt_mode="fml")
    backend.prepare(dom)
    store = dom.data_dir / "OVMF_VARS.fd"
    assert store.read_bytes() == b"template" and stat.S_IMODE(os.stat(store).st_mode) == 0o600
    store.write_bytes(b"written by the guest")
    backend.release(dom)
    backend.prepare(dom)  # a restart keeps what the guest wrote
    assert store.read_bytes() == b"written by the guest"
    assert str(store) in backend.release(dom, delete=True) and not store.exists()
