"""`eveadm agent`: the supervisor loop (after domainmgr's per-domain ticker and vmadmd).

At start it boots every domain with autoboot that is not running. Then, every
`interval` seconds, it verifies all domains (the same truth-on-read as
`list`) and, for domains with autoboot:
  - restarts a crashed domain whose on_crash is `restart`, or whose
    restart_policy is `on-failure` or `always`;
  - restarts a domain whose program ended by itself when its restart_policy
    says so (`always`; `on-failure` when the exit status is not 0);
  - retries a boot that failed after `boot_retry` seconds (domainmgr's
    timer.boot.retry, default 600 s).
Restarts back off per domain (1 s, doubling to 5 min; back to 1 s once the
domain stayed up 60 s), and the back-off is kept in <root>/agent-state.json so
it survives an agent restart. SIGTERM or SIGINT ends the agent cleanly
between two steps. Every decision is an event (`agent.boot`,
`agent.restart`, `agent.boot_retry`).
With `--metrics [HOST:]PORT` it also serves Prometheus metrics on
http://HOST:PORT/metrics (eveadm.metrics; HOST defaults to 127.0.0.1).
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
    def __init__(self, node, interval: float = 5.0, boot_retry: float = 600.0, log=None,
                 metrics: tuple[str, int] | None = None):
        self.node = node  # an eveadm.Node: the agent goes through the same door as the CLI
        self.metrics = metrics  # (host, port) to serve Prometheus metrics on; None: off
        self.interval = interval
        self.boot_retry = boot_retry
        self.stopping = threading.Event()
        # uuid -> [earliest next restart, delay after that one, time of the last restart]
        self.backoff: dict[str, list[float]] = node.agent_state().get("backoff", {})
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

    def networks_up(self) -> None:
        """Remake what a stored network lost (its bridge, dnsmasq, NAT rule): at start, after a host
        reboot, and at every tick, e.g. a dnsmasq that died. Reads only when all is there."""
        try:
            for name, remade in self.node.network_up().items():
                if remade:
                    self.log(f"network {name}: remade {', '.join(remade)}")
        except EveadmError as exc:
            self.log(f"networks: {exc}")

    def boot_all(self) -> None:
        self.networks_up()  # before the domains that need them
        for dom in self.node.list():
            if dom.get("autoboot") and dom["state"] in ("stopped", "failed", "paused"):
                self._start(dom, "boot")

    def tick(self) -> None:
        self.networks_up()
        now = time.time()
        before = {k: list(v) for k, v in self.backoff.items()}
        for dom in self.node.list():
            uuid = dom["uuid"]
            why = self._due(dom, now)
            if why is None:
                # forget the back-off only once the domain has stayed up for a while
                entry = self.backoff.get(uuid)
                if entry and (dom["state"] != "running" or now - entry[2] >= STABLE_AFTER):
                    del self.backoff[uuid]
                continue
            if why == "boot_retry":
                self._start(dom, "boot_retry")
                continue
            due, delay, _ = self.backoff.get(uuid, (0.0, 1.0, now))
            if now >= due:
                ok = self._start(dom, "restart")
                # a domain that ends again soon after a restart waits longer each time
                self.backoff[uuid] = [now + delay, min(delay * 2, MAX_BACKOFF), now]
                if not ok:
                    self.log(f"restart of {uuid} failed; next try in {delay:g}s")
        if self.backoff != before:
            self.node.save_agent_state({"backoff": self.backoff})

    def _due(self, dom: dict, now: float) -> str | None:
        """Why this domain should be started now ("restart", "boot_retry"), or None."""
        if not dom.get("autoboot"):
            return None
        policy = dom.get("restart_policy", "no")
        if dom["state"] == "failed":
            if dom.get("boot_failed"):
                return "boot_retry" if now - _failed_at(dom, now) >= self.boot_retry else None
            return "restart" if dom.get("on_crash") == "restart" or policy != "no" else None
        if dom["state"] == "stopped" and dom.get("ended_by") == "itself":
            if policy == "always" or (policy == "on-failure" and dom.get("exit_status")):
                return "restart"
        return None

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        server = None
        if self.metrics:  # before anything else: an address that cannot be served ends the agent at once
            from .metrics import serve

            server = serve(self.node, *self.metrics)
            host, port = self.metrics
            self.log(f"metrics on http://{f'[{host}]' if ':' in host else host}:{port}/metrics")
        self.log(f"started (interval {self.interval:g}s, boot retry {self.boot_retry:g}s)")
        self.boot_all()
        while not self.stopping.is_set():
            try:
                self.tick()
            except EveadmError as exc:
                self.log(f"verify failed: {exc}")
            self.stopping.wait(self.interval)
        if server is not None:
            server.shutdown()
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
