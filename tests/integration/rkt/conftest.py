"""rkt brand tests: the rkt simulator (sim/rkt) and, for these tests only, a fake xl/xenstore.

The `rktsim` fixture puts them first on PATH (wrappers in a private bin dir), points the
simulated Xen state at a temporary file, and gives a BackendContext whose command log
the tests read back.
"""

import json
import os
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parent / "sim"
SRC = str(Path(__file__).resolve().parents[3] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)


class RktSim:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in ("rkt", "xl", "xenstore"):
            w = self.bin / tool
            w.write_text(f'#!/bin/sh\nexec {sys.executable} {SIM / tool} "$@"\n')
            w.chmod(0o755)
        self.state = tmp / "xen-state.json"
        self.procfs = tmp / "proc-xen"
        self.procfs.mkdir()
        (self.procfs / "capabilities").write_text("control_d\n")
        self.stage1 = tmp / "stage1-xen.aci"
        self.stage1.write_text("stage1")
        self.root = tmp / "root"
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "EVEADM_SIM_STATE": str(self.state),
            "EVEADM_XEN_PROCFS": str(self.procfs),
            "EVEADM_XEN_LOG_DIR": str(tmp / "var-log-xen"),
            "EVEADM_RKT_STAGE1": str(self.stage1),
        }

    def xen(self) -> dict:
        try:
            return json.loads(self.state.read_text())
        except FileNotFoundError:
            return {"next_domid": 1, "domains": {}, "xenstore": {}, "calls": []}

    def commands(self) -> list[dict]:
        log = self.root / "log" / "commands.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def pod_env(self, pod: str) -> dict:
        """The environment the simulated rkt gave a pod's app (real rkt keeps it in the pod's manifest)."""
        return json.loads((self.root / "rkt" / "pods" / "run" / pod / "pod.json").read_text())["env"]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.commands()]

    def kill_all(self) -> None:
        for d in self.xen().get("domains", {}).values():
            try:
                os.kill(d["dm_pid"], 9)
            except (ProcessLookupError, KeyError, TypeError):
                pass


@pytest.fixture
def rktsim(tmp_path, monkeypatch):
    sim = RktSim(tmp_path)
    for k, v in sim.env.items():
        monkeypatch.setenv(k, v)
    yield sim
    sim.kill_all()
