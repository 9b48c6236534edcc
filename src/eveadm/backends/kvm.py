"""kvm brand: QEMU (KVM when usable, else TCG software emulation) driven over QMP.

How a domain maps onto QEMU (after EVE's kvm.go, without containerd):

  create_paused  qemu-system-x86_64 ... -S -no-shutdown -daemonize -pidfile P
                 QMP `query-status` must then say `prelaunch`
  unpause        [bridge the taps, set the VNC password] QMP `cont`, then `query-status` must say `running`
  shutdown       QMP `system_powerdown` (ACPI power button: the guest decides)
  shutdown -F    QMP `quit`. QEMU has no "forced ACPI" request, so the forced step pulls the plug.
  destroy        QMP `quit`, SIGKILL when QEMU is still there after 5 s
  status         pid alive (and really our QEMU) + QMP `query-status`, all domains in one event loop
  kill           a signal to the QEMU process

Why `-daemonize` and not Popen: QEMU's parent process exits only after the
child has finished initialising (sockets listening, pid file written), with
QEMU's own exit status and error text when it could not start (bad disk,
unknown option). So create_paused is synchronous, goes through ctx.run (and
the command log) like every other command, and the QEMU process is never a
child of the eveadm process (no zombie, no inherited descriptors, it outlives
the CLI). `-D <data_dir>/qemu.log` keeps QEMU's stderr after it detaches.

Telling a clean poweroff from a dead QEMU: QEMU runs with `-no-shutdown`, so
a guest that powers off leaves QEMU alive in run state `shutdown`. `status`
reports that as SHUTDOWN, writes the marker `<run_dir>/ended` ("poweroff")
and sends `quit` to free the memory. Every quit eveadm sends itself is
preceded by the marker "quit". A QEMU process found dead without a marker
died from outside (signal, OOM killer, crash): CRASHED, with the last line
QEMU wrote to its log when there is one.

Two QMP monitors: `qmp.sock` for short-lived commands (connect, command,
disconnect) and `qmp-events.sock`, used only by `wait_gone` to wait for the
SHUTDOWN event without holding the command monitor (QEMU serves one client
per monitor).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal as _signal
import time
from pathlib import Path
from typing import Iterable

from .. import cloudinit, disks
from ..errors import BackendError, BackendUnavailable, NotSupported
from .base import (ABSENT, CRASHED, PAUSED, RUNNING, SHUTDOWN, Backend, BackendContext, Domain, Status,
                   last_output_line, pid_alive, wait_until)

QEMU = "qemu-system-x86_64"
QEMU_HINT = "apt-get install qemu-system-x86"
QMP_TIMEOUT = 5.0  # s, per QMP call
DESTROY_GRACE = 5.0  # s between `quit` and SIGKILL
CRASH_MESSAGE = "qemu crashed - please restart application instance"
SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, without the terminating NUL

# query-status values -> our states
_PAUSED_STATES = {"prelaunch", "paused", "suspended", "inmigrate", "postmigrate", "finish-migrate",
                  "restore-vm", "save-vm", "colo", "preconfig", "debug"}
_BROKEN_STATES = {"internal-error", "guest-panicked", "io-error", "watchdog"}

_accel_cache: tuple[str, str] | None = None


def detect_accel() -> tuple[str, str]:
    """("kvm"|"tcg", why). An openable /dev/kvm is not enough: PVM's kvm has no VMX/SVM
    and cannot boot stock Linux guests, so require real hardware virtualization."""
    global _accel_cache
    if _accel_cache is None:
        _accel_cache = _detect_accel()
    return _accel_cache


def _detect_accel() -> tuple[str, str]:
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


def esc(value: object) -> str:
    """A QEMU option value: commas are separators, a literal comma is written ','."""
    return str(value).replace(",", ",,")


def _quiet_qmp_logging() -> None:
    log = logging.getLogger("qemu.qmp")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
        log.propagate = False


# ---------------------------------------------------------------------------
# QMP: every call is short-lived (connect, commands, disconnect)

class QmpError(BackendError):
    pass


async def _qmp_session(path: str, commands: list[tuple[str, dict | None]], timeout: float):
    import asyncio

    from qemu.qmp import QMPClient

    client = QMPClient("eveadm")
    await asyncio.wait_for(client.connect(path), timeout)
    results = []
    try:
        for cmd, args in commands:
            try:
                results.append(await asyncio.wait_for(client.execute(cmd, args), timeout))
            except Exception:
                if cmd == "quit":  # QEMU may hang up before it answers
                    results.append({})
                    break
                raise
    finally:
        try:
            await client.disconnect()
        except Exception:
            pass  # EOF when QEMU already left (quit, poweroff)
    return results


def _qmp_text(exc: BaseException) -> str:
    import asyncio

    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer (timeout)"
    if isinstance(exc, FileNotFoundError):
        return "socket is gone"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def qmp(path: str | Path, *commands: tuple[str, dict | None] | str, timeout: float = QMP_TIMEOUT) -> list:
    """Run QMP commands on one monitor; raise QmpError (one line) on failure."""
    import asyncio

    _quiet_qmp_logging()
    cmds = [(c, None) if isinstance(c, str) else c for c in commands]
    try:
        return asyncio.run(_qmp_session(str(path), cmds, timeout))
    except Exception as exc:  # qemu.qmp raises a variety of types; all mean the same to us
        cause = getattr(exc, "exc", None) or exc
        raise QmpError(f"QMP {'/'.join(c for c, _ in cmds)} on {path}: {_qmp_text(cause)}") from None


def qmp_many(calls: dict[str, tuple[str, list]], timeout: float = QMP_TIMEOUT) -> dict[str, object]:
    """{key: (socket, commands)} -> {key: results list | exception}, concurrently in one event loop."""
    import asyncio

    _quiet_qmp_logging()
    if not calls:
        return {}

    async def run_all():
        keys = list(calls)
        outs = await asyncio.gather(
            *[_qmp_session(calls[k][0], [(c, None) if isinstance(c, str) else c for c in calls[k][1]], timeout)
              for k in keys],
            return_exceptions=True,
        )
        return dict(zip(keys, outs))

    return asyncio.run(run_all())


# ---------------------------------------------------------------------------

class KvmBackend(Backend):
    brand = "kvm"
    default_stop_timeout = 60

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)

    # -- paths -------------------------------------------------------------
    @staticmethod
    def _paths(dom: Domain) -> dict[str, Path]:
        run, data = Path(dom.run_dir), Path(dom.data_dir)
        return {
            "qmp": run / "qmp.sock",
            "events": run / "qmp-events.sock",
            "serial": run / "serial.sock",
            "pidfile": run / "qemu.pid",
            "ended": run / "ended",
            "console_lock": run / "console.lock",
            "serial_log": data / "serial.log",
            "qemu_log": data / "qemu.log",
            "argv_file": data / "qemu.argv",
        }

    # -- availability ------------------------------------------------------
    def check_available(self) -> None:
        if not shutil.which(QEMU):
            raise BackendUnavailable(f"brand kvm needs {QEMU}: {QEMU_HINT}")

    def accel(self, dom: Domain | None = None) -> tuple[str, str]:
        wanted = (dom.config.get("accel") if dom else None) or "auto"
        if wanted == "auto":
            host = self.ctx.setting("kvm.accel", "auto") or "auto"
            if host in ("kvm", "tcg"):
                return host, f"{host}: host setting kvm.accel"
            return detect_accel()
        return wanted, f"{wanted}: requested by the payload"

    def validate(self, config: dict) -> list[tuple[str, str]]:
        problems = []
        mode = config.get("virt_mode", "hvm")
        if mode in ("pv", "pvh"):
            problems.append(("virt_mode", f"{mode} is a xen mode; kvm runs hvm or fml"))
        if mode == "fml" and not config.get("firmware"):
            problems.append(("firmware", "virt_mode fml needs firmware (an OVMF image)"))
        for key in ("kernel", "initrd", "firmware"):
            if config.get(key) and not os.path.isfile(config[key]):
                problems.append((key, f"{config[key]} does not exist"))
        if not config.get("kernel"):
            for key in ("initrd", "cmdline"):
                if config.get(key):
                    problems.append((key, f"{key} needs kernel"))
        port = config.get("vnc_port", -1)
        if isinstance(port, int) and 0 < port < 5900:
            problems.append(("vnc_port", "brand kvm: must be -1 (off), 0 (auto) or 5900 + display number"))
        if config.get("accel") == "kvm" and not os.path.exists("/dev/kvm"):
            problems.append(("accel", "accel kvm needs /dev/kvm"))
        if config.get("pci_devices"):
            for i, dev in enumerate(config["pci_devices"]):
                if not os.path.exists(f"/sys/bus/pci/devices/{dev['address']}"):
                    problems.append((f"pci_devices.{i}.address", f"no PCI device {dev['address']} on this host"))
        problems += disks.check(config)
        return problems

    # -- rendering ---------------------------------------------------------
    def argv(self, dom: Domain) -> list[list[str]]:
        """QEMU's argv as groups (program, then one option with its value per group)."""
        cfg = dom.config
        p = self._paths(dom)
        accel, _ = self.accel(dom)
        groups: list[list[str]] = [[QEMU]]
        add = groups.append
        add(["-name", f"guest={esc(dom.name)}"])
        add(["-uuid", dom.uuid])
        add(["-machine", esc(cfg.get("machine", "q35"))])
        add(["-accel", accel])
        if accel == "kvm":
            add(["-cpu", "host"])
        ram = int(cfg.get("ram", 256))
        max_ram = cfg.get("max_ram")
        if max_ram and int(max_ram) > ram:
            add(["-m", f"size={ram}M,slots=1,maxmem={int(max_ram)}M"])
        else:
            add(["-m", f"{ram}M"])
        add(["-smp", str(int(cfg.get("vcpus", 1)))])
        add(["-nodefaults"])
        add(["-no-user-config"])
        add(["-display", "none"])
        add(["-msg", "timestamp=on"])
        add(["-S"])
        add(["-no-shutdown"])
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
        if cfg.get("kernel"):
            add(["-kernel", cfg["kernel"]])
            if cfg.get("initrd"):
                add(["-initrd", cfg["initrd"]])
            add(["-append", cfg.get("cmdline") or "console=ttyS0"])
        groups += self._disk_args(dom)
        groups += self._nic_args(dom)
        for i, dev in enumerate(cfg.get("pci_devices") or []):
            add(["-device", f"vfio-pci,host={esc(dev['address'])},id=hostdev{i}"])
        vnc = cfg.get("vnc_port", -1)
        if vnc is not None and int(vnc) >= 0:
            listen = self.ctx.setting("kvm.vnc_listen", "127.0.0.1")
            vnc = int(vnc)
            display = f"{listen}:0,to=99" if vnc == 0 else f"{listen}:{vnc - 5900 if vnc >= 5900 else vnc}"
            if cfg.get("vnc_password"):
                display += ",password=on"
            add(["-device", "VGA"])
            add(["-vnc", display])
        return groups

    def _disk_args(self, dom: Domain) -> list[list[str]]:
        out: list[list[str]] = []
        uses = disks.plan(dom)
        entries = [(u.path, u.format, u.media, u.readonly, u.disk.get("model", "virtio"), u.disk.get("boot", False))
                   for u in uses]
        if cloudinit.wanted(dom.config):
            entries.append((cloudinit.iso_path(dom), "raw", "cdrom", True, "scsi", False))
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
                if dom.config.get("machine", "q35") == "q35":
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

    def _nic_args(self, dom: Domain) -> list[list[str]]:
        out = []
        for i, nic in enumerate(dom.config.get("nics") or []):
            if nic.get("bridge"):
                ifname = self._tap_name(dom, i, nic)
                out.append(["-netdev", f"tap,id=net{i},ifname={esc(ifname)},script=no,downscript=no"])
            else:
                out.append(["-netdev", f"user,id=net{i}"])
            model = nic.get("model", "virtio")
            driver = {"virtio": "virtio-net-pci"}.get(model, model)
            dev = f"{esc(driver)},netdev=net{i},mac={nic['mac']},id=nic{i}"
            if nic.get("mtu") and driver == "virtio-net-pci":
                dev += f",host_mtu={int(nic['mtu'])}"
            out.append(["-device", dev])
        return out

    @staticmethod
    def _tap_name(dom: Domain, i: int, nic: dict) -> str:
        return nic.get("vif") or f"ek{dom.uuid[:8]}.{i}"

    def render(self, dom: Domain) -> str:
        return " \\\n  ".join(shlex.join(g) for g in self.argv(dom)) + "\n"

    def _flat_argv(self, dom: Domain) -> list[str]:
        return [a for g in self.argv(dom) for a in g]

    # -- lifecycle primitives ----------------------------------------------
    def prepare(self, dom: Domain) -> None:
        Path(dom.data_dir).mkdir(parents=True, exist_ok=True)
        disks.prepare(self.ctx, dom)
        if cloudinit.wanted(dom.config):
            dom.backend["cidata"] = str(cloudinit.build(self.ctx, dom))
        p = self._paths(dom)
        p["argv_file"].write_text(self.render(dom))
        dom.backend["argv_file"] = str(p["argv_file"])
        # reserve the passthrough devices: bind each to vfio-pci, remembering which eveadm bound
        added = dom.backend.setdefault("pci_added", [])
        for dev in dom.config.get("pci_devices") or []:
            addr = dev["address"]
            if addr not in added and addr not in self.pci_list():
                self.pci_assignable_add(addr)
                added.append(addr)

    def create_paused(self, dom: Domain) -> Status:
        self.check_available()
        p = self._paths(dom)
        run = Path(dom.run_dir)
        run.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(run, 0o700)
        for key in ("qmp", "events", "serial", "pidfile", "ended"):
            p[key].unlink(missing_ok=True)
        for key in ("qmp", "events", "serial"):
            n = len(os.fsencode(str(p[key])))
            if n > SUN_PATH_MAX:
                raise BackendError(f"socket path {p[key]} is {n} bytes, more than the {SUN_PATH_MAX} a unix "
                                   "socket allows: use a shorter state root (--root) or run directory")
        Path(dom.data_dir).mkdir(parents=True, exist_ok=True)
        accel, why = self.accel(dom)
        argv = self._flat_argv(dom) + ["-daemonize"]
        old = os.umask(0o077)  # sockets, pid file and logs readable by root only
        try:
            proc = self.ctx.run(argv, timeout=60, check=False, install_hint=QEMU_HINT)
        finally:
            os.umask(old)
        if proc.returncode != 0:
            raise BackendError(_qemu_failed(proc, p["qemu_log"]))
        try:
            pid = int(p["pidfile"].read_text().strip())
        except (OSError, ValueError):
            raise BackendError(f"{QEMU} started but wrote no pid file {p['pidfile']}") from None
        dom.backend.update({
            "pid": pid, "accel": accel, "accel_reason": why, "machine": dom.config.get("machine", "q35"),
            "qmp": str(p["qmp"]), "qmp_events": str(p["events"]), "serial": str(p["serial"]),
            "serial_log": str(p["serial_log"]), "qemu_log": str(p["qemu_log"]), "pidfile": str(p["pidfile"]),
            "started": time.time(),
        })
        dom.backend.pop("ended", None)
        if not wait_until(lambda: p["qmp"].exists() or not pid_alive(pid), 10):
            self._kill_now(dom, pid)
            raise BackendError(f"{QEMU} (pid {pid}) opened no QMP socket within 10 s")
        try:
            status = qmp(p["qmp"], "query-status")[0]["status"]
        except QmpError as exc:
            self._kill_now(dom, pid)
            raise BackendError(f"{QEMU} (pid {pid}) started but QMP failed: {exc}") from None
        if status != "prelaunch":
            self._kill_now(dom, pid)
            raise BackendError(f"{QEMU} (pid {pid}) is in state {status!r}, expected 'prelaunch'")
        # QEMU's -daemonize sets umask 027: make the sockets and the console log owner-only
        for key in ("qmp", "events", "serial", "serial_log"):
            try:
                os.chmod(p[key], 0o600)
            except OSError:
                pass
        self._pin(dom, pid)
        return Status(PAUSED, domain_id=pid, pid=pid)

    def _pin(self, dom: Domain, pid: int) -> None:
        cpus = dom.config.get("cpus")
        if not cpus:
            return
        wanted: set[int] = set()
        for part in str(cpus).split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), wanted)
        except OSError as exc:
            raise BackendError(f"cannot pin {dom.name} to cpus {cpus}: {exc.strerror}") from None

    def unpause(self, dom: Domain) -> Status:
        self._bridge_taps(dom)
        sock = self._sock(dom)
        cmds: list = []
        if dom.config.get("vnc_password") and int(dom.config.get("vnc_port", -1)) >= 0:
            cmds.append(("change-vnc-password", {"password": dom.config["vnc_password"]}))
        cmds += ["cont", "query-status"]
        status = qmp(sock, *cmds)[-1]["status"]
        if status != "running":
            raise BackendError(f"{dom.name}: QMP cont left QEMU in state {status!r}, not 'running'")
        pid = dom.backend.get("pid")
        return Status(RUNNING, domain_id=pid, pid=pid)

    def _bridge_taps(self, dom: Domain) -> None:
        for i, nic in enumerate(dom.config.get("nics") or []):
            if nic.get("bridge"):
                tap = self._tap_name(dom, i, nic)
                argv = ["ip", "link", "set", "dev", tap, "master", nic["bridge"]]
                if nic.get("mtu"):
                    argv += ["mtu", str(int(nic["mtu"]))]
                self.ctx.run(argv + ["up"], install_hint="apt-get install iproute2")

    def shutdown(self, dom: Domain, force: bool = False) -> None:
        sock = self._sock(dom)
        if force:
            # QEMU has no forced ACPI request: the forced step is `quit` (pulling the plug).
            self._mark_ended(dom, "quit")
            qmp(sock, "quit")
        else:
            qmp(sock, "system_powerdown")

    def destroy(self, dom: Domain) -> None:
        pid = self._pid(dom)
        if not self._alive(dom):
            return
        self._mark_ended(dom, "quit")
        try:
            qmp(self._sock(dom), "quit", timeout=2)
        except QmpError:
            pass
        if not wait_until(lambda: not pid_alive(pid), DESTROY_GRACE):
            self._kill_now(dom, pid)

    def _kill_now(self, dom: Domain, pid: int) -> None:
        self._mark_ended(dom, "quit")
        try:
            os.kill(pid, _signal.SIGKILL)
        except ProcessLookupError:
            return
        if not wait_until(lambda: not pid_alive(pid), DESTROY_GRACE):
            raise BackendError(f"{QEMU} pid {pid} survived SIGKILL for {DESTROY_GRACE:g} s")

    def _mark_ended(self, dom: Domain, how: str) -> None:
        dom.backend["ended"] = how
        try:
            self._paths(dom)["ended"].write_text(how + "\n")
        except OSError:
            pass

    def _ended(self, dom: Domain) -> str | None:
        try:
            return self._paths(dom)["ended"].read_text().strip() or None
        except OSError:
            return dom.backend.get("ended")

    def _pid(self, dom: Domain) -> int | None:
        """The recorded QEMU pid; else the pid file's (a command killed between starting QEMU and
        recording it leaves only the pid file: status/destroy then still find that QEMU)."""
        pid = dom.backend.get("pid")
        if pid:
            return pid
        try:
            pid = int(self._paths(dom)["pidfile"].read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and self._is_ours(dom, pid):
            dom.backend["pid"] = pid
            return pid
        return None

    def _sock(self, dom: Domain) -> Path:
        return Path(dom.backend.get("qmp") or self._paths(dom)["qmp"])

    def _alive(self, dom: Domain) -> bool:
        """The recorded pid is alive and is this domain's QEMU (not a recycled pid)."""
        pid = self._pid(dom)
        return pid_alive(pid) and self._is_ours(dom, pid)

    def _is_ours(self, dom: Domain, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            return False
        return os.fsencode(esc(self._sock(dom))) in cmdline

    # -- status ---------------------------------------------------------------
    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        doms = list(doms)
        out: dict[str, Status] = {}
        alive = {}
        for dom in doms:
            pid = self._pid(dom)
            if not pid:
                out[dom.uuid] = Status(ABSENT)
            elif self._alive(dom):
                alive[dom.uuid] = dom
            else:
                out[dom.uuid] = self._dead_status(dom, pid)
        answers = qmp_many({u: (str(self._sock(d)), ["query-status"]) for u, d in alive.items()})
        for uuid, dom in alive.items():
            pid = dom.backend["pid"]
            ans = answers[uuid]
            detail = {"accel": dom.backend.get("accel"), "qmp": str(self._sock(dom))}
            if isinstance(ans, BaseException):
                if not self._alive(dom) or self._ended(dom):  # died, or is leaving after a quit
                    out[uuid] = self._dead_status(dom, pid)
                    continue
                cause = getattr(ans, "exc", None) or ans
                detail["qmp_error"] = _qmp_text(cause)
                # QEMU is there but its monitor did not answer (busy, another client): trust the process
                out[uuid] = Status(RUNNING, domain_id=pid, pid=pid, detail=detail)
                continue
            qs = ans[0].get("status")
            detail["qemu_status"] = qs
            if qs == "running":
                out[uuid] = Status(RUNNING, domain_id=pid, pid=pid, detail=detail)
            elif qs in _PAUSED_STATES:
                out[uuid] = Status(PAUSED, domain_id=pid, pid=pid, detail=detail)
            elif qs == "shutdown":
                # the guest powered off; QEMU only lingers because of -no-shutdown: free it
                self._mark_ended(dom, "poweroff")
                try:
                    qmp(self._sock(dom), "quit", timeout=2)
                except QmpError:
                    pass
                out[uuid] = Status(SHUTDOWN, domain_id=pid, pid=pid, detail=detail)
            else:  # internal-error, guest-panicked, ...
                out[uuid] = Status(CRASHED, domain_id=pid, pid=pid, detail=detail,
                                   error=f"guest crashed: qemu status {qs}")
        return out

    def _dead_status(self, dom: Domain, pid: int) -> Status:
        ended = self._ended(dom)
        if ended == "poweroff":
            return Status(SHUTDOWN, pid=pid)
        if ended == "quit":
            return Status(ABSENT, pid=pid)
        last = _last_line(Path(dom.backend.get("qemu_log") or self._paths(dom)["qemu_log"]),
                          since=dom.backend.get("started"))
        why = f": {last}" if last else ""
        return Status(CRASHED, pid=pid,
                      error=f"{CRASH_MESSAGE} ({QEMU} pid {pid} died{why})")

    def wait_gone(self, dom: Domain, timeout: float) -> bool:
        """Event-driven: wait for SHUTDOWN on the event monitor (or QEMU's death), then confirm."""
        def gone() -> bool:
            return self.status([dom])[dom.uuid].gone

        deadline = time.monotonic() + timeout
        pid = self._pid(dom)
        if not pid or not self._alive(dom):
            return gone()
        events = Path(dom.backend.get("qmp_events") or self._paths(dom)["events"])
        how = _wait_shutdown_event(events, pid, timeout)
        left = deadline - time.monotonic()
        if how == "timeout":
            return gone()
        if how == "unavailable":
            return wait_until(gone, max(left, 0), cap=0.05)
        # the run state follows the SHUTDOWN event by a few ms
        return wait_until(gone, max(left, 2.0), cap=0.05)

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        pid = self._pid(dom)
        if pid and self._alive(dom):
            self.destroy(dom)  # a QEMU lingering after the guest powered off
        p = self._paths(dom)
        removed: list[str] = []
        for key in ("qmp", "events", "serial", "pidfile", "ended", "console_lock"):
            p[key].unlink(missing_ok=True)
        try:
            Path(dom.run_dir).rmdir()
        except OSError:
            pass
        removed += disks.release(dom, delete=delete)
        for addr in list(dom.backend.get("pci_added", [])):  # give devices eveadm bound back
            self.pci_assignable_remove(addr)
            dom.backend["pci_added"].remove(addr)
        if delete:
            for path in (p["argv_file"], p["serial_log"], p["qemu_log"], cloudinit.iso_path(dom)):
                try:
                    path.unlink()
                    removed.append(str(path))
                except FileNotFoundError:
                    pass
            try:
                Path(dom.data_dir).rmdir()
            except OSError:
                pass
            for key in ("argv_file", "cidata", "disks"):
                dom.backend.pop(key, None)
        for key in ("pid", "ended", "qmp", "qmp_events", "serial", "pidfile", "started"):
            dom.backend.pop(key, None)
        return removed

    # -- optional -------------------------------------------------------------
    def kill(self, dom: Domain, sig: int = _signal.SIGKILL) -> None:
        pid = self._pid(dom)
        if not pid or not self._alive(dom):
            raise BackendError(f"{dom.name}: no QEMU process to signal")
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            raise BackendError(f"{dom.name}: QEMU pid {pid} is gone") from None

    def console(self, dom: Domain) -> int:
        from .. import serial

        if not self._alive(dom):
            raise BackendError(f"{dom.name} is not running: no console")
        p = self._paths(dom)
        return serial.attach(dom.backend.get("serial") or p["serial"], p["console_lock"], name=dom.name)

    def console_log(self, dom: Domain) -> Path | None:
        return Path(dom.backend.get("serial_log") or self._paths(dom)["serial_log"])

    def info(self, dom: Domain) -> dict:
        out = {
            "pid": dom.backend.get("pid"),
            "accel": dom.backend.get("accel") or self.accel(dom)[0],
            "accel_reason": dom.backend.get("accel_reason") or self.accel(dom)[1],
            "qmp": str(self._sock(dom)),
            "serial": dom.backend.get("serial"),
            "serial_log": str(self.console_log(dom)),
            "qemu_log": dom.backend.get("qemu_log"),
            "argv_file": dom.backend.get("argv_file"),
            "disks": dom.backend.get("disks", []),
        }
        if self._alive(dom):
            try:
                st, kvm, block = qmp(self._sock(dom), "query-status", "query-kvm", "query-block")
                out["qemu_status"] = st.get("status")
                out["kvm"] = kvm
                out["block"] = [
                    {"device": b.get("qdev") or b.get("device"), "file": (b.get("inserted") or {}).get("file"),
                     "ro": (b.get("inserted") or {}).get("ro")}
                    for b in block
                ]
            except QmpError as exc:
                out["qmp_error"] = str(exc)
        return out

    def host_info(self) -> dict:
        path = shutil.which(QEMU)
        accel, why = self.accel(None)
        out = {"qemu": path, "accel": accel, "accel_reason": why,
               "dev_kvm": os.path.exists("/dev/kvm"), "kvm_pvm": os.path.exists("/sys/module/kvm_pvm")}
        if path:
            try:
                proc = self.ctx.run([path, "--version"], timeout=10)
                out["qemu_version"] = proc.stdout.decode(errors="replace").splitlines()[0]
            except BackendError as exc:
                out["qemu_version_error"] = str(exc)
        return out

    # -- PCI assignment (vfio-pci through sysfs, as EVE's PCIReserveGeneric) --
    def pci_list(self) -> list[str]:
        drv = Path("/sys/bus/pci/drivers/vfio-pci")
        if not drv.is_dir():
            return []
        return sorted(e.name for e in drv.iterdir() if e.name.count(":") == 2)

    def pci_assignable_add(self, address: str) -> None:
        dev = self._pci_dev(address)
        if not Path("/sys/bus/pci/drivers/vfio-pci").is_dir():
            raise BackendUnavailable("vfio-pci is not loaded: modprobe vfio-pci")
        if (dev / "driver").resolve().name == "vfio-pci":
            return
        self._sysfs_write(dev / "driver_override", "vfio-pci")
        if (dev / "driver").exists():
            self._sysfs_write(dev / "driver" / "unbind", address)
        self._sysfs_write(Path("/sys/bus/pci/drivers_probe"), address)

    def pci_assignable_remove(self, address: str) -> None:
        dev = self._pci_dev(address)
        self._sysfs_write(dev / "driver_override", "\n")
        if (dev / "driver").exists():
            self._sysfs_write(dev / "driver" / "unbind", address)
        self._sysfs_write(Path("/sys/bus/pci/drivers_probe"), address)

    @staticmethod
    def _pci_dev(address: str) -> Path:
        dev = Path("/sys/bus/pci/devices") / address
        if not dev.exists():
            raise BackendError(f"no PCI device {address} on this host")
        return dev

    @staticmethod
    def _sysfs_write(path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise BackendError(f"cannot write {value.strip()!r} to {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------

def _wait_shutdown_event(events_sock: Path, pid: int, timeout: float) -> str:
    """Wait on QEMU's event monitor until the guest is down or QEMU is gone.

    Returns "event" (SHUTDOWN seen, run state shutdown/broken, or the process died),
    "timeout", or "unavailable" when the event monitor cannot be used (another
    waiter holds it, QMP failed): the caller then polls."""
    import asyncio

    _quiet_qmp_logging()

    async def pid_gone():
        while pid_alive(pid):
            await asyncio.sleep(0.02)

    async def watch() -> str:
        from qemu.qmp import QMPClient

        client = QMPClient("eveadm-wait")
        try:
            await asyncio.wait_for(client.connect(str(events_sock)), 1.0)
        except Exception:
            return "unavailable"
        try:
            with client.listener() as listener:
                status = (await asyncio.wait_for(client.execute("query-status"), QMP_TIMEOUT))["status"]
                if status == "shutdown" or status in _BROKEN_STATES:
                    return "event"

                async def events():
                    async for ev in listener:
                        if ev["event"] == "SHUTDOWN":
                            return
                        if ev["event"] == "STOP":
                            st = (await client.execute("query-status"))["status"]
                            if st == "shutdown" or st in _BROKEN_STATES:
                                return

                tasks = [asyncio.ensure_future(events()), asyncio.ensure_future(pid_gone())]
                try:
                    done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if not done:
                    return "timeout"
                if any(t.exception() for t in done if not t.cancelled()) and pid_alive(pid):
                    return "unavailable"
                return "event"
        except Exception:
            return "event" if not pid_alive(pid) else "unavailable"
        finally:
            try:
                await client.disconnect()
            except Exception:
                pass

    return asyncio.run(watch())


_TIMESTAMP = None


def _untimestamped(line: str) -> str:
    """QEMU runs with -msg timestamp=on: drop the leading ISO time from a message."""
    import re

    global _TIMESTAMP
    if _TIMESTAMP is None:
        _TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?\s+")
    return _TIMESTAMP.sub("", line)


def _last_line(path: Path, since: float | None = None) -> str | None:
    """The last non-empty line QEMU wrote to its log (stderr), if written during this run."""
    try:
        if since and path.stat().st_mtime < since - 1:
            return None
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return _untimestamped(lines[-1]) if lines else None


def _qemu_failed(proc, qemu_log: Path) -> str:
    text = _untimestamped(last_output_line(proc))
    if not text:
        text = _last_line(qemu_log) or ""
    return f"{QEMU} failed to start (exit {proc.returncode})" + (f": {text}" if text else "")

