"""The lifecycle engine: one state machine above every backend (docs/contract.md; after domainmgr).

    provisioning -> paused -> booting -> running -> stopping -> stopped
                 \\-> failed (create failed after retries, unpause failed, crashed, vanished)

All policy lives here and only here: two-phase start (create paused, then
activate), create retries, the stop ladder (graceful -> forced -> destroy),
per-domain locks, truth-on-read reconciliation, and the event journal. The
backends (eveadm.backends.*) only carry out primitives.
"""

from __future__ import annotations

import os
import time

from . import faults, interrupts, privatedir, schema
from .backends import CONTAINER, brands
from .backends import facts as brand_facts
from .backends import load as load_backend
from .backends.base import (ABSENT, CRASHED, FORCED, GRACEFUL, PAUSED, RUNNING, SHUTDOWN, Backend, Domain,
                            Status)
from .backends.host import BackendContext
from .errors import (BackendError, Conflict, EveadmError, Interrupted, LiveChangeFailed, LockHeld, NotFound, NotLive,
                     PermanentError, Timeout, UsageError, ValidationError)
from .image_ops import ImageOps
from .lazy import contextmanager
from .network_ops import NETWORKS_LOCK, NetworkOps
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
ALIASES_LOCK = "aliases"  # held while a record taking an alias is written: an alias names one domain
IMPATIENT_BUDGET = 6  # s: delete's cap on every rung (domainmgr's impatient doInactivate, shortened)


def _now_iso() -> str:
    return iso(time.time())


