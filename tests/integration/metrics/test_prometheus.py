"""A real Prometheus scrapes `eveadm agent --metrics`: a real container's state and CPU series reach it, and
the restart the agent makes after the container is killed from outside is counted."""

from __future__ import annotations

import os
import signal

from eveadm.backends.host import wait_until

LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"


def test_prometheus_sees_a_containers_state_cpu_and_the_restart_after_it_is_killed(cli, agent, prometheus, rootfs):
    prom = prometheus([f"127.0.0.1:{agent.port}"])
    dom = cli.create({"brand": "container", "alias": "scraped", "ram": 64, "image": str(rootfs),
                      "cmd": ["/bin/sh", "-c", LOOP], "restart_policy": "always"})
    uuid, first_pid = dom["uuid"], dom["pid"]
    assert dom["state"] == "running"

    def one(expr: str):
        found = prom.query(expr)
        return found[0] if len(found) == 1 else None

    running = f'eveadm_domain_state{{uuid="{uuid}",state="running"}} == 1'
    assert wait_until(lambda: one(running), 60), f"never scraped as running; agent log: {agent.log.read_text()}"
    labels = one(running)["metric"]
    assert (labels["alias"], labels["brand"], labels["job"]) == ("scraped", "container", "eveadm")
    cpu = f'eveadm_domain_cpu_seconds_total{{uuid="{uuid}"}}'
    assert wait_until(lambda: one(cpu), 30)
    assert float(one(cpu)["value"][1]) > 0
    assert float(one(f'eveadm_domain_memory_bytes{{uuid="{uuid}"}}')["value"][1]) > 0
    restarts = f'eveadm_domain_restarts_total{{uuid="{uuid}"}}'
    assert float(one(restarts)["value"][1]) == 0

    os.kill(first_pid, signal.SIGKILL)  # from outside eveadm: a crash, which restart_policy always restarts
    assert wait_until(lambda: (found := one(restarts)) and float(found["value"][1]) == 1, 90), \
        f"no restart counted; agent log: {agent.log.read_text()}"
    again = cli.json("get", uuid)
    assert again["state"] == "running" and again["pid"] != first_pid
    assert wait_until(lambda: one(f"{running} and on() {restarts} == 1"), 30), "running again after the restart"
    assert float(one(f'eveadm_domain_boot_failures_total{{uuid="{uuid}"}}')["value"][1]) == 0
    starts = one('eveadm_command_duration_seconds_count{command="start"}')
    assert starts and float(starts["value"][1]) >= 2, "the create and the restart were timed"
    assert agent.stop() == 0
