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

MAX_BACKOFF = 300.0
STABLE_AFTER = 60.0  # s running after a restart before the back-off starts from 1 s again


class Agent:
    def __init__(self, node, interval: float = 5.0, boot_retry: float = 600.0, log=None):
        self.node = node  # an eveadm.Node: the agent goes through the same door as the CLI
        self.interval = interval
        self.boot_retry = boot_retry
        self.stopping = threading.Event()
        # uuid -> (earliest next restart, delay after that one, time of the last restart)
        self.backoff: dict[str, tuple[float, float, float]] = {}
        self.log = log or (lambda msg: print(f"eveadm agent: {msg}", file=sys.stderr, flush=True))

    def _start(self, dom: dict, why: str) -> bool:
        self.node.record_event(dom["uuid"], f"agent.{why}", {"state": dom["state"]})
        try:
            self.node.start(dom["uuid"])
            self.log(f"{why}: started {dom['uuid']}")
            return True
        except EveadmError as exc:
            self.log(f"{why}: {dom['uuid']}: {exc}")
            return False

    def boot_all(self) -> None:
        for dom in self.node.list():
            if dom.get("autoboot") and dom["state"] in ("stopped", "failed", "paused"):
                self._start(dom, "boot")

    def tick(self) -> None:
        now = time.time()
        for dom in self.node.list():
            uuid = dom["uuid"]
            if dom["state"] != "failed" or not dom.get("autoboot"):
                # forget the back-off only once the domain has stayed up for a while
                entry = self.backoff.get(uuid)
                if entry and (dom["state"] != "running" or now - entry[2] >= STABLE_AFTER):
                    del self.backoff[uuid]
                continue
            if dom.get("boot_failed"):
                if now - _failed_at(dom, now) >= self.boot_retry:
                    self._start(dom, "boot_retry")
            elif dom.get("on_crash") == "restart":
                due, delay, _ = self.backoff.get(uuid, (0.0, 1.0, now))
                if now >= due:
                    ok = self._start(dom, "restart")
                    # a domain that crashes again soon after a restart waits longer each time
                    self.backoff[uuid] = (now + delay, min(delay * 2, MAX_BACKOFF), now)
                    if not ok:
                        self.log(f"restart of {uuid} failed; next try in {delay:g}s")

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


def _failed_at(dom: dict, default: float) -> float:
    """When the domain failed, from its error's ISO timestamp (UTC)."""
    import calendar

    stamp = (dom.get("error") or {}).get("time")
    try:
        whole, _, frac = stamp.rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))
    except (AttributeError, ValueError):
        return default
