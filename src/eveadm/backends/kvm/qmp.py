"""QMP, QEMU's monitor protocol, as the kvm brand uses it (the `qemu.qmp` library).

Every session is short-lived: connect, run the commands, disconnect, all within
one deadline, so that a QEMU that does not answer (stopped, wedged, another
client on its monitor) costs at most that deadline. `qmp_many` asks several
monitors at once in one event loop: one silent monitor does not make the others
wait longer than the deadline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import BackendError
from ..host import pid_alive

QMP_TIMEOUT = 5.0  # s: the longest any one QMP session may take
CONNECT_TIMEOUT = 1.0  # s: the event monitor's greeting (wait_shutdown_event)
DISCONNECT_TIMEOUT = 0.5  # s: closing a session; QEMU may be gone or stopped

# query-status run states, by what they mean to eveadm
PAUSED_STATES = frozenset(("prelaunch", "paused", "suspended", "inmigrate", "postmigrate", "finish-migrate",
                           "restore-vm", "save-vm", "colo", "preconfig", "debug"))
BROKEN_STATES = frozenset(("internal-error", "guest-panicked", "io-error", "watchdog"))

class QmpError(BackendError):
    pass


def quiet_logging() -> None:
    """qemu.qmp logs every failed connect at ERROR level; eveadm reports failures itself."""
    logging.getLogger("qemu.qmp").propagate = False  # the library already gives it a NullHandler


def _commands(commands) -> list[tuple[str, dict | None]]:
    return [(c, None) if isinstance(c, str) else c for c in commands]


async def _disconnect(client) -> None:
    import asyncio

    try:
        await asyncio.wait_for(client.disconnect(), DISCONNECT_TIMEOUT)
    except Exception:
        pass  # EOF when QEMU already left (quit, poweroff), or it did not answer


async def _session(path: str, commands: list[tuple[str, dict | None]], timeout: float) -> list:
    """Connect, run `commands` in order, disconnect: all of it within `timeout` seconds."""
    import asyncio

    from qemu.qmp import QMPClient

    client = QMPClient("eveadm")
    try:
        async with asyncio.timeout(timeout):
            await client.connect(path)
            results = []
            for cmd, args in commands:
                try:
                    results.append(await client.execute(cmd, args))
                except Exception:
                    if cmd == "quit":  # QEMU may hang up before it answers
                        results.append({})
                        break
                    raise
            return results
    finally:
        await _disconnect(client)


def describe(exc: BaseException) -> str:
    """One line on why a QMP session failed."""
    import asyncio

    exc = getattr(exc, "exc", None) or exc  # qemu.qmp wraps the cause of a failed connect
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer (timeout)"
    if isinstance(exc, FileNotFoundError):
        return "socket is gone"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def qmp(path: str | Path, *commands: tuple[str, dict | None] | str, timeout: float = QMP_TIMEOUT) -> list:
    """Run QMP commands on one monitor within `timeout` s; their results, or QmpError (one line)."""
    import asyncio

    quiet_logging()
    cmds = _commands(commands)
    try:
        return asyncio.run(_session(str(path), cmds, timeout))
    except Exception as exc:  # qemu.qmp raises a variety of types; all mean the same to us
        raise QmpError(f"QMP {'/'.join(c for c, _ in cmds)} on {path}: {describe(exc)}") from None


def qmp_many(calls: dict[str, tuple[str | Path, list]], timeout: float = QMP_TIMEOUT) -> dict[str, object]:
    """{key: (socket, commands)} -> {key: results list | exception}, all sessions at once in one
    event loop, each within `timeout` s."""
    import asyncio

    quiet_logging()
    if not calls:
        return {}

    async def run_all():
        keys = list(calls)
        outs = await asyncio.gather(
            *[_session(str(calls[k][0]), _commands(calls[k][1]), timeout) for k in keys],
            return_exceptions=True,
        )
        return dict(zip(keys, outs))

    return asyncio.run(run_all())


def device_del(events_sock: str | Path, sock: str | Path, dev: str, timeout: float, child_event: bool = False) -> bool:
    """device_del `dev`, then wait up to `timeout` s for QEMU's DEVICE_DELETED (the guest let it go):
    True when it came. On the event monitor when it can be had (so `status` keeps the command
    monitor), else on the command monitor. `child_event`: the deletion of one of the device's
    children says it (a CPU: QEMU 7.2 reports only its lapic's). QmpError when the request fails."""
    import asyncio

    from qemu.qmp import QMPClient

    quiet_logging()

    async def connect():
        client = QMPClient("eveadm-unplug")
        try:
            await asyncio.wait_for(client.connect(str(events_sock)), CONNECT_TIMEOUT)
            return client
        except Exception:  # busy or gone: the command monitor serves as well
            await _disconnect(client)
        client = QMPClient("eveadm-unplug")
        await asyncio.wait_for(client.connect(str(sock)), QMP_TIMEOUT)
        return client

    async def run() -> bool:
        client = await connect()
        try:
            with client.listener("DEVICE_DELETED") as listener:
                try:
                    await asyncio.wait_for(client.execute("device_del", {"id": dev}), QMP_TIMEOUT)
                except Exception as exc:
                    if "not found" in str(exc):  # an earlier request the guest honoured late
                        return True
                    raise

                child = f"/machine/peripheral/{dev}/"

                async def deleted():
                    while True:
                        data = (await listener.get()).get("data") or {}
                        if data.get("device") == dev or (child_event and
                                                         str(data.get("path", "")).startswith(child)):
                            return

                try:
                    await asyncio.wait_for(deleted(), timeout)
                    return True
                except (asyncio.TimeoutError, TimeoutError):
                    return False
        finally:
            await _disconnect(client)

    try:
        return asyncio.run(run())
    except Exception as exc:
        raise QmpError(f"QMP device_del {dev} on {sock}: {describe(exc)}") from None


def wait_shutdown_event(events_sock: str | Path, pid: int, timeout: float) -> str:
    """Wait on QEMU's event monitor until the guest is down or QEMU is gone.

    Returns "event" (SHUTDOWN seen, run state shutdown/broken, or the process died),
    "timeout", or "unavailable" when the event monitor cannot be used (another
    waiter holds it, QEMU does not answer): the caller then polls."""
    import asyncio

    quiet_logging()

    async def pid_gone():
        while pid_alive(pid):
            await asyncio.sleep(0.02)

    async def down(client) -> bool:
        status = (await client.execute("query-status"))["status"]
        return status == "shutdown" or status in BROKEN_STATES

    async def watch() -> str:
        from qemu.qmp import QMPClient

        client = QMPClient("eveadm-wait")
        try:
            await asyncio.wait_for(client.connect(str(events_sock)), min(CONNECT_TIMEOUT, timeout))
        except Exception:
            return "unavailable"
        try:
            with client.listener() as listener:
                if await asyncio.wait_for(down(client), min(QMP_TIMEOUT, max(timeout, 0.1))):
                    return "event"

                async def events():
                    async for ev in listener:
                        if ev["event"] == "SHUTDOWN":
                            return
                        if ev["event"] == "STOP" and await down(client):
                            return

                tasks = [asyncio.ensure_future(events()), asyncio.ensure_future(pid_gone())]
                try:
                    done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if not done:
                    return "timeout"
                if any(t.exception() for t in done if not t.cancelled()) and pid_alive(pid):
                    return "unavailable"
                return "event"
        except Exception:
            return "event" if not pid_alive(pid) else "unavailable"
        finally:
            await _disconnect(client)

    return asyncio.run(watch())
