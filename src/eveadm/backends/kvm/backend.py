"""kvm brand: QEMU (KVM when usable, else TCG software emulation) driven over QMP.

How a domain maps onto QEMU (after EVE's kvm.go, without containerd):

  create_paused     qemu-system-x86_64 ... -S -no-shutdown -daemonize -pidfile P
                    QMP `query-status` must then say `prelaunch`
  unpause           [bridge the taps, set the VNC password] QMP `cont`, then `query-status`
  shutdown GRACEFUL QMP `system_powerdown` (ACPI power button: the guest decides)
  shutdown FORCED   QMP `quit`. QEMU has no "forced ACPI" request, so the forced rung pulls the plug.
  destroy           SIGKILL to the QEMU process
  status            pid alive (and really our QEMU) + QMP `query-status`, all domains in one event loop
  kill              a signal to the QEMU process

The command line is rendered in `argv.py`, the QMP sessions live in `qmp.py`.

Why `-daemonize` and not Popen: QEMU's parent process exits only after the
child has finished initialising (sockets listening, pid file written), with
QEMU's own exit status and error text when it could not start (bad disk,
unknown option). So create_paused is synchronous, goes through ctx.run (and
the command log) like every other command, and the QEMU process is never a
child of the eveadm process (no zombie, no inherited descriptors, it outlives
the CLI). `-D <data_dir>/qemu.log` keeps QEMU's stderr after it detaches.

Telling a clean poweroff from a dead QEMU: QEMU runs with `-no-shutdown`, so
a guest that powers off leaves QEMU alive in run state `shutdown`; `status`
reports that as SHUTDOWN and changes nothing (the engine then destroys it).
Every quit or SIGKILL eveadm sends itself is preceded by the marker
`<run_dir>/ended` ("quit"): a QEMU found dead with the marker was ended by
eveadm (ABSENT), one found dead without it died from outside (signal, OOM
killer, crash): CRASHED, with the last line QEMU wrote to its log.

Sockets: a unix socket path may have at most 107 bytes, and a state root can be
any length, so QEMU's sockets live in a short directory of their own,
`argv.socket_dir` (/run/eveadm-qemu/<16 hex>/ as root), owner-only, named by a
digest of the domain's run directory (so every command finds it, even one that
knows only the pid file), with a file `owner` naming that run directory (so
`doctor` can tell whose it is). It is recorded in dom.backend["sock_dir"] and
removed at release.

Panics: QEMU gets an ISA `pvpanic` device and `-action panic=pause`: a guest
kernel that panics leaves QEMU in run state `guest-panicked`, which status
reports as CRASHED "guest panicked" (the engine then fails the domain and its
on_crash applies).

Two QMP monitors: `qmp.sock` for short-lived commands (connect, command,
disconnect) and `qmp-events.sock`, used only by `wait_gone` to wait for the
SHUTDOWN event without holding the command monitor (QEMU serves one client
per monitor).
"""

from __future__ import annotations

import os
import re
import signal as _signal
import stat
import time
from pathlib import Path
from typing import Iterable

from ... import privatedir
from ...errors import BackendError, BackendUnavailable, EveadmError, PermanentError
from ..base import ABSENT, CRASHED, FORCED, GRACEFUL, PAUSED, RUNNING, SHUTDOWN, Backend, Domain, Orphan, Status
from ..host import last_output_line, pid_alive, proc_argv, read_pid, wait_until, which
from ..vm import cloudinit, disks, pci
from ..vm.kernel import not_a_kernel
from . import argv as qemu_argv
from . import hotplug
from . import nics as host_nics
from .argv import QEMU, SOCKET_FILES, SOCKETS, esc, paths, socket_base
from .qmp import BROKEN_STATES, PAUSED_STATES, QMP_TIMEOUT, QmpError, describe, qmp, qmp_many, wait_shutdown_event

