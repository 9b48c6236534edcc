"""Prometheus metrics of the node: `eveadm agent --metrics [HOST:]PORT` serves /metrics.

prometheus-client (imported only when --metrics is given) serves the text format. Its collector reads
the node at every scrape, so what Prometheus stores is what is true at that moment, never a copy the
agent refreshed a while ago. One scrape costs what `eveadm list` costs (one truth-on-read pass, the
backends' `status`), one `stats` call per brand for the active domains, and the journal's events
written since the scrape before. Scrapes run one at a time; each reads through its own Node (an
SQLite connection serves one thread).

Per domain, labels uuid, alias ("" when none), brand:

    eveadm_domain_state{state}                      1, labelled with the state it is in (an info-style
                                                    series: a change of state ends one series, starts another)
    eveadm_domain_cpu_seconds_total                 Backend.stats of an active domain (docs/metrics.md
    eveadm_domain_memory_bytes                      says where each brand reads them); counters since
    eveadm_domain_disk_{read,write}_{bytes,ops}_total       its VMM or process started, so they
    eveadm_domain_network_{receive,transmit}_bytes_total    restart with it (Prometheus sees a reset)
    eveadm_domain_restarts_total                    the agent's restarts (`agent.restart` events)
    eveadm_domain_stop_escalations_total{rung}      stops that went on to this rung because the rung
                                                    before did not end the domain (-F, or a paused
                                                    domain's destroy, are no escalation)
    eveadm_domain_boot_failures_total               boots that ended failed (provisioning or booting
                                                    -> failed: create retries spent, unpause failed)

For the node:

    eveadm_command_duration_seconds{command}        histogram of eveadm's own lifecycle commands, from
                                                    the journal, whichever process ran them (CLI, agent,
                                                    apply): start = provisioning -> running (create,
                                                    start, reboot, restarts), without the time a
                                                    `create --paused` domain waited; stop = stop.gone's
                                                    seconds (stop, delete, reboot)
    eveadm_scrape_read_seconds                      how long this scrape took to read the node
    process_*                                       the agent process itself (CPU, memory, fds)

The journal counts are the agent's since it started: its first scrape reads the whole journal, later
ones only what is new. The journal is bounded (journal_max_events), so after an agent restart a count
may start lower, which Prometheus reads as a counter reset, as it should.
"""

from __future__ import annotations

import calendar
import threading
import time

from .errors import EveadmError
from .node import STOP_LADDER

LABELS = ("uuid", "alias", "brand")
# Backend.stats field -> (metric name without _total, is a counter, help)
STATS_METRICS = {
    "cpu_seconds": ("eveadm_domain_cpu_seconds", True, "CPU time the domain's VMM or process used"),
    "memory_bytes": ("eveadm_domain_memory_bytes", False, "Memory the domain uses on the host"),
    "disk_read_bytes": ("eveadm_domain_disk_read_bytes", True, "Bytes the domain read from its disks"),
    "disk_write_bytes": ("eveadm_domain_disk_write_bytes", True, "Bytes the domain wrote to its disks"),
    "disk_read_ops": ("eveadm_domain_disk_read_ops", True, "Read requests the domain's disks served"),
    "disk_write_ops": ("eveadm_domain_disk_write_ops", True, "Write requests the domain's disks served"),
    "net_rx_bytes": ("eveadm_domain_network_receive_bytes", True, "Bytes the domain received on its nics"),
    "net_tx_bytes": ("eveadm_domain_network_transmit_bytes", True, "Bytes the domain sent on its nics"),
}
RUNG_OF_EVENT = {rung.event: rung.name for rung in STOP_LADDER}
ESCALATION_RUNGS = tuple(rung.name for rung in STOP_LADDER[1:])  # the first rung is where a stop starts
BOOTING = ("provisioning", "booting")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
COMMANDS = ("start", "stop")
JOURNAL_BATCH = 10000  # events read per query (the store's limit)


