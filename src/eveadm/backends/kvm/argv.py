"""QEMU's command line for a domain, and the accelerator it runs with.

Pure: nothing here starts a process or writes a file. The argv is a list of
groups (the program, then one option with its value per group) so `render` can
print one option per line. The files a domain's QEMU uses are named once, in
`paths`.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..base import Domain
from ..host import BackendContext
from ..vm import cloudinit, disks
from . import nics as host_nics

QEMU = "qemu-system-x86_64"
# the firmware of virt_mode fml when the payload names none: Debian's `ovmf` package (settings
# kvm.ovmf_code and kvm.ovmf_vars name others); each domain gets its own copy of the variable store
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
OVMF_HINT = "apt-get install ovmf"
HV_VENDOR_ID = "eveadm"  # what a guest that must not see KVM (fml) reads as its hypervisor's vendor
VNC_LAST_DISPLAY = 99  # VNC moves on to the next free display up to this one (EVE's to=99)
IDE_PORTS = {"q35": 6, "pc": 4}  # q35's AHCI: six one-unit buses; pc's PIIX: two buses of two units


def esc(value: object) -> str:
    """A QEMU option value: commas are separators, a literal comma is written ','."""
    return str(value).replace(",", ",,")


# the unix sockets QEMU listens on (key in `paths` -> file name): they live in socket_dir
SOCKET_FILES = {"qmp": "qmp.sock", "events": "qmp-events.sock", "serial": "serial.sock"}
SOCKETS = tuple(SOCKET_FILES)


def socket_base() -> Path:
    """Where the per-domain socket directories live: short whatever the state root is, because a unix
    socket path may have at most 107 bytes. $EVEADM_KVM_SOCKET_DIR, else /run/eveadm-qemu as root,
    else $XDG_RUNTIME_DIR/eveadm-qemu, else /tmp/eveadm-qemu-<uid>."""
    chosen = os.environ.get("EVEADM_KVM_SOCKET_DIR")
    if chosen:
        return Path(chosen)
    if os.geteuid() == 0:
        return Path("/run/eveadm-qemu")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "eveadm-qemu"
    return Path(f"/tmp/eveadm-qemu-{os.geteuid()}")


def socket_dir(dom: Domain) -> Path:
    """The domain's socket directory: named by a digest of its run directory, so it is the same for
    every command (and for a command that finds QEMU through the pid file alone) and never shared by
    two domains, of this state root or another."""
    import hashlib

    digest = hashlib.sha256(os.fsencode(os.path.abspath(dom.run_dir))).hexdigest()[:16]
    return socket_base() / digest


def paths(dom: Domain) -> dict[str, Path]:
    """The files of a domain's QEMU: sockets in socket_dir (whose `owner` file names the run
    directory), pid file and markers under run_dir, logs and argv under data_dir."""
    run, data, socks = Path(dom.run_dir), Path(dom.data_dir), socket_dir(dom)
    return {
        "sock_dir": socks,
        "sock_owner": socks / "owner",
        **{key: socks / name for key, name in SOCKET_FILES.items()},
        "pidfile": run / "qemu.pid",
        "ended": run / "ended",
        "console_lock": run / "console.lock",
        "serial_log": data / "serial.log",
        "qemu_log": data / "qemu.log",
        "argv_file": data / "qemu.argv",
        "ovmf_vars": data / "OVMF_VARS.fd",  # the domain's UEFI variables (fml without firmware)
    }


# -- accelerator ---------------------------------------------------------------

_accel_cache: tuple[str, str] | None = None


def detect_accel() -> tuple[str, str]:
    """("kvm"|"tcg", why), probed once per process."""
    global _accel_cache
    if _accel_cache is None:
        _accel_cache = _detect_accel()
    return _accel_cache


def _detect_accel() -> tuple[str, str]:
    """An openable /dev/kvm is not enough: PVM's kvm has no VMX/SVM and cannot boot stock
    Linux guests, so require real hardware virtualization."""
    if not os.path.exists("/dev/kvm"):
        return "tcg", "software emulation: no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "software emulation: /dev/kvm is not accessible"
    if os.path.exists("/sys/module/kvm_pvm"):
        return "tcg", "software emulation: /dev/kvm is kvm_pvm (no VMX/SVM), which cannot run stock guests"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if "vmx" in flags:
        return "kvm", "kvm: /dev/kvm with Intel VT-x (vmx)"
    if "svm" in flags:
        return "kvm", "kvm: /dev/kvm with AMD-V (svm)"
    return "tcg", "software emulation: the CPU shows no vmx/svm flag"


def choose_accel(ctx: BackendContext, config: dict | None) -> tuple[str, str]:
    """The payload's `accel`, else the host setting kvm.accel, else what the host can do; and why."""
    wanted = (config.get("accel") if config else None) or "auto"
    if wanted != "auto":
        return wanted, f"{wanted}: requested by the payload"
    host = ctx.setting("kvm.accel", "auto") or "auto"
    if host in ("kvm", "tcg"):
        return host, f"{host}: host setting kvm.accel"
    return detect_accel()


