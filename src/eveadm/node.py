"""The Python API: `eveadm.Node(root=...)`, the same operations as the CLI, plain dicts out.

Errors are the typed exceptions of eveadm.errors (ValidationError, NotFound,
Conflict, Timeout, BackendError), which the CLI maps to its exit codes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator

from . import listing, schema
from .lifecycle import Engine, to_dict


def default_root() -> Path:
    """--root, else $EVEADM_ROOT, else /var/lib/eveadm (root) or $XDG_STATE_HOME/eveadm."""
    env = os.environ.get("EVEADM_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/eveadm")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "eveadm"


class Node:
    def __init__(self, root: str | os.PathLike | None = None, run_root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_root()
        env_run = os.environ.get("EVEADM_RUN_ROOT")
        self.engine = Engine(self.root, Path(run_root) if run_root else (Path(env_run) if env_run else None))

    @property
    def warnings(self) -> list[str]:
        return self.engine.warnings

    # -- lifecycle -------------------------------------------------------------
    def create(self, payload: dict, paused: bool = False) -> dict:
        return to_dict(self.engine.create(payload, paused=paused))

    def start(self, uuid: str) -> dict:
        return to_dict(self.engine.start(uuid)[0])

    def stop(self, uuid: str, force: bool = False, timeout: float | None = None) -> dict:
        return to_dict(self.engine.stop(uuid, force=force, timeout=timeout)[0])

    def reboot(self, uuid: str, force: bool = False) -> dict:
        return to_dict(self.engine.reboot(uuid, force=force))

    def kill(self, uuid: str, sig: int = signal.SIGKILL) -> dict:
        return to_dict(self.engine.kill(uuid, sig))

    def delete(self, uuid: str) -> list[str]:
        return self.engine.delete(uuid)

    destroy = delete

    def update(self, uuid: str, payload: dict) -> dict:
        rec, live, restart = self.engine.update(uuid, payload)
        return {"domain": to_dict(rec), "applied_live": live, "restart_required": restart}

    def validate(self, payload, action: str = "create", brand: str | None = None) -> dict:
        return self.engine.check_payload(payload, action, brand)

    def render(self, payload: dict) -> str:
        return self.engine.render(payload)

    # -- reads ------------------------------------------------------------------
    def get(self, uuid: str) -> dict:
        return to_dict(self.engine.get(uuid))

    def list(self, filters: list[str] | None = None, sort: list[str] | None = None) -> list[dict]:
        """Domains as `get` shows them (plus `type`), filtered and sorted as `eveadm list` does."""
        matchers = listing.parse_filters(filters or [])
        sort = sort or listing.DEFAULT_SORT
        for field in sort:  # every key is checked before anything is read or reconciled
            listing.check_column(field.lstrip("+-"), "sort")
        objs = [listing.add_fake_fields(to_dict(r)) for r in self.engine.list()]
        objs = [o for o in objs if listing.matches(o, matchers)]
        return listing.sort_objects(objs, sort)

    def lookup(self, filters: list[str] | None = None) -> list[str]:
        return [o["uuid"] for o in self.list(filters)]

    def info(self, uuid: str) -> dict:
        return self.engine.info(uuid)

    def events(self, uuid: str | None = None, follow: bool = False, after: int = 0,
               poll: float = 0.1) -> Iterator[dict]:
        """Journal entries oldest first; with follow, keep yielding new ones as they are written."""
        if uuid and not schema.UUID_RE.match(uuid):
            uuid = self.engine.resolve(uuid)  # an alias; a UUID may name a deleted domain: keep it
        last = after
        while True:
            batch = self.engine.store.events(last, uuid)
            for ev in batch:
                last = ev["id"]
                yield ev
            if not follow:
                return
            if not batch:
                time.sleep(poll)  # following a journal: wait for the next write