QEMU_HINT = "apt-get install qemu-system-x86"
STATUS_TIMEOUT = 1.5  # s: how long status waits for a monitor before trusting the live process
START_TIMEOUT = 10.0  # s: for the QMP socket of a QEMU that has just daemonized
CRASH_MESSAGE = "qemu crashed - please restart application instance"
SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, without the terminating NUL
ENDED_BY_EVEADM = "quit"  # the marker's text: eveadm quit or killed this QEMU
GUEST_PANICKED = "guest panicked"  # Status.error when the guest's kernel panicked (pvpanic)
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# QEMU's words for start-up failures no retry can fix: a file that is missing, unreadable or not
# what it claims to be (kernel, initrd, firmware, disk image)
PERMANENT_QEMU_ERRORS = re.compile(
    r"invalid kernel header|could not open kernel file|could not load|error reading initrd|"
    r"Error loading uncompressed kernel|"
    r"kernel too old|Image is not in \S+ format|Unknown driver|Could not open '[^']*': "
    r"(No such file or directory|Permission denied|Is a directory|Not a directory)|"
    r"is not a valid|Unsupported (image|qcow2) ", re.IGNORECASE)


class KvmBackend(Backend):
    # -- availability ------------------------------------------------------
    def check_available(self) -> None:
        if not which(QEMU):
            raise BackendUnavailable(f"brand kvm needs {QEMU}: {QEMU_HINT}")

    def accel(self, dom: Domain | None = None) -> tuple[str, str]:
        return qemu_argv.choose_accel(self.ctx, dom.config if dom else None)

    def validate(self, config: dict) -> list[tuple[str, str]]:
        problems = []
        mode = config.get("virt_mode", "hvm")
        if mode in ("pv", "pvh"):
            problems.append(("virt_mode", f"{mode} is a xen mode; kvm runs hvm or fml"))
        if mode == "fml" and not config.get("firmware"):
            for path in qemu_argv.ovmf(self.ctx):
                if not os.path.isfile(path):
                    problems.append(("firmware", f"virt_mode fml without firmware uses the host's OVMF, and "
                                                 f"{path} is missing: {qemu_argv.OVMF_HINT}, or give firmware"))
                    break
        machine = str(config.get("machine", "q35"))
        ports = qemu_argv.IDE_PORTS.get(qemu_argv.ide_controller(config))
        taken = qemu_argv.ide_count(config, cloudinit.wanted(config))
        if ports is not None and taken > ports:
            problems.append(("disks", f"machine {machine} has {ports} IDE/SATA ports; the ide disks and cdroms "
                                      f"(and the cloud-init seed) need {taken}: give some model virtio or scsi"))
        for key in ("kernel", "initrd", "firmware"):
            if config.get(key) and not os.path.isfile(config[key]):
                problems.append((key, f"{config[key]} does not exist"))
            elif config.get(key) and not os.access(config[key], os.R_OK):
                problems.append((key, f"{config[key]} cannot be read"))
        if config.get("kernel") and os.path.isfile(config["kernel"]):
            why = not_a_kernel(config["kernel"])
            if why:
                problems.append(("kernel", why))
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
        problems += host_nics.problems(self.ctx, config)
        return problems

    # -- rendering ---------------------------------------------------------
    def argv(self, dom: Domain) -> list[list[str]]:
        """QEMU's argv as groups (program, then one option with its value per group)."""
        return qemu_argv.groups(self.ctx, dom)

    def render(self, dom: Domain) -> str:
        return qemu_argv.render(self.argv(dom))

    # -- lifecycle primitives ----------------------------------------------
    def prepare(self, dom: Domain) -> None:
        Path(dom.data_dir).mkdir(parents=True, exist_ok=True)
        disks.prepare(self.ctx, dom)
        if cloudinit.wanted(dom.config):
            dom.backend["cidata"] = str(cloudinit.build(self.ctx, dom))
        p = paths(dom)
        if dom.config.get("virt_mode") == "fml" and not dom.config.get("firmware"):
            _ovmf_vars(qemu_argv.ovmf(self.ctx)[1], p["ovmf_vars"])
        p["argv_file"].write_text(self.render(dom))
        dom.backend["argv_file"] = str(p["argv_file"])
        pci.reserve(self, dom)

    def create_paused(self, dom: Domain) -> Status:
        self.check_available()
        p = paths(dom)
        run = Path(dom.run_dir)
        run.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(run, 0o700)
        _check_readable(dom.config)
        for key in SOCKETS:
            n = len(os.fsencode(str(p[key])))
            if n > SUN_PATH_MAX:
                raise PermanentError(f"socket path {p[key]} is {n} bytes, more than the {SUN_PATH_MAX} a unix "
                                     "socket allows: set EVEADM_KVM_SOCKET_DIR to a shorter directory")
        _socket_dir(p["sock_dir"])
        # recorded before QEMU starts: release and doctor find the directory even if this command dies
        dom.backend["sock_dir"] = str(p["sock_dir"])
        privatedir.write_private(p["sock_owner"], os.path.abspath(dom.run_dir) + "\n")
        for key in (*SOCKETS, "pidfile", "ended"):
            p[key].unlink(missing_ok=True)
        Path(dom.data_dir).mkdir(parents=True, exist_ok=True)
        # eveadm makes the taps (QEMU only opens them): recorded first, so release finds them whatever happens
        dom.backend["taps"] = [e["tap"] for e in host_nics.plan(self.ctx, dom) if e["tap"]]
        host_nics.create_taps(self.ctx, dom)
        accel, why = self.accel(dom)
        argv = qemu_argv.flat(self.argv(dom)) + ["-daemonize"]
        old = os.umask(0o077)  # sockets, pid file and logs readable by root only
        try:
            proc = self.ctx.run(argv, timeout=60, check=False, install_hint=QEMU_HINT)
        finally:
            os.umask(old)
        if proc.returncode != 0:
            message = _qemu_failed(proc, p["qemu_log"])
            raise (PermanentError if PERMANENT_QEMU_ERRORS.search(message) else BackendError)(message)
        pid = read_pid(p["pidfile"])
        if pid is None:
            raise BackendError(f"{QEMU} started but wrote no pid file {p['pidfile']}")
        dom.backend.update({
            "pid": pid, "accel": accel, "accel_reason": why, "machine": dom.config.get("machine", "q35"),
            "qmp": str(p["qmp"]), "qmp_events": str(p["events"]), "serial": str(p["serial"]),
            "serial_log": str(p["serial_log"]), "qemu_log": str(p["qemu_log"]), "pidfile": str(p["pidfile"]),
            "started": time.time(),
        })
        dom.backend.pop("ended", None)
        if not wait_until(lambda: p["qmp"].exists() or not pid_alive(pid), START_TIMEOUT):
            self._sigkill(dom, pid, START_TIMEOUT)
            raise BackendError(f"{QEMU} (pid {pid}) opened no QMP socket within {START_TIMEOUT:g} s")
        try:
            status = qmp(p["qmp"], "query-status")[0]["status"]
        except QmpError as exc:
            self._sigkill(dom, pid, START_TIMEOUT)
            raise BackendError(f"{QEMU} (pid {pid}) started but QMP failed: {exc}") from None
        if status != "prelaunch":
            self._sigkill(dom, pid, START_TIMEOUT)
            raise BackendError(f"{QEMU} (pid {pid}) is in state {status!r}, expected 'prelaunch'")
        # QEMU's -daemonize sets umask 027: make the sockets and the console log owner-only
        for key in ("qmp", "events", "serial", "serial_log"):
            try:
                os.chmod(p[key], 0o600)
            except OSError:
                pass
        self._pin(dom, pid)
        return Status(PAUSED, domain_id=pid, pid=pid, detail={"qemu_status": status})

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
        host_nics.join_bridges(self.ctx, dom)
        cmds: list = []
        if dom.config.get("vnc_password") and int(dom.config.get("vnc_port", -1)) >= 0:
            cmds.append(("change-vnc-password", {"password": dom.config["vnc_password"]}))
        cmds += hotplug.boot_commands(dom.config)
        cmds += ["cont", "query-status"]
        pid = self._pid(dom)
        try:
            qs = qmp(self._sock(dom), *cmds)[-1]["status"]
        except QmpError:
            if pid and not self._alive(dom):  # QEMU died on the way: say how, as status would
                return self._dead_status(dom, pid)
            raise
        st = self._run_state_status(dom, pid, qs)
        if st.state == PAUSED:
            raise BackendError(f"{dom.name}: QMP cont left QEMU in state {qs!r}, not 'running'")
        return st

    def change_live(self, dom: Domain, key: str, old, new) -> None:
        """Disks, nics, ram and vcpus over QMP (hotplug.py); everything else at the next start."""
        hotplug.change(self.ctx, dom, key, old, new)

    def shutdown(self, dom: Domain, kind: str, timeout: float) -> None:
        if kind not in (GRACEFUL, FORCED):
            raise ValueError(f"unknown shutdown kind {kind!r}")
        if not self._alive(dom):
            return
        budget = max(0.1, min(QMP_TIMEOUT, timeout))
        if kind == FORCED:
            # QEMU has no forced ACPI request: the forced rung is `quit` (pulling the plug)
            self._mark_ended(dom)
            qmp(self._sock(dom), "quit", timeout=budget)
        else:
            qmp(self._sock(dom), "system_powerdown", timeout=budget)

    def destroy(self, dom: Domain, timeout: float = 10) -> None:
        pid = self._pid(dom)
        if pid and self._alive(dom):
            self._sigkill(dom, pid, timeout)

    def _sigkill(self, dom: Domain, pid: int, timeout: float) -> None:
        """Mark the end as eveadm's, SIGKILL QEMU (stopped or not), wait for the kernel to reap it."""
        self._mark_ended(dom)
        try:
            os.kill(pid, _signal.SIGKILL)
        except ProcessLookupError:
            return
        if not wait_until(lambda: not pid_alive(pid), timeout):
            raise BackendError(f"{QEMU} pid {pid} survived SIGKILL for {timeout:g} s")

    def _mark_ended(self, dom: Domain) -> None:
        dom.backend["ended"] = ENDED_BY_EVEADM
        try:
            paths(dom)["ended"].write_text(ENDED_BY_EVEADM + "\n")
        except OSError:
            pass

    def _ended(self, dom: Domain) -> str | None:
        try:
            return paths(dom)["ended"].read_text().strip() or None
        except OSError:
            return dom.backend.get("ended")

    def _pid(self, dom: Domain) -> int | None:
        """The recorded QEMU pid; else the pid file's when that process is this domain's QEMU (a
        command killed between starting QEMU and recording its pid leaves only the pid file).
        Only read: the pid is recorded by create_paused, never by a status."""
        pid = dom.backend.get("pid")
        if pid:
            return pid
        pid = read_pid(paths(dom)["pidfile"])
        return pid if pid_alive(pid) and self._is_ours(dom, pid) else None

    def _sock(self, dom: Domain) -> Path:
        return Path(dom.backend.get("qmp") or paths(dom)["qmp"])

    def _alive(self, dom: Domain) -> bool:
        """The domain's QEMU pid is alive and is this domain's QEMU (not a recycled pid)."""
        pid = self._pid(dom)
        return pid_alive(pid) and self._is_ours(dom, pid)

    def _is_ours(self, dom: Domain, pid: int) -> bool:
        sock = os.fsencode(esc(self._sock(dom)))
        return any(sock in arg for arg in proc_argv(pid))

    # -- status ---------------------------------------------------------------
    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        """A pure read: pids, the ended marker, QEMU's log, and one QMP query-status per live
        QEMU, all asked at once; a monitor that does not answer within STATUS_TIMEOUT leaves
        its domain RUNNING (the process is there) with detail qmp_error."""
        out: dict[str, Status] = {}
        alive: dict[str, tuple[Domain, int]] = {}
        for dom in doms:
            pid = self._pid(dom)
            if not pid:
                out[dom.uuid] = Status(ABSENT)
            elif self._alive(dom):
                alive[dom.uuid] = (dom, pid)
            else:
                out[dom.uuid] = self._dead_status(dom, pid)
        answers = qmp_many({u: (self._sock(d), ["query-status"]) for u, (d, _) in alive.items()},
                           timeout=STATUS_TIMEOUT)
        for uuid, (dom, pid) in alive.items():
            ans = answers[uuid]
            if not isinstance(ans, BaseException):
                out[uuid] = self._run_state_status(dom, pid, ans[0].get("status"))
            elif not self._alive(dom):  # died while we asked (a quit, a poweroff, a kill)
                out[uuid] = self._dead_status(dom, pid)
            else:
                # the process is there but its monitor did not answer (busy, stopped, another client,
                # leaving after a quit): trust the process, never call a live QEMU gone
                detail = self._detail(dom)
                detail["qmp_error"] = describe(ans)
                out[uuid] = Status(RUNNING, domain_id=pid, pid=pid, detail=detail)
        return out

    def stats(self, doms: Iterable[Domain]) -> dict[str, dict]:
        """A pure read of every live QEMU's counters at once (kvm/stats.py)."""
        from .stats import read

        return read({d.uuid: (self._pid(d), str(self._sock(d)), list(d.backend.get("taps") or []))
                     for d in doms if self._alive(d)})

    def _detail(self, dom: Domain) -> dict:
        return {"accel": dom.backend.get("accel"), "qmp": str(self._sock(dom))}

    def _run_state_status(self, dom: Domain, pid: int | None, qs: str | None) -> Status:
        """QEMU's run state (query-status) -> Status."""
        detail = self._detail(dom)
        detail["qemu_status"] = qs
        if qs == "running":
            return Status(RUNNING, domain_id=pid, pid=pid, detail=detail)
        if qs in PAUSED_STATES:
            return Status(PAUSED, domain_id=pid, pid=pid, detail=detail)
        if qs == "shutdown":  # the guest powered off; QEMU lingers because of -no-shutdown
            return Status(SHUTDOWN, domain_id=pid, pid=pid, detail=detail)
        if qs == "guest-panicked":  # pvpanic with -action panic=pause
            return Status(CRASHED, domain_id=pid, pid=pid, detail=detail, error=GUEST_PANICKED)
        # internal-error, io-error, ... (BROKEN_STATES) or a state this QEMU invented since
        why = "guest crashed" if qs in BROKEN_STATES else "unexpected run state"
        return Status(CRASHED, domain_id=pid, pid=pid, detail=detail, error=f"{why}: qemu status {qs}")

    def _dead_status(self, dom: Domain, pid: int) -> Status:
        if self._ended(dom) == ENDED_BY_EVEADM:
            return Status(ABSENT, pid=pid)
        last = _log_last_line(Path(dom.backend.get("qemu_log") or paths(dom)["qemu_log"]),
                              since=dom.backend.get("started"))
        why = f": {last}" if last else ""
        return Status(CRASHED, pid=pid, error=f"{CRASH_MESSAGE} ({QEMU} pid {pid} died{why})")

    def wait_gone(self, dom: Domain, timeout: float) -> bool:
        """Event-driven: wait for SHUTDOWN on the event monitor (or QEMU's death), then confirm."""
        def gone() -> bool:
            return self.status([dom])[dom.uuid].gone

        deadline = time.monotonic() + timeout
        pid = self._pid(dom)
        if not pid or not self._alive(dom):
            return gone()
        events = Path(dom.backend.get("qmp_events") or paths(dom)["events"])
        how = wait_shutdown_event(events, pid, timeout)
        left = deadline - time.monotonic()
        if how == "timeout":
            return gone()
        if how == "unavailable":
            return wait_until(gone, max(left, 0), cap=0.05)
        # the run state follows the SHUTDOWN event by a few ms
        return wait_until(gone, max(left, 2.0), cap=0.05)

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        """Also ends a QEMU still lingering in run state `shutdown` (what create left behind); raises
        BackendError, after everything else is done, when a PCI device could not be given back."""
        pid = self._pid(dom)
        if pid and self._alive(dom):
            self.destroy(dom)
        p = paths(dom)
        removed: list[str] = []
        for key in ("pidfile", "ended", "console_lock"):
            p[key].unlink(missing_ok=True)
        # sockets where this domain's QEMU had them: its socket directory, or (records written before
        # socket directories) the run directory; nothing outside those two
        ours = {Path(dom.run_dir), p["sock_dir"]}
        for key in ("qmp", "qmp_events", "serial"):
            recorded = dom.backend.get(key)
            if recorded and Path(recorded).parent in ours:
                Path(recorded).unlink(missing_ok=True)
        _remove_socket_dir(p["sock_dir"], os.path.abspath(dom.run_dir))
        # the taps recorded at create (and in the run directory's intent record), and the configured ones
        try:
            configured = [e["tap"] for e in host_nics.plan(self.ctx, dom) if e["tap"]]
        except BackendError:  # a network store that cannot be read: the recorded taps are enough
            configured = []
        tap_errors = host_nics.delete_taps(self.ctx, dom, [*dom.backend.get("taps", []), *configured])
        if not tap_errors:
            dom.backend.pop("taps", None)
        try:
            Path(dom.run_dir).rmdir()
        except OSError:
            pass
        removed += disks.release(dom, delete=delete)
        pci_errors = pci.give_back(self, dom)
        if delete:
            for path in (p["argv_file"], p["serial_log"], p["qemu_log"], cloudinit.iso_path(dom), p["ovmf_vars"]):
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
        for key in ("pid", "ended", "qmp", "qmp_events", "serial", "pidfile", "started", "sock_dir", "hotplug"):
            dom.backend.pop(key, None)
        if pci_errors:
            raise BackendError(f"{dom.name}: PCI devices not given back: " + "; ".join(pci_errors))
        if tap_errors:
            raise BackendError(f"{dom.name}: taps not deleted: " + "; ".join(tap_errors))
        return removed

    # -- doctor -----------------------------------------------------------------
    def orphans(self, known: set[str]) -> list[Orphan]:
        """QEMU processes started by eveadm for a domain of this state root that is not in `known`
        (told by their `-pidfile <run_root>/<uuid>/qemu.pid`), then socket directories whose `owner`
        names such a domain's run directory. Never any other QEMU. A pure read."""
        run_root = os.path.abspath(self.ctx.run_root_dir)
        found = []
        for pid, argv in _qemu_processes():
            uuid = _domain_of(argv, run_root)
            if uuid and uuid not in known:
                found.append(Orphan("process", str(pid), uuid, f"{QEMU} of domain {uuid}"))
        base = socket_base()
        try:
            names = sorted(os.listdir(base))
        except OSError:
            names = []
        for name in names:
            owner = _socket_dir_owner(base / name)
            uuid = os.path.basename(owner or "")
            if owner and os.path.dirname(owner) == run_root and UUID_RE.match(uuid) and uuid not in known:
                found.append(Orphan("socket-dir", str(base / name), uuid, f"QEMU sockets of domain {uuid}"))
        for tap, uuid in host_nics.orphan_taps(self.ctx, known):
            found.append(Orphan("tap", tap, uuid, f"tap {tap} of domain {uuid}"))
        return found

    def remove_orphan(self, orphan: Orphan) -> None:
        run_root = os.path.abspath(self.ctx.run_root_dir)
        if orphan.kind == "process":
            pid = int(orphan.ident)
            argv = proc_argv(pid)
            if not argv or _domain_of(argv, run_root) != orphan.uuid:
                return  # gone already, or the pid now belongs to another process: nothing of ours
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                return
            if not wait_until(lambda: not pid_alive(pid), 10):
                raise BackendError(f"{QEMU} pid {pid} survived SIGKILL for 10 s")
        elif orphan.kind == "socket-dir":
            path = Path(orphan.ident)
            if path.parent != socket_base():
                raise BackendError(f"{path} is not under {socket_base()}: not removed")
            _remove_socket_dir(path, os.path.join(run_root, orphan.uuid or ""))
        elif orphan.kind == "tap":
            host_nics.remove_orphan_tap(self.ctx, orphan.ident, orphan.uuid or "")
        else:
            super().remove_orphan(orphan)

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
        from .. import console

        if not self._alive(dom):
            raise BackendError(f"{dom.name} is not running: no console")
        p = paths(dom)
        return console.attach(dom.backend.get("serial") or p["serial"], p["console_lock"], name=dom.name)

    def console_log(self, dom: Domain) -> Path | None:
        return Path(dom.backend.get("serial_log") or paths(dom)["serial_log"])

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
            "nics": self._nic_info(dom),
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

    def _nic_info(self, dom: Domain) -> list[dict]:
        addresses = self.nic_addresses(dom)
        return [{"mac": e["mac"], "tap": e["tap"], "bridge": e["bridge"], "network": e["network"],
                 "mtu": e["mtu"], "ip": ip, "tap_present": bool(e["tap"]) and host_nics.is_tap(e["tap"])}
                for e, ip in zip(host_nics.plan(self.ctx, dom), addresses)]

    def nic_addresses(self, dom: Domain) -> list[str | None]:
        """Each nic's IPv4 address (None when unknown): the static `ip`, else its network's dnsmasq lease
        for the nic's mac. A read of the config and the lease file; nothing is asked of the guest."""
        return host_nics.addresses(self.ctx, dom)

    def host_info(self) -> dict:
        path = which(QEMU)
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
# QEMU's own words. Its log is a file, not a command's output, hence not host.last_output_line.