# -- the command line ------------------------------------------------------------

def groups(ctx: BackendContext, dom: Domain) -> list[list[str]]:
    """QEMU's argv as groups (program, then one option with its value per group)."""
    cfg = dom.config
    p = paths(dom)
    accel, _ = choose_accel(ctx, cfg)
    out: list[list[str]] = [[QEMU]]
    add = out.append
    add(["-name", f"guest={esc(dom.name)}"])
    add(["-uuid", dom.uuid])
    machine = esc(cfg.get("machine", "q35"))
    add(["-machine", f"{machine},hpet=off" if has_isa_bus(cfg) else machine])  # EVE: no HPET
    add(["-accel", accel])
    cpu = cpu_model(cfg, accel)
    if cpu:
        add(["-cpu", cpu])
    from . import hotplug  # memory, vCPUs and spare ports so that they can change while the guest runs

    out += hotplug.memory_args(cfg)
    out += hotplug.smp_args(cfg)
    add(["-nodefaults"])
    add(["-no-user-config"])
    add(["-display", "none"])
    add(["-msg", "timestamp=on"])
    add(["-S"])
    add(["-no-shutdown"])
    out += machine_defaults(cfg)
    if has_isa_bus(cfg):
        # a guest's kernel panic pauses QEMU in run state guest-panicked, which status reports
        add(["-device", "pvpanic"])
        add(["-action", "panic=pause"])
    add(["-pidfile", str(p["pidfile"])])
    add(["-D", str(p["qemu_log"])])
    add(["-chardev", f"socket,id=qmp,path={esc(p['qmp'])},server=on,wait=off"])
    add(["-mon", "chardev=qmp,mode=control"])
    add(["-chardev", f"socket,id=qmp-events,path={esc(p['events'])},server=on,wait=off"])
    add(["-mon", "chardev=qmp-events,mode=control"])
    add(["-chardev", f"socket,id=serial0,path={esc(p['serial'])},server=on,wait=off,"
                     f"logfile={esc(p['serial_log'])},logappend=on"])
    add(["-serial", "chardev:serial0"])
    if cfg.get("firmware"):
        add(["-bios", cfg["firmware"]])
    elif cfg.get("virt_mode") == "fml":
        add(["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={esc(ovmf(ctx)[0])}"])
        add(["-drive", f"if=pflash,format=raw,unit=1,file={esc(p['ovmf_vars'])}"])
    if cfg.get("kernel"):
        add(["-kernel", cfg["kernel"]])
        if cfg.get("initrd"):
            add(["-initrd", cfg["initrd"]])
        add(["-append", cfg.get("cmdline") or "console=ttyS0"])
    out += disk_args(dom)
    out += nic_args(ctx, dom)
    for i, dev in enumerate(cfg.get("pci_devices") or []):
        add(["-device", f"vfio-pci,host={esc(dev['address'])},id=hostdev{i}"])
    out += vnc_args(ctx, cfg)
    out += hotplug.boot_args(ctx, cfg)
    return out


