"""Helpers for tests that run the real CLI in a subprocess against a private state root."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
ARTIFACTS = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))


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


def remove_container_leftovers(root: Path) -> None:
    """Delete every container under `root`'s runtime state dirs, end their conmons, unmount overlays."""
    for name in ("runc", "crun"):
        state = root / "run" / "container" / name
        if state.is_dir() and shutil.which(name):
            for cid in os.listdir(state):
                subprocess.run([name, "--root", str(state), "delete", "--force", cid],
                               capture_output=True, timeout=30)
    for pidfile in root.glob("run/*/conmon.pid"):  # a monitor whose container a test left behind
        try:
            os.killpg(int(pidfile.read_text()), 9)
        except (OSError, ValueError):
            pass
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for target in reversed(mounts):
        if target.startswith(str(root) + "/"):
            subprocess.run(["umount", "--lazy", target], capture_output=True, timeout=30)


def _stat(pid) -> tuple[str, str, int] | None:
    """(command name, one-letter state, parent pid) of process `pid` from /proc, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            line = fh.read()
    except OSError:
        return None
    state, ppid = line[line.rindex(b")") + 2:].split()[:2]
    return line[line.index(b"(") + 1:line.rindex(b")")].decode(errors="replace"), state.decode(), int(ppid)


def process_state(pid: int) -> str | None:
    """The state of process `pid` (R, S, T when stopped, Z...), None when it is gone."""
    fields = _stat(pid)
    return fields[1] if fields else None


def processes(comm: str, parent: int | None = None, needle: bytes = b"") -> list[int]:
    """Pids of live processes (zombies aside) named `comm`, optionally children of `parent` and with
    `needle` in their (NUL-separated) command line."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(entry)
        if not fields or fields[0] != comm or fields[1] == "Z" or parent not in (None, fields[2]):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if needle in fh.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(root: Path) -> list[list[str]]:
    """argv of every command eveadm ran under `root` (its command log)."""
    path = root / "log" / "commands.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["argv"] for line in path.read_text().splitlines() if line.strip()]


def tree_bytes(path: Path) -> int:
    """Disk use of a tree (each inode once; mounts under it, as the containers' overlays, not entered)."""
    out = subprocess.run(["du", "-sx", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])
