"""The lifecycle engine: one state machine above every backend (SPEC §4, after domainmgr).

    provisioning -> paused -> booting -> running -> stopping -> stopped
                 \\-> failed (create failed after retries, unpause failed, crashed, vanished)

All policy lives here and only here: two-phase start (create paused, then
activate), create retries, the stop ladder (graceful -> forced -> destroy),
per-domain locks, truth-on-read reconciliation, and the event journal. The
backends (eveadm.backends.*) only carry out primitives.
"""

from __future__ import annotations

import os
import signal as _signal
import time
from contextlib import ExitStack, contextmanager

from . import faults, interrupts, privatedir, schema
from .backends import CONTAINER, brands
from .backends import facts as brand_facts
from .backends import load as load_backend
from .backends.base import (ABSENT, CRASHED, FORCED, GRACEFUL, PAUSED, RUNNING, SHUTDOWN, Backend, Domain,
                            Status)
from .backends.host import BackendContext
from .errors import (BackendError, Conflict, EveadmError, Interrupted, LockHeld, NotFound, PermanentError, Timeout,
                     UsageError, ValidationError)
from .store import Record, Store, iso

TYPE_CHECKING = False  # pathlib costs CLI start-up; annotations are never evaluated
if TYPE_CHECKING:
    from pathlib import Path

STATES = ("provisioning", "paused", "booting", "running", "stopping", "stopped", "failed")
ACTIVE = frozenset(("provisioning", "paused", "booting", "running", "stopping"))
INACTIVE = frozenset(("stopped", "failed"))

# Legal transitions; anything else is a bug in the engine, not a user error.
TRANSITIONS = {
    "provisioning": {"paused", "stopped", "failed"},
    "paused": {"booting", "stopping", "stopped", "failed"},
    "booting": {"running", "stopping", "stopped", "failed"},
    "running": {"stopping", "stopped", "failed"},
    "stopping": {"stopped", "failed", "running", "paused"},  # back: a stop abandoned on SIGINT/SIGTERM
    "stopped": {"provisioning"},
    "failed": {"provisioning", "stopping", "stopped"},
}




class Rung:
    """One step of the stop ladder: send a primitive, then wait up to `budget` s for the domain to go."""

    __slots__ = ("name", "event", "send", "budget_setting", "default_budget", "needs_running")

    def __init__(self, name, event, send, budget_setting, default_budget, needs_running):
        self.name = name
        self.event = event  # journal entry written before the wait, with the budget
        self.send = send  # fn(backend, dom, budget): the primitive
        self.budget_setting = budget_setting  # host setting with the budget; None: the domain's stop_timeout
        self.default_budget = default_budget  # when the host setting is absent
        self.needs_running = needs_running  # a request only a running guest can act on


# The stop ladder, in order (domainmgr: graceful -> forced -> destroy). A rung is skipped once the
# domain is gone; a new rung is one line here and a primitive in the backends.
STOP_LADDER = (
    Rung("graceful", "stop.graceful_sent", lambda b, dom, t: b.shutdown(dom, GRACEFUL, t), None, None, True),
    Rung("forced", "stop.forced", lambda b, dom, t: b.shutdown(dom, FORCED, t), "force_timeout", 10, True),
    Rung("destroy", "stop.destroyed", lambda b, dom, t: b.destroy(dom, t), "destroy_timeout", 10, False),
)
STOPPED_BY_EVEADM = "stopped by eveadm"
NETWORKS_LOCK = "networks"  # the lock held while any network is added, changed or removed
IMPATIENT_BUDGET = 6  # s: delete's cap on every rung (domainmgr's impatient doInactivate, shortened)


def _now_iso() -> str:
    return iso(time.time())


