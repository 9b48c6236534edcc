"""A storm of concurrent processes on one node (null brand): every invariant holds at the end."""

import multiprocessing
import random

import eveadm
from eveadm.lifecycle import STATES

WORKERS, OPS, SHARED = 16, 200, 6


def worker(root: str, k: int, queue) -> None:
    try:
        queue.put(work(root, k))
    except BaseException as exc:  # reported, so the test fails with the reason instead of waiting
        queue.put((k, None, None, {"error": f"{type(exc).__name__}: {exc}"}))


def work(root: str, k: int):
    rng = random.Random(k)
    node = eveadm.Node(root=root)
    shared = sorted(d["uuid"] for d in node.list(["tags.shared=yes"]))
    applied: dict[str, int] = {}  # shared uuid -> the last value of tag w<k> this worker set there
    counts = {"ok": 0, "busy": 0, "conflict": 0}
    mine = []
    for n in range(1, OPS + 1):
        op = rng.choice(["update", "update", "start", "stop", "get", "list", "create", "delete"])
        uuid = rng.choice(shared)
        try:
            if op == "update":
                node.update(uuid, {"set_tags": {f"w{k}": n}})
                applied[uuid] = n
            elif op == "start":
                node.start(uuid)
            elif op == "stop":
                node.stop(uuid, timeout=1)
            elif op == "get":
                assert node.get(uuid)["state"] in STATES  # another command may be half-way
            elif op == "list":
                assert len(node.list(fields=["uuid", "state"])) >= SHARED
            elif op == "create":
                mine.append(node.create({"brand": "null", "tags": {"owner": f"w{k}"}})["uuid"])
            elif op == "delete" and mine:
                node.delete(mine.pop(rng.randrange(len(mine))))
            counts["ok"] += 1
        except eveadm.LockHeld:
            counts["busy"] += 1
        except eveadm.Conflict:
            counts["conflict"] += 1
    return k, applied, mine, counts


def test_sixteen_processes_of_two_hundred_operations_keep_every_invariant(tmp_path):
    root = str(tmp_path / "root")
    node = eveadm.Node(root=root)
    for i in range(SHARED):
        node.create({"brand": "null", "alias": f"shared{i}", "tags": {"shared": "yes"}})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(root, k, queue)) for k in range(WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    assert [r[3]["error"] for r in results if "error" in r[3]] == []
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    done = sum(r[3]["ok"] for r in results)
    assert done >= WORKERS * OPS * 0.9  # locks make a few wait past their timeout, never most
    # no lost update: each worker's last successful value is what the shared domain holds
    for k, applied, mine, _ in results:
        for uuid, value in applied.items():
            assert node.get(uuid)["tags"][f"w{k}"] == value
        for uuid in mine:  # what each worker created and did not delete is there, with its tag
            assert node.get(uuid)["tags"]["owner"] == f"w{k}"
    kept = {u for r in results for u in r[2]}
    every = node.list()
    assert {d["uuid"] for d in every if d.get("tags", {}).get("owner")} == kept   # no record lost or orphaned
    assert all(d["state"] in ("running", "stopped") for d in every)
    assert node.doctor() == []
