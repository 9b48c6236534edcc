"""What a backend may use of the host: settings, the command runner and its log, pid and wait helpers.

Nothing here knows about domains' lifecycle; the contract is in `base.py`.
"""

from __future__ import annotations

import os
import time

from .. import faults, interrupts, privatedir
from ..errors import BackendError, BackendUnavailable, Interrupted

TYPE_CHECKING = False  # typing costs start-up; annotations below are never evaluated
if TYPE_CHECKING:
    from pathlib import Path

# subprocess is imported lazily (CLI start-up); these equal subprocess.PIPE / DEVNULL
PIPE, DEVNULL = -1, -3


class BackendContext:
    """Host-wide facts a backend may use: state root, settings, and the command runner.

    Settings come from `<root>/config.json` (a flat JSON object, e.g.
    {"kvm.accel": "tcg", "container.runtime": "runc"}) and are overridden by
    environment variables EVEADM_<KEY> with dots and dashes as underscores
    (EVEADM_KVM_ACCEL=tcg).
    """

    def __init__(self, root, run_root=None):
        # the state root and run root as text (pathlib costs CLI start-up; most commands build no path)
        self.root_dir = os.fspath(root)
        self.run_root_dir = os.fspath(run_root) if run_root else os.path.join(self.root_dir, "run")
        self._settings: dict | None = None

    @property
    def root(self) -> "Path":
        from pathlib import Path

        return Path(self.root_dir)

    @property
    def run_root(self) -> "Path":
        from pathlib import Path

        return Path(self.run_root_dir)

    # -- settings --------------------------------------------------------
    def setting(self, key: str, default=None):
        env = os.environ.get("EVEADM_" + key.upper().replace(".", "_").replace("-", "_"))
        if env is not None:
            return env
        if self._settings is None:
            try:
                fd = privatedir.open_private(os.path.join(self.root_dir, "config.json"), os.O_RDONLY)
                import json  # only when there is a config.json: json's import is not free

                with os.fdopen(fd, encoding="utf-8") as fh:
                    self._settings = json.load(fh)
            except FileNotFoundError:
                self._settings = {}
            except (OSError, ValueError) as exc:
                raise BackendError(f"cannot read {os.path.join(self.root_dir, 'config.json')}: {exc}") from None
        return self._settings.get(key, default)

    def _number(self, key: str, default: float) -> float:
        try:
            return float(self.setting(key, default))
        except (TypeError, ValueError):
            return default

    def cache_dir(self, name: str) -> str:
        """<root>/cache/<name>, owner-only: a per-host cache (probe results, unpacked images) that
        survives domains."""
        path = privatedir.ensure(os.path.join(self.root_dir, "cache", name))
        os.chmod(path, 0o700)  # also one made before eveadm kept its caches private
        return path

    # -- external commands ------------------------------------------------
    @property
    def command_log(self) -> Path:
        return self.root / "log" / "commands.jsonl"

    def run(
        self,
        argv: list[str],
        *,
        timeout: float = 60,
        env: dict | None = None,
        cwd: str | Path | None = None,
        check: bool = True,
        install_hint: str | None = None,
        input: bytes | None = None,
        stdin=DEVNULL,
        stdout=PIPE,
        stderr=PIPE,
    ):
        """Run one external command from an argument list (never a shell).

        `stdin=None, stdout=None, stderr=None, timeout=None` runs an interactive program on the
        caller's terminal (e.g. `xl console`). Every call is appended to <root>/log/commands.jsonl (argv, the env
        variables added, rc) so what eveadm issued can be audited and tested.
        A missing program raises BackendUnavailable naming `install_hint`; a
        non-zero exit raises BackendError with the command's own stderr when
        `check` is true.
        """
        import subprocess

        argv = [str(a) for a in argv]
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update({k: str(v) for k, v in env.items()})
        program = os.path.basename(argv[0])
        faults.point(f"run:{program}")
        started = time.time()
        try:
            proc = subprocess.run(
                argv, env=full_env, cwd=cwd, timeout=timeout, input=input,
                stdout=stdout, stderr=stderr, stdin=None if input is not None else stdin,
            )
        except FileNotFoundError:
            self.log_command(argv, env, None, started)
            hint = f": {install_hint}" if install_hint else ""
            raise BackendUnavailable(f"{argv[0]} not found{hint}") from None
        except subprocess.TimeoutExpired:
            self.log_command(argv, env, "timeout", started)
            raise BackendError(f"{' '.join(argv)} did not finish within {timeout:g}s") from None
        self.log_command(argv, env, proc.returncode, started)
        faults.point(f"run:{program}:after")
        if check and proc.returncode != 0:
            raise BackendError(command_error(argv, proc))
        return proc

    def run_watched(self, argv: list[str], workdir: str, watch, timeout: float, install_hint: str):
        """Run a tool (stdout and stderr into files in `workdir`), calling watch() about 5 times a second.
        A SIGINT or SIGTERM to eveadm ends the tool and raises Interrupted; so does a timeout (BackendError).
        Returns (exit code, its stderr text)."""
        import subprocess

        faults.point(f"run:{os.path.basename(argv[0])}")
        started = time.time()
        out_path, err_path = os.path.join(workdir, "tool.out"), os.path.join(workdir, "tool.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            except FileNotFoundError:
                self.log_command(argv, None, None, started)
                raise BackendUnavailable(f"{argv[0]} not found: {install_hint}") from None
        deadline = time.monotonic() + timeout
        rc = None
        try:
            while rc is None:
                try:
                    rc = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    if interrupts.received():
                        raise Interrupted(interrupts.received())
                    if time.monotonic() > deadline:
                        raise BackendError(f"{' '.join(argv[:2])} did not finish within {timeout:g}s") from None
                    watch(proc.pid)
        finally:
            if rc is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self.log_command(argv, None, "interrupted", started)
        self.log_command(argv, None, rc, started)
        faults.point(f"run:{os.path.basename(argv[0])}:after")
        with open(err_path, "rb") as fh:
            return rc, fh.read().decode(errors="replace")

    def log_command(self, argv, env, rc, started) -> None:
        """Append one command to the command log (run() does this; a caller that must start a
        process itself, e.g. with an inherited pipe, calls it directly)."""
        import json

        entry = {"time": started, "argv": argv, "rc": rc}
        if env:
            entry["env"] = {k: str(v) for k, v in env.items()}
        try:
            path = os.path.join(privatedir.ensure(os.path.join(self.root_dir, "log")), "commands.jsonl")
            with os.fdopen(privatedir.open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as fh:
                fh.write(json.dumps(entry) + "\n")
                if fh.tell() > self._number("command_log_max_bytes", 10 * 2 ** 20):
                    os.replace(path, path + ".1")  # keep the newest two files, at most twice the bound
        except (OSError, BackendError):
            pass  # the audit log must never break an operation (a refused directory is seen elsewhere)


def last_output_line(proc) -> str:
    """The last non-empty line a finished command printed: stderr first, else stdout."""
    for stream in (proc.stderr, proc.stdout):
        if stream:
            line = last_line(stream.decode(errors="replace") if isinstance(stream, bytes) else stream)
            if line:
                return line
    return ""


def last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def logrus_message(text: str | None) -> str:
    """The last meaningful line a Go tool printed (runc, skopeo, umoci log with logrus), its
    `time=... level=... msg="..."` reduced to the message."""
    last = last_line(text)
    if 'msg="' in last:
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return last


def command_error(argv: list[str], proc) -> str:
    """One line: the command and the last meaningful line it printed."""
    text = last_output_line(proc)
    prog = os.path.basename(argv[0])
    sub = " ".join(argv[1:3])
    return f"{prog} {sub} failed (exit {proc.returncode})" + (f": {text}" if text else "")


def which(program: str) -> str | None:
    """The program's path on $PATH, as shutil.which finds it. Here because importing shutil (which
    pulls in bz2 and lzma) costs every command that runs a program a few ms of start-up."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", program)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path) -> int | None:
    """The pid in a pid file (QEMU's, dnsmasq's, conmon's, a runtime's); None when the file is
    missing or holds no pid."""
    try:
        with open(path) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None  # never 0 or -N: kill() would signal a whole process group


def proc_argv(pid: int) -> list[bytes]:
    """A process's argv from /proc/PID/cmdline; [] when it is gone (or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[:-1]  # each argument ends with a NUL
    except OSError:
        return []


def wait_until(predicate, timeout: float, first: float = 0.005, cap: float = 0.1) -> bool:
    """Poll `predicate` quickly (5 ms, doubling to 100 ms) until true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        if predicate():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, cap)


def guest_side_traffic(host_ends: list[str]) -> dict:
    """net_rx_bytes / net_tx_bytes of a domain through the host ends of its links (taps, veths),
    turned to the domain's side: what the host end transmitted, the domain received. {} when none
    can be read (removed meanwhile)."""
    rx = tx = 0
    seen = False
    for ifname in host_ends:
        try:
            with open(f"/sys/class/net/{ifname}/statistics/tx_bytes") as fh:
                received = int(fh.read())
            with open(f"/sys/class/net/{ifname}/statistics/rx_bytes") as fh:
                sent = int(fh.read())
        except (OSError, ValueError):
            continue
        rx, tx, seen = rx + received, tx + sent, True
    return {"net_rx_bytes": rx, "net_tx_bytes": tx} if seen else {}


def root_of(ctx_or_root) -> str:
    """The state root's path from a BackendContext, an Engine or a path (what network/ and images/
    take from their callers)."""
    for attr in ("root_dir", "ctx"):
        value = getattr(ctx_or_root, attr, None)
        if value is not None:
            return value if isinstance(value, str) else root_of(value)
    return os.fspath(ctx_or_root)