class Engine:
    def __init__(self, root, run_root=None, backends: dict[str, Backend] | None = None):
        self.ctx = BackendContext(root, run_root)
        self.store = Store(self.ctx.root_dir, lambda: (self._num("journal_max_events", 100_000),
                                                        self._num("journal_max_days", 0)))
        # brand -> backend instance; a caller may hand in its own (tests: an in-process fake)
        self._backends: dict[str, Backend] = dict(backends or {})
        self.warnings: list[str] = []
        self.progress = None  # optional callable(str) for human progress lines (CLI: stderr)
        self._parents = (os.path.join(self.ctx.root_dir, "domains"), self.ctx.run_root_dir)

    # -- settings (host config / env; tests shorten the waits) ---------------
    def _num(self, key: str, default: float) -> float:
        value = self.ctx.setting(key, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"setting {key} must be a number, not {value!r}") from None

    @property
    def lock_timeout(self) -> float:
        return self._num("lock_timeout", 10)

    # -- plumbing ----------------------------------------------------------------
    def backend(self, brand: str) -> Backend:
        if brand not in self._backends:
            backend = load_backend(brand, self.ctx)
            if faults.ACTIVE:  # the test suite's kill points around every primitive
                backend = faults.FaultyBackend(backend)
            self._backends[brand] = backend
        return self._backends[brand]

    def domain(self, rec: Record) -> Domain:
        return Domain(rec.uuid, parents=self._parents, record=rec)

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def _transition(self, rec: Record, state: str, extra_events=(), **event_data) -> None:
        prev = rec.state
        if state != prev and state not in TRANSITIONS[prev]:
            raise AssertionError(f"illegal transition {prev} -> {state} for {rec.uuid}")
        rec.state = state
        events = list(extra_events)
        if state != prev:
            events.append(("state", {"state": state, "previous_state": prev, **event_data}))
        self.store.save(rec, events)

    def _event(self, rec: Record, etype: str, **data) -> None:
        self.store.save(rec, [(etype, data)])

    def _fail(self, rec: Record, message: str, boot_failed: bool | None = None) -> None:
        rec.runtime["error"] = {"message": message, "time": _now_iso()}
        rec.runtime["failed_at"] = time.time()
        if boot_failed is not None:
            rec.runtime["boot_failed"] = boot_failed
        rec.runtime["domain_id"] = rec.runtime["pid"] = None
        self._transition(rec, "failed", error=message)

    def load(self, uuid: str) -> Record:
        rec = self.store.get(uuid)
        if rec is None:
            raise NotFound(f"domain {uuid} not found")
        return rec

    def resolve(self, ident: str) -> str:
        """A UUID, or a unique alias, to the domain's UUID."""
        if schema.UUID_RE.match(ident):
            if self.store.get(ident) is None:
                raise NotFound(f"domain {ident} not found")
            return ident
        if not schema.ALIAS_RE.match(ident):
            raise UsageError(f"{ident!r} is neither a UUID nor an alias")
        matches = self.store.by_alias(ident)
        if not matches:
            raise NotFound(f"no domain with UUID or alias {ident!r}")
        if len(matches) > 1:
            raise Conflict(f"alias {ident!r} names {len(matches)} domains ({', '.join(matches)}): use the UUID")
        return matches[0]

    def lock(self, uuid: str, timeout: float | None = None):
        return self.store.lock(uuid, self.lock_timeout if timeout is None else timeout)

    # -- validation --------------------------------------------------------------
    def check_payload(self, payload, action: str = "create", brand: str | None = None) -> dict:
        """The validate report for a create or update payload (empty lists when valid)."""
        if action == "create":
            return self._check_create(payload)[0]
        return schema.check_update(payload, brand)

    def _check_create(self, payload) -> tuple[dict, dict | None]:
        """(validate report, the normalized config when valid): schema checks, then the brand's."""
        report = schema.check_create(payload)
        if not schema.is_empty(report):
            return report, None
        cfg = schema.normalize(payload)
        for path, msg in self._nic_problems(cfg):
            report["bad_values"].append({"property": path, "message": msg})
        for path, msg in self.backend(cfg["brand"]).validate(cfg):
            report["bad_values"].append({"property": path, "message": msg})
        return report, cfg

    @staticmethod
    def _raise_report(report: dict, what: str) -> None:
        if schema.is_empty(report):
            return
        parts = []
        if report["bad_properties"]:
            parts.append("unknown properties: " + ", ".join(report["bad_properties"]))
        for bad in report["bad_values"]:
            parts.append(f"{bad['property'] or 'payload'} {bad['message']}")
        if report["missing_properties"]:
            parts.append("missing: " + ", ".join(report["missing_properties"]))
        raise ValidationError(f"invalid {what} payload: " + "; ".join(parts), report)

    # -- create / start ------------------------------------------------------------
    def create(self, payload, paused: bool = False) -> Record:
        report, cfg = self._check_create(payload)
        self._raise_report(report, "create")
        uuid = cfg["uuid"]
        backend = self.backend(cfg["brand"])
        if self.store.get(uuid) is not None:
            raise Conflict(f"domain {uuid} already exists")
        backend.check_available()
        with self.lock(uuid):
            if self.store.get(uuid) is not None:
                raise Conflict(f"domain {uuid} already exists")
            rec = Record(uuid, cfg.get("alias"), cfg["brand"], "provisioning", cfg,
                         {"tried_count": 0, "boot_failed": False}, {}, 0, 0)
            with self._nic_networks_held(cfg, "create"):
                self.store.insert(rec, ("create", {"brand": cfg["brand"], "paused": paused}))
            if paused or cfg.get("autoboot", True):
                self._boot(rec, activate=not paused)
            else:
                self._transition(rec, "stopped")
        return rec

    def start(self, ident: str) -> tuple[Record, bool]:
        """Returns (record, did_something)."""
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._reconcile_locked(rec)
            changed_autoboot = not rec.config.get("autoboot", True)
            rec.config["autoboot"] = True
            if rec.state == "running":
                if changed_autoboot:
                    self.store.save(rec)
                return rec, False
            if rec.state == "paused":
                self._activate(rec, self.domain(rec))
            elif rec.state in INACTIVE:
                if rec.state == "failed" and self._present(rec):
                    self._stop(rec, force=True, timeout=0)  # never two VMMs for one domain
                self._transition(rec, "provisioning")
                self._boot(rec, activate=True)
            else:  # booting/stopping/provisioning left by a killed command: the backend decides
                raise Conflict(f"domain {uuid} is {rec.state}; run `eveadm stop {uuid}` first")
            return rec, True

    def _boot(self, rec: Record, activate: bool) -> None:
        """Create paused (with retries), then activate unless asked to stay paused."""
        dom = self.domain(rec)
        backend = self.backend(rec.brand)
        rec.runtime.pop("pending_restart", None)  # this boot uses the current config
        try:
            backend.check_available()
            privatedir.ensure(str(dom.data_dir))
            privatedir.ensure(str(dom.run_dir))
            backend.prepare(dom)
        except (EveadmError, OSError) as exc:
            if isinstance(exc, OSError):  # a file the backend had to write: name it, in one line
                exc = BackendError(f"domain {rec.uuid}: {exc.strerror or exc}" +
                                   (f": {exc.filename}" if exc.filename else ""))
            self.store.save(rec)  # keep whatever the backend noted about files it made
            self._fail(rec, f"prepare failed: {exc}", boot_failed=True)
            raise exc from None
        try:
            created = self._create_with_retries(rec, dom, backend)
            rec.runtime.update(boot_failed=False, error=None, exit_status=None, exit_timestamp=None)
            self._note_status(rec, created)
            self._transition(rec, "paused")
            interrupts.check()  # the last point where nothing of the guest has run yet
        except Interrupted as exc:
            self._quietly(backend.destroy, dom)
            self._quietly(backend.release, dom)
            self._stopped_by_interrupt(rec, exc)
            raise
        if activate:
            self._activate(rec, dom)
            if interrupts.received():  # too late to undo: it runs; say so
                raise Interrupted(interrupts.received(), f"interrupted; domain {rec.uuid} is {rec.state}")

    def _create_with_retries(self, rec: Record, dom: Domain, backend: Backend) -> Status:
        """create_paused, retried `create_tries` times `create_retry_delay` apart (domainmgr's pacing);
        a PermanentError is not retried: the same payload would fail the same way."""
        tries = int(self._num("create_tries", 3))
        delay = self._num("create_retry_delay", 5)
        attempt = 0
        while True:
            attempt += 1
            rec.runtime["tried_count"] = attempt
            interrupts.check()
            try:
                return backend.create_paused(dom)
            except EveadmError as exc:
                permanent = isinstance(exc, PermanentError)
                self._event(rec, "create.failed", attempt=attempt, message=str(exc),
                            retry=not permanent and attempt < tries)
                self._quietly(backend.destroy, dom)
                if permanent or attempt >= tries:
                    self._quietly(backend.release, dom)
                    why = "a permanent error" if permanent else f"{attempt} tries"
                    self._fail(rec, f"create failed after {why}: {exc}", boot_failed=True)
                    error = PermanentError if permanent else BackendError
                    raise error(f"domain {rec.uuid}: create failed after {why}: {exc}") from None
                self._say(f"create of {rec.uuid} failed ({exc}); retrying in {delay:g}s")
                with interrupts.waiting():
                    time.sleep(delay)  # domainmgr's retry pacing (policy, configurable), not synchronisation

    def _stopped_by_interrupt(self, rec: Record, exc: Interrupted) -> None:
        """An interrupted start undone: nothing runs, and nothing boots it again by itself."""
        rec.config["autoboot"] = False
        rec.runtime.update(domain_id=None, pid=None)
        self._transition(rec, "stopped", reason=f"start {exc}")

    def _activate(self, rec: Record, dom: Domain) -> None:
        """domainmgr doActivateTail: backend tuning + unpause, then confirm it runs."""
        backend = self.backend(rec.brand)
        self._transition(rec, "booting")
        try:
            verified = backend.unpause(dom)
        except EveadmError as exc:
            # domainmgr left the domain paused here; we destroy it so nothing lingers half-started
            self._event(rec, "activate.failed", message=str(exc))
            self._quietly(backend.destroy, dom)
            self._quietly(backend.release, dom)
            self._fail(rec, f"unpause failed: {exc}")
            raise BackendError(f"domain {rec.uuid}: unpause failed: {exc}") from None
        rec.runtime["boot_timestamp"] = _now_iso()
        if verified.state == RUNNING:
            self._note_status(rec, verified)
            self._transition(rec, "running")
        elif verified.state == SHUTDOWN:  # ran and ended at once (a container whose program exits)
            self._transition(rec, "running")
            self._finish_gone(rec, dom, verified, "exited by itself")  # stopped, not failed
        else:
            msg = verified.error or f"backend reports {verified.state} after unpause"
            self._quietly(backend.destroy, dom)
            self._quietly(backend.release, dom)
            self._fail(rec, f"did not start: {msg}")
            raise BackendError(f"domain {rec.uuid} did not start: {msg}")

    def _present(self, rec: Record) -> bool:
        """Does the backend still hold something of this domain? (After reconciliation.)"""
        if rec.state in ACTIVE:
            return True
        if rec.state == "stopped":
            return False
        # a status we cannot get counts as present: never drop or restart what might still run
        st = self._quietly(self.backend(rec.brand).status, [self.domain(rec)])
        return not st or not st[rec.uuid].gone

    @staticmethod
    def _note_status(rec: Record, st: Status) -> None:
        rec.runtime["domain_id"] = st.domain_id
        rec.runtime["pid"] = st.pid

    @staticmethod
    def _quietly(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except EveadmError:
            return None

    # -- stop --------------------------------------------------------------------------
    def stop(self, ident: str, force: bool = False, timeout: float | None = None) -> tuple[Record, bool]:
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._reconcile_locked(rec)
            autoboot, rec.config["autoboot"] = rec.config.get("autoboot"), False
            if not self._present(rec):
                self.store.save(rec)
                return rec, False
            try:
                self._stop(rec, force=force, timeout=timeout)
            except Interrupted:
                if rec.state != "stopped":  # abandoned, and it still runs: the stop did not happen
                    rec.config["autoboot"] = autoboot
                    self.store.save(rec)
                raise
            return rec, True

    def _stop(self, rec: Record, force: bool, timeout: float | None, impatient: bool = False) -> None:
        """Climb STOP_LADDER until the domain is gone; fail the record when even destroy leaves it there."""
        backend = self.backend(rec.brand)
        dom = self.domain(rec)
        running = rec.state in ("running", "booting", "stopping")
        self._transition(rec, "stopping")
        started = time.monotonic()
        try:
            gone, last_error = self._climb(rec, backend, dom, running, force, timeout, impatient)
        except Interrupted as exc:
            self._abandon_stop(rec, backend, dom, exc)
            raise
        elapsed = round(time.monotonic() - started, 3)
        if not gone:
            self.store.save(rec)
            self._fail(rec, "could not destroy the domain: it is still there after destroy")
            raise Timeout(f"domain {rec.uuid} is still present after destroy ({last_error or 'no error reported'})")
        self._event(rec, "stop.gone", seconds=elapsed)
        self._finish_gone(rec, dom, backend.status([dom])[rec.uuid], STOPPED_BY_EVEADM)

    def _climb(self, rec, backend, dom, running: bool, force: bool, timeout, impatient: bool):
        """The rungs, in order, until the domain is gone: (gone, the last primitive's error)."""
        gone, last_error = False, None
        for rung in STOP_LADDER:
            if rung.needs_running and not running:
                continue
            budget = self._budget(rung, rec, timeout)
            if impatient:
                budget = min(budget, IMPATIENT_BUDGET)
            if rung.name == GRACEFUL and (force or budget <= 0):
                continue
            t0 = time.monotonic()
            last_error = self._try(rung.send, backend, dom, budget)
            self._event(rec, rung.event, timeout=budget, **({"error": last_error} if last_error else {}))
            if last_error and rung.needs_running:  # refused (e.g. no PV drivers): nothing to wait for
                self._say(f"{rung.name} stop of {rec.uuid} refused ({last_error}); next rung")
                continue
            self._say(f"{rung.name} stop of {rec.uuid} sent; waiting up to {budget:g}s")
            with interrupts.waiting():
                gone = backend.wait_gone(dom, max(0.0, budget - (time.monotonic() - t0)))
            if gone:
                break
            interrupts.check()
        return gone, last_error

    def _abandon_stop(self, rec: Record, backend: Backend, dom: Domain, exc: Interrupted) -> None:
        """A stop cut short by SIGINT/SIGTERM: record what is true now, the domain gone or still there."""
        st = self._quietly(backend.status, [dom])
        st = st[rec.uuid] if st else None
        self._event(rec, "stop.interrupted", signal=exc.signo)
        if st is not None and st.gone:
            self._finish_gone(rec, dom, st, STOPPED_BY_EVEADM)
        elif st is not None and st.state in (RUNNING, PAUSED):
            self._transition(rec, RUNNING if st.state == RUNNING else PAUSED, reason=f"stop {exc}")
        else:  # cannot tell: say so; the next read or `stop` settles it
            rec.runtime["error"] = {"message": f"stop {exc}; the domain's state is unknown", "time": _now_iso()}
            self._transition(rec, "failed", error=rec.runtime["error"]["message"])

    def _budget(self, rung: Rung, rec: Record, timeout: float | None) -> float:
        if rung.budget_setting is None:  # stop -t, else the payload's stop_timeout (normalize sets it)
            return float(rec.config["stop_timeout"] if timeout is None else timeout)
        return self._num(rung.budget_setting, rung.default_budget)

    def _finish_gone(self, rec: Record, dom: Domain, st: Status, reason: str, failure: str | None = None) -> None:
        """The domain no longer runs: clean up what remains and record how it ended
        (`failure` set: failed with that error; else stopped with `reason`)."""
        backend = self.backend(rec.brand)
        if st.state != ABSENT:  # e.g. QEMU idling in 'shutdown', an exited container's state
            err = self._try(backend.destroy, dom, self._num("destroy_timeout", 10))
            if err and not failure:
                failure = f"ended, but destroying what remains failed: {err}"
        self._quietly(backend.release, dom)
        # the backend may know when it really ended (a container's monitor records it)
        rec.runtime.update(domain_id=None, pid=None, exit_timestamp=st.detail.get("exit_timestamp") or _now_iso())
        # who ended it: the agent's restart policy restarts only what ended by itself
        rec.runtime["ended_by"] = None if failure else ("eveadm" if reason == STOPPED_BY_EVEADM else "itself")
        if st.exit_status is not None:
            rec.runtime["exit_status"] = st.exit_status
        if failure:
            self._fail(rec, failure)
        else:
            self._transition(rec, "stopped", reason=reason)

    @staticmethod
    def _try(fn, *args) -> str | None:
        """Run a primitive; its error as one line, or None."""
        try:
            fn(*args)
            return None
        except EveadmError as exc:
            return str(exc)

    # -- reboot / kill -------------------------------------------------------------------
    def reboot(self, ident: str, force: bool = False) -> Record:
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._reconcile_locked(rec)
            if rec.state not in ("running", "paused", "booting"):
                raise Conflict(f"domain {uuid} is {rec.state}, not running: use start")
            self._stop(rec, force=force, timeout=None)
            self._event(rec, "reboot")
            self._transition(rec, "provisioning")
            self._boot(rec, activate=True)
            return rec

    def kill(self, ident: str, sig: int = _signal.SIGKILL) -> Record:
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._reconcile_locked(rec)
            if rec.state not in ("running", "paused", "booting", "stopping"):
                raise Conflict(f"domain {uuid} is {rec.state}: nothing to signal")
            self.backend(rec.brand).kill(self.domain(rec), sig)
            self._event(rec, "kill", signal=_signal.Signals(sig).name)
            return rec

    # -- delete ---------------------------------------------------------------------------
    def delete(self, ident: str) -> list[str]:
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._reconcile_locked(rec)
            backend = self.backend(rec.brand)
            dom = self.domain(rec)
            if self._present(rec):
                self._stop(rec, force=False, timeout=None, impatient=True)
            try:
                removed = list(backend.release(dom, delete=True) or [])
            except EveadmError as exc:  # e.g. a PCI device that left the host: say so, delete anyway
                self.warnings.append(f"domain {uuid}: {exc}")
                removed = []
            import shutil

            for path in (dom.data_dir, dom.run_dir):
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(str(path))
            self.store.remove(rec, ("delete", {"removed": removed}))
            self.store.drop_lock_file(uuid)
        return removed

    # -- update -----------------------------------------------------------------------------
    def update(self, ident: str, payload) -> tuple[Record, list[str], list[str]]:
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._raise_report(schema.check_update(payload, rec.brand), "update")
            new, changed = schema.apply_update(rec.config, payload)
            full = schema.check_create({k: v for k, v in new.items()})
            if schema.is_empty(full) and "nics" in changed:
                for path, msg in self._nic_problems(new):
                    full["bad_values"].append({"property": path, "message": msg})
            if schema.is_empty(full):
                for path, msg in self.backend(rec.brand).validate(new):
                    full["bad_values"].append({"property": path, "message": msg})
            self._raise_report(full, "update")
            self._reconcile_locked(rec)
            if "pci_devices" in changed and rec.state not in INACTIVE:
                raise Conflict(f"domain {uuid} is {rec.state}: pci_devices change only while stopped")
            live = [k for k in changed if schema.update_mode(k) == schema.LIVE]
            restart = [k for k in changed if k not in live]
            if rec.state in INACTIVE:
                live, restart = changed, []  # nothing runs: all of it takes effect at the next start
            else:
                rec.runtime["pending_restart"] = sorted(set(rec.runtime.get("pending_restart") or []) | set(restart))
            rec.config = new
            rec.alias = new.get("alias")
            with self._nic_networks_held(new if "nics" in changed else {}, "update"):
                self.store.save(rec, [("update", {"changed": changed, "live": live, "restart": restart})])
            return rec, live, restart

    # -- truth on read -------------------------------------------------------------------------
    def reconcile(self, recs: list[Record], note_ids: bool = True) -> None:
        """Ask each backend ONCE about all its active domains; record what changed (with note_ids,
        also refresh the pid / domain id shown, which a listing of states only does not need)."""
        by_brand: dict[str, list[Record]] = {}
        for rec in recs:
            if rec.state in ACTIVE:
                by_brand.setdefault(rec.brand, []).append(rec)
        for brand, group in by_brand.items():
            try:
                backend = self.backend(brand)
                statuses = backend.status([self.domain(r) for r in group])
            except EveadmError as exc:
                self.warnings.append(f"cannot verify {brand} domains: {exc}")
                continue
            for rec in group:
                st = statuses.get(rec.uuid, Status(ABSENT))
                if self._disagrees(rec, st):
                    self._settle(rec, st)
                elif note_ids and st.state in (RUNNING, PAUSED) and (st.domain_id, st.pid) != (
                        rec.runtime.get("domain_id"), rec.runtime.get("pid")):
                    rec.runtime["domain_id"], rec.runtime["pid"] = st.domain_id, st.pid

    @staticmethod
    def _disagrees(rec: Record, st: Status) -> bool:
        if st.gone:
            return True
        # states a command passes through while it holds the lock; seen unlocked, that command died
        return rec.state in ("provisioning", "booting", "stopping")

    def _settle(self, rec: Record, st: Status) -> None:
        """Record a change the backend reported, unless a command is working on the domain now."""
        try:
            with self.store.lock(rec.uuid, 0):
                fresh = self.store.get(rec.uuid)
                if fresh is None:
                    return
                if (fresh.state, fresh.modified) != (rec.state, rec.modified):
                    st = None  # a command changed it since we asked the backend: ask again
                rec.replace_with(fresh)
                self._reconcile_locked(rec, st)
        except LockHeld:
            pass

    def _reconcile_locked(self, rec: Record, st: Status | None = None) -> None:
        """With the lock held: bring the record in line with the backend."""
        if rec.state not in ACTIVE:
            return
        dom = self.domain(rec)
        if st is None:
            try:
                st = self.backend(rec.brand).status([dom])[rec.uuid]
            except EveadmError as exc:
                self.warnings.append(f"cannot verify {rec.uuid}: {exc}")
                return
        if st.gone:
            if rec.state == "stopping":  # a stop was interrupted after the domain went away
                self._finish_gone(rec, dom, st, STOPPED_BY_EVEADM)
            elif st.state == SHUTDOWN:
                family = brand_facts(rec.brand).family
                ended = "exited by itself" if family == CONTAINER else "powered off by itself"
                if st.exit_status:
                    ended += f" (status {st.exit_status})"
                self._finish_gone(rec, dom, st, ended)
            elif st.state == CRASHED:
                self._finish_gone(rec, dom, st, "crashed", failure=st.error or "crashed")
            elif rec.state == "provisioning":
                self._finish_gone(rec, dom, st, "", failure="create was interrupted before the domain existed")
            else:
                self._finish_gone(rec, dom, st, "", failure=st.error or f"domain vanished: {rec.brand} no longer "
                                                                        "knows it (destroyed outside eveadm?)")
        elif rec.state == "booting" and st.state == RUNNING:
            # a start died after the unpause: it runs, so record that
            self._note_status(rec, st)
            self._transition(rec, "running", reason="found running after an interrupted start")
        elif rec.state in ("provisioning", "booting", "stopping"):
            # a command died half-way and the domain still exists: say so; stop or delete cleans up
            rec.runtime["error"] = {"message": f"an eveadm command was interrupted while {rec.state}",
                                    "time": _now_iso()}
            self._transition(rec, "failed", error=rec.runtime["error"]["message"])

    # -- reads -----------------------------------------------------------------------------------
    def get(self, ident: str) -> Record:
        rec = self.load(self.resolve(ident))
        self.reconcile([rec])
        return rec

    def list(self) -> list[Record]:
        recs = self.store.all()
        self.reconcile(recs)
        return recs

    def nic_addresses(self, rec: Record) -> list[str | None]:
        """The addresses of an active domain's nics (see Backend.nic_addresses); [] when not running."""
        if rec.state not in ACTIVE or not rec.config.get("nics"):
            return []
        return self._quietly(self.backend(rec.brand).nic_addresses, self.domain(rec)) or []

    def info(self, ident: str) -> dict:
        rec = self.get(ident)
        backend = self.backend(rec.brand)
        dom = self.domain(rec)
        out = {"uuid": rec.uuid, "brand": rec.brand, "state": rec.state}
        if rec.state in ACTIVE:
            out["runtime"] = backend.info(dom)
        out["host"] = backend.host_info()
        log = backend.console_log(dom)
        if log:
            out["console_log"] = str(log)
        return out

    def console_log(self, ident: str) -> "Path | None":
        rec = self.load(self.resolve(ident))
        return self.backend(rec.brand).console_log(self.domain(rec))

    def console_log_text(self, ident: str, max_bytes: int = 256 * 1024) -> str | None:
        """What the domain wrote to its console (None: no log yet)."""
        rec = self.load(self.resolve(ident))
        backend, dom = self.backend(rec.brand), self.domain(rec)
        log = backend.console_log(dom)
        if log is None or not log.exists():
            return None
        return backend.console_log_text(dom, max_bytes)

    def console(self, ident: str) -> int:
        rec = self.get(ident)
        if rec.state not in ("running", "paused", "booting"):
            raise Conflict(f"domain {rec.uuid} is {rec.state}: no console to attach to")
        return self.backend(rec.brand).console(self.domain(rec))

    def doctor(self, fix: bool = False) -> list[str]:
        """Drift between records and reality; with fix, repair it. Returns one line per finding."""
        findings = []
        recs = self.store.all()
        before = {r.uuid: r.state for r in recs}
        self.reconcile(recs)
        for rec in recs:
            if before[rec.uuid] != rec.state:
                findings.append(f"{rec.uuid}: was recorded {before[rec.uuid]}, is {rec.state} (record corrected)")
            if rec.state == "failed" and self._present(rec):
                findings.append(f"{rec.uuid}: failed but still present in {rec.brand}")
                if fix:
                    with self.lock(rec.uuid):
                        rec = self.load(rec.uuid)  # the agent or a user may have acted meanwhile
                        self._reconcile_locked(rec)
                        if rec.state == "failed" and self._present(rec):
                            self._stop(rec, force=True, timeout=0)
        findings += self._leftovers(fix)
        findings += self._network_leftovers(fix)
        return findings

    def _leftovers(self, fix: bool) -> list[str]:
        """What eveadm made for domains it no longer has: directories, lock files, and whatever each
        available brand finds on the host (containers, monitors, VMMs, mounts, cgroups)."""
        import shutil

        found = []
        dirs = [path for parent in (self.ctx.root / "domains", self.ctx.run_root) if parent.is_dir()
                for path in parent.iterdir() if schema.UUID_RE.match(path.name)]
        locks_dir = self.ctx.root / "locks"
        locks = [p for p in locks_dir.iterdir() if p.suffix == ".lock"] if locks_dir.is_dir() else []
        orphans = []
        recorded = self._known()  # what the brands leave out of their scans
        for brand in brands():
            backend = self._available_backend(brand)
            if backend is not None:
                orphans += [(backend, o) for o in self._quietly(backend.orphans, recorded) or []]
        known = self._known()  # read after the scans: a create under way has its record before its parts
        for backend, orphan in orphans:
            if orphan.uuid in known:
                continue
            found.append(f"{backend.brand}: {orphan.describe()}: made by eveadm for a domain it does not have")
            if fix:
                err = self._try(backend.remove_orphan, orphan)
                if err:
                    found.append(f"{backend.brand}: could not remove {orphan.describe()}: {err}")
        for path in dirs:
            if path.name not in known:
                found.append(f"{path}: left over from a deleted domain")
                if fix:
                    shutil.rmtree(path, ignore_errors=True)
        for path in locks:
            uuid = path.name.removesuffix(".lock")
            if uuid not in known and not self.store.is_locked(uuid):
                found.append(f"{path}: lock file of a deleted domain")
                if fix:
                    self.store.drop_lock_file(uuid)
        return found

    def _known(self) -> set[str]:
        """The lock and directory names of what the store has: domains' uuids and networks' lock names."""
        from .network import LOCK_PREFIX

        return {uuid for uuid, _ in self.store.names()} | {NETWORKS_LOCK} | {
            LOCK_PREFIX + n["name"] for n in self.store.networks()}

    def _network_leftovers(self, fix: bool) -> list[str]:
        """dnsmasq processes, nft rules, bridges and state directories eveadm made for networks it no
        longer has (each carries this state root's mark: nothing else is touched)."""
        from .network import host as nethost
        from .network import state_dir

        found = []
        stored = {n["name"] for n in self.store.networks()}
        try:
            leftovers = nethost.leftovers(self.ctx, stored)
        except EveadmError as exc:
            return [f"network: cannot look for leftovers: {exc}"]
        for item in leftovers:
            found.append(f"network: {item.describe()}: made by eveadm for a network it does not have")
            if fix:
                err = self._try(item.remove)
                if err:
                    found.append(f"network: could not remove {item.describe()}: {err}")
        parent = os.path.dirname(state_dir(self.ctx.root_dir, "x"))
        if os.path.isdir(parent):
            for name in sorted(os.listdir(parent)):
                if name not in stored:
                    found.append(f"{os.path.join(parent, name)}: left over from a deleted network")
                    if fix:
                        import shutil

                        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        return found

    # -- networks ---------------------------------------------------------------------------------
    def _nic_problems(self, cfg: dict) -> list:
        """Nics naming a network that is not stored, an address outside its subnet, or a bridge that
        is not on the host (for brands wired to the host)."""
        from .network import spec as netspec

        nics = cfg.get("nics") or []
        if not nics:
            return []
        names = {n.get("network") for n in nics if isinstance(n, dict)} - {None}
        networks = {n["name"]: n for n in self.store.networks()} if names else {}
        errs = netspec.check_nics(nics, networks, cfg["brand"])
        if not errs and any(isinstance(n, dict) and n.get("network") and n.get("ip") for n in nics):
            taken = {(n["network"], n["ip"].split("/")[0]): rec.alias or rec.uuid
                     for rec in self.store.all() if rec.uuid != cfg.get("uuid")
                     for n in rec.config.get("nics") or [] if n.get("network") and n.get("ip")}
            errs += netspec.check_static_addresses(nics, taken)
        return errs

    @contextmanager
    def _nic_networks_held(self, cfg: dict, what: str):
        """Hold the locks of the networks cfg's nics name, and check they still exist, while the record
        is written: a `network delete` (which holds the same lock) then sees the new user or wins."""
        names = sorted({n.get("network") for n in cfg.get("nics") or [] if isinstance(n, dict)} - {None})
        with ExitStack() as held:
            for name in names:
                held.enter_context(self._network_lock(name))
                if self.store.network(name) is None:
                    report = schema.empty_report()
                    report["bad_values"].append({"property": "nics", "message": f"network {name} was just deleted"})
                    self._raise_report(report, what)
            yield

    def _network_lock(self, name: str):
        from .network import LOCK_PREFIX

        return self.store.lock(LOCK_PREFIX + name, self.lock_timeout, f"eveadm network ... {name}")

    def _networks_lock(self):
        """Held while networks are added, changed or removed: subnets are checked against all others."""
        return self.store.lock(NETWORKS_LOCK, self.lock_timeout)

    def network_load(self, name: str) -> dict:
        cfg = self.store.network(name)
        if cfg is None:
            known = ", ".join(n["name"] for n in self.store.networks()) or "none"
            raise NotFound(f"network {name} not found (networks: {known})")
        return cfg

    def network_users(self, name: str) -> list[Record]:
        return [rec for rec in self.store.all()
                if any(isinstance(n, dict) and n.get("network") == name for n in rec.config.get("nics") or [])]

    def network_create(self, payload) -> dict:
        from .network import host as nethost
        from .network import spec as netspec

        with self._networks_lock():
            existing = self.store.networks()
            report = netspec.check_create(payload, existing)
            self._raise_report(report, "network")
            if any(n["name"] == payload["name"] for n in existing):
                raise Conflict(f"network {payload['name']} already exists")
            cfg = netspec.normalize(payload, existing)
            with self._network_lock(cfg["name"]):
                try:
                    nethost.bring_up(self.ctx, cfg)
                except (EveadmError, OSError) as exc:
                    self._quietly(nethost.tear_down, self.ctx, cfg)  # nothing half-made stays
                    raise BackendError(f"network {cfg['name']}: {exc}") from None
                self.store.network_insert(cfg, ("network.create", {"network": cfg}))
        return cfg

    def network_get(self, name: str) -> dict:
        from .network import host as nethost

        cfg = self.network_load(name)
        out = dict(cfg)
        try:
            out.update(nethost.status(self.ctx, cfg))
        except EveadmError as exc:
            self.warnings.append(f"cannot read network {name} on the host: {exc}")
        out["domains"] = [rec.uuid for rec in self.network_users(name)]
        return out

    def network_list(self) -> list[dict]:
        return [self.network_get(cfg["name"]) for cfg in self.store.networks()]

    def network_update(self, name: str, payload) -> tuple[dict, list[str]]:
        from .network import host as nethost
        from .network import spec as netspec

        with self._networks_lock(), self._network_lock(name):
            cfg = self.network_load(name)
            self._raise_report(netspec.check_update(cfg, payload, self.store.networks()), "network update")
            new = netspec.apply_update(cfg, payload)
            changed = sorted(k for k in netspec.UPDATABLE if new.get(k) != cfg.get(k))
            if not changed:
                return cfg, []
            if "uplink" in changed and cfg.get("uplink"):
                nethost.release_uplink(self.ctx, cfg, cfg["uplink"])
            if new["type"] == "local" and ({"dns", "mtu"} & set(changed)):
                nethost.stop_dnsmasq(self.ctx.root_dir, name)  # its arguments changed: start it anew
            nethost.bring_up(self.ctx, new)
            if "mtu" in changed and "mtu" not in new:
                self.warnings.append(f"network {name}: the bridge keeps its MTU until the network is made again")
            self.store.network_save(new, ("network.update", {"changed": changed}))
            return new, changed

    def network_delete(self, name: str) -> list[str]:
        from .network import host as nethost

        with self._networks_lock(), self._network_lock(name):
            cfg = self.network_load(name)
            users = self.network_users(name)
            if users:
                named = ", ".join(rec.alias or rec.uuid for rec in users)
                raise Conflict(f"network {name} is used by {len(users)} domain(s): {named}")
            removed = nethost.tear_down(self.ctx, cfg)
            self.store.network_remove(name, ("network.delete", {"removed": removed}))
        return removed

    def network_up(self, name: str | None = None) -> dict[str, list[str]]:
        """Recreate what the store's networks need on the host (after a reboot, a dnsmasq that died,
        a bridge deleted by hand): {network: what was remade}. Errors are warnings, one per network."""
        from .network import host as nethost

        names = [name] if name else [n["name"] for n in self.store.networks()]
        out = {}
        for net in names:
            with self._network_lock(net):
                cfg = self.network_load(net)
                try:
                    # a read first: the agent calls this every cycle, and most of the time all is there
                    made = [] if nethost.status(self.ctx, cfg)["up"] else nethost.bring_up(self.ctx, cfg)
                except (EveadmError, OSError) as exc:
                    if name:
                        raise
                    self.warnings.append(f"network {net}: {exc}")
                    continue
                if made:
                    self.store.append_event("network:" + net, net, "network.up", {"remade": made})
                out[net] = made
        return out

    def _available_backend(self, brand: str) -> Backend | None:
        """The brand's backend if this host can run it (doctor looks only where it can)."""
        try:
            backend = self.backend(brand)
            backend.check_available()
            return backend
        except EveadmError:
            return None

    def pci(self, action: str, address: str | None, brand: str) -> list[str]:
        from .backends import PCI, brands

        if brand not in brands() or not brands()[brand].has(PCI):
            raise UsageError(f"brand {brand!r} does not assign PCI devices (brands that do: "
                             f"{', '.join(n for n, f in brands().items() if f.has(PCI))})")
        backend = self.backend(brand)
        if action == "list":
            return backend.pci_list()
        if not address:
            raise UsageError(f"pci {action} needs an address DDDD:BB:DD.F")
        if not schema.PCI_RE.match(address):
            raise UsageError(f"{address!r} is not a PCI address DDDD:BB:DD.F (lowercase hex)")
        if action == "assignable-add":
            backend.pci_assignable_add(address)
        elif action == "assignable-remove":
            backend.pci_assignable_remove(address)
        else:
            raise UsageError(f"unknown pci action {action!r}")
        return [address]

    def render(self, payload) -> str:
        report, cfg = self._check_create(payload)
        self._raise_report(report, "create")
        rec = Record(cfg["uuid"], cfg.get("alias"), cfg["brand"], "stopped", cfg, {}, {}, 0, 0)
        return self.backend(cfg["brand"]).render(self.domain(rec))

