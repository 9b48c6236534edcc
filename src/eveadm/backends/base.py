"""The contract between eveadm's lifecycle engine and the things that run domains.

A backend knows how to do a handful of primitive things to one kind of domain
(kvm, xen, container, rkt, null) and nothing else:

    render         -> the artefact it would use (xl cfg, QEMU argv, config.json); no side effects
    prepare        -> write that artefact and the disk copies under the domain's directories
    create_paused  -> make the domain exist with its CPUs / process stopped; returns the verified Status
    unpause        -> let it run; returns the verified Status (RUNNING, or SHUTDOWN if it ended at once)
    shutdown(kind) -> send one stop request (GRACEFUL or FORCED) and return without waiting
    destroy        -> make it gone now: the last rung, one attempt
    status         -> what is true right now, for ALL the given domains in one call; a pure read
    stats          -> CPU, memory, disk and network counters of ALL the given domains in one call; a pure read
    wait_gone      -> wait (event-driven where the backend can) until the domain is gone
    release        -> remove what prepare/create left behind once the domain is gone

Policy lives once, above this, in `eveadm.lifecycle`: retries, the stop ladder
(a list of rungs, each a primitive here with a budget there), locks, state
transitions and events. A backend never changes a domain's eveadm state, never
escalates on its own and never sleeps to implement policy. `status` changes
nothing: no command that alters a domain, no write to `dom.backend`, no wait
beyond the bounded time one question takes.

Everything a backend wants to remember about a domain between commands (pid,
domid, socket paths, rendered files, disk copies) goes into the plain dict
`dom.backend`; the engine persists it after every call, even a failing one.
What a brand is (type code, family, properties, capabilities) is declared once
in the registry, `eveadm.backends`.
"""

from __future__ import annotations

import os

from ..errors import NotLive, NotSupported
from .host import wait_until

TYPE_CHECKING = False  # typing and pathlib cost CLI start-up; annotations here are never evaluated
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from . import BrandFacts
    from .host import BackendContext

# What `status()` can say about a domain.
ABSENT = "absent"  # the backend has no such domain (never created, destroyed, or vanished)
PAUSED = "paused"  # exists, CPUs / process not running yet (created paused, or paused)
RUNNING = "running"  # exists and runs
SHUTDOWN = "shutdown"  # guest/program ended by itself, cleanly (powered off, exited)
CRASHED = "crashed"  # the VMM / process died or was killed from outside; Status.error says how

# The two stop requests a backend can send (the ladder's first rungs); destroy is the last.
GRACEFUL = "graceful"  # ACPI power button, SIGTERM, xl shutdown: the guest or program decides
FORCED = "forced"  # the brand's forced request: xl shutdown -F, QMP quit, SIGKILL
SHUTDOWN_KINDS = (GRACEFUL, FORCED)

# What `stats()` may say of a running domain: counters since the domain's VMM / process started
# (cpu_seconds, disk_*, net_*) and one gauge (memory_bytes). A field the brand cannot tell is absent.
# net_* are seen from the domain: rx is what it received.
STATS_FIELDS = ("cpu_seconds", "memory_bytes", "disk_read_bytes", "disk_write_bytes", "disk_read_ops",
                "disk_write_ops", "net_rx_bytes", "net_tx_bytes")


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

    __slots__ = ("uuid", "_config", "_backend", "_record", "_data_dir", "_run_dir", "_parents")

    def __init__(self, uuid: str, config: dict | None = None, backend: dict | None = None,
                 data_dir: Path | None = None, run_dir: Path | None = None, *,
                 parents: tuple[Path, Path] | None = None, record=None):
        self.uuid = uuid
        self._config = config
        self._backend = backend
        # the engine passes its stored record instead: config and backend are then read from it when
        # a backend asks (status of many domains often needs neither, and decoding them is not free)
        self._record = record
        self._data_dir = data_dir
        self._run_dir = run_dir
        self._parents = parents  # (domains dir, run dir): paths made on first use (list stays fast)

    @property
    def config(self) -> dict:
        """The validated payload with defaults applied (see eveadm.schema)."""
        return self._record.config if self._record is not None else self._config

    @property
    def backend(self) -> dict:
        """The backend's own notes about this domain, persisted by the engine."""
        return self._record.backend if self._record is not None else self._backend

    @property
    def data_path(self) -> str:
        """<root>/domains/<uuid>: rendered files, disk copies (kept across stop/start). As text: a
        backend that builds no Path spares its commands pathlib's import (the container brand)."""
        return os.path.join(self._parents[0], self.uuid) if self._data_dir is None else os.fspath(self._data_dir)

    @property
    def run_path(self) -> str:
        """<root>/run/<uuid>: sockets, pid files, logs of the current run."""
        return os.path.join(self._parents[1], self.uuid) if self._run_dir is None else os.fspath(self._run_dir)

    @property
    def data_dir(self) -> Path:
        """data_path as a Path."""
        from pathlib import Path

        return Path(self.data_path)

    @property
    def run_dir(self) -> Path:
        """run_path as a Path."""
        from pathlib import Path

        return Path(self.run_path)

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


class Orphan:
    """Something of this brand on the host that eveadm made and no record owns (a runtime container,
    a monitor or VMM process, a mount, a cgroup, a tap), found by `doctor`."""

    __slots__ = ("kind", "ident", "uuid", "detail")

    def __init__(self, kind: str, ident: str, uuid: str | None = None, detail: str = ""):
        self.kind = kind  # "container", "process", "mount", "cgroup", ...
        self.ident = ident  # what to remove: an id, a pid, a path
        self.uuid = uuid  # the domain it was made for, when known
        self.detail = detail  # one line for the operator

    def __repr__(self) -> str:
        return f"Orphan({self.kind!r}, {self.ident!r}, uuid={self.uuid!r})"

    def describe(self) -> str:
        return f"{self.kind} {self.ident}" + (f" ({self.detail})" if self.detail else "")


