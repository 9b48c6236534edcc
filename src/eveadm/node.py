"""The Python API: `eveadm.Node(root=...)`, the same operations as the CLI, plain dicts out.

It is the only door to the engine: the CLI and the agent use nothing else.
Errors are the typed exceptions of eveadm.errors (ValidationError, NotFound,
Conflict, Timeout, BackendError), which the CLI maps to its exit codes.
"""

from __future__ import annotations

import os
import time

from . import schema
from .jsontext import dumps
from .lifecycle import ACTIVE, STOP_LADDER, Engine  # noqa: F401 (STOP_LADDER: for eveadm.metrics)
from .store import Record, iso

# runtime facts `get` shows after the config, when set
RUNTIME_FIELDS = ("domain_id", "pid", "boot_timestamp", "exit_status", "exit_timestamp", "ended_by",
                  "tried_count", "boot_failed", "pending_restart")
# what `list` can show without decoding a record's JSON (stored columns)
SUMMARY_FIELDS = ("uuid", "alias", "brand", "state", "ram", "type")


TYPE_CHECKING = False  # typing and pathlib cost CLI start-up; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def default_root() -> str:
    """--root, else $EVEADM_ROOT, else /var/lib/eveadm (root) or $XDG_STATE_HOME/eveadm."""
    env = os.environ.get("EVEADM_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/eveadm"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "eveadm")


def to_dict(rec: Record) -> dict:
    """A domain as `get` shows it: its config, then its read-only runtime properties."""
    out = dict(rec.config)
    rt = rec.runtime
    out["state"] = rec.state
    for key in RUNTIME_FIELDS:
        if rt.get(key) is not None and rt.get(key) != []:
            out[key] = rt[key]
    if rt.get("error"):
        out["error"] = rt["error"]
    out["create_timestamp"] = iso(rec.created)
    out["last_modified"] = iso(rec.modified)
    out["backend"] = rec.backend
    return out


def stored_document(rec: Record) -> str | None:
    """The `get` text the store keeps with a record. None for a domain with nics: `get` shows the
    addresses they have now, which only the backend knows."""
    return None if rec.config.get("nics") else dumps(to_dict(rec))


