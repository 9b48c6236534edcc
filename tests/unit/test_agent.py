"""`eveadm agent`: boots autoboot domains, restarts crashed ones with on_crash=restart, ends on SIGTERM."""

import json
import signal
import subprocess
import sys

from eveadm.backends.host import BackendContext, wait_until
from eveadm.backends.null import NullBackend


def test_agent_boots_restarts_and_stops_cleanly(cli):
    boot_me = "aaaaaaaa-0000-4000-8000-000000000001"
    cli.ok("create", input=json.dumps({"brand": "null", "uuid": boot_me, "autoboot": False}))
    cli.ok("update", boot_me, "autoboot=true")            # stopped, but should run: the agent boots it
    crashy = cli.create({"brand": "null", "on_crash": "restart"})["uuid"]
    halting = cli.create({"brand": "null"})["uuid"]     # on_crash halt: stays failed
    sim = NullBackend(BackendContext(cli.root))
    agent = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "agent", "--interval", "0.1"],
                             env=cli.env, stderr=subprocess.PIPE, text=True)
    try:
        state = lambda u: cli.json("get", u)["state"]  # noqa: E731
        assert wait_until(lambda: state(boot_me) == "running", 30)
        sim.crash(halting)
        sim.crash(crashy)
        # the agent's tick that restarts `crashy` has also seen `halting` crash, and leaves it failed
        assert wait_until(lambda: any(json.loads(l)["type"] == "agent.restart"
                                      for l in cli.ok("events", "-j", crashy).stdout.splitlines()), 30)
        assert wait_until(lambda: state(crashy) == "running", 30)
        assert state(halting) == "failed"
        types = [json.loads(l)["type"] for l in cli.ok("events", "-j", crashy).stdout.splitlines()]
        assert "agent.restart" in types
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(30)
    assert rc == 0 and "stopped" in agent.stderr.read()


def test_restart_backoff_grows_while_a_domain_keeps_crashing(tmp_path, monkeypatch):
    import eveadm
    from eveadm import agent as agent_mod

    node = eveadm.Node(root=tmp_path)
    uuid = node.create({"brand": "null", "on_crash": "restart"})["uuid"]
    sim = NullBackend(BackendContext(tmp_path))
    clock = [1000.0]
    monkeypatch.setattr(agent_mod.time, "time", lambda: clock[0])
    ag = agent_mod.Agent(node, interval=0, log=lambda msg: None)
    # a guest that crashes again right after every restart: 1 s, 2 s, 4 s, 8 s, 16 s apart
    assert _ticks(ag, node, sim, uuid, clock, range(40), sim.crash)[:6] == [0, 1, 3, 7, 15, 31]


def _ticks(ag, node, sim, uuid, clock, seconds, end):
    """Run the agent's tick once a second while `end(uuid)` makes the domain end; the seconds it restarted."""
    restarts = []
    for second in seconds:
        clock[0] = 1000.0 + second
        end(uuid)
        before = node.last_event_id()
        ag.tick()
        if any(e["type"] == "agent.restart" for e in node.events(uuid, after=before)):
            restarts.append(second)
    return restarts


def test_restart_policy_restarts_a_program_that_ended_by_itself(tmp_path, monkeypatch):
    import eveadm
    from eveadm import agent as agent_mod

    node = eveadm.Node(root=tmp_path)
    sim = NullBackend(BackendContext(tmp_path))
    clock = [1000.0]
    monkeypatch.setattr(agent_mod.time, "time", lambda: clock[0])
    never = node.create({"brand": "null", "alias": "never"})["uuid"]                    # restart_policy no
    failing = node.create({"brand": "null", "restart_policy": "on-failure"})["uuid"]
    clean = node.create({"brand": "null", "restart_policy": "on-failure"})["uuid"]
    always = node.create({"brand": "null", "restart_policy": "always"})["uuid"]
    stopped = node.create({"brand": "null", "restart_policy": "always"})["uuid"]
    for uuid, status in ((never, 1), (failing, 3), (clean, 0), (always, 0)):
        sim.poweroff(uuid, status)
    node.stop(stopped)                                   # stopped by the operator: never restarted
    ag = agent_mod.Agent(node, interval=0, log=lambda msg: None)
    ag.tick()
    states = {u: node.get(u)["state"] for u in (never, failing, clean, always, stopped)}
    assert states == {never: "stopped", failing: "running", clean: "stopped", always: "running",
                      stopped: "stopped"}
    assert node.get(never)["ended_by"] == "itself" and node.get(stopped)["ended_by"] == "eveadm"


def test_the_restart_back_off_survives_an_agent_restart(tmp_path, monkeypatch):
    import eveadm
    from eveadm import agent as agent_mod

    node = eveadm.Node(root=tmp_path)
    uuid = node.create({"brand": "null", "on_crash": "restart"})["uuid"]
    sim = NullBackend(BackendContext(tmp_path))
    clock = [1000.0]
    monkeypatch.setattr(agent_mod.time, "time", lambda: clock[0])
    first = agent_mod.Agent(node, interval=0, log=lambda msg: None)
    assert _ticks(first, node, sim, uuid, clock, range(0, 8), sim.crash) == [0, 1, 3, 7]
    second = agent_mod.Agent(eveadm.Node(root=tmp_path), interval=0, log=lambda msg: None)  # a new agent
    assert _ticks(second, node, sim, uuid, clock, range(8, 40), sim.crash) == [15, 31]     # 8 s, 16 s: kept
    assert oct((tmp_path / "agent-state.json").stat().st_mode & 0o777) == "0o600"
