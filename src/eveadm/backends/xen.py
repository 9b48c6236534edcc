"""brand xen: the Xen toolstack `xl` + `xenstore`, with exactly the seed's command lines.

domainmgr.go (2020) drove Xen with these commands, and so does this backend:

    create   xl create CFG -p ; xl domid NAME
    activate xenstore write KEY 0   (x10 per VIF: NIC offloads off, before the guest runs)
             xl unpause NAME
    stop     xl shutdown NAME (GRACEFUL) / xl shutdown -F NAME (FORCED)
    destroy  xl destroy NAME
    pci      xl pci-assignable-add ADDR / xl pci-assignable-rem -r ADDR / xl pci-assignable-list

create_paused and unpause end with one `xl list`, so what they return is what
Xen says (paused / running), not what was asked for.

Deliberate differences from domainmgr:
- status() asks `xl list` ONCE for every domain (domainmgr ran `xl list -l NAME`
  per domain; `xl list -l` JSON carries the configuration only, no run state, so
  the one-call form is the plain listing with its state flags).
- the device-model check matches the exact domid in the argv of every process
  (domainmgr's `pgrep -f "domid 1"` also matched `domid 12`).
- a domain that vanished is explained from xl's own per-domain log
  (/var/log/xen/xl-NAME.log: "has shut down, reason code N" / "has been
  destroyed"), so a guest poweroff, a guest crash and a destroy behind eveadm's
  back are told apart although the cfg keeps xl's defaults
  (on_poweroff=destroy, on_reboot=restart, on_crash=destroy, as domainmgr).

Settings (<root>/config.json or EVEADM_XEN_*): xen.xl (default "xl"), xen.xenstore
(default "xenstore"), xen.procfs (default /proc/xen: its absence means "not a Xen
dom0"), xen.log_dir (default /var/log/xen), xen.vnc_listen (default 127.0.0.1),
xen.pvh_firmware (default /usr/lib/xen/boot/ovmf-pvh.bin).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

from ..errors import BackendError, BackendUnavailable, LiveChangeFailed, NotLive, PermanentError
from .base import ABSENT, CRASHED, FORCED, PAUSED, RUNNING, SHUTDOWN, SHUTDOWN_KINDS, Backend, Domain, Status
from .host import last_output_line, which
from .vm import pci
from .vm.live import boot_max_vcpus, device_diff, disk_key, nic_key, with_devices

XL_HINT = "install the Xen toolstack (Debian: xen-utils-4.17) and boot the host under Xen"
XENSTORE_HINT = "apt-get install xenstore-utils"
OFFLOAD_FEATURES = ("feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6",
                    "feature-ipv4-csum-offload", "feature-ipv6-csum-offload")
QEMU_CRASHED = "qemu crashed - please restart application instance"  # domainmgr's words
SEED_LETTER = 2  # the NoCloud seed is disk c (hdc), as in EVE; the domain's own disks skip that letter
SHUTDOWN_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog", 5: "soft_reset"}


# ----------------------------------------------------------------------------- helpers
def offload_keys(domid: int, nvifs: int) -> list[str]:
    """domainmgr xlDisableVifOffload: for each VIF, 5 backend keys then 5 frontend keys."""
    keys = []
    for i in range(nvifs):
        keys += [f"/local/domain/0/backend/vif/{domid}/{i}/{f}" for f in OFFLOAD_FEATURES]
        keys += [f"/local/domain/{domid}/device/vif/{i}/{f}" for f in OFFLOAD_FEATURES]
    return keys


def parse_xl_list(text: str) -> dict[str, dict]:
    """`xl list` -> {name: {domid, mem, vcpus, flags, time}}. Names never contain blanks (xl refuses them)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[0] == "Name" or not parts[1].isdigit():
            continue
        name, domid, mem, vcpus, flags = parts[:5]
        out[name] = {"domid": int(domid), "mem": int(mem) if mem.isdigit() else mem,
                     "vcpus": int(vcpus) if vcpus.isdigit() else vcpus, "flags": flags,
                     "time": parts[5] if len(parts) > 5 else None}
    return out


XENTOP_FIELDS = (("CPU(sec)", "cpu_seconds", 1), ("MEM(k)", "memory_bytes", 1024), ("NETTX(k)", "net_tx_bytes", 1024),
                 ("NETRX(k)", "net_rx_bytes", 1024), ("VBD_RD", "disk_read_ops", 1), ("VBD_WR", "disk_write_ops", 1),
                 ("VBD_RSECT", "disk_read_bytes", 512), ("VBD_WSECT", "disk_write_bytes", 512))