def has_isa_bus(cfg: dict) -> bool:
    """q35 and pc (and their versioned names pc-q35-*, pc-i440fx-*) have the ISA bus pvpanic sits on."""
    machine = str(cfg.get("machine", "q35"))
    return machine == "q35" or machine == "pc" or machine.startswith("pc-")


def is_q35(cfg: dict) -> bool:
    machine = str(cfg.get("machine", "q35"))
    return machine == "q35" or machine.startswith("pc-q35")


def ide_controller(cfg: dict) -> str | None:
    """The IDE_PORTS key of the machine's IDE/SATA controller: "q35" (AHCI) for q35 and pc-q35-*,
    "pc" (PIIX) for pc and pc-i440fx-*; None for a machine eveadm knows no layout of."""
    if is_q35(cfg):
        return "q35"
    machine = str(cfg.get("machine", "q35"))
    return "pc" if machine == "pc" or machine.startswith("pc-") else None


def cpu_model(cfg: dict, accel: str) -> str | None:
    """KVM runs the host's CPU model. A fml guest (one that gets a GPU, say) is not told it runs
    under KVM, as EVE does: NVIDIA's Windows driver refused to start under a hypervisor it saw."""
    if accel != "kvm":
        return None
    if cfg.get("virt_mode") == "fml":
        return f"host,kvm=off,hv_vendor_id={HV_VENDOR_ID}"
    return "host"


def machine_defaults(cfg: dict) -> list[list[str]]:
    """What EVE gives every x86 VM: an RTC that catches up lost ticks gently (in local time for a
    guest that wants it: Windows), no S3/S4 sleep states (a suspended guest looks hung), KVM's PIT
    delaying lost ticks, and a vIOMMU when PCI devices are passed through (q35)."""
    if not has_isa_bus(cfg):
        return []
    out = [["-rtc", f"base={'localtime' if cfg.get('clock') == 'localtime' else 'utc'},driftfix=slew"]]
    power = "ICH9-LPC" if is_q35(cfg) else "PIIX4_PM"
    out += [["-global", f"{power}.disable_s3=1"], ["-global", f"{power}.disable_s4=1"]]
    out.append(["-global", "kvm-pit.lost_tick_policy=delay"])  # under TCG no kvm-pit exists: unused
    if cfg.get("pci_devices") and is_q35(cfg):
        # before every other device; caching-mode lets vfio map the guest's DMA
        out.append(["-device", "intel-iommu,caching-mode=on"])
    return out


def ovmf(ctx: BackendContext) -> tuple[str, str]:
    """(code, variable store template) of the host's OVMF."""
    return (str(ctx.setting("kvm.ovmf_code", OVMF_CODE)), str(ctx.setting("kvm.ovmf_vars", OVMF_VARS)))


def seed_model(cfg: dict) -> str:
    """The NoCloud seed's bus: IDE (SATA on q35) when the first disk is IDE, a guest that may have no
    virtio driver; else virtio-scsi, which leaves the IDE ports to the domain's own disks."""
    first = (cfg.get("disks") or [{}])[0]
    return "ide" if first.get("model") == "ide" else "scsi"


def ide_count(cfg: dict, with_seed: bool) -> int:
    """IDE/SATA ports a domain's disks, cdroms and seed take."""
    n = sum(1 for d in cfg.get("disks") or [] if d.get("model") == "ide")
    return n + (1 if with_seed and seed_model(cfg) == "ide" else 0)


def flat(argv_groups: list[list[str]]) -> list[str]:
    return [a for g in argv_groups for a in g]


def render(argv_groups: list[list[str]]) -> str:
    """One option per line, shell-quoted: the text of <data_dir>/qemu.argv."""
    return " \\\n  ".join(shlex.join(g) for g in argv_groups) + "\n"