class Node:
    def __init__(self, root: str | os.PathLike | None = None, run_root: str | os.PathLike | None = None,
                 backends: dict | None = None):
        """`backends` maps a brand to a Backend instance to use instead of the registry's (tests)."""
        self.engine = Engine(root or default_root(), run_root or os.environ.get("EVEADM_RUN_ROOT") or None,
                             backends)
        self.engine.store.document = stored_document
        # whether the last start/stop changed anything (False: it was already running / stopped)
        self.changed = False

    @property
    def root(self) -> Path:
        """The state root."""
        return self.engine.ctx.root

    def for_thread(self) -> "Node":
        """A Node on the same state and run roots, for another thread (an SQLite connection serves only
        the thread that opened it): the agent's metrics server reads through one per scrape."""
        return Node(self.engine.ctx.root_dir, self.engine.ctx.run_root_dir)

    @property
    def warnings(self) -> list[str]:
        return self.engine.warnings

    def on_progress(self, callback) -> None:
        """callback(str) receives human progress lines (waits, retries); the CLI prints them on stderr."""
        self.engine.progress = callback

    # -- lifecycle -------------------------------------------------------------
    def create(self, payload: dict, paused: bool = False, pull: bool = False) -> dict:
        """With pull, a stored image the payload names that is missing is pulled first."""
        if pull:
            self.engine.image_pull_missing(payload)
        return to_dict(self.engine.create(payload, paused=paused))

    def start(self, uuid: str) -> dict:
        rec, self.changed = self.engine.start(uuid)
        return to_dict(rec)

    def stop(self, uuid: str, force: bool = False, timeout: float | None = None) -> dict:
        rec, self.changed = self.engine.stop(uuid, force=force, timeout=timeout)
        return to_dict(rec)

    def reboot(self, uuid: str, force: bool = False) -> dict:
        return to_dict(self.engine.reboot(uuid, force=force))

    def kill(self, uuid: str, sig: int = 15) -> dict:  # SIGTERM
        return to_dict(self.engine.kill(uuid, sig))

    def delete(self, uuid: str) -> list[str]:
        return self.engine.delete(uuid)

    destroy = delete

    def update(self, uuid: str, payload: dict) -> dict:
        """{"domain": the record (what runs now), "changes": {property: {"applied": "live" | "stored"
        | "pending", "detail": why}}, "applied_live": [...], "restart_required": [...]}."""
        rec, results = self.engine.update(uuid, payload)
        return {"domain": to_dict(rec), "changes": results,
                "applied_live": sorted(k for k, r in results.items() if r["applied"] != "pending"),
                "restart_required": sorted(k for k, r in results.items() if r["applied"] == "pending")}

    def validate(self, payload, action: str = "create", brand: str | None = None) -> dict:
        return self.engine.check_payload(payload, action, brand)

    def render(self, payload: dict) -> str:
        return self.engine.render(payload)

    # -- reads ------------------------------------------------------------------
    def resolve(self, ident: str) -> str:
        """A UUID or a unique alias -> the domain's UUID (NotFound, Conflict when ambiguous)."""
        return self.engine.resolve(ident)

    def get(self, uuid: str) -> dict:
        return self._shown(self.engine.get(uuid))

    def get_text(self, uuid: str) -> str:
        """`get` as the JSON text the CLI prints: the copy stored with the record when reading it
        changed nothing (no JSON decoded or encoded, which is most of a short command's cost)."""
        rec = self.engine.get(uuid)
        return rec.stored_document() or dumps(self._shown(rec))

    def _shown(self, rec: Record) -> dict:
        """A domain as `get` shows it, with the addresses its nics have now (nics.N.ip)."""
        out = to_dict(rec)
        addresses = self.engine.nic_addresses(rec)
        if any(addresses):
            out["nics"] = [dict(nic, ip=ip) if ip and not nic.get("ip") else nic
                           for nic, ip in zip(out["nics"], addresses + [None] * len(out["nics"]))]
        return out

    def list(self, filters: list[str] | None = None, sort: list[str] | None = None,
             fields: list[str] | None = None) -> list[dict]:
        """Domains as `get` shows them (plus `type`), filtered and sorted as `eveadm list` does.

        With `fields` (the columns the caller will show), a listing whose columns, filters and
        sort keys are all stored columns reads no record's JSON: each object then has just those
        keys."""
        from . import listing

        matchers = listing.parse_filters(filters or [])
        sort = sort or listing.DEFAULT_SORT
        for field in sort:  # every key is checked before anything is read or reconciled
            listing.check_column(field.lstrip("+-"), "sort")
        keys = {k for k, _ in matchers} | {f.lstrip("+-") for f in sort} | set(fields or ())
        if fields is not None and keys <= set(SUMMARY_FIELDS):
            objs = self._summaries()
        else:
            objs = [listing.add_fake_fields(self._shown(r)) for r in self.engine.list()]
        if matchers:
            objs = [o for o in objs if listing.matches(o, matchers)]
        return listing.sort_objects(objs, sort)

    def _summaries(self) -> list[dict]:
        """The stored columns of every domain, after verifying the active ones with their backends."""
        from . import listing

        recs = self.engine.store.all(columns_only=True)
        self.engine.reconcile(recs, note_ids=False)
        codes = listing.type_codes()
        return [{"uuid": r.uuid, "alias": r.alias, "brand": r.brand, "state": r.state, "ram": r.ram,
                 "type": codes.get(r.brand, "?")} for r in recs]

    def stats(self, uuids: list[str] | None = None, inactive: bool = False) -> list[dict]:
        """[{uuid, alias, brand, state, time, cpu_seconds, memory_bytes, disk_*, net_*}] of the active
        domains named (UUIDs or aliases; else all), verified first; a field the brand cannot tell is
        absent (eveadm.backends.base.STATS_FIELDS). With `inactive`, the stopped and failed too (no
        counters), as are domains named explicitly. `time` is when the counters were read (seconds since
        the epoch)."""
        read = self.engine.stats(uuids)
        now = time.time()
        out, seen = [], set()
        for rec, counters in read:
            if rec.uuid in seen or not (inactive or uuids or rec.state in ACTIVE):
                continue
            seen.add(rec.uuid)
            out.append({"uuid": rec.uuid, "alias": rec.alias, "brand": rec.brand, "state": rec.state, "time": now,
                        **counters})
        return out

    def lookup(self, filters: list[str] | None = None) -> list[str]:
        return [o["uuid"] for o in self.list(filters, fields=["uuid"])]

    def names(self) -> list[tuple[str, str | None]]:
        """(uuid, alias) of every domain, unverified (for shell completion)."""
        return self.engine.store.names()

    def info(self, uuid: str) -> dict:
        return self.engine.info(uuid)

    def console(self, uuid: str) -> int:
        """Attach this process's terminal to the domain's console; returns an exit code."""
        return self.engine.console(uuid)

    def console_log(self, uuid: str) -> Path | None:
        return self.engine.console_log(uuid)

    def log_tail(self, uuid: str, lines: int) -> str:
        """The last `lines` lines of the domain's kept console log."""
        from .errors import EveadmError

        data = self.engine.console_log_text(uuid)
        if data is None:
            raise EveadmError(f"domain {uuid} has no console log yet")
        kept = data.splitlines()[-lines:] if lines > 0 else []
        return "\n".join(kept) + ("\n" if kept else "")

    def events(self, uuid: str | None = None, follow: bool = False, after: int = 0,
               poll: float = 0.1) -> Iterator[dict]:
        """Journal entries oldest first; with follow, keep yielding new ones as they are written."""
        if uuid and not schema.UUID_RE.match(uuid):
            uuid = self.engine.resolve(uuid)  # an alias; a UUID may name a deleted domain: keep it
        last = after
        while True:
            batch = self.engine.store.events(last, uuid)
            for ev in batch:
                last = ev["id"]
                yield ev
            if not follow:
                return
            if not batch:
                from . import interrupts

                with interrupts.waiting():
                    time.sleep(poll)  # following a journal: wait for the next write

    def last_event_id(self) -> int:
        return self.engine.store.last_event_id()

    def record_event(self, uuid: str, etype: str, data: dict) -> None:
        """Add an event that changes no record (the agent's decisions)."""
        rec = self.engine.store.get(uuid)
        self.engine.store.append_event(uuid, rec.alias if rec else None, etype, data)

    # -- the agent's own state (its restart back-off), kept across agent restarts --
    def agent_state(self) -> dict:
        import json

        try:
            with open(os.path.join(self.engine.ctx.root_dir, "agent-state.json"), encoding="utf-8") as fh:
                state = json.load(fh)
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: start from scratch (1 s back-off)

    def save_agent_state(self, state: dict) -> None:
        import json

        path = os.path.join(self.engine.ctx.root_dir, "agent-state.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)
        os.replace(tmp, path)

    # -- host -------------------------------------------------------------------
    def pci(self, action: str, address: str | None = None, brand: str = "xen") -> list[str]:
        """`list` -> the addresses assignable for `brand`; `assignable-add` / `assignable-remove ADDR`."""
        return self.engine.pci(action, address, brand)

    # -- networks ------------------------------------------------------------------
    def network_create(self, payload: dict) -> dict:
        """Create a network (a bridge; for `local`, its gateway address, dnsmasq and NAT rule)."""
        self.engine.network_create(payload)
        return self.engine.network_get(payload["name"])

    def network_get(self, name: str) -> dict:
        """A network's config and what of it is on the host (bridge_present, dnsmasq_pid, nat, up),
        with the uuids of the domains whose nics name it."""
        return self.engine.network_get(name)

    def network_list(self) -> list[dict]:
        return self.engine.network_list()

    def network_update(self, name: str, payload: dict) -> dict:
        """Change uplink, dns or mtu (null removes one); applied to the host at once."""
        _, changed = self.engine.network_update(name, payload)
        return {"network": self.engine.network_get(name), "changed": changed}

    def network_delete(self, name: str) -> list[str]:
        """Remove a network no domain names, and what eveadm made for it on the host."""
        return self.engine.network_delete(name)

    def network_up(self, name: str | None = None) -> dict[str, list[str]]:
        """Recreate every stored network's bridge, dnsmasq and NAT rule that is missing (after a host
        reboot; the agent calls it): {network: what was remade}."""
        return self.engine.network_up(name)

    def network_leases(self, name: str) -> dict[str, str]:
        """{mac: ip} of dnsmasq's current leases on a local network."""
        from .network import leases

        self.engine.network_load(name)
        return leases(self.engine.ctx.root_dir, name)

    # -- images ------------------------------------------------------------------------
    def image_progress(self, mode: str) -> None:
        """How pulls, imports and unpacks show progress on stderr: "bar", "json" (lines) or "quiet"."""
        from .images import progress

        progress.configure(mode)

    def image_pull(self, source: str, name: str | None = None, tls_verify: bool = True) -> dict:
        """Pull `docker://REF` (or a bare REF), `oci:DIR[:TAG]`, `oci-archive:FILE` or `docker-archive:FILE`
        into the store with skopeo; stored under `name`, else the reference it was pulled by."""
        return self.engine.image_pull(source, name, tls_verify)

    def image_import(self, source: str, sha256: str, name: str | None = None) -> dict:
        """Store a VM disk image (a file or an http(s) URL) whose sha256 must be `sha256`."""
        return self.engine.image_import(source, sha256, name)

    def image_list(self) -> list[dict]:
        return self.engine.image_list()

    def image_get(self, ref: str) -> dict:
        return self.engine.image_get(ref)

    def image_delete(self, ref: str) -> list[str]:
        """Remove a name, or the image with its files; Conflict while a domain uses it."""
        return self.engine.image_delete(ref)

    def image_prune(self, dry_run: bool = False) -> dict:
        return self.engine.image_prune(dry_run)

    def brands(self) -> list[dict]:
        """Every brand eveadm knows, and whether this host can run it: [{name, family, type_code,
        capabilities, available, reason}] (reason: why not, naming what to install)."""
        from .backends import brands

        out = []
        for name, facts in sorted(brands().items()):
            reason = self.engine.unavailable(name)
            out.append({"name": name, "family": facts.family, "type_code": facts.type_code,
                        "capabilities": sorted(facts.capabilities), "available": reason is None, "reason": reason})
        return out

    def apply(self, desired: dict, dry_run: bool = False, prune: bool = False) -> dict:
        """Converge to a desired state ({"networks": [...], "domains": [...]}; see eveadm.apply):
        {"steps": [{"action", "target", "detail", "status", ...}], "dry_run": bool, "error": str|None}."""
        from . import apply

        steps = apply.plan(self, desired, prune=prune)
        failure = None
        if not dry_run:
            steps, failure = apply.execute(self, steps)
        return {"steps": [{k: v for k, v in s.items() if k != "payload"} for s in steps], "dry_run": dry_run,
                "error": failure}

    def doctor(self, fix: bool = False) -> list[str]:
        """Drift between records and reality, one line per finding; with fix, repaired."""
        return self.engine.doctor(fix=fix)
