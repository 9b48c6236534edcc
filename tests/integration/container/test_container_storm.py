"""A small storm on real containers: concurrent processes start, stop, update and read the same
containers; at the end every record agrees with the runtime, no update is lost, nothing is orphaned."""

import multiprocessing
import random

import pytest

import eveadm
from test_container_faults import LOOP, payload, remains

WORKERS, OPS, SHARED = 4, 15, 3


def worker(root: str, k: int, shared: list[str], queue) -> None:
    try:
        rng = random.Random(k)
        node = eveadm.Node(root=root)
        applied = {}
        for n in range(1, OPS + 1):
            uuid = rng.choice(shared)
            op = rng.choice(["update", "start", "stop", "get", "list"])
            try:
                if op == "update":
                    node.update(uuid, {"set_tags": {f"w{k}": n}})
                    applied[uuid] = n
                elif op == "start":
                    node.start(uuid)
                elif op == "stop":
                    node.stop(uuid, timeout=5)
                elif op == "get":
                    node.get(uuid)
                else:
                    node.list()
            except eveadm.Conflict:
                pass  # busy past the lock timeout, or a state another worker just left
        queue.put((k, applied, None))
    except BaseException as exc:  # reported, so the test fails with the reason instead of waiting
        queue.put((k, None, f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
def test_concurrent_commands_on_shared_containers_keep_every_invariant(state_root, rootfs, runtime):
    root = str(state_root)
    node = eveadm.Node(root=root)
    shared = [node.create(payload(rootfs, ["/bin/sh", "-c", LOOP], alias=f"s{i}"))["uuid"] for i in range(SHARED)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(root, k, shared, queue)) for k in range(WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert [r[2] for r in results if r[2]] == []
    for k, applied, _ in results:
        for uuid, value in applied.items():
            assert node.get(uuid)["tags"][f"w{k}"] == value           # no lost update
    for dom in node.list():
        assert dom["state"] in ("running", "stopped"), dom
        if dom["state"] == "running":                                 # the record agrees with the runtime
            assert dom["pid"] and open(f"/proc/{dom['pid']}/cmdline", "rb").read()
    assert node.doctor() == []
    for uuid in shared:
        node.delete(uuid)
        assert remains(state_root, uuid) == []