def parse_xentop(text: str) -> dict[str, dict]:
    """`xentop -b -i 1 -f` -> {name: stats}: memory in KiB, network in KiB (the domain's own transmit and
    receive), block requests and 512-byte sectors. Dom0's MAXMEM reads `no limit`: one cell, not two."""
    out, header = {}, None
    for line in text.splitlines():
        cells = line.replace("no limit", "no-limit").split()
        if cells[:1] == ["NAME"]:
            header = cells
        elif header and len(cells) >= len(header) - 1:  # SSID is there only with XSM
            row = dict(zip(header, cells))
            try:
                out[row["NAME"]] = {field: float(row[col]) * unit if col == "CPU(sec)" else int(row[col]) * unit
                                    for col, field, unit in XENTOP_FIELDS}
            except (KeyError, ValueError):
                continue
    return out


def state_of(flags: str) -> str:
    """xl's state column `rbpscd` -> a backend state."""
    if "d" in flags or "s" in flags:
        return SHUTDOWN
    if "c" in flags:
        return CRASHED
    if "p" in flags:
        return PAUSED
    return RUNNING


def device_models(proc: str | Path = "/proc") -> dict[int, list[int]]:
    """domid -> pids of the processes whose argv holds `-xen-domid <domid>` as two whole arguments.

    domainmgr's `pgrep -f "domid 1"` matched substrings, so a live device model of
    domain 12 hid the death of domain 1's; comparing argv elements cannot. One scan
    of /proc serves every domain of a status() call.
    """
    found: dict[int, list[int]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(args[:-1]):
            if arg in (b"-xen-domid", b"--xen-domid") and args[i + 1].isdigit():
                found.setdefault(int(args[i + 1]), []).append(int(entry))
                break
    return found


def device_model_pids(domid: int, proc: str | Path = "/proc") -> list[int]:
    return device_models(proc).get(int(domid), [])


def last_shutdown(log_text: str, domid: int) -> tuple[str, int | None] | None:
    """From xl's per-domain log: how domain `domid` ended, the last time it did.

    Returns ("shutdown", reason_code) or ("destroyed", None), or None if the log says nothing.
    """
    result = None
    pat_shut = re.compile(rf"Domain {domid} has shut down, reason code (\d+)")
    pat_destroyed = re.compile(rf"Domain {domid} has been destroyed")
    for line in log_text.splitlines():
        m = pat_shut.search(line)
        if m:
            result = ("shutdown", int(m.group(1)))
        elif pat_destroyed.search(line):
            result = ("destroyed", None)
    return result


def xl_string(value) -> str:
    """`value` as an xl cfg double-quoted string ("..."), backslashes and double quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def xl_list_item(value) -> str:
    """`value` as a single-quoted element of an xl cfg list ([ '...' ]), backslashes and quotes escaped."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


# libxl / xl messages -> what the operator should do
_EXPLAIN = [
    (re.compile(r"cannot make domain: -3|failed to free memory|not enough memory|Cannot allocate memory|"
                r"failed to allocate|xc_dom_boot_mem_init"),
     "not enough free memory in Xen for this domain: lower ram/max_ram, stop another domain, "
     "or shrink dom0 (dom0_mem=); `xl info` shows free_memory"),
    (re.compile(r"already exists"),
     "a Xen domain with this name already exists: `xl list`, then `xl destroy NAME` if it is a leftover"),
    (re.compile(r"xc_dom_find_loader: no loader found|panic: xc_dom_core|xc_dom_parse_image|"
                r"Invalid kernel|failed to load kernel|xc_dom_kernel_file"),
     "the kernel is not bootable by Xen in this mode: check `kernel` and `virt_mode` (pv needs a PV-capable kernel)"),
    (re.compile(r"hotplug script|vif-bridge|Unable to add device with path /local/domain/0/backend/vif"),
     "the network hotplug script failed: does the bridge named in nics exist (`ip link show BRIDGE`)?"),
    (re.compile(r"is not assignable|not assignable|pciback"),
     "the PCI device is not in pciback: `eveadm pci assignable-add ADDR`"),
    (re.compile(r"HVM guest support is unavailable|hvm.*not supported|VMX|SVM"),
     "this Xen host cannot run hvm/pvh guests (no VT-x/AMD-V): use virt_mode pv with a kernel"),
    (re.compile(r"failed to open .*(disk|target)|Could not open .*image|No such file or directory"),
     "a file the domain needs is missing: check the kernel, initrd and disk paths"),
]


def explain(text: str) -> str | None:
    for rx, hint in _EXPLAIN:
        if rx.search(text):
            return hint
    return None


def output_text(proc) -> str:
    """All a finished command printed, stderr then stdout, for matching known messages."""
    return (proc.stderr or b"").decode(errors="replace") + (proc.stdout or b"").decode(errors="replace")


def xl_complaint(proc) -> str:
    """The line of xl's output that names the problem: the first libxl error, else the last line.

    Not simply host.last_output_line: after the real error, libxl prints the failures of its
    own clean-up ("Non-existant domain", "Destruction of domain failed"), which explain nothing.
    """
    for line in output_text(proc).splitlines():
        if "libxl" in line and "error" in line.lower():
            return line.strip()
    return last_output_line(proc)


def says_no_hypervisor(text: str) -> bool:
    return ("cannot init xl context" in text or "Could not obtain handle on privileged command interface" in text
            or "Can't find hypervisor information" in text)


def says_domain_gone(text: str) -> bool:
    return "invalid domain identifier" in text or "not found" in text.lower() and "domain" in text.lower()


def request_timeout(budget: float) -> float:
    """How long to let one stop/destroy command run: about the rung's budget, never zero
    (a zero subprocess timeout would give up before the command starts)."""
    return max(float(budget), 1.0)


# ----------------------------------------------------------------------------- backend
class XenBackend(Backend):
    cfg_name = "xl.cfg"

    # -- settings -------------------------------------------------------------------
    @property
    def xl(self) -> str:
        return str(self.ctx.setting("xen.xl", "xl"))

    @property
    def xenstore(self) -> str:
        return str(self.ctx.setting("xen.xenstore", "xenstore"))

    @property
    def procfs(self) -> Path:
        return Path(self.ctx.setting("xen.procfs", "/proc/xen"))

    @property
    def log_dir(self) -> Path:
        return Path(self.ctx.setting("xen.log_dir", "/var/log/xen"))

    @staticmethod
    def xen_name(dom: Domain) -> str:
        """The name Xen knows the domain by: the one it was created with (an alias may change later)."""
        return dom.backend.get("name") or dom.name

    # -- running xl -----------------------------------------------------------------
    def _xl(self, args: list[str], *, check: bool = True, timeout: float = 60, what: str | None = None,
            env: dict | None = None):
        """Run `xl ARGS`; on failure raise a one-line error naming xl's own complaint and what to do."""
        proc = self.ctx.run([self.xl, *args], check=False, timeout=timeout, install_hint=XL_HINT, env=env)
        if proc.returncode != 0:
            if says_no_hypervisor(output_text(proc)):
                raise BackendUnavailable(f"brand xen: xl cannot reach the hypervisor ({xl_complaint(proc)}): "
                                         "this host is not a Xen dom0")
            if check:
                raise BackendError(self._failure(args, proc, what))
        return proc

    @staticmethod
    def _failure(args, proc, what=None) -> str:
        """One line: what failed, xl's complaint, and what to do about it when known."""
        hint = explain(output_text(proc))
        line = xl_complaint(proc)
        msg = f"{what or 'xl ' + ' '.join(args[:1])} failed (exit {proc.returncode})" + (f": {line}" if line else "")
        return msg + (f" -- {hint}" if hint else "")

    @staticmethod
    def _stdout(proc) -> str:
        return (proc.stdout or b"").decode(errors="replace")

    # -- availability / validation -------------------------------------------------
    def check_available(self) -> None:
        if which(self.xl) is None:
            raise BackendUnavailable(f"brand {self.brand} needs {self.xl}: {XL_HINT}")
        if not self.procfs.exists():
            raise BackendUnavailable(f"brand {self.brand} needs a Xen dom0: {self.procfs} does not exist "
                                     "(boot the host under Xen and mount xenfs on /proc/xen)")
        caps = self.procfs / "capabilities"
        try:
            if caps.exists() and "control_d" not in caps.read_text():
                raise BackendUnavailable(f"brand {self.brand}: this host is a Xen guest, not dom0 "
                                         f"({caps} lacks control_d)")
        except OSError:
            pass

    def validate(self, config: dict) -> list[tuple[str, str]]:
        errs = []
        mode = config.get("virt_mode", "pvh")
        if mode == "pv" and not config.get("kernel"):
            errs.append(("kernel", "virt_mode pv needs a kernel (a PV-capable kernel image)"))
        if mode == "fml" and config.get("kernel"):
            errs.append(("kernel", "virt_mode fml boots firmware only; remove kernel"))
        if config.get("kernel"):
            from .vm.kernel import not_a_kernel

            why = not_a_kernel(config["kernel"])
            if why:
                errs.append(("kernel", why))
        port = config.get("vnc_port", -1)
        if isinstance(port, int) and 0 < port < 5900:
            errs.append(("vnc_port", "brand xen: must be -1 (off), 0 (auto) or 5900 + display number"))
        if any(c in str(config.get("vnc_password", "")) for c in ",'\"="):
            errs.append(("vnc_password", "brand xen: must not contain , ' \" or = (xl splits the vfb spec there)"))
        for i, disk in enumerate(config.get("disks") or []):
            path = disk.get("path") or ""
            if any(c in path for c in ",'\"="):
                errs.append((f"disks.{i}.path", "brand xen: a disk path must not contain , ' \" or ="))
        return errs

    # -- rendering -------------------------------------------------------------------
    def cfg_path(self, dom: Domain) -> Path:
        return Path(dom.data_dir) / self.cfg_name

    def _disk_lines(self, dom: Domain) -> list[str]:
        from .vm import cloudinit

        seed = self.seed_wanted(dom.config)
        entries = []
        for use, vdev in self.disk_vdevs(dom):
            access = "ro" if use.readonly else "rw"
            if use.media == "cdrom":
                entries.append(xl_list_item(f"format={use.format}, vdev={vdev}, access=ro, devtype=cdrom, "
                                            f"target={use.path}"))
            else:
                entries.append(xl_list_item(f"{use.path},{use.format},{vdev},{access}"))
        if seed:
            # as EVE attached it: an IDE cdrom hdc, which an HVM guest without PV drivers sees too
            entries.append(xl_list_item(f"format=raw, vdev=hdc, access=ro, devtype=cdrom, "
                                        f"target={cloudinit.iso_path(dom)}"))
        return entries

    def disk_vdevs(self, dom: Domain, taken: set[int] = frozenset()) -> list[tuple]:
        """(DiskUse, vdev) of each configured disk: xvd (hd, sd for an hvm guest's ide and scsi disks) and
        the next letter not in `taken` (numbers of letters, a=0), never the seed's."""
        from .vm import disks

        cfg = dom.config
        mode = cfg.get("virt_mode", "pvh")
        skip = set(taken) | ({SEED_LETTER} if self.seed_wanted(cfg) else set())  # hdc and xvdc: one IDE slot
        out = []
        letter = 0
        for use in disks.plan(dom):
            model = use.disk.get("model", "virtio")
            prefix = {"ide": "hd", "scsi": "sd"}.get(model, "xvd") if mode in ("hvm", "fml") else "xvd"
            while letter in skip:
                letter += 1
            out.append((use, prefix + chr(ord("a") + letter)))
            letter += 1
        return out

    def seed_wanted(self, config: dict) -> bool:
        """Whether the domain gets a NoCloud seed ISO (cloud_init, customer_metadata, static ips)."""
        from .vm import cloudinit

        return cloudinit.wanted(config)

    def _vif_entries(self, dom: Domain) -> list[str]:
        return [xl_list_item(",".join(self._vif_settings(dom, i, nic)))
                for i, nic in enumerate(dom.config.get("nics") or [])]

    def _vif_settings(self, dom: Domain, i: int, nic: dict) -> list[str]:
        """Nic `i`'s vif as key=value settings: the vif = [...] entry of a start, and the arguments
        of `xl network-attach` for a nic added while the domain runs."""
        mode = dom.config.get("virt_mode", "pvh")
        parts = []
        bridge, mtu = nic.get("bridge"), nic.get("mtu")
        if nic.get("network"):  # an eveadm network: its bridge (and its MTU unless the nic has one)
            from .vm.cloudinit import lookup_network

            net = lookup_network(self.ctx, nic["network"])
            if net is None:  # without bridge=, libxl would put the vif on its default xenbr0
                raise PermanentError(f"nics.{i}: network {nic['network']} does not exist")
            bridge, mtu = net["bridge"], mtu or net.get("mtu")
        if bridge:
            parts.append(f"bridge={bridge}")
        if nic.get("vif"):
            parts.append(f"vifname={nic['vif']}")
        parts.append(f"mac={nic['mac']}")
        parts.append("type=ioemu" if mode == "fml" else "type=vif")
        model = nic.get("model", "virtio")
        if mode in ("hvm", "fml") and model not in ("virtio", None):
            parts.append(f"model={model}")
        if mtu:
            parts.append(f"mtu={mtu}")
        return parts

    def xl_type(self, dom: Domain) -> str:
        mode = dom.config.get("virt_mode", "pvh")
        return {"pv": "pv", "pvh": "pvh", "hvm": "hvm", "fml": "hvm"}.get(mode, "pvh")

    def render_cfg(self, dom: Domain) -> str:
        """The xl cfg, in domainmgr's field order (configToXencfg, 2020)."""
        cfg = dom.config
        mode = cfg.get("virt_mode", "pvh")
        hvm = mode in ("hvm", "fml")
        lines = ["# This file is automatically generated by eveadm (after domainmgr's configToXencfg)",
                 f"name = {xl_string(dom.name)}",
                 f"type = {xl_string(self.xl_type(dom))}",
                 f"uuid = {xl_string(dom.uuid)}"]
        if mode == "fml":
            lines += ['hdtype = "ahci"', "spoof_xen = 1", "pci_permissive = 1"]
        kernel = cfg.get("kernel")
        if mode == "pvh" and not kernel:
            kernel = cfg.get("firmware") or self.ctx.setting("xen.pvh_firmware", "/usr/lib/xen/boot/ovmf-pvh.bin")
        if kernel and mode != "fml":
            lines.append(f"kernel = {xl_string(kernel)}")
        if cfg.get("initrd") and mode != "fml":
            lines.append(f"ramdisk = {xl_string(cfg['initrd'])}")
        if hvm and cfg.get("firmware"):
            fw = cfg["firmware"]
            lines.append(f"bios = {xl_string('ovmf' if 'ovmf' in os.path.basename(fw).lower() else 'seabios')}")
            lines.append(f"bios_path_override = {xl_string(fw)}")
        port = cfg.get("vnc_port", -1)
        listen = self.ctx.setting("xen.vnc_listen", "127.0.0.1")
        if port is not None and port >= 0:
            display = port - 5900 if port >= 5900 else None
            if hvm:
                lines += ["vnc = 1", f"vnclisten = {xl_string(listen)}", "usb = 1", 'usbdevice = ["tablet"]']
                if display is not None:
                    lines.append(f"vncdisplay = {display}")
                if cfg.get("vnc_password"):
                    lines.append(f"vncpasswd = {xl_string(cfg['vnc_password'])}")
            else:
                vfb = f"vnc=1,vnclisten={listen}"
                if display is not None:
                    vfb += f",vncdisplay={display}"
                if cfg.get("vnc_password"):
                    vfb += f",vncpasswd={cfg['vnc_password']}"
                lines.append(f"vfb = [ {xl_list_item(vfb)} ]")
        else:
            lines.append("vnc = 0")
        lines.append(f"memory = {cfg.get('ram', 256)}")
        if cfg.get("max_ram"):
            lines.append(f"maxmem = {cfg['max_ram']}")
        vcpus = cfg.get("vcpus", 1)
        lines.append(f"vcpus = {vcpus}")
        lines.append(f"maxvcpus = {boot_max_vcpus(cfg)}")
        if cfg.get("cpus"):
            lines.append(f"cpus = {xl_string(cfg['cpus'])}")
        if mode in ("pv", "pvh"):
            extra = f"console=hvc0 appuuid={dom.uuid}"
            if cfg.get("cmdline"):
                extra += " " + cfg["cmdline"]
            lines.append(f"extra = {xl_string(extra)}")
        elif cfg.get("cmdline") and kernel:
            lines.append(f"extra = {xl_string(cfg['cmdline'])}")
        if hvm:
            lines.append('boot = "dc"')
        disks = self._disk_lines(dom)
        if disks:
            lines.append(f"disk = [ {', '.join(disks)} ]")
        vifs = self._vif_entries(dom)
        if vifs:
            lines.append(f"vif = [ {', '.join(vifs)} ]")
        pcis = [xl_list_item(p["address"]) for p in cfg.get("pci_devices") or []]
        if pcis:
            lines.append(f"pci = [ {', '.join(pcis)} ]")
        if hvm:
            lines.append("serial = [ 'pty' ]")
        lines += ['on_poweroff = "destroy"', 'on_reboot = "restart"', 'on_crash = "destroy"']
        return "\n".join(lines) + "\n"

    def render(self, dom: Domain) -> str:
        return self.render_cfg(dom)

    # -- lifecycle ---------------------------------------------------------------------
    def prepare(self, dom: Domain) -> None:
        from .vm import cloudinit, disks

        Path(dom.data_dir).mkdir(parents=True, exist_ok=True)
        disks.prepare(self.ctx, dom)
        if self.seed_wanted(dom.config):
            cloudinit.build(self.ctx, dom)
        path = self.cfg_path(dom)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render_cfg(dom))
        os.replace(tmp, path)
        dom.backend["cfg"] = str(path)
        dom.backend["name"] = dom.name
        pci.reserve(self, dom)  # into pciback; the ones eveadm bound go back at release

    def create_paused(self, dom: Domain) -> Status:
        cfg = dom.backend.get("cfg") or str(self.cfg_path(dom))
        self._xl(["create", cfg, "-p"], timeout=300, what=f"xl create {cfg} -p")
        dom.backend["domid"] = self._domid(dom)
        dom.backend["name"] = dom.name
        st = self.status([dom])[dom.uuid]
        if st.state != PAUSED:
            raise BackendError(f"xl create {cfg} -p succeeded but Xen reports {self.xen_name(dom)} {st.state}"
                               + (f": {st.error}" if st.error else ""))
        return st

    def _domid(self, dom: Domain) -> int:
        name = self.xen_name(dom)
        proc = self._xl(["domid", name], what=f"xl domid {name}")
        try:
            return int(self._stdout(proc).strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BackendError(f"xl domid {name} printed {self._stdout(proc).strip()!r}, not a domain id") from None

    def disable_vif_offload(self, dom: Domain, domid: int) -> list[str]:
        """domainmgr xlDisableVifOffload: 10 xenstore writes per VIF; failures are reported, not fatal
        (as domainmgr: the guest still runs, only with offloads on)."""
        failed = []
        for key in offload_keys(domid, len(dom.config.get("nics") or [])):
            proc = self.ctx.run([self.xenstore, "write", key, "0"], check=False, install_hint=XENSTORE_HINT)
            if proc.returncode != 0:
                failed.append(key)
        if failed:
            dom.backend["offload_failed"] = failed
        else:
            dom.backend.pop("offload_failed", None)
        return failed

    def unpause(self, dom: Domain) -> Status:
        domid = dom.backend.get("domid")
        if domid is None:
            domid = dom.backend["domid"] = self._domid(dom)
        self.disable_vif_offload(dom, domid)
        name = self.xen_name(dom)
        self._xl(["unpause", name], what=f"xl unpause {name}")
        return self.status([dom])[dom.uuid]

    def shutdown(self, dom: Domain, kind: str, timeout: float) -> None:
        if kind not in SHUTDOWN_KINDS:
            raise ValueError(f"unknown shutdown kind {kind!r}")
        name = self.xen_name(dom)
        # without -w xl only sends the request; -F falls back to ACPI for a guest without PV drivers
        args = ["shutdown", "-F", name] if kind == FORCED else ["shutdown", name]
        proc = self._xl(args, check=False, timeout=request_timeout(timeout))
        if proc.returncode != 0 and not says_domain_gone(output_text(proc)):
            raise BackendError(self._failure(args, proc, "xl " + " ".join(args)))

    def destroy(self, dom: Domain, timeout: float = 10) -> None:
        name = self.xen_name(dom)
        proc = self._xl(["destroy", name], check=False, timeout=request_timeout(timeout))
        if proc.returncode != 0 and not says_domain_gone(output_text(proc)):
            raise BackendError(self._failure(["destroy"], proc, f"xl destroy {name}"))

    def _xl_list(self) -> dict[str, dict]:
        return parse_xl_list(self._stdout(self._xl(["list"], what="xl list")))

    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        doms = list(doms)
        if not doms:
            return {}
        listing = self._xl_list()
        models = device_models() if any(self.has_device_model(d) for d in doms) else {}
        return {dom.uuid: self._status_one(dom, listing.get(self.xen_name(dom)), models) for dom in doms}

    def stats(self, doms: Iterable[Domain]) -> dict[str, dict]:
        """One `xentop -b -i 1 -f` for all domains (CPU, memory, vif and vbd counters); where xentop is
        missing or fails, `xl list` (CPU time and memory only). A pure read."""
        names = {self.xen_name(d): d.uuid for d in doms}
        if not names:
            return {}
        table = {}
        if which("xentop"):
            proc = self.ctx.run(["xentop", "-b", "-i", "1", "-f"], check=False, timeout=10)
            table = parse_xentop(self._stdout(proc)) if proc.returncode == 0 else {}
        if not table:
            for name, row in self._xl_list().items():
                try:
                    table[name] = {"cpu_seconds": float(row["time"]), "memory_bytes": int(row["mem"]) * 2 ** 20}
                except (TypeError, ValueError):
                    continue
        return {names[n]: stats for n, stats in table.items() if n in names}

    def _status_one(self, dom: Domain, row: dict | None, models: dict[int, list[int]]) -> Status:
        if row is None:
            return self._vanished(dom)
        domid = row["domid"]
        state = state_of(row["flags"])
        detail = {"name": self.xen_name(dom), "xl_state": row["flags"], "memory_mib": row["mem"],
                  "vcpus": row["vcpus"]}
        if state == CRASHED:
            return Status(CRASHED, domain_id=domid, error="the guest crashed (xl state c)", detail=detail)
        if state == SHUTDOWN:
            return Status(SHUTDOWN, domain_id=domid, detail=detail)
        if self.has_device_model(dom) and not models.get(domid):
            return Status(CRASHED, domain_id=domid, error=QEMU_CRASHED, detail=detail)
        return Status(state, domain_id=domid, detail=detail)

    def has_device_model(self, dom: Domain) -> bool:
        """domainmgr: hasQemu = HVM || FML || container."""
        return dom.config.get("virt_mode") in ("hvm", "fml")

    def _vanished(self, dom: Domain) -> Status:
        """Not in `xl list`: tell a poweroff / crash from a destroy using xl's log of that domid."""
        domid = dom.backend.get("domid")
        if domid is None:
            return Status(ABSENT)
        try:
            text = (self.log_dir / f"xl-{self.xen_name(dom)}.log").read_text(errors="replace")
        except OSError:
            return Status(ABSENT)
        how = last_shutdown(text, domid)
        if how is None:
            return Status(ABSENT)
        if how[0] == "destroyed":
            return Status(ABSENT, error=f"destroyed outside eveadm (xl: domain {domid} has been destroyed)")
        reason = how[1]
        name = SHUTDOWN_REASONS.get(reason, str(reason))
        if name in ("reboot", "soft_reset"):
            # xl destroys the old domain and creates the new one (on_reboot=restart): not gone
            return Status(RUNNING, error=None, detail={"shutdown_reason": name, "rebooting": True})
        if name in ("crash", "watchdog"):
            return Status(CRASHED, error=f"the guest {'crashed' if name == 'crash' else 'was reset by its watchdog'}"
                                         f" (xl: domain {domid} shut down, reason {name})")
        return Status(SHUTDOWN, detail={"shutdown_reason": name})

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        from .vm import disks

        removed = []
        errors = pci.give_back(self, dom)  # reported below, after the files are cleaned up
        removed += disks.release(dom, delete=delete)
        dom.backend.pop("domid", None)
        if delete:
            for p in (self.cfg_path(dom), Path(dom.data_dir) / "cidata.iso"):
                if p.exists():
                    p.unlink()
                    removed.append(str(p))
            dom.backend.pop("cfg", None)
        if errors:
            raise BackendError("; ".join(errors))
        return removed

    # -- optional ------------------------------------------------------------------------
    def console(self, dom: Domain) -> int:
        argv = [self.xl, "console", self.xen_name(dom)]
        proc = self.ctx.run(argv, check=False, timeout=None, stdin=None, stdout=None, stderr=None,
                            install_hint=XL_HINT)
        return proc.returncode

    def console_log(self, dom: Domain) -> Path | None:
        path = self.log_dir / "console" / f"guest-{self.xen_name(dom)}.log"
        return path if path.exists() else None

    def info(self, dom: Domain) -> dict:
        proc = self._xl(["list", "-l", self.xen_name(dom)], check=False)
        out = {"name": self.xen_name(dom), "domid": dom.backend.get("domid"), "cfg": dom.backend.get("cfg")}
        if proc.returncode == 0:
            try:
                data = json.loads(self._stdout(proc))
                out["xl"] = data[0] if isinstance(data, list) and data else data
            except ValueError:
                out["xl"] = self._stdout(proc)
        if dom.backend.get("offload_failed"):
            out["offload_failed"] = dom.backend["offload_failed"]
        return out

    def host_info(self) -> dict:
        try:
            proc = self._xl(["info"], check=False)
        except BackendError as exc:
            return {"available": False, "error": str(exc)}
        facts = {}
        for line in self._stdout(proc).splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("xen_version", "xen_major", "xen_minor", "total_memory", "free_memory",
                                        "nr_cpus", "virt_caps", "xen_scheduler", "release"):
                facts[key.strip()] = value.strip()
        facts["available"] = proc.returncode == 0
        return facts

    # -- PCI ---------------------------------------------------------------------------------
    def pci_list(self) -> list[str]:
        proc = self._xl(["pci-assignable-list"], what="xl pci-assignable-list")
        return [ln.split()[0] for ln in self._stdout(proc).splitlines() if ln.strip()]

    def pci_assignable_add(self, address: str) -> None:
        self._xl(["pci-assignable-add", address], what=f"xl pci-assignable-add {address}")

    def pci_assignable_remove(self, address: str) -> None:
        self._xl(["pci-assignable-rem", "-r", address], what=f"xl pci-assignable-rem -r {address}")

    # -- live changes: xl mem-set, vcpu-set, block-attach/-detach, network-attach/-detach ------------
    def change_live(self, dom: Domain, key: str, old, new) -> None:
        """ram up to the boot-time maxmem, vcpus up to maxvcpus, disks used in place, nics. What is
        attached is recorded in dom.backend["live"] for the run (the domid) it describes."""
        if new is None or key not in ("ram", "vcpus", "disks", "nics"):
            raise NotLive(f"{key} changes at the next start")
        live = self._live_state(dom)
        name = self.xen_name(dom)
        if key in ("ram", "vcpus"):
            top, what = (live["maxmem"], "max_ram") if key == "ram" else (live["maxvcpus"], "max_vcpus")
            if new > top:
                raise NotLive(f"above the boot-time maximum ({what} {top})")
            args = ["mem-set", name, f"{new}m"] if key == "ram" else ["vcpu-set", name, str(new)]
            self._xl(args, what="xl " + " ".join(args))
        elif key == "disks":
            self._change_disks(dom, live, name, list(old or []), new)
        else:
            self._change_nics(dom, live, name, list(old or []), new)

    def _live_state(self, dom: Domain) -> dict:
        """What runs in this domain: recorded by earlier changes of this run, else its boot configuration
        (dom.config is exactly that until the first live change)."""
        run = dom.backend.get("domid")
        live = dom.backend.get("live")
        if isinstance(live, dict) and live.get("run") == run:
            return live
        cfg = dom.config
        live = {"run": run, "maxmem": int(cfg.get("max_ram") or cfg.get("ram", 256)),
                "maxvcpus": boot_max_vcpus(cfg),
                "vdevs": {disk_key(use.disk): vdev for use, vdev in self.disk_vdevs(dom)}}
        dom.backend["live"] = live
        return live

    def _change_disks(self, dom: Domain, live: dict, name: str, old: list, new: list) -> None:
        from .vm import disks

        olds, news, removed, added = device_diff("disk", disk_key, old, new)
        scratch = with_devices(dom, "disks", [news[k] for k in added])
        taken = {ord(v[-1]) - ord("a") for v in live["vdevs"].values()}
        attach = self.disk_vdevs(scratch, taken)
        for use, _vdev in attach:
            if use.kind != disks.USER or use.media != "disk":
                raise NotLive(f"disk {disk_key(use.disk)}: only disks used in place (a path alone) are "
                              "attached while a xen domain runs")
        running = list(old)
        try:
            for k in removed:
                self._xl(["block-detach", name, live["vdevs"][k]], what=f"xl block-detach {name} {live['vdevs'][k]}")
                del live["vdevs"][k]
                running.remove(olds[k])
            for use, vdev in attach:
                spec = f"format={use.format},vdev={vdev},access={'ro' if use.readonly else 'rw'},target={use.path}"
                self._xl(["block-attach", name, spec], what=f"xl block-attach {name} {vdev}")
                live["vdevs"][disk_key(use.disk)] = vdev
                running.append(use.disk)
        except BackendError as exc:
            raise LiveChangeFailed(str(exc), in_effect=running) from None

    def _change_nics(self, dom: Domain, live: dict, name: str, old: list, new: list) -> None:
        olds, news, removed, added = device_diff("nic", nic_key, old, new)
        # the same settings a start gives the vif, one key=value argument each
        settings = {k: self._vif_settings(dom, new.index(news[k]), news[k]) for k in added}
        running = list(old)
        try:
            for k in removed:
                self._xl(["network-detach", name, olds[k]["mac"]], what=f"xl network-detach {name} {olds[k]['mac']}")
                running.remove(olds[k])
            for k in added:
                self._xl(["network-attach", name, *settings[k]], what=f"xl network-attach {name} {news[k]['mac']}")
                running.append(news[k])
        except BackendError as exc:
            raise LiveChangeFailed(str(exc), in_effect=running) from None
