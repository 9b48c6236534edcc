"""The cut-off between eveadm's lifecycle policy and the things that run domains.

A backend knows how to do a handful of primitive things to one kind of domain
(kvm, xen, container, rkt, null) and nothing else:

    render        -> the artefact it would use (xl cfg, QEMU argv, config.json), no side effects
    prepare       -> write that artefact and the disk copies under the domain's directories
    create_paused -> make the domain exist with its CPUs / process stopped
    unpause       -> let it run
    shutdown      -> ask it to stop (force=False: graceful; force=True: the forced request)
    destroy       -> make it gone now
    status        -> what is true right now, for ALL the given domains in one call
    release       -> remove what prepare/create left behind once the domain is gone

Retries, the stop ladder (graceful -> forced -> destroy), locks, state
transitions and events live once, above this, in `eveadm.lifecycle`. A backend
never changes a domain's eveadm state and never sleeps to implement policy.

Everything a backend wants to remember about a domain between commands (pid,
domid, socket paths, rendered files, disk copies) goes into the plain dict
`dom.backend`; the engine persists it after every call, even a failing one.
"""

from __future__ import annotations

import json
import os
import signal as _signal
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import BackendError, BackendUnavailable, NotSupported

# What `status()` can say about a domain.
ABSENT = "absent"  # the backend has no such domain (never created, destroyed, or vanished)
PAUSED = "paused"  # exists, CPUs / process not running yet (created paused, or paused)
RUNNING = "running"  # exists and runs
SHUTDOWN = "shutdown"  # guest/program ended by itself, cleanly (powered off, exited)
CRASHED = "crashed"  # the VMM / process died or was killed from outside; Status.error says how


# subprocess is imported lazily (CLI start-up); these equal subprocess.PIPE / DEVNULL
PIPE, DEVNULL = -1, -3


class Status:
    """What a backend says of one domain right now."""

    __slots__ = ("state", "domain_id", "pid", "exit_status", "error", "detail")

    def __init__(self, state: str, domain_id: int | None = None, pid: int | None = None,
                 exit_status: int | None = None, error: str | None = None, detail: dict | None = None):
        self.state = state
        self.domain_id = domain_id  # xen domid, qemu pid, container pid
        self.pid = pid
        self.exit_status = exit_status  # containers: the program's exit status
        self.error = error  # CRASHED / odd states: what happened, in words for the operator
        self.detail = detail if detail is not None else {}  # extra runtime facts

    @property
    def gone(self) -> bool:
        return self.state in (ABSENT, SHUTDOWN, CRASHED)

    def __repr__(self) -> str:
        return f"Status({self.state!r}, domain_id={self.domain_id}, pid={self.pid}, " \
               f"exit_status={self.exit_status}, error={self.error!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Status) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


class Domain:
    """What a backend sees of one domain."""

    __slots__ = ("uuid", "config", "backend", "_data_dir", "_run_dir", "_parents")

    def __init__(self, uuid: str, config: dict, backend: dict, data_dir: Path | None = None,
                 run_dir: Path | None = None, *, parents: tuple[Path, Path] | None = None):
        self.uuid = uuid
        self.config = config  # validated payload with defaults applied (see eveadm.schema)
        self.backend = backend  # backend-owned, persisted by the engine
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._parents = parents  # (domains dir, run dir): paths made on first use (list stays fast)

    @property
    def data_dir(self) -> Path:
        """<root>/domains/<uuid>: rendered files, disk copies (kept across stop/start)."""
        if self._data_dir is None:
            self._data_dir = self._parents[0] / self.uuid
        return self._data_dir

    @property
    def run_dir(self) -> Path:
        """<root>/run/<uuid>: sockets, pid files, logs of the current run."""
        if self._run_dir is None:
            self._run_dir = self._parents[1] / self.uuid
        return self._run_dir

    @property
    def alias(self) -> str | None:
        return self.config.get("alias")

    @property
    def brand(self) -> str:
        return self.config["brand"]

    @property
    def name(self) -> str:
        """Name given to the hypervisor: alias.uuid8 when there is an alias (domainmgr: DisplayName.AppNum)."""
        alias = self.config.get("alias")
        return f"{alias}.{self.uuid[:8]}" if alias else self.uuid


