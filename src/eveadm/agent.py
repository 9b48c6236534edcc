"""`eveadm agent`: the supervisor loop (SPEC §4.6, after domainmgr's per-domain ticker and vmadmd).

At start it boots every domain with autoboot that is not running. Then, every
`interval` seconds, it verifies all domains (the same truth-on-read as
`list`), restarts crashed domains whose on_crash is `restart` (back-off 1 s,
doubling to 5 min per domain), and retries boots that failed after
`boot_retry` seconds (domainmgr's timer.boot.retry, default 600 s). SIGTERM
or SIGINT ends it cleanly between two steps. Every decision is an event
(`agent.boot`, `agent.restart`, `agent.boot_retry`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from .errors import EveadmError
from .lifecycle import Engine

MAX_BACKOFF = 300.0
STABLE_AFTER = 60.0  # s running after a restart before the back-off starts from 1 s again


class Agent:
    def __init__(self, engine: Engine, interval: float = 5.0, boot_retry: float = 600.0, log=None):
        self.engine = engine
        self.interval = interval
        self.boot_retry = boot_retry
        self.stopping = threading.Event()
        # uuid -> (earliest next restart, delay after that one, time of the last restart)
        self.backoff: dict[str, tuple[float, float, float]] = {}
        self.log = log or (lambda msg: print(f"eveadm agent: {msg}", file=sys.stderr, flush=True))

    def _start(self, rec, why: str) -> bool:
        self.engine.store.append_event(rec.uuid, rec.alias, f"agent.{why}", {"state": rec.state})
        try:
            self.engine.start(rec.uuid)
            self.log(f"{why}: started {rec.uuid}")
            return True
        except EveadmError as exc:
            self.log(f"{why}: {rec.uuid}: {exc}")
            return False

    def boot_all(self) -> None:
        for rec in self.engine.list():
            if rec.config.get("autoboot") and rec.state in ("stopped", "failed", "paused"):
                self._start(rec, "boot")

    def tick(self) -> None:
        now = time.time()
        for rec in self.engine.list():
            if rec.state != "failed" or not rec.config.get("autoboot"):
                # forget the back-off only once the domain has stayed up for a while
                entry = self.backoff.get(rec.uuid)
                if entry and (rec.state != "running" or now - entry[2] >= STABLE_AFTER):
                    del self.backoff[rec.uuid]
                continue
            if rec.runtime.get("boot_failed"):
                if now - rec.runtime.get("failed_at", now) >= self.boot_retry:
                    self._start(rec, "boot_retry")
            elif rec.config.get("on_crash") == "restart":
                due, delay, _ = self.backoff.get(rec.uuid, (0.0, 1.0, now))
                if now >= due:
                    ok = self._start(rec, "restart")
                    # a domain that crashes again soon after a restart waits longer each time
                    self.backoff[rec.uuid] = (now + delay, min(delay * 2, MAX_BACKOFF), now)
                    if not ok:
                        self.log(f"restart of {rec.uuid} failed; next try in {delay:g}s")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.log(f"started (interval {self.interval:g}s, boot retry {self.boot_retry:g}s)")
        self.boot_all()
        while not self.stopping.is_set():
            try:
                self.tick()
            except EveadmError as exc:
                self.log(f"verify failed: {exc}")
            self.stopping.wait(self.interval)
        self.log("stopped")
        return 0