class Backend:
    """Base class and contract of every backend. Subclasses override the primitives."""

    def __init__(self, ctx: "BackendContext", facts: "BrandFacts | None" = None):
        self.ctx = ctx
        self.facts = facts

    @property
    def brand(self) -> str:
        return self.facts.name if self.facts else type(self).__name__.lower()

    # -- availability and validation --------------------------------------
    def check_available(self) -> None:
        """Raise BackendUnavailable (one line naming what to install / why) if this host cannot run the brand."""

    def validate(self, config: dict) -> list[tuple[str, str]]:
        """Brand-specific checks of a payload already valid by the schema: [(property path, message)]."""
        return []

    def stored_image_ref(self, image: str) -> str | None:
        """The image store's name or digest that a payload's `image` names, None when it names
        something else (a path) or the brand runs no stored images: the engine holds that image
        against deletion while the domain is made, and `create --pull` fetches it when missing."""
        return None

    def render(self, dom: Domain) -> str:
        """Text of the artefact create would use (xl cfg, QEMU argv, config.json, rkt argv + env)."""
        import json

        return json.dumps(dom.config, indent=2, sort_keys=True)

    # -- lifecycle primitives ----------------------------------------------
    def prepare(self, dom: Domain) -> None:
        """Write the rendered artefact and make disk copies (idempotent; before each create)."""

    def create_paused(self, dom: Domain) -> Status:
        """Create the domain with its CPUs / process stopped and return the Status verified
        (PAUSED). Raise BackendError on failure."""
        raise NotImplementedError

    def unpause(self, dom: Domain) -> Status:
        """Let the domain run and return the Status verified: RUNNING, or SHUTDOWN/CRASHED when it
        already ended (a container whose program exits at once)."""
        raise NotImplementedError

    def shutdown(self, dom: Domain, kind: str, timeout: float) -> None:
        """Send one stop request, `kind` GRACEFUL or FORCED, and return without waiting for the
        domain to go. Give up on the request itself after about `timeout` seconds (the rung's
        budget). A domain already gone is not an error."""
        raise NotImplementedError

    def destroy(self, dom: Domain, timeout: float = 10) -> None:
        """Make the domain gone now (one attempt: SIGKILL, xl destroy, runtime delete), within
        about `timeout` seconds. Must not fail when it is already gone."""
        raise NotImplementedError

    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        """The truth for every domain given, asked of the backend once (not once per domain).
        A pure read: nothing about the domains or `dom.backend` changes."""
        raise NotImplementedError

    def stats(self, doms: Iterable[Domain]) -> dict[str, dict]:
        """{uuid: {field: number}} (STATS_FIELDS) for the given running domains, asked of the host
        once for all of them (not once per domain). A pure read, like status. A domain left out, or
        a field left out, is unknown; the default knows nothing."""
        return {}

    def wait_gone(self, dom: Domain, timeout: float) -> bool:
        """Wait until the domain is gone (ABSENT/SHUTDOWN/CRASHED). Override with an event-driven wait."""
        return wait_until(lambda: self.status([dom])[dom.uuid].gone, timeout)

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        """After the domain is gone: remove run-time leftovers and non-preserved disk copies;
        with delete=True also the rendered files and preserved copies. Return the paths removed.
        Never remove a file the user pointed at."""
        return []

    def change_live(self, dom: Domain, key: str, old, new) -> None:
        """Apply one changed top-level property (`ram`, `vcpus`, `disks`, `nics`, ...) to the
        running domain; `dom.config` still holds the values in effect (`old` is `dom.config.get(key)`,
        `new` None when the property is removed). Raise NotLive(reason) when it can only take effect
        at the next start, having changed nothing; raise LiveChangeFailed(reason, in_effect) when it
        failed part-way, with the value that now runs."""
        raise NotLive(f"brand {self.brand} cannot change {key} while it runs")

    # -- doctor -----------------------------------------------------------------
    def orphans(self, known: set[str]) -> list[Orphan]:
        """What this brand finds on the host that eveadm made for a domain whose UUID is not in
        `known` (deleted, or a create killed before its record). Only things eveadm created: never
        a container, process, mount or device someone else made. A pure read."""
        return []

    def remove_orphan(self, orphan: Orphan) -> None:
        """Remove one thing `orphans` found (doctor --fix)."""
        raise NotSupported(f"brand {self.brand} cannot remove {orphan.describe()}")

    # -- optional (the brand's capabilities in the registry say which it has) --
    def kill(self, dom: Domain, sig: int = 9) -> None:  # SIGKILL
        raise NotSupported(f"brand {self.brand} cannot send signals")

    def console(self, dom: Domain) -> int:
        """Attach the calling terminal to the domain's console; return an exit code."""
        raise NotSupported(f"brand {self.brand} has no console")

    def console_log(self, dom: Domain) -> Path | None:
        """Path of the kept console / stdout log, if any."""
        return None

    def console_log_text(self, dom: Domain, max_bytes: int = 256 * 1024) -> str:
        """The last `max_bytes` of what the domain wrote to its console, as text for a person
        (a backend whose log file has a format of its own strips it)."""
        path = self.console_log(dom)
        if path is None:
            return ""
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def info(self, dom: Domain) -> dict:
        """Backend runtime detail for `eveadm info`."""
        return {}

    def nic_addresses(self, dom: Domain) -> list[str | None]:
        """Each nic's IPv4 address as far as the host knows it (static, IPAM, a DHCP lease), None where
        unknown; a cheap read that asks nothing of the guest. `get` shows them as nics.N.ip."""
        return []

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