def _untimestamped(line: str) -> str:
    """QEMU runs with -msg timestamp=on: drop the leading ISO time from a message."""
    import re

    return re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?\s+", "", line)


def _log_last_line(path: Path, since: float | None = None) -> str | None:
    """The last non-empty line QEMU wrote to its log (stderr), if written during this run."""
    try:
        if since and path.stat().st_mtime < since - 1:
            return None
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return _untimestamped(lines[-1]) if lines else None


def _qemu_failed(proc, qemu_log: Path) -> str:
    text = _untimestamped(last_output_line(proc)) or _log_last_line(qemu_log) or ""
    return f"{QEMU} failed to start (exit {proc.returncode})" + (f": {text}" if text else "")



# ---------------------------------------------------------------------------
# files: the socket directory, QEMU processes

def _check_readable(config: dict) -> None:
    """The files QEMU loads itself: missing or unreadable is permanent (no retry brings them back)."""
    for key in ("kernel", "initrd", "firmware"):
        path = config.get(key)
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise PermanentError(f"{key} {path} cannot be read: {exc.strerror}") from None
    if config.get("kernel"):
        why = not_a_kernel(config["kernel"])
        if why:
            raise PermanentError(f"kernel {why}")


def _socket_dir(path: Path) -> None:
    """Make the domain's socket directory and its parent owner-only (0700), or refuse ones another user
    could change (someone else's, a symlink, writable by others, under a directory not root's or ours)."""
    try:
        for directory, ancestors in ((path.parent, True), (path, False)):
            privatedir.ensure(str(directory), check_ancestors=ancestors)
            os.chmod(directory, 0o700)  # checked ours just now; nobody else may even list the sockets
    except privatedir.UnsafeDirectory as exc:
        raise PermanentError(f"{exc}: remove it or set EVEADM_KVM_SOCKET_DIR") from None
    except EveadmError as exc:
        raise BackendError(str(exc)) from None