class BackendContext:
    """Host-wide facts a backend may use: state root, settings, and the command runner.

    Settings come from `<root>/config.json` (a flat JSON object, e.g.
    {"kvm.accel": "tcg", "container.runtime": "runc"}) and are overridden by
    environment variables EVEADM_<KEY> with dots and dashes as underscores
    (EVEADM_KVM_ACCEL=tcg).
    """

    def __init__(self, root: Path, run_root: Path | None = None):
        self.root = Path(root)
        self.run_root = Path(run_root) if run_root else self.root / "run"
        self._settings: dict | None = None

    # -- settings --------------------------------------------------------
    def setting(self, key: str, default: Any = None) -> Any:
        env = os.environ.get("EVEADM_" + key.upper().replace(".", "_").replace("-", "_"))
        if env is not None:
            return env
        if self._settings is None:
            try:
                self._settings = json.loads((self.root / "config.json").read_text())
            except FileNotFoundError:
                self._settings = {}
            except (OSError, ValueError) as exc:
                raise BackendError(f"cannot read {self.root / 'config.json'}: {exc}") from None
        return self._settings.get(key, default)

    def cache_dir(self, name: str) -> Path:
        """A per-host cache (probe results, unpacked images) that survives domains."""
        path = self.root / "cache" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- external commands ------------------------------------------------
    @property
    def command_log(self) -> Path:
        return self.root / "log" / "commands.jsonl"

    def run(
        self,
        argv: list[str],
        *,
        timeout: float = 60,
        env: dict | None = None,
        cwd: str | Path | None = None,
        check: bool = True,
        install_hint: str | None = None,
        input: bytes | None = None,
        stdin: Any = DEVNULL,
        stdout: Any = PIPE,
        stderr: Any = PIPE,
    ):
        """Run one external command from an argument list (never a shell).

        `stdin=None, stdout=None, stderr=None, timeout=None` runs an interactive program on the
        caller's terminal (e.g. `xl console`). Every call is appended to <root>/log/commands.jsonl (argv, the env
        variables added, rc) so what eveadm issued can be audited and tested.
        A missing program raises BackendUnavailable naming `install_hint`; a
        non-zero exit raises BackendError with the command's own stderr when
        `check` is true.
        """
        import subprocess

        argv = [str(a) for a in argv]
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update({k: str(v) for k, v in env.items()})
        started = time.time()
        try:
            proc = subprocess.run(
                argv, env=full_env, cwd=cwd, timeout=timeout, input=input,
                stdout=stdout, stderr=stderr, stdin=None if input is not None else stdin,
            )
        except FileNotFoundError:
            self._log(argv, env, None, started)
            hint = f": {install_hint}" if install_hint else ""
            raise BackendUnavailable(f"{argv[0]} not found{hint}") from None
        except subprocess.TimeoutExpired:
            self._log(argv, env, "timeout", started)
            raise BackendError(f"{' '.join(argv)} did not finish within {timeout:g}s") from None
        self._log(argv, env, proc.returncode, started)
        if check and proc.returncode != 0:
            raise BackendError(command_error(argv, proc))
        return proc

    def _log(self, argv, env, rc, started) -> None:
        entry = {"time": started, "argv": argv, "rc": rc}
        if env:
            entry["env"] = {k: str(v) for k, v in env.items()}
        try:
            self.command_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.command_log, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError:
            pass  # the audit log must never break an operation


def last_output_line(proc) -> str:
    """The last non-empty line a finished command printed: stderr first, else stdout."""
    for stream in (proc.stderr, proc.stdout):
        if stream:
            raw = stream.decode(errors="replace") if isinstance(stream, bytes) else stream
            lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
    return ""