def _epoch(stamp: str) -> float:
    """The journal's ISO time (UTC, milliseconds) -> seconds since the epoch."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))


class Histogram:
    def __init__(self):
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.counts[next((i for i, le in enumerate(DURATION_BUCKETS) if seconds <= le), len(DURATION_BUCKETS))] += 1

    def buckets(self) -> list[tuple[str, int]]:
        from prometheus_client.utils import floatToGoString  # how the library writes `le` itself

        out, running = [], 0
        for le, count in zip([*map(floatToGoString, DURATION_BUCKETS), "+Inf"], self.counts):
            running += count
            out.append((le, running))
        return out


class JournalTally:
    """Restarts, stop escalations, boot failures and command durations, from the event journal, read
    from where the previous scrape stopped."""

    def __init__(self):
        self.last_id = 0
        self.restarts: dict[str, int] = {}
        self.escalations: dict[tuple[str, str], int] = {}
        self.boot_failures: dict[str, int] = {}
        self.durations = {command: Histogram() for command in COMMANDS}
        self._climbing: set[str] = set()  # domains whose stop has sent a rung already
        self._boots: dict[str, list] = {}  # uuid -> [provisioning time, seconds before a pause, booting time]

    def read(self, node) -> None:
        while True:
            batch = list(node.events(after=self.last_id))
            for ev in batch:
                self.last_id = ev["id"]
                self.feed(ev)
            if len(batch) < JOURNAL_BATCH:
                return

    def feed(self, ev: dict) -> None:
        etype, uuid = ev["type"], ev["uuid"]
        if etype == "agent.restart":
            self.restarts[uuid] = self.restarts.get(uuid, 0) + 1
        elif etype in RUNG_OF_EVENT:
            if uuid in self._climbing:
                key = (uuid, RUNG_OF_EVENT[etype])
                self.escalations[key] = self.escalations.get(key, 0) + 1
            self._climbing.add(uuid)
        elif etype == "stop.gone":
            self._climbing.discard(uuid)
            if isinstance(ev.get("seconds"), (int, float)):
                self.durations["stop"].observe(float(ev["seconds"]))
        elif etype == "state":
            self._state(uuid, ev.get("state"), ev.get("previous_state"), _epoch(ev["time"]))
        elif etype == "create":  # a record is born provisioning: no state event says so
            self._state(uuid, "provisioning", None, _epoch(ev["time"]))
        elif etype == "delete":
            self._forget(uuid)

    def _state(self, uuid: str, state: str, previous: str, at: float) -> None:
        if state == "stopping":
            self._climbing.discard(uuid)
        if state == "failed" and previous in BOOTING:
            self.boot_failures[uuid] = self.boot_failures.get(uuid, 0) + 1
        boot = self._boots.get(uuid)
        if state == "provisioning":
            self._boots[uuid] = [at, 0.0, None]
        elif boot is None:
            return
        elif state == "paused" and previous == "provisioning":
            boot[1] += at - boot[0]  # created; the wait until `start` is the operator's, not eveadm's
        elif state == "booting":
            boot[2] = at
        elif state == "running" and previous == "booting" and boot[2] is not None:
            self.durations["start"].observe(boot[1] + at - boot[2])
            del self._boots[uuid]
        elif state in ("stopped", "failed"):
            del self._boots[uuid]

    def _forget(self, uuid: str) -> None:
        self.restarts.pop(uuid, None)
        self.boot_failures.pop(uuid, None)
        for rung in ESCALATION_RUNGS:
            self.escalations.pop((uuid, rung), None)
        self._climbing.discard(uuid)
        self._boots.pop(uuid, None)


class NodeCollector:
    """A prometheus-client collector that reads the node at every scrape."""

    def __init__(self, node_factory):
        self.node_factory = node_factory  # () -> a Node for the scraping thread
        self.journal = JournalTally()
        self._lock = threading.Lock()

    def describe(self):
        return []  # registering must not read the node

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            started = time.monotonic()
            node = self.node_factory()
            domains = node.stats(inactive=True)
            self.journal.read(node)
            read_seconds = time.monotonic() - started
            tally = self.journal

            state = GaugeMetricFamily("eveadm_domain_state", "1, labelled with the state the domain is in",
                                      labels=[*LABELS, "state"])
            stats = {field: (CounterMetricFamily if counter else GaugeMetricFamily)(name, text, labels=LABELS)
                     for field, (name, counter, text) in STATS_METRICS.items()}
            restarts = CounterMetricFamily("eveadm_domain_restarts", "Restarts of the domain by the agent",
                                           labels=LABELS)
            escalations = CounterMetricFamily(
                "eveadm_domain_stop_escalations", "Stops that went on to this rung because the one before did not "
                "end the domain", labels=[*LABELS, "rung"])
            failures = CounterMetricFamily("eveadm_domain_boot_failures", "Boots of the domain that ended failed",
                                           labels=LABELS)
            for dom in domains:
                uuid, labels = dom["uuid"], [dom["uuid"], dom["alias"] or "", dom["brand"]]
                state.add_metric([*labels, dom["state"]], 1)
                for field, family in stats.items():
                    if field in dom:
                        family.add_metric(labels, dom[field])
                restarts.add_metric(labels, tally.restarts.get(uuid, 0))
                for rung in ESCALATION_RUNGS:
                    escalations.add_metric([*labels, rung], tally.escalations.get((uuid, rung), 0))
                failures.add_metric(labels, tally.boot_failures.get(uuid, 0))
            durations = HistogramMetricFamily("eveadm_command_duration_seconds",
                                              "How long eveadm's start and stop took (from the journal)",
                                              labels=["command"])
            for command, hist in tally.durations.items():
                durations.add_metric([command], hist.buckets(), hist.total)
            read = GaugeMetricFamily("eveadm_scrape_read_seconds", "How long this scrape took to read the node",
                                     value=read_seconds)
        yield from (state, *stats.values(), restarts, escalations, failures, durations, read)


def registry(node_factory):
    """A registry with the node's collector and the agent process's own metrics."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    reg = CollectorRegistry()
    reg.register(NodeCollector(node_factory))
    ProcessCollector(registry=reg)
    return reg


def serve(node, host: str, port: int):
    """Serve /metrics on host:port from a daemon thread; returns the server (`shutdown()` ends it)."""
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, host, registry=registry(node.for_thread))
    except OSError as exc:
        raise EveadmError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return server
