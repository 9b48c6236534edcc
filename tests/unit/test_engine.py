"""Engine policy with an in-process fake backend: the stop ladder, create retries, reconciliation, locks.

No subprocess runs here: every primitive is answered by tests/fakebackend.py.
"""

import pytest

import eveadm
from eveadm.backends.base import CRASHED, FORCED, GRACEFUL, SHUTDOWN
from fakebackend import FakeBackend, Scripted


@pytest.fixture
def make_node(tmp_path, monkeypatch):
    monkeypatch.setenv("EVEADM_CREATE_RETRY_DELAY", "0")

    def make(script):
        fake = FakeBackend(script)
        return eveadm.Node(root=tmp_path / "root", backends={"null": fake}), fake
    return make


def events(node, uuid):
    return [e for e in node.events(uuid)]


def test_a_guest_that_ignores_every_request_climbs_every_rung_within_its_budgets(make_node, monkeypatch):
    monkeypatch.setenv("EVEADM_FORCE_TIMEOUT", "7")
    monkeypatch.setenv("EVEADM_DESTROY_TIMEOUT", "3")
    script = Scripted(ignore={"shutdown"})
    node, fake = make_node(script)
    uuid = node.create({"brand": "null"})["uuid"]
    fake.calls.clear()
    assert node.stop(uuid, timeout=5)["state"] == "stopped"
    sent = [(c.name, c.args.get("kind"), c.args.get("timeout")) for c in fake.calls
            if c.name in ("shutdown", "destroy")]
    assert sent[:3] == [("shutdown", GRACEFUL, 5.0), ("shutdown", FORCED, 7.0), ("destroy", None, 3.0)]
    # each wait gets what is left of its rung's budget once the request was sent
    assert len(script.waits) == 3 and all(b - 0.5 <= w <= b for w, b in zip(script.waits, [5.0, 7.0, 3.0]))
    rungs = {e["type"]: e.get("timeout") for e in events(node, uuid) if e["type"].startswith("stop.")}
    assert rungs["stop.graceful_sent"] == 5 and rungs["stop.forced"] == 7 and rungs["stop.destroyed"] == 3
    assert "stop.gone" in rungs


def test_the_ladder_stops_at_the_first_rung_that_works(make_node):
    node, fake = make_node(Scripted())
    uuid = node.create({"brand": "null"})["uuid"]
    fake.calls.clear()
    node.stop(uuid)
    kinds = [c.args["kind"] for c in fake.calls if c.name == "shutdown"]
    assert kinds == [GRACEFUL]
    types = [e["type"] for e in events(node, uuid)]
    assert "stop.forced" not in types and "stop.destroyed" not in types


def test_force_skips_the_graceful_rung(make_node):
    node, fake = make_node(Scripted())
    uuid = node.create({"brand": "null"})["uuid"]
    fake.calls.clear()
    node.stop(uuid, force=True)
    assert [c.args["kind"] for c in fake.calls if c.name == "shutdown"] == [FORCED]


def test_a_domain_that_survives_destroy_is_failed_and_the_stop_times_out(make_node):
    node, fake = make_node(Scripted(ignore={"shutdown", "destroy"}))
    uuid = node.create({"brand": "null"})["uuid"]
    with pytest.raises(eveadm.Timeout):
        node.stop(uuid, timeout=1)
    dom = node.get(uuid)
    assert dom["state"] == "failed" and "still there after destroy" in dom["error"]["message"]


def test_create_is_retried_then_succeeds(make_node):
    node, fake = make_node(Scripted(fail_create=2))
    dom = node.create({"brand": "null"})
    assert dom["state"] == "running" and dom["tried_count"] == 3
    assert fake.names().count("create_paused") == 3
    # each failed attempt is cleaned up before the next one
    assert fake.names().count("destroy") >= 2
    assert [e["attempt"] for e in events(node, dom["uuid"]) if e["type"] == "create.failed"] == [1, 2]


def test_create_fails_after_the_configured_tries(make_node, monkeypatch):
    monkeypatch.setenv("EVEADM_CREATE_TRIES", "2")
    node, fake = make_node(Scripted(fail_create=5))
    with pytest.raises(eveadm.BackendError, match="create failed after 2 tries"):
        node.create({"brand": "null", "alias": "doomed"})
    dom = node.get("doomed")
    assert dom["state"] == "failed" and dom["boot_failed"] is True
    assert "release" in fake.names()


@pytest.mark.parametrize("seen, state", [(CRASHED, "failed"), (SHUTDOWN, "stopped")])
def test_reads_record_what_the_backend_reports(make_node, seen, state):
    script = Scripted()
    node, fake = make_node(script)
    uuid = node.create({"brand": "null"})["uuid"]
    script.states[uuid] = seen
    assert node.get(uuid)["state"] == state
    assert [o["state"] for o in node.list()] == [state]


def test_list_asks_the_backend_only_about_active_domains(make_node):
    node, fake = make_node(Scripted())
    running = node.create({"brand": "null"})["uuid"]
    node.create({"brand": "null", "autoboot": False})
    fake.calls.clear()
    assert len(node.list(fields=["uuid", "state"])) == 2
    assert {c.uuid for c in fake.calls if c.name == "status"} == {running}


def test_a_held_lock_makes_a_mutation_wait_then_name_its_holder(make_node, monkeypatch):
    monkeypatch.setenv("EVEADM_LOCK_TIMEOUT", "0.2")
    node, fake = make_node(Scripted())
    uuid = node.create({"brand": "null"})["uuid"]
    with node.engine.store.lock(uuid, 1, what="a test holding the lock"):
        with pytest.raises(eveadm.LockHeld, match="a test holding the lock"):
            node.stop(uuid)
    assert node.get(uuid)["state"] == "running"