def command_error(argv: list[str], proc) -> str:
    """One line: the command and the last meaningful line it printed."""
    text = last_output_line(proc)
    prog = os.path.basename(argv[0])
    sub = " ".join(argv[1:3])
    return f"{prog} {sub} failed (exit {proc.returncode})" + (f": {text}" if text else "")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, first: float = 0.005, cap: float = 0.1) -> bool:
    """Poll `predicate` quickly (5 ms, doubling to 100 ms) until true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        if predicate():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, cap)


class Backend:
    """Base class and contract of every backend. Subclasses set `brand` and override the primitives."""

    brand: str = ""
    # default graceful budget (s) when the payload has no stop_timeout
    default_stop_timeout: int = 60

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx

    # -- availability and validation --------------------------------------
    def check_available(self) -> None:
        """Raise BackendUnavailable (one line naming what to install / why) if this host cannot run the brand."""

    def validate(self, config: dict) -> list[tuple[str, str]]:
        """Brand-specific checks of a payload already valid by the schema: [(property path, message)]."""
        return []

    def render(self, dom: Domain) -> str:
        """Text of the artefact create would use (xl cfg, QEMU argv, config.json, rkt argv + env)."""
        return json.dumps(dom.config, indent=2, sort_keys=True)

    # -- lifecycle primitives ----------------------------------------------
    def prepare(self, dom: Domain) -> None:
        """Write the rendered artefact and make disk copies (idempotent; before each create)."""

    def create_paused(self, dom: Domain) -> "Status | None":
        """Create the domain with its CPUs / process stopped. Raise BackendError on failure.
        May return the Status it has just verified (saves the engine a status() round trip)."""
        raise NotImplementedError

    def unpause(self, dom: Domain) -> "Status | None":
        """Let the domain run. May return the Status it has just verified (RUNNING), else the
        engine polls status() until the domain is no longer paused."""
        raise NotImplementedError

    def shutdown(self, dom: Domain, force: bool = False) -> None:
        """Send the graceful (or forced) stop request and return without waiting."""
        raise NotImplementedError

    def destroy(self, dom: Domain) -> None:
        """Make the domain gone now. Must not fail when it is already gone."""
        raise NotImplementedError

    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        """The truth for every domain given, asked of the backend once (not once per domain)."""
        raise NotImplementedError

    def wait_gone(self, dom: Domain, timeout: float) -> bool:
        """Wait until the domain is gone (ABSENT/SHUTDOWN/CRASHED). Override with an event-driven wait."""
        return wait_until(lambda: self.status([dom])[dom.uuid].gone, timeout)

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        """After the domain is gone: remove run-time leftovers and non-preserved disk copies;
        with delete=True also the rendered files and preserved copies. Return the paths removed.
        Never remove a file the user pointed at."""
        return []

    # -- optional ------------------------------------------------------------
    def kill(self, dom: Domain, sig: int = _signal.SIGKILL) -> None:
        raise NotSupported(f"brand {self.brand} cannot send signals")

    def console(self, dom: Domain) -> int:
        """Attach the calling terminal to the domain's console; return an exit code."""
        raise NotSupported(f"brand {self.brand} has no console")

    def console_log(self, dom: Domain) -> Path | None:
        """Path of the kept console / stdout log, if any."""
        return None

    def info(self, dom: Domain) -> dict:
        """Backend runtime detail for `eveadm info`."""
        return {}

    def host_info(self) -> dict:
        """Facts about this host's support for the brand (accelerator, runtime...) for `eveadm info`."""
        return {}

    # PCI device assignment (xen: pciback; kvm: vfio-pci)
    def pci_list(self) -> list[str]:
        raise NotSupported(f"brand {self.brand} does not assign PCI devices")

    def pci_assignable_add(self, address: str) -> None:
        raise NotSupported(f"brand {self.brand} does not assign PCI devices")

    def pci_assignable_remove(self, address: str) -> None:
        raise NotSupported(f"brand {self.brand} does not assign PCI devices")
