"""The `null` brand: simulated domains for dry runs and fast tests (after EVE's hypervisor/null.go).

Nothing runs. Each simulated domain is a row in <root>/null.db that obeys the
same contract as a real one: it is created paused, unpaused, honours (or, on
request, ignores) a graceful shutdown, and can be made to crash or power off
by itself so the engine's crash detection and stop ladder can be exercised.
It persists across CLI invocations. It never stands in for a brand that can
run on the host; use it for `--dry-run`-style rehearsals and CLI tests.

Test hooks (also a tiny CLI: `python -m eveadm.backends.null --root R UUID ACTION`):
  behave(uuid, fail_create=N, ignore_shutdown=True, ignore_force=True)
  crash(uuid, reason) / poweroff(uuid, exit_status)
"""

from __future__ import annotations

import os
import sqlite3

from ..errors import BackendError
from .base import ABSENT, CRASHED, FORCED, PAUSED, RUNNING, SHUTDOWN, Backend, Domain, Status
from .host import BackendContext


class NullBackend(Backend):
    def __init__(self, ctx: BackendContext, facts=None):
        super().__init__(ctx, facts)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(self.ctx.root_dir, exist_ok=True)
            db = sqlite3.connect(os.path.join(self.ctx.root_dir, "null.db"), timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout=30000")
            db.execute(
                "CREATE TABLE IF NOT EXISTS sim (uuid TEXT PRIMARY KEY, state TEXT, domid INTEGER,"
                " exit_status INTEGER, error TEXT, behaviour TEXT NOT NULL DEFAULT '{}')"
            )
            self._db = db
        return self._db

    def _row(self, uuid):
        return self.db.execute("SELECT state, domid, exit_status, error, behaviour FROM sim WHERE uuid=?",
                               (uuid,)).fetchone()

    def _behaviour(self, uuid) -> dict:
        import json

        row = self.db.execute("SELECT behaviour FROM sim WHERE uuid=?", (uuid,)).fetchone()
        return json.loads(row[0]) if row else {}

    def _set(self, uuid, **cols):
        sets = ", ".join(f"{k}=?" for k in cols)
        self.db.execute(f"UPDATE sim SET {sets} WHERE uuid=?", (*cols.values(), uuid))

    # -- contract ------------------------------------------------------------
    def render(self, dom: Domain) -> str:
        return f"# null brand: nothing runs; simulated domain {dom.uuid}\n" + super().render(dom)

    def create_paused(self, dom: Domain) -> Status:
        self.db.execute("INSERT OR IGNORE INTO sim (uuid) VALUES (?)", (dom.uuid,))
        behaviour = self._behaviour(dom.uuid)
        failures = int(behaviour.get("fail_create", 0))
        if failures > 0:
            import json

            behaviour["fail_create"] = failures - 1
            self._set(dom.uuid, state=None, behaviour=json.dumps(behaviour))
            raise BackendError("null: simulated create failure (fail_create)")
        domid = (self.db.execute("SELECT COALESCE(MAX(domid), 0) + 1 FROM sim").fetchone()[0])
        self._set(dom.uuid, state=PAUSED, domid=domid, exit_status=None, error=None)
        dom.backend["domid"] = domid
        return Status(PAUSED, domain_id=domid)

    def unpause(self, dom: Domain) -> Status:
        row = self._row(dom.uuid)
        if not row or row[0] != PAUSED:
            raise BackendError(f"null: cannot unpause domain in state {row[0] if row else ABSENT}")
        self._set(dom.uuid, state=RUNNING)
        return Status(RUNNING, domain_id=row[1])

    def shutdown(self, dom: Domain, kind: str, timeout: float) -> None:
        behaviour = self._behaviour(dom.uuid)
        if behaviour.get("ignore_force" if kind == FORCED else "ignore_shutdown"):
            return
        row = self._row(dom.uuid)
        if row and row[0] in (RUNNING, PAUSED):
            self._set(dom.uuid, state=SHUTDOWN, exit_status=0)

    def destroy(self, dom: Domain, timeout: float = 10) -> None:
        self._set(dom.uuid, state=None, domid=None)

    def kill(self, dom: Domain, sig: int = 9) -> None:  # SIGKILL
        import signal

        row = self._row(dom.uuid)
        if not row or row[0] not in (RUNNING, PAUSED):
            raise BackendError("null: domain is not running")
        self._set(dom.uuid, state=CRASHED, error=f"killed by signal {signal.Signals(sig).name}")

    def status(self, doms) -> dict[str, Status]:
        wanted = {d.uuid for d in doms}
        out = {}
        if wanted:
            query, params = "SELECT uuid, state, domid, exit_status, error FROM sim WHERE state IS NOT NULL", ()
            if len(wanted) <= 64:  # a few (`get`): by key; many (`list`): one scan
                params = tuple(wanted)
                query += f" AND uuid IN ({','.join('?' * len(params))})"
            for uuid, state, domid, exit_status, error in self.db.execute(query, params):
                if uuid in wanted:
                    out[uuid] = Status(state, domain_id=domid, exit_status=exit_status, error=error)
        for uuid in wanted - out.keys():
            out[uuid] = Status(ABSENT)
        return out

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        if delete:
            self.db.execute("DELETE FROM sim WHERE uuid=?", (dom.uuid,))
        return []

    def info(self, dom: Domain) -> dict:
        row = self._row(dom.uuid)
        return {"simulated": True, "sim_state": row[0] if row else ABSENT, "behaviour": self._behaviour(dom.uuid)}

    # -- test hooks -------------------------------------------------------------
    def behave(self, uuid: str, **behaviour) -> None:
        import json

        self.db.execute("INSERT OR IGNORE INTO sim (uuid) VALUES (?)", (uuid,))
        current = self._behaviour(uuid)
        current.update(behaviour)
        self._set(uuid, behaviour=json.dumps(current))

    def crash(self, uuid: str, reason: str = "simulated crash") -> None:
        self._set(uuid, state=CRASHED, error=reason)

    def poweroff(self, uuid: str, exit_status: int = 0) -> None:
        self._set(uuid, state=SHUTDOWN, exit_status=exit_status)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m eveadm.backends.null", description="poke simulated null domains")
    p.add_argument("--root", required=True)
    p.add_argument("uuid")
    p.add_argument("action", choices=["crash", "poweroff", "fail-create", "ignore-shutdown", "ignore-force"])
    p.add_argument("value", nargs="?", default="1")
    a = p.parse_args(argv)
    b = NullBackend(BackendContext(a.root))
    if a.action == "crash":
        b.crash(a.uuid)
    elif a.action == "poweroff":
        b.poweroff(a.uuid, int(a.value))
    elif a.action == "fail-create":
        b.behave(a.uuid, fail_create=int(a.value))
    else:
        b.behave(a.uuid, **{a.action.replace("-", "_"): a.value not in ("0", "false")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