def _ovmf_vars(template: str, path: Path) -> None:
    """The domain's own UEFI variable store, copied from OVMF's template at the first start and kept
    until delete (boot entries a guest installer writes survive a restart)."""
    if path.exists():
        return
    try:
        with open(template, "rb") as src:
            data = src.read()
    except OSError as exc:
        raise PermanentError(f"OVMF variable store {template} cannot be read: {exc.strerror} "
                             f"({qemu_argv.OVMF_HINT})") from None
    privatedir.write_private(path, data)


def _socket_dir_owner(path: Path) -> str | None:
    """The run directory a socket directory was made for, when it is ours (a real directory of this
    user with an `owner` file); else None."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return None
        fd = os.open(path / "owner", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as fh:
            return fh.read(4096).strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _remove_socket_dir(path: Path, run_dir: str) -> None:
    """Remove a domain's socket directory if it is the one made for `run_dir`: its sockets and its
    owner file (never following a link), then the directory."""
    owner = _socket_dir_owner(path)
    if owner is None:
        return
    if owner != run_dir:
        raise BackendError(f"{path} belongs to {owner}, not {run_dir}: not removed")
    for name in (*SOCKET_FILES.values(), "owner"):
        try:
            os.unlink(path / name)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _qemu_processes():
    """(pid, argv) of every QEMU process on the host."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = proc_argv(int(entry))
            if argv and os.path.basename(argv[0]).startswith(b"qemu-system") and pid_alive(int(entry)):
                yield int(entry), argv


def _domain_of(argv: list[bytes], run_root: str) -> str | None:
    """The uuid of the domain a QEMU was started for by eveadm under `run_root`: its
    `-pidfile <run_root>/<uuid>/qemu.pid`; None for any other QEMU."""
    try:
        pidfile = os.fsdecode(argv[argv.index(b"-pidfile") + 1])
    except (ValueError, IndexError):
        return None
    run_dir = os.path.dirname(pidfile)
    uuid = os.path.basename(run_dir)
    if os.path.basename(pidfile) == "qemu.pid" and os.path.dirname(run_dir) == run_root and UUID_RE.match(uuid):
        return uuid
    return None
