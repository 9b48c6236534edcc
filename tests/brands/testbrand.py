"""A brand defined only in the tests: one module plus one `register` line, as docs/design.md says a new brand is.

Each domain is a JSON file `<run_dir>/sim.json` holding what "runs". It obeys
the same contract as every backend, and the engine, schema, listing and CLI
learn everything they need about it from the registry line below. Loaded by
the CLI through EVEADM_BRAND_MODULES=testbrand (tests/brands on PYTHONPATH).
"""

import json
import os
import signal

from eveadm.backends import KILL, VM, BrandFacts, register
from eveadm.backends.base import ABSENT, CRASHED, FORCED, PAUSED, RUNNING, SHUTDOWN, Backend, Status
from eveadm.errors import BackendError

FACTS = register(BrandFacts("testbrand", "TEST", VM, "testbrand:FileBackend", properties={"vnc_port"},
                            defaults={"stop_timeout": 60}, capabilities=(KILL,)))


class FileBackend(Backend):
    @staticmethod
    def _path(dom):
        return dom.run_dir / "sim.json"

    def _read(self, dom) -> dict:
        try:
            return json.loads(self._path(dom).read_text())
        except FileNotFoundError:
            return {"state": ABSENT}

    def _write(self, dom, **sim) -> None:
        dom.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(dom).with_name("sim.json.tmp")
        tmp.write_text(json.dumps(sim))
        os.replace(tmp, self._path(dom))

    def create_paused(self, dom) -> Status:
        self._write(dom, state=PAUSED)
        return Status(PAUSED)

    def unpause(self, dom) -> Status:
        if self._read(dom)["state"] != PAUSED:
            raise BackendError("testbrand: not paused")
        self._write(dom, state=RUNNING)
        return Status(RUNNING)

    def shutdown(self, dom, kind, timeout) -> None:
        if self._read(dom)["state"] in (RUNNING, PAUSED):
            self._write(dom, state=SHUTDOWN, exit_status=0 if kind != FORCED else 137)

    def destroy(self, dom, timeout=10) -> None:
        self._path(dom).unlink(missing_ok=True)

    def kill(self, dom, sig=signal.SIGKILL) -> None:
        self._write(dom, state=CRASHED, error=f"killed by {signal.Signals(sig).name}")

    def status(self, doms) -> dict:
        out = {}
        for dom in doms:
            sim = self._read(dom)
            out[dom.uuid] = Status(sim["state"], exit_status=sim.get("exit_status"), error=sim.get("error"))
        return out

    def release(self, dom, *, delete=False) -> list:
        self._path(dom).unlink(missing_ok=True)
        return []
