"""The engine's network operations: networks as stored objects (create, update, delete, bring up
after a reboot), the checks of domains' nics against them, and doctor's search for what eveadm
made for networks it no longer has. Part of the engine (lifecycle.Engine mixes it in): it holds
the locks and writes the journal; what is made on the host is eveadm.network.host's.
"""

from __future__ import annotations

import os

from . import schema
from .errors import BackendError, Conflict, EveadmError, NotFound
from .lazy import contextmanager
from .store import Record

NETWORKS_LOCK = "networks"  # the lock held while any network is added, changed or removed


class NetworkOps:
    """Mixed into lifecycle.Engine (uses its store, ctx, lock timeout, warnings and helpers)."""

    def _network_leftovers(self, fix: bool) -> list[str]:
        """dnsmasq processes, nft rules, bridges and state directories eveadm made for networks it no
        longer has (each carries this state root's mark: nothing else is touched)."""
        from .network import host as nethost
        from .network import state_dir

        found = []
        stored = {n["name"] for n in self.store.networks()}
        try:
            leftovers = nethost.leftovers(self.ctx, stored)
        except EveadmError as exc:
            return [f"network: cannot look for leftovers: {exc}"]
        for item in leftovers:
            found.append(f"network: {item.describe()}: made by eveadm for a network it does not have")
            if fix:
                err = self._try(item.remove)
                if err:
                    found.append(f"network: could not remove {item.describe()}: {err}")
        parent = os.path.dirname(state_dir(self.ctx.root_dir, "x"))
        if os.path.isdir(parent):
            for name in sorted(os.listdir(parent)):
                if name not in stored:
                    found.append(f"{os.path.join(parent, name)}: left over from a deleted network")
                    if fix:
                        import shutil

                        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        return found

    def _nic_problems(self, cfg: dict) -> list:
        """Nics naming a network that is not stored, an address outside its subnet, or a bridge that
        is not on the host (for brands wired to the host)."""
        nics = cfg.get("nics") or []
        if not nics:
            return []
        from .network import spec as netspec  # ipaddress and more: only for a payload with nics

        names = {n.get("network") for n in nics if isinstance(n, dict)} - {None}
        networks = {n["name"]: n for n in self.store.networks()} if names else {}
        errs = netspec.check_nics(nics, networks, cfg["brand"])
        if not errs and any(isinstance(n, dict) and n.get("network") and n.get("ip") for n in nics):
            taken = {(n["network"], n["ip"].split("/")[0]): rec.alias or rec.uuid
                     for rec in self.store.all() if rec.uuid != cfg.get("uuid")
                     for n in rec.config.get("nics") or [] if n.get("network") and n.get("ip")}
            errs += netspec.check_static_addresses(nics, taken)
        return errs

    @contextmanager
    def _nic_networks_held(self, cfg: dict, what: str):
        """Hold the locks of the networks cfg's nics name, and check they still exist, while the record
        is written: a `network delete` (which holds the same lock) then sees the new user or wins."""
        from contextlib import ExitStack

        names = sorted({n.get("network") for n in cfg.get("nics") or [] if isinstance(n, dict)} - {None})
        with ExitStack() as held:
            for name in names:
                held.enter_context(self._network_lock(name))
                if self.store.network(name) is None:
                    report = schema.empty_report()
                    report["bad_values"].append({"property": "nics", "message": f"network {name} was just deleted"})
                    self._raise_report(report, what)
            yield

    def _network_lock(self, name: str):
        from .network import LOCK_PREFIX

        return self.store.lock(LOCK_PREFIX + name, self.lock_timeout, f"eveadm network ... {name}")

    def _networks_lock(self):
        """Held while networks are added, changed or removed: subnets are checked against all others."""
        return self.store.lock(NETWORKS_LOCK, self.lock_timeout)

    def network_load(self, name: str) -> dict:
        cfg = self.store.network(name)
        if cfg is None:
            known = ", ".join(n["name"] for n in self.store.networks()) or "none"
            raise NotFound(f"network {name} not found (networks: {known})")
        return cfg

    def network_users(self, name: str) -> list[Record]:
        return [rec for rec in self.store.all()
                if any(isinstance(n, dict) and n.get("network") == name for n in rec.config.get("nics") or [])]

    def network_create(self, payload) -> dict:
        from .network import host as nethost
        from .network import spec as netspec

        with self._networks_lock():
            existing = self.store.networks()
            report = netspec.check_create(payload, existing)
            self._raise_report(report, "network")
            if any(n["name"] == payload["name"] for n in existing):
                raise Conflict(f"network {payload['name']} already exists")
            cfg = netspec.normalize(payload, existing)
            with self._network_lock(cfg["name"]):
                try:
                    nethost.bring_up(self.ctx, cfg)
                except (EveadmError, OSError) as exc:
                    self._quietly(nethost.tear_down, self.ctx, cfg)  # nothing half-made stays
                    raise BackendError(f"network {cfg['name']}: {exc}") from None
                self.store.network_insert(cfg, ("network.create", {"network": cfg}))
        return cfg

    def network_get(self, name: str) -> dict:
        return self._network_view(self.network_load(name), [rec.uuid for rec in self.network_users(name)])

    def network_list(self) -> list[dict]:
        users: dict[str, list[str]] = {}  # network -> its domains, from one pass over the records
        for rec in self.store.all():
            for name in dict.fromkeys(n.get("network") for n in rec.config.get("nics") or [] if isinstance(n, dict)):
                users.setdefault(name, []).append(rec.uuid)
        return [self._network_view(cfg, users.get(cfg["name"], [])) for cfg in self.store.networks()]

    def _network_view(self, cfg: dict, domains: list[str]) -> dict:
        """A network as get and list show it: its definition, what the host has of it, its domains."""
        from .network import host as nethost

        out = dict(cfg)
        try:
            out.update(nethost.status(self.ctx, cfg))
        except EveadmError as exc:
            self.warnings.append(f"cannot read network {cfg['name']} on the host: {exc}")
        out["domains"] = domains
        return out

    def network_update(self, name: str, payload) -> tuple[dict, list[str]]:
        from .network import host as nethost
        from .network import spec as netspec

        with self._networks_lock(), self._network_lock(name):
            cfg = self.network_load(name)
            self._raise_report(netspec.check_update(cfg, payload, self.store.networks()), "network update")
            new = netspec.apply_update(cfg, payload)
            changed = sorted(k for k in netspec.UPDATABLE if new.get(k) != cfg.get(k))
            if not changed:
                return cfg, []
            if "uplink" in changed and cfg.get("uplink"):
                nethost.release_uplink(self.ctx, cfg, cfg["uplink"])
            if new["type"] == "local" and ({"dns", "mtu"} & set(changed)):
                nethost.stop_dnsmasq(self.ctx.root_dir, name)  # its arguments changed: start it anew
            nethost.bring_up(self.ctx, new)
            if "mtu" in changed and "mtu" not in new:
                self.warnings.append(f"network {name}: the bridge keeps its MTU until the network is made again")
            self.store.network_save(new, ("network.update", {"changed": changed}))
            return new, changed

    def network_delete(self, name: str) -> list[str]:
        from .network import host as nethost

        with self._networks_lock(), self._network_lock(name):
            cfg = self.network_load(name)
            users = self.network_users(name)
            if users:
                named = ", ".join(rec.alias or rec.uuid for rec in users)
                raise Conflict(f"network {name} is used by {len(users)} domain(s): {named}")
            removed = nethost.tear_down(self.ctx, cfg)
            self.store.network_remove(name, ("network.delete", {"removed": removed}))
        return removed

    def network_up(self, name: str | None = None) -> dict[str, list[str]]:
        """Recreate what the store's networks need on the host (after a reboot, a dnsmasq that died,
        a bridge deleted by hand): {network: what was remade}. Errors are warnings, one per network."""
        from .network import EVENT_PREFIX
        from .network import host as nethost

        names = [name] if name else [n["name"] for n in self.store.networks()]
        out = {}
        for net in names:
            with self._network_lock(net):
                cfg = self.network_load(net)
                try:
                    # a read first: the agent calls this every cycle, and most of the time all is there
                    made = [] if nethost.status(self.ctx, cfg)["up"] else nethost.bring_up(self.ctx, cfg)
                except (EveadmError, OSError) as exc:
                    if name:
                        raise
                    self.warnings.append(f"network {net}: {exc}")
                    continue
                if made:
                    self.store.append_event(EVENT_PREFIX + net, net, "network.up", {"remade": made})
                out[net] = made
        return out
