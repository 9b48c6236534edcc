"""conmon, the per-container monitor (what podman and CRI-O run under every container).

eveadm starts one conmon per container run; conmon runs `<runtime> create`,
stays as the subreaper of the container's init process and, when the program
ends, writes its exit status. Files of one run (conmon's options in brackets):

    <run_dir>/conmon.pid      conmon's own pid                       (--conmon-pidfile)
    <run_dir>/container.pid   the container's init pid (the runtime)  (--container-pidfile)
    <run_dir>/exit            exit status, decimal, once it ended     (--persist-dir <run_dir>)
    <run_dir>/oom             exists if the kernel OOM-killed in the container's cgroup
    <run_dir>/console.log     everything the program writes, k8s-file format (-l k8s-file:PATH)
    <bundle>/attach           attach socket, SOCK_SEQPACKET           (--full-attach: in the bundle)
    <bundle>/ctl, winsz       control fifos: "1 ROWS COLS\\n" on ctl resizes the pty

Handshake: conmon gets the write end of a pipe as _OCI_SYNCPIPE (an fd number
in its environment) and writes one JSON line there once create has returned:
{"data": PID} (the container's init pid), or {"data": -1, "message": "<the
runtime's stderr>"} when create failed. The process eveadm starts forks the
real monitor and exits at once (conmon daemonizes itself, setsid).

Exit status: conmon writes WEXITSTATUS, or 128 + the signal number when the
program was killed by a signal (the shell's convention): see `read_exit`.

Log format (k8s-file, CRI's): one entry per line, `<RFC3339Nano> <stdout|stderr>
<F|P> <text>`; P marks a partial line continued by the next entry. `log_text`
turns it back into what the program wrote.
"""

from __future__ import annotations

import os
import signal as _signal
import time

from ...errors import BackendError, BackendUnavailable
from ..host import last_line, logrus_message, pid_alive, proc_argv, read_pid, which

INSTALL_HINT = "brand container needs conmon: apt-get install conmon"
HANDSHAKE_TIMEOUT = 60  # s: conmon answers once `<runtime> create` has returned
UMOUNT_EXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "umount_exec.py")


class RunFiles:
    """Where conmon keeps the files of one container run (paths as text: the container brand's
    create builds no Path, pathlib's import is a few ms of every create)."""

    __slots__ = ("run_dir", "bundle")

    def __init__(self, run_dir, bundle):
        self.run_dir = os.fspath(run_dir)
        self.bundle = os.fspath(bundle)

    @property
    def conmon_pid(self) -> str:
        return os.path.join(self.run_dir, "conmon.pid")

    @property
    def container_pid(self) -> str:
        return os.path.join(self.run_dir, "container.pid")

    @property
    def exit(self) -> str:
        return os.path.join(self.run_dir, "exit")

    @property
    def oom(self) -> str:
        return os.path.join(self.run_dir, "oom")

    @property
    def log(self) -> str:
        return os.path.join(self.run_dir, "console.log")

    @property
    def attach(self) -> str:
        return os.path.join(self.bundle, "attach")

    @property
    def ctl(self) -> str:
        return os.path.join(self.bundle, "ctl")

    def leftovers(self) -> list[str]:
        """Files of a finished run (not the log: it is kept until the domain is deleted)."""
        return [self.conmon_pid, self.container_pid, self.exit, self.oom, self.attach, self.ctl,
                os.path.join(self.bundle, "winsz")]


def conmon_path() -> str:
    path = which("conmon")
    if not path:
        raise BackendUnavailable(INSTALL_HINT)
    return path


def argv(conmon: str, *, cid: str, runtime: str, runtime_args: list[str], files: RunFiles,
         terminal: bool) -> list[str]:
    """conmon's command line for `<runtime> <runtime_args> create --bundle ... cid`."""
    if ":" in str(files.log):  # conmon splits -l at ':' (DRIVER:PATH)
        raise BackendError(f"conmon cannot log to a path containing ':': {files.log}")
    out = [conmon, "--api-version", "1", "--cid", cid, "--cuuid", cid, "--name", cid,
           "--runtime", runtime]
    out += [f"--runtime-arg={a}" for a in runtime_args]  # '=': values that start with '-' stay values
    out += ["--bundle", str(files.bundle), "--container-pidfile", str(files.container_pid),
            "--conmon-pidfile", str(files.conmon_pid), "--persist-dir", str(files.run_dir),
            "--full-attach", "--log-path", f"k8s-file:{files.log}",
            "--no-sync-log"]  # no fsync of the log at exit: it only delays the exit record
    if terminal:
        out.append("--terminal")
    return out


