"""An in-process backend for engine tests, in the spirit of httpx's MockTransport.

Every primitive is answered by a handler the test supplies: `handler(call)`
gets a `Call` (name, uuid, args) and returns what the primitive returns, or
raises what it raises. `Scripted` is a ready handler that keeps domains in a
dict and can be told to refuse or ignore things, so the engine's ladder,
retries, reconciliation and locks run with no subprocess at all:

    fake = FakeBackend(Scripted(ignore={"shutdown", "destroy"}))
    node = eveadm.Node(root=tmp_path, backends={"null": fake})
"""

from eveadm.backends.base import ABSENT, PAUSED, RUNNING, SHUTDOWN, Backend, Status
from eveadm.errors import BackendError


class Call:
    __slots__ = ("name", "uuid", "args")

    def __init__(self, name, uuid, args):
        self.name, self.uuid, self.args = name, uuid, args

    def __repr__(self):
        return f"Call({self.name!r}, {self.uuid!r}, {self.args!r})"


class FakeBackend(Backend):
    def __init__(self, handler, ctx=None, facts=None):
        super().__init__(ctx, facts)
        self.handler = handler
        self.calls: list[Call] = []

    def _call(self, name, dom=None, **args):
        call = Call(name, dom.uuid if dom is not None else None, args)
        self.calls.append(call)
        return self.handler(call)

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def prepare(self, dom):
        return self._call("prepare", dom)

    def create_paused(self, dom):
        return self._call("create_paused", dom)

    def unpause(self, dom):
        return self._call("unpause", dom)

    def shutdown(self, dom, kind, timeout):
        return self._call("shutdown", dom, kind=kind, timeout=timeout)

    def destroy(self, dom, timeout=10):
        return self._call("destroy", dom, timeout=timeout)

    def status(self, doms):
        return {dom.uuid: self._call("status", dom) for dom in doms}

    def wait_gone(self, dom, timeout):
        return self._call("wait_gone", dom, timeout=timeout)

    def release(self, dom, *, delete=False):
        return self._call("release", dom, delete=delete) or []

    def change_live(self, dom, key, old, new):
        return self._call("change_live", dom, key=key, old=old, new=new, config=dict(dom.config))


class Scripted:
    """A handler with domains in a dict. `fail_create=N` fails the next N creates; `ignore` names
    primitives the "guest" does not obey (they return, nothing changes); `waits` records each
    wait_gone budget, which returns at once (no real time passes)."""

    def __init__(self, fail_create=0, ignore=()):
        self.states: dict[str, str] = {}
        self.fail_create = fail_create
        self.ignore = set(ignore)
        self.waits: list[float] = []

    def __call__(self, call: Call):
        state = self.states.get(call.uuid, ABSENT)
        if call.name == "create_paused":
            if self.fail_create > 0:
                self.fail_create -= 1
                raise BackendError("scripted create failure")
            self.states[call.uuid] = PAUSED
            return Status(PAUSED, domain_id=1)
        if call.name == "unpause":
            self.states[call.uuid] = RUNNING
            return Status(RUNNING, domain_id=1)
        if call.name in ("shutdown", "destroy") and call.name not in self.ignore and state != ABSENT:
            self.states[call.uuid] = SHUTDOWN if call.name == "shutdown" else ABSENT
            return None
        if call.name == "status":
            return Status(state, domain_id=1 if state in (PAUSED, RUNNING) else None)
        if call.name == "wait_gone":
            self.waits.append(call.args["timeout"])
            return state not in (PAUSED, RUNNING)
        return None
