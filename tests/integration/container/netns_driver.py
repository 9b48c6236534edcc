"""Drive ContainerBackend for one step inside a network namespace (run under `ip netns exec NS`).

stdin: {"root": DIR, "op": "start"|"stop"|"delete"|"orphans"|"remove_orphans", "config": {...},
        "backend": {... dom.backend of the previous step}, "known": [uuid, ...]}
stdout: {"backend": dom.backend, "state": ..., "addresses": [...], "info": {...}, "orphans": [[kind, ident, uuid]]}

The tests use it for what the CLI's schema does not take yet (a static `ip`) and for doctor's
orphans; everything the backend runs (CNI plugins, ip) then acts in the test's namespace only.
"""

import json
import sys
from pathlib import Path

from eveadm.backends.base import Domain
from eveadm.backends.container import ContainerBackend
from eveadm.backends.host import BackendContext


def main() -> None:
    req = json.load(sys.stdin)
    root = Path(req["root"])
    backend = ContainerBackend(BackendContext(root))
    cfg = req.get("config") or {}
    uuid = cfg.get("uuid", "")
    dom = Domain(uuid, cfg, req.get("backend") or {}, root / "domains" / uuid, root / "run" / uuid)
    out: dict = {}
    op = req["op"]
    if op == "start":
        backend.prepare(dom)
        out["paused"] = backend.create_paused(dom).state
        out["state"] = backend.unpause(dom).state
        out["info"] = backend.info(dom)
    elif op in ("stop", "delete"):
        backend.destroy(dom)
        backend.release(dom, delete=op == "delete")
    elif op == "orphans":
        out["orphans"] = [[o.kind, o.ident, o.uuid] for o in backend.orphans(set(req.get("known") or []))]
    elif op == "remove_orphans":
        kinds = set(req.get("kinds") or [])
        for orphan in backend.orphans(set(req.get("known") or [])):
            if orphan.kind in kinds:
                backend.remove_orphan(orphan)
    elif op == "validate":
        out["errors"] = backend.validate(cfg)
    out["backend"] = dom.backend
    if cfg:
        out["addresses"] = backend.nic_addresses(dom)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