def spawn(ctx, command: list[str], files: RunFiles, timeout: float = HANDSHAKE_TIMEOUT) -> int:
    """Start conmon and wait for its handshake: the container's init pid once create returned.

    Raises BackendError with the runtime's own words when create failed. The command is
    appended to eveadm's command log like every other command."""
    import json
    import select
    import subprocess

    from ... import faults

    read_fd, write_fd = os.pipe()
    env = {"_OCI_SYNCPIPE": str(write_fd)}
    faults.point("run:conmon")  # kill points as around every command BackendContext.run starts
    started = time.time()
    try:
        # cwd: conmon also drops an `oom` file in its working directory
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, pass_fds=(write_fd,), cwd=files.run_dir,
                                env=dict(os.environ, **env), umask=0o077)  # its exit/oom files: owner-only
    except FileNotFoundError:
        os.close(read_fd)
        raise BackendUnavailable(INSTALL_HINT) from None
    finally:
        os.close(write_fd)
    reply = b""
    timed_out = False
    try:
        deadline = time.monotonic() + timeout
        while not reply.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:  # conmon ended without a word (it reports some failures only on stderr)
                break
            reply += chunk
    finally:
        os.close(read_fd)
    if timed_out:
        # a hung runtime: end conmon and the runtime under it (its session) first: a monitor
        # stopped before it let go of stderr would hold the read below open for ever
        kill_monitor(files)
    launcher_rc = proc.wait()  # the launcher exits right after forking the monitor
    stderr = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    try:
        data = json.loads(reply) if reply.strip() else {}
    except ValueError:
        data = {}
    pid = data.get("data") if isinstance(data.get("data"), int) else -1
    _log(ctx, command, env, 0 if pid > 0 else (launcher_rc or 1), started)
    faults.point("run:conmon:after")
    if pid > 0:
        return pid
    if timed_out:
        raise BackendError(f"no answer from conmon within {timeout:g}s (the runtime's create hangs)")
    why = logrus_message(data.get("message") or "") or last_line(stderr) or \
        f"conmon exited with status {launcher_rc}"
    raise BackendError(why)


def _log(ctx, command, env, rc, started) -> None:
    # BackendContext.run cannot pass the handshake pipe: log the way it does
    log = ctx.log_command
    log(command, env, rc, started)


def conmon_alive(files: RunFiles, cid: str) -> int | None:
    """conmon's pid while the monitor of this run is alive (checked against its command line)."""
    pid = read_pid(files.conmon_pid)
    if pid is None:
        return None
    argv = proc_argv(pid)
    if not argv or os.path.basename(argv[0]) != b"conmon" or cid.encode() not in argv or not pid_alive(pid):
        return None  # gone, a zombie, or the pid is another process's now
    return pid


def kill_monitor(files: RunFiles) -> None:
    """SIGKILL conmon's session (conmon, and a runtime it runs) when conmon.pid names one."""
    pid = read_pid(files.conmon_pid)
    if pid is not None:
        try:
            os.killpg(pid, _signal.SIGKILL)
        except OSError:
            pass


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until process `pid` (conmon) has ended, event-driven (pidfd); True when it has."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        return bool(select.select([fd], [], [], max(0.0, timeout))[0])
    finally:
        os.close(fd)


class ExitRecord:
    """What conmon wrote when the program ended."""

    __slots__ = ("status", "time", "oom")

    def __init__(self, status: int, time_: float, oom: bool):
        self.status = status  # WEXITSTATUS, or 128 + signal number
        self.time = time_  # when conmon wrote it (the file's mtime)
        self.oom = oom  # the kernel OOM-killed in the container's cgroup during the run

    @property
    def signal(self) -> int | None:
        """The signal that killed the program, read from 128 + N (None for a plain exit)."""
        n = self.status - 128
        return n if 0 < n <= _signal.SIGRTMAX else None


def read_exit(files: RunFiles) -> ExitRecord | None:
    try:
        with open(files.exit) as fh:
            text = fh.read().strip()
            mtime = os.fstat(fh.fileno()).st_mtime
    except OSError:
        return None
    try:
        status = int(text)
    except ValueError:
        return None  # conmon writes it atomically (g_file_set_contents): not ours
    return ExitRecord(status, mtime, os.path.exists(files.oom))


def log_text(data: bytes | str) -> str:
    """What the program wrote, from conmon's k8s-file log (`TIME STREAM F|P TEXT` lines).
    A line not in that format (the first one of a tail read mid-line) is kept as is."""
    if isinstance(data, bytes):
        data = data.decode(errors="replace")
    out = []
    for line in data.split("\n"):
        if not line:
            continue
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[1] not in ("stdout", "stderr") or parts[2] not in ("F", "P"):
            out.append(line + "\n")
            continue
        text = parts[3] if len(parts) == 4 else ""
        out.append(text if parts[2] == "P" else text + "\n")
    return "".join(out)
