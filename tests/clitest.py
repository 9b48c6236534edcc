"""Helpers for tests that run the real CLI in a subprocess against a private state root."""

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


class Cli:
    def __init__(self, root: Path, env: dict | None = None):
        self.root = root
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = SRC + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.pop("EVEADM_ROOT", None)
        self.env.update({"EVEADM_CREATE_RETRY_DELAY": "0"})
        self.env.update(env or {})

    def __call__(self, *args, input=None, timeout=120, env=None):
        e = dict(self.env)
        e.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "eveadm", "--root", str(self.root), *map(str, args)],
            input=input if input is not None else "", capture_output=True, text=True, timeout=timeout, env=e,
        )
        return proc

    def ok(self, *args, **kw):
        proc = self(*args, **kw)
        assert proc.returncode == 0, f"eveadm {' '.join(map(str, args))} -> {proc.returncode}: {proc.stderr}"
        return proc

    def json(self, *args, **kw):
        return json.loads(self.ok(*args, **kw).stdout)

    def create(self, payload: dict, *extra):
        proc = self.ok("create", "-j", *extra, input=json.dumps(payload))
        return json.loads(proc.stdout)