class Engine(NetworkOps, ImageOps):
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
        """A UUID, or a unique alias, to the domain's UUID. The store is asked first and the patterns
        only word a miss (an alias never looks like a UUID): compiling them costs a read's start-up."""
        if self.store.has(ident):
            return ident
        matches = self.store.by_alias(ident)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Conflict(f"alias {ident!r} names {len(matches)} domains ({', '.join(matches)}): use the UUID")
        if schema.UUID_RE.match(ident):
            raise NotFound(f"domain {ident} not found")
        if not schema.ALIAS_RE.match(ident):
            raise UsageError(f"{ident!r} is neither a UUID nor an alias")
        raise NotFound(f"no domain with UUID or alias {ident!r}")

    def lock(self, uuid: str, timeout: float | None = None):
        return self.store.lock(uuid, self.lock_timeout if timeout is None else timeout)

    # -- validation --------------------------------------------------------------
    def check_payload(self, payload, action: str = "create", brand: str | None = None) -> dict:
        """The validate report for a create or update payload (empty lists when valid)."""
        if action == "create":
            return self._check_create(payload)[0]
        if brand is not None and brand not in brands():
            raise UsageError(f"unknown brand {brand!r} (brands: {', '.join(brands())})")
        return schema.check_update(payload, brand)

    def _check_create(self, payload) -> tuple[dict, dict | None]:
        """(validate report, the normalized config when valid): schema checks, then the brand's."""
        report = schema.check_create(payload)
        if not schema.is_empty(report):
            return report, None
        cfg = schema.normalize(payload)
        schema.add_problems(report, [*self._nic_problems(cfg), *self._image_problems(cfg),
                                     *self.backend(cfg["brand"]).validate(cfg)])
        return report, cfg

    @staticmethod
    def _raise_report(report: dict, what: str) -> None:
        if schema.is_empty(report):
            return
        parts = []
        fixed = [schema.fixed_message(p) if what == "update" else None for p in report["bad_properties"]]
        unknown = [p for p, why in zip(report["bad_properties"], fixed) if not why]
        if unknown:
            parts.append("unknown properties: " + ", ".join(unknown))
        parts += filter(None, fixed)
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
            with self._alias_held(cfg.get("alias"), uuid), self._nic_networks_held(cfg, "create"), \
                    self._images_held(cfg, "create"):
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
        self._take_pending(rec)  # this boot uses the config as updated
        try:
            backend.check_available()
            privatedir.ensure(dom.data_path)
            privatedir.ensure(dom.run_path)
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
        self._take_pending(rec)  # released with the config that ran; the next start gets the update
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

    def kill(self, ident: str, sig: int = 15) -> Record:  # SIGTERM (`signal` is imported only when used)
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._reconcile_locked(rec)
            if rec.state not in ("running", "paused", "booting", "stopping"):
                raise Conflict(f"domain {uuid} is {rec.state}: nothing to signal")
            self.backend(rec.brand).kill(self.domain(rec), sig)
            import signal

            self._event(rec, "kill", signal=signal.Signals(sig).name)
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
    def update(self, ident: str, payload) -> tuple[Record, dict]:
        """Apply an update; per changed property, how: {"applied": "live"|"stored"|"pending", "detail"}.
        A running domain's record holds only what runs: a change it could not take now waits in
        runtime.pending_restart ({property: new value, null = removed}) until the domain next stops."""
        uuid = self.resolve(ident)
        with self.lock(uuid):
            rec = self.load(uuid)
            self._raise_report(schema.check_update(payload, rec.brand), "update")
            new, changed = schema.apply_update(rec.config, payload)
            full = schema.check_create({k: v for k, v in new.items()})
            if schema.is_empty(full) and "nics" in changed:
                schema.add_problems(full, self._nic_problems(new))
            if schema.is_empty(full):
                schema.add_problems(full, self.backend(rec.brand).validate(new))
            self._raise_report(full, "update")
            if "alias" in changed:  # before anything changes; checked again under the lock at the save
                self._check_alias_free(new.get("alias"), uuid)
            self._reconcile_locked(rec)
            if "pci_devices" in changed and rec.state not in INACTIVE:
                raise Conflict(f"domain {uuid} is {rec.state}: pci_devices change only while stopped")
            rec.alias = new.get("alias")
            if rec.state in INACTIVE:  # nothing runs: all of it takes effect at the next start
                rec.config = new
                results = {k: {"applied": "stored", "detail": "takes effect at the next start"} for k in changed}
                failure = None
            else:
                results, failure = self._change_running(rec, new, changed)
            with self._alias_held(new.get("alias") if "alias" in changed else None, uuid), \
                    self._nic_networks_held(new if "nics" in changed else {}, "update"):
                self.store.save(rec, [("update", {"changed": changed, "results": results})])
            if failure:
                raise BackendError(f"domain {uuid}: {failure}; `eveadm get` shows what runs now and what is "
                                   "pending_restart")
            return rec, results

    def _change_running(self, rec: Record, new: dict, changed: list[str]) -> tuple[dict, str | None]:
        """Apply `changed` to a running domain: metadata at once, every other property through the
        backend's change_live, one at a time, so the record tracks what actually runs. What cannot
        change now goes to pending_restart; a failure stops the rest (also pending) and is returned."""
        cur = dict(rec.config)
        pending = dict(rec.runtime.get("pending_restart") or {})
        results: dict[str, dict] = {}
        failure = None
        backend = self.backend(rec.brand)
        live_keys = brand_facts(rec.brand).live
        for key in changed:
            mode = schema.update_mode(key)
            if mode == schema.LIVE:  # eveadm's own settings and metadata: nothing in the domain to change
                cur[key] = new.get(key)
                results[key] = {"applied": "live", "detail": "in effect now"}
                continue
            if failure:
                results[key] = {"applied": "pending", "detail": "not tried: an earlier change failed"}
            else:
                rec.config = cur
                try:
                    if key not in live_keys:
                        raise NotLive(f"brand {rec.brand} cannot change {key} while it runs")
                    backend.change_live(self.domain(rec), key, cur.get(key), new.get(key))
                    cur[key] = new.get(key)
                    results[key] = {"applied": "live", "detail": "in effect now"}
                    pending.pop(key, None)
                    continue
                except NotLive as exc:
                    results[key] = {"applied": "pending", "detail": f"pending until restart: {exc}"}
                except EveadmError as exc:
                    if isinstance(exc, LiveChangeFailed):  # part of it runs: the record says which
                        cur[key] = exc.in_effect
                    failure = f"live change of {key} failed: {exc}"
                    results[key] = {"applied": "pending", "detail": failure}
            pending[key] = new.get(key)
        rec.config = {k: v for k, v in cur.items() if v is not None}
        if pending:
            rec.runtime["pending_restart"] = pending
        else:
            rec.runtime.pop("pending_restart", None)
        return results, failure

    @staticmethod
    def _take_pending(rec: Record) -> None:
        """The domain no longer runs (or boots anew): what waited for a restart is now its config."""
        pending = rec.runtime.pop("pending_restart", None)
        if isinstance(pending, dict) and pending:
            cfg = dict(rec.config)
            for key, value in pending.items():
                if value is None:
                    cfg.pop(key, None)
                else:
                    cfg[key] = value
            rec.config = cfg

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
                elif note_ids and st.state in (RUNNING, PAUSED) and (st.domain_id, st.pid) != rec.ids():
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

    def stats(self, uuids: list[str] | None = None) -> list[tuple[Record, dict]]:
        """(record, the backend's counters) of the domains named (else all), verified first; the counters
        asked of each brand once for all its active domains; {} for an inactive one or an unknown brand."""
        recs = [self.load(self.resolve(u)) for u in uuids] if uuids else self.store.all(columns_only=True)
        self.reconcile(recs, note_ids=False)
        by_brand: dict[str, list[Record]] = {}
        for rec in recs:
            if rec.state in ACTIVE:
                by_brand.setdefault(rec.brand, []).append(rec)
        found: dict[str, dict] = {}
        for brand, group in by_brand.items():
            try:
                found.update(self.backend(brand).stats([self.domain(r) for r in group]) or {})
            except EveadmError as exc:
                self.warnings.append(f"cannot read {brand} stats: {exc}")
        return [(rec, found.get(rec.uuid, {}) if rec.state in ACTIVE else {}) for rec in recs]

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
        findings += self._image_leftovers(fix)
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

    # -- aliases ------------------------------------------------------------------------------------
    @contextmanager
    def _alias_held(self, alias: str | None, uuid: str):
        """Hold the aliases lock, and check no other domain has `alias`, while the record taking it is
        written: commands accept an alias in place of a UUID, so two domains must never share one."""
        if not alias:
            yield
            return
        with self.store.lock(ALIASES_LOCK, self.lock_timeout, f"eveadm (alias {alias})"):
            self._check_alias_free(alias, uuid)
            yield

    def _check_alias_free(self, alias: str | None, uuid: str) -> None:
        others = [u for u in self.store.by_alias(alias) if u != uuid] if alias else []
        if others:
            raise Conflict(f"alias {alias!r} is in use by domain {others[0]}")

    def unavailable(self, brand: str) -> str | None:
        """Why this host cannot run the brand (one line naming what is missing), None when it can."""
        try:
            self.backend(brand).check_available()
            return None
        except EveadmError as exc:
            return str(exc)

    def _available_backend(self, brand: str) -> Backend | None:
        """The brand's backend if this host can run it (doctor looks only where it can)."""
        return self.backend(brand) if self.unavailable(brand) is None else None

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