def test_the_journal_and_the_command_log_stay_bounded(tmp_path, monkeypatch):
    from eveadm.backends.host import BackendContext

    monkeypatch.setenv("EVEADM_JOURNAL_MAX_EVENTS", "50")
    node = eveadm.Node(root=tmp_path / "root")
    node.engine.store.PRUNE_EVERY = 10
    dom = node.create({"brand": "null"})
    for i in range(40):
        node.record_event(dom["uuid"], "test.tick", {"i": i})
    ids = [e["id"] for e in node.events()]
    assert len(ids) <= 50 + 10 and ids[-1] >= 40          # the oldest went, the newest stayed
    monkeypatch.setenv("EVEADM_COMMAND_LOG_MAX_BYTES", "2000")
    ctx = BackendContext(tmp_path / "root")
    for i in range(200):
        ctx.log_command(["true", str(i)], None, 0, 0.0)
    log = tmp_path / "root" / "log" / "commands.jsonl"
    assert log.stat().st_size <= 2000 + 200 and (log.parent / "commands.jsonl.1").stat().st_size <= 2200


# -- live changes: the record holds what runs; the rest waits in pending_restart ------------------
class LiveChanges(Scripted):
    """A guest that takes `ram` live, cannot take `vcpus`, and takes one of two added nics before
    failing on the second."""

    def __call__(self, call):
        if call.name != "change_live":
            return super().__call__(call)
        if call.args["key"] == "ram":
            return None
        if call.args["key"] == "vcpus":
            raise eveadm.errors.NotLive("above the boot-time maximum (max_vcpus 1)")
        if call.args["key"] == "nics":
            raise eveadm.errors.LiveChangeFailed("device_add of the second nic failed",
                                                 in_effect=call.args["new"][:1])
        return super().__call__(call)


@pytest.fixture
def live_null(monkeypatch):
    """The null brand, told (as the registry tells of kvm) that ram, vcpus and nics may change live."""
    from eveadm.backends import facts

    monkeypatch.setattr(facts("null"), "live", frozenset({"ram", "vcpus", "nics"}))


def test_a_running_domain_takes_what_it_can_live_and_the_rest_waits_for_a_restart(make_node, live_null):
    node, fake = make_node(LiveChanges())
    uuid = node.create({"brand": "null", "ram": 256, "vcpus": 1})["uuid"]
    result = node.update(uuid, {"ram": 512, "vcpus": 2, "alias": "web"})
    assert result["changes"]["ram"]["applied"] == "live" and result["changes"]["alias"]["applied"] == "live"
    assert result["changes"]["vcpus"] == {"applied": "pending",
                                          "detail": "pending until restart: above the boot-time maximum (max_vcpus 1)"}
    shown = node.get(uuid)
    assert (shown["ram"], shown["vcpus"], shown["alias"]) == (512, 1, "web")
    assert shown["pending_restart"] == {"vcpus": 2}
    # the backend was asked with the values in effect, one property at a time
    asked = [(c.args["key"], c.args["old"], c.args["new"], c.args["config"]["ram"]) for c in fake.calls
             if c.name == "change_live"]
    assert asked == [("ram", 256, 512, 256), ("vcpus", 1, 2, 512)]
    node.stop(uuid)
    shown = node.get(uuid)
    assert shown["vcpus"] == 2 and "pending_restart" not in shown


def test_a_property_the_brand_cannot_change_live_never_reaches_the_backend(make_node):
    node, fake = make_node(LiveChanges())
    uuid = node.create({"brand": "null"})["uuid"]
    result = node.update(uuid, {"ram": 512})
    assert result["changes"]["ram"] == {"applied": "pending",
                                        "detail": "pending until restart: brand null cannot change ram while it runs"}
    assert "change_live" not in fake.names()


def test_a_live_change_that_fails_half_way_leaves_the_record_as_what_runs(make_node, live_null):
    node, _ = make_node(LiveChanges())
    uuid = node.create({"brand": "null", "nics": [{"bridge": "br0"}]})["uuid"]
    first = node.get(uuid)["nics"][0]
    with pytest.raises(eveadm.errors.BackendError, match="live change of nics failed: device_add of the second"):
        node.update(uuid, {"add_nics": [{"bridge": "br1"}, {"bridge": "br2"}], "ram": 1024})
    shown = node.get(uuid)
    assert shown["nics"] == [first]  # what the backend says runs now (its in_effect)
    assert [n["bridge"] for n in shown["pending_restart"]["nics"]] == ["br0", "br1", "br2"]
    assert shown["ram"] == 256 and shown["pending_restart"]["ram"] == 1024  # not tried after the failure
    journal = [e for e in node.events(uuid) if e["type"] == "update"][-1]
    assert journal["results"]["ram"]["detail"] == "not tried: an earlier change failed"


def test_a_record_naming_an_image_deleted_since_validation_is_not_written(tmp_path):
    """create writes its record under the images lock, re-checking the images it names: a racing
    `image delete` either sees the new user (and refuses) or wins, and the create is refused."""
    node = eveadm.Node(root=tmp_path / "root")
    cfg = {"brand": "null", "disks": [{"image": "disk:1"}, {"path": "/srv/data.img"}]}
    with pytest.raises(eveadm.ValidationError, match="disks.0.image image disk:1 was just deleted"):
        with node.engine._images_held(cfg, "create"):
            pass
    with node.engine._images_held({"brand": "null", "image": "/srv/rootfs"}, "create"):
        pass  # a path, not a stored image: nothing to hold
