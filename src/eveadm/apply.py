"""`eveadm apply`: converge this node to a desired state, as EVE's controller has a node do.

The desired state is one document (YAML or JSON):

    {"networks": [NETWORK PAYLOAD, ...],
     "images":   [{"source": "docker://REF" | "oci:DIR:TAG" | ..., "name"?, "tls_verify"?: false}
                  | {"import": FILE_OR_URL, "sha256": HEX, "name": NAME}, ...],
     "domains":  [DOMAIN PAYLOAD + "state": "running" | "stopped", ...]}

`plan` compares it with the node and returns the steps that would make them agree; `execute` runs
them through the same Node (so the same checks, locks and journal as the CLI), in a safe order:
networks and images first, then domain creates and updates, starts and stops, deletes last. A step that fails
stops the run; the steps after it are reported as not done, and every record stays truthful
(each step is one ordinary eveadm operation).

Domains are matched by `uuid`, else by `alias`. What apply creates carries the tag
`managed_by: eveadm-apply`; `prune` deletes only domains with that tag that the document no
longer names, never one made by hand.
"""

from __future__ import annotations

import json

from .errors import EveadmError, NotFound, UsageError, ValidationError

MANAGED_BY = "eveadm-apply"
STATES = ("running", "stopped")
# the order steps run in: what domains need first, removals last
ORDER = ("network.create", "network.update", "image.pull", "image.import", "create", "update", "start", "stop",
         "delete")
IMMUTABLE = ("brand", "image", "uuid")
MERGED = ("tags", "customer_metadata")  # update merges these into what is there (vmadm's set_ verbs)


def load(path: str) -> dict:
    """The desired state from a YAML or JSON file ("-": standard input), parsed (`plan` checks its
    shape). YAML is parsed only here, with PyYAML's safe loader (plain data: no tags that build
    objects), and must hold only what JSON can (no dates, no NaN), as every payload does."""
    import sys

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not UTF-8 text") from None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            return json.loads(text, parse_constant=_not_json)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"{path} is not valid JSON: {exc}") from None
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ValidationError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    try:
        return json.loads(json.dumps(doc, allow_nan=False)) if doc is not None else {}
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{path} holds a value JSON cannot (quote dates and times): {exc}") from None


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON value")


def check(doc) -> dict:
    """The document's shape (each payload itself is checked by the steps' own validation)."""
    problems = []
    if not isinstance(doc, dict):
        raise ValidationError("the desired state must be an object with `domains` and/or `networks`")
    for key in doc:
        if key not in ("domains", "networks", "images"):
            problems.append(f"unknown top-level key {key!r} (domains, networks, images)")
    for key in ("domains", "networks", "images"):
        items = doc.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            problems.append(f"{key} must be a list of objects")
    for i, dom in enumerate(doc.get("domains") or []):
        if not isinstance(dom, dict):
            continue
        if dom.get("state", "running") not in STATES:
            problems.append(f"domains.{i}.state must be running or stopped")
        if not dom.get("uuid") and not dom.get("alias"):
            problems.append(f"domains.{i} needs a uuid or an alias (how apply finds it again)")
    seen: dict = {}
    for i, dom in enumerate(doc.get("domains") or []):
        key = (dom.get("uuid") or dom.get("alias")) if isinstance(dom, dict) else None
        if key in seen:
            problems.append(f"domains.{i} names the same domain as domains.{seen[key]} ({key})")
        seen.setdefault(key, i)
    for i, image in enumerate(doc.get("images") or []):
        if not isinstance(image, dict):
            continue
        if ("source" in image) == ("import" in image):
            problems.append(f"images.{i} needs either source (a pull) or import (a VM disk image file)")
        elif "import" in image and not (image.get("sha256") and image.get("name")):
            problems.append(f"images.{i}: an import needs its sha256 and a name")
        elif "source" in image and not image.get("name") and not str(image["source"]).startswith("docker://"):
            problems.append(f"images.{i}: a source other than docker:// needs a name")
    if problems:
        raise ValidationError("invalid desired state: " + "; ".join(problems))
    return doc