def disk_args(dom: Domain) -> list[list[str]]:
    out: list[list[str]] = []
    entries = [(u.path, u.format, u.media, u.readonly, u.disk.get("model", "virtio"), u.disk.get("boot", False))
               for u in disks.plan(dom)]
    if cloudinit.wanted(dom.config):
        entries.append((cloudinit.iso_path(dom), "raw", "cdrom", True, seed_model(dom.config), False))
    scsi = False
    bootindex = 1
    ide = 0
    for i, (path, fmt, media, readonly, model, boot) in enumerate(entries):
        drive = f"file={esc(path)},format={fmt},if=none,id=drive{i}"
        if media == "cdrom":
            drive += ",media=cdrom"
        if readonly:
            drive += ",readonly=on"
        out.append(["-drive", drive])
        dev_boot = f",bootindex={bootindex}" if boot else ""
        if boot:
            bootindex += 1
        if model == "ide":
            # q35's AHCI has six one-unit buses ide.0-5; pc's PIIX has ide.0-1 with two units each
            if ide_controller(dom.config) == "q35":
                where = f"bus=ide.{ide}"
            else:
                where = f"bus=ide.{ide // 2},unit={ide % 2}"
            ide += 1
            dev = f"{'ide-cd' if media == 'cdrom' else 'ide-hd'},{where},drive=drive{i},id=disk{i}"
        elif model == "scsi" or media == "cdrom":
            # a cdrom cannot be virtio-blk: virtio cdroms sit on virtio-scsi
            if not scsi:
                out.append(["-device", "virtio-scsi-pci,id=scsi0"])
                scsi = True
            dev = f"{'scsi-cd' if media == 'cdrom' else 'scsi-hd'},bus=scsi0.0,drive=drive{i},id=disk{i}"
        else:
            dev = f"virtio-blk-pci,drive=drive{i},id=disk{i}"
        out.append(["-device", dev + dev_boot])
    return out


def nic_args(ctx: BackendContext, dom: Domain) -> list[list[str]]:
    """A nic on a bridge or a network opens the tap eveadm made for it (nics.create_taps); a nic with
    neither is user-mode networking."""
    out = []
    for entry, nic in zip(host_nics.plan(ctx, dom), dom.config.get("nics") or []):
        i = entry["index"]
        if entry["tap"]:
            out.append(["-netdev", f"tap,id=net{i},ifname={esc(entry['tap'])},script=no,downscript=no"])
        else:
            out.append(["-netdev", f"user,id=net{i}"])
        model = nic.get("model", "virtio")
        driver = {"virtio": "virtio-net-pci"}.get(model, model)
        dev = f"{esc(driver)},netdev=net{i},mac={nic['mac']},id=nic{i}"
        if entry["mtu"] and driver == "virtio-net-pci":
            dev += f",host_mtu={int(entry['mtu'])}"
        out.append(["-device", dev])
    return out


def vnc_args(ctx: BackendContext, cfg: dict) -> list[list[str]]:
    """vnc_port -1: none; 0: the first free display; 5900+N: display N, or the next free one after it
    (EVE's to=, instead of failing the start). A video card, and a USB tablet so that the pointer
    follows the viewer's. The password is set over QMP."""
    port = cfg.get("vnc_port", -1)
    if port is None or int(port) < 0:
        return []
    port = int(port)
    listen = ctx.setting("kvm.vnc_listen", "127.0.0.1")
    display = port - 5900 if port >= 5900 else port
    last = VNC_LAST_DISPLAY if display < VNC_LAST_DISPLAY else min(display + VNC_LAST_DISPLAY, 65535 - 5900)
    spec = f"{listen}:{display},to={last}"
    if cfg.get("vnc_password"):
        spec += ",password=on"
    return [["-device", "VGA"], ["-device", "qemu-xhci,id=usb"], ["-device", "usb-tablet,bus=usb.0"],
            ["-vnc", spec]]