def covers(current, desired) -> bool:
    """Does the node's value already satisfy the document's? Objects: every key the document
    gives matches (the node may hold more: generated MACs, defaults); lists: item by item."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(covers(current.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(current, list) and len(current) == len(desired)
                and all(covers(c, d) for c, d in zip(current, desired)))
    return current == desired


def domain_changes(effective: dict, payload: dict, label: str,
                   hint: str = "delete the domain and apply again") -> tuple[dict, dict]:
    """(the payload's properties the domain's configuration `effective` does not already satisfy,
    the update payload that makes it so). A change of brand, image or uuid is refused."""
    for key in IMMUTABLE:
        if key in payload and payload[key] != effective.get(key):
            raise ValidationError(f"domain {label}: {key} cannot change ({effective.get(key)!r} -> "
                                  f"{payload[key]!r}); {hint}")
    changes = {k: v for k, v in payload.items() if k not in IMMUTABLE and not covers(effective.get(k), v)}
    update = {k: v for k, v in changes.items() if k not in MERGED}
    update.update({f"set_{key}": changes[key] for key in MERGED if key in changes})
    return changes, update


def _step(action: str, target: str, detail: str = "", uuid: str | None = None, payload=None) -> dict:
    step = {"action": action, "target": target, "detail": detail, "status": "planned"}
    if uuid:
        step["uuid"] = uuid
    if payload is not None:
        step["payload"] = payload
    return step


def _check_payloads(doc: dict) -> None:
    """Every domain payload as `validate create` checks it (without what needs the host: networks
    the same document creates do not exist yet), all before any step runs."""
    from . import schema

    problems = []
    for i, want in enumerate(doc.get("domains") or []):
        payload = {k: v for k, v in want.items() if k != "state"}
        report = schema.check_create(payload)
        label = want.get("alias") or want.get("uuid")
        for bad in report["bad_values"]:
            problems.append(f"domains.{i} ({label}): {bad['property'] or 'payload'} {bad['message']}")
        for name in report["bad_properties"]:
            problems.append(f"domains.{i} ({label}): unknown property {name}")
        for name in report["missing_properties"]:
            problems.append(f"domains.{i} ({label}): missing {name}")
    if problems:
        hint = " (in YAML, quote \"null\": unquoted it is no value)" if any(
            "brand must be" in p for p in problems) else ""
        raise ValidationError("invalid desired state: " + "; ".join(problems) + hint)


def plan(node, doc: dict, prune: bool = False) -> list[dict]:
    """The steps that bring the node to `doc`, in the order they run. Reads only."""
    check(doc)
    steps: list[dict] = []
    networks = {n["name"]: n for n in node.network_list()}
    for net in doc.get("networks") or []:
        name = net.get("name")
        have = networks.get(name)
        if have is None:
            steps.append(_step("network.create", f"network {name}", payload=net))
        else:
            changes = {k: v for k, v in net.items() if k != "name" and not covers(have.get(k), v)}
            if changes:
                steps.append(_step("network.update", f"network {name}", ", ".join(sorted(changes)),
                                   payload=changes))
    for image in doc.get("images") or []:
        if "source" in image:
            name = image.get("name") or image["source"].removeprefix("docker://")
            action, payload = "image.pull", {"source": image["source"], "name": image.get("name"),
                                             "tls_verify": image.get("tls_verify", True)}
        else:
            name, action, payload = image["name"], "image.import", image
        try:
            node.image_get(name)
        except NotFound:
            steps.append(_step(action, f"image {name}", payload=payload))
    _check_payloads(doc)
    domains = node.list()
    by_uuid = {d["uuid"]: d for d in domains}
    by_alias = {d["alias"]: d for d in domains if d.get("alias")}
    named = set()
    for want in doc.get("domains") or []:
        payload = {k: v for k, v in want.items() if k != "state"}
        state = want.get("state", "running")
        have = by_uuid.get(want["uuid"]) if want.get("uuid") else by_alias.get(want["alias"])
        label = want.get("alias") or want.get("uuid")
        if have is None:
            payload["tags"] = {**(payload.get("tags") or {}), "managed_by": MANAGED_BY}
            if state == "stopped":
                payload["autoboot"] = payload.get("autoboot", False)
            steps.append(_step("create", label, f"brand {payload.get('brand')}, then {state}", payload=payload))
            continue
        named.add(have["uuid"])
        # what it will run with: its config with the changes that wait for a restart
        effective = {**have, **(have.get("pending_restart") or {})}
        changes, update = domain_changes(effective, payload, label)
        if changes:
            steps.append(_step("update", label, ", ".join(sorted(changes)), have["uuid"], update))
        active = have["state"] in ("running", "paused", "booting")
        if state == "running" and not active:
            steps.append(_step("start", label, f"is {have['state']}", have["uuid"]))
        elif state == "stopped" and have["state"] not in ("stopped",):
            steps.append(_step("stop", label, f"is {have['state']}", have["uuid"]))
    if prune:
        for dom in domains:
            if dom["uuid"] not in named and (dom.get("tags") or {}).get("managed_by") == MANAGED_BY:
                steps.append(_step("delete", dom.get("alias") or dom["uuid"], "not in the document", dom["uuid"]))
    steps.sort(key=lambda s: ORDER.index(s["action"]))
    return steps


def execute(node, steps: list[dict]) -> tuple[list[dict], str | None]:
    """Run the steps in order; stop at the first that fails. Returns (steps with status done /
    failed / not done, the failure's message or None)."""
    failure = None
    for step in steps:
        if failure:
            step["status"] = "not done"
            continue
        try:
            _run(node, step)
            step["status"] = "done"
        except EveadmError as exc:
            step["status"] = "failed"
            step["error"] = str(exc)
            failure = f"{step['action']} {step['target']}: {exc}"
    return steps, failure


def _run(node, step: dict) -> None:
    action = step["action"]
    if action == "network.create":
        node.network_create(step["payload"])
    elif action == "network.update":
        node.network_update(step["target"].split(" ", 1)[1], step["payload"])
    elif action == "image.pull":
        node.image_pull(step["payload"]["source"], step["payload"]["name"], step["payload"]["tls_verify"])
    elif action == "image.import":
        node.image_import(step["payload"]["import"], step["payload"]["sha256"], step["payload"]["name"])
    elif action == "create":
        step["uuid"] = node.create(step["payload"])["uuid"]
    elif action == "update":
        result = node.update(step["uuid"], step["payload"])
        pending = result.get("restart_required")
        if pending:
            step["detail"] += f" (pending until restart: {', '.join(pending)})"
    elif action == "start":
        node.start(step["uuid"])
    elif action == "stop":
        node.stop(step["uuid"])
    elif action == "delete":
        node.delete(step["uuid"])
