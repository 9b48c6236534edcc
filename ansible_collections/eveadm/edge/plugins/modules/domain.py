#!/usr/bin/python
# Copyright: eveadm contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: domain
short_description: Create, start, stop, restart and delete one eveadm domain (a VM or a container)
version_added: 0.1.0
description:
  - Makes one domain on an eveadm node match a payload and a run state.
  - The domain is found by its O(uuid), else by its O(alias); either may also come from the payload.
  - Only what differs is changed, so a second run with the same options reports no change.
  - A payload is compared property by property with the configuration the domain will run with
    (its pending changes included). An object compares equal when every key the payload gives
    matches, so generated values (MACs, disk ids, defaults) need not be repeated. C(tags) and
    C(customer_metadata) are merged into the domain's, as C(eveadm update) does with C(set_tags);
    a key is never removed.
  - A change the domain cannot take while it runs waits until its next start (RV(restart_required));
    restart it with O(state=restarted), for example in a task that runs when RV(restart_required)
    is not empty.
options:
  uuid:
    description:
      - The domain's UUID. Found by it first; a domain created with it gets it.
    type: str
  alias:
    description:
      - The domain's alias. Found by it when no UUID is given; a domain created with it gets it.
    type: str
  state:
    description:
      - V(present) - the domain exists with the payload's configuration. A domain created this way
        boots, as C(eveadm create) does, unless the payload sets C(autoboot) to V(false); an
        existing domain's run state is left alone.
      - V(running) - present, and running (started, or unpaused if paused).
      - V(stopped) - present (a new domain is created without booting), and stopped.
      - V(restarted) - present, then stopped and started again (started if it was not running), so
        every pending change takes effect. Always a change, except for a domain this task created.
      - V(absent) - deleted, with the files eveadm made for it.
      - With V(running) and V(stopped), leave C(autoboot) out of the payload, as starting sets it
        and stopping clears it (as in vmadm).
    type: str
    choices: [present, running, stopped, restarted, absent]
    default: present
  payload:
    description:
      - The domain's payload, as C(eveadm create) takes it (see C(eveadm help properties BRAND)).
      - Needed to create the domain. For a domain that exists, only the properties given are
        compared; C(brand), C(image) and C(uuid) cannot change.
    type: dict
  payload_file:
    description:
      - A JSON or YAML file on the node that holds the payload, instead of O(payload).
    type: path
extends_documentation_fragment:
  - eveadm.edge.node
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Validates the payload and reports what would change; nothing is created, changed, started or stopped.
  diff_mode:
    support: full
    details: The domain's configuration and state before and after.
  platform:
    platforms: posix
author:
  - eveadm contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: A container that runs
  eveadm.edge.domain:
    alias: web
    state: running
    payload:
      brand: container
      image: /srv/rootfs/web
      cmd: ["/bin/httpd", "-f", "-p", "8080"]
      ram: 128
      env: {GREETING: hello}
  register: web

- name: It restarts into a change that waits for a restart (here, env)
  eveadm.edge.domain:
    alias: web
    state: restarted
  when: web.restart_required | length > 0

- name: A VM from a payload file on the node, on another state root
  eveadm.edge.domain:
    uuid: 6f1c2f4e-8d3a-4b7e-9c2d-0a1b2c3d4e5f
    payload_file: /etc/eveadm/vm1.json
    state: stopped
    root: /srv/eveadm

- name: Gone
  eveadm.edge.domain:
    alias: old
    state: absent
"""

RETURN = r"""
domain:
  description:
    - The domain as C(eveadm get) shows it after the task (with the addresses its nics have),
      V({}) once it is absent.
    - In check mode, what it would be, as far as it can be known before it happens.
  returned: always
  type: dict
  sample: {uuid: 6f1c2f4e-8d3a-4b7e-9c2d-0a1b2c3d4e5f, alias: web, brand: container, state: running, ram: 128}
changed_properties:
  description: The payload's properties that differed from the domain's (all of them when it is created).
  returned: always
  type: list
  elements: str
  sample: ["env", "ram"]
restart_required:
  description:
    - The properties the update stored for the domain's next start, because it could not take
      them while running.
    - Known only when the update is carried out, so V([]) in check mode.
  returned: always
  type: list
  elements: str
  sample: ["env"]
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.eveadm.edge.plugins.module_utils.common import eveadm, open_node, reported

STATES = ("present", "running", "stopped", "restarted", "absent")
ACTIVE = ("running", "paused", "booting")
# `update` merges these into the domain's (set_tags, set_customer_metadata) rather than replacing them
# what `eveadm get` shows beside the configuration
SHOWN_BESIDE_CONFIG = ("state", "error", "create_timestamp", "last_modified", "backend")


def read_payload(path: str) -> dict:
    """A payload from a JSON or YAML file on the node."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise eveadm.UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise eveadm.ValidationError(f"{path} is not UTF-8 text") from None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise eveadm.ValidationError(f"{path} is not valid JSON: {exc}") from None
    else:
        import yaml  # eveadm's own dependency

        try:
            payload = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise eveadm.ValidationError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(payload, dict):
        raise eveadm.ValidationError(f"{path} must hold one payload (an object)")
    return payload


def desired_payload(params: dict) -> dict:
    """The payload with the uuid and alias options in it."""
    payload = read_payload(params["payload_file"]) if params["payload_file"] else dict(params["payload"] or {})
    for key in ("uuid", "alias"):
        if params[key] is None:
            continue
        if payload.get(key, params[key]) != params[key]:
            raise eveadm.UsageError(f"{key} {params[key]!r} differs from the payload's {payload[key]!r}")
        payload[key] = params[key]
    if not payload.get("uuid") and not payload.get("alias"):
        raise eveadm.UsageError("give the domain's uuid or alias (an option or in the payload): it is how the "
                                "domain is found")
    return payload


def find(node, ident: str) -> dict | None:
    try:
        return node.get(node.resolve(ident))
    except eveadm.NotFound:
        return None


def config_of(record: dict) -> dict:
    """The configuration the domain will run with: its own, with its pending changes."""
    from eveadm.node import RUNTIME_FIELDS

    config = {k: v for k, v in record.items() if k not in RUNTIME_FIELDS and k not in SHOWN_BESIDE_CONFIG}
    for key, value in (record.get("pending_restart") or {}).items():
        if value is None:  # removed at the next start
            config.pop(key, None)
        else:
            config[key] = value
    return config


def with_changes(config: dict, changes: dict) -> dict:
    """The configuration an update of `changes` leaves (check mode's prediction)."""
    from eveadm import apply

    out = dict(config)
    for key, value in changes.items():
        out[key] = {**(config.get(key) or {}), **value} if key in apply.MERGED else value
    return out


def check_valid(node, payload: dict, action: str, brand: str | None = None) -> None:
    """Raise what `eveadm create` / `update` would refuse the payload for (check mode)."""
    report = node.validate(payload, action, brand)
    problems = [f"unknown property {name}" for name in report["bad_properties"]]
    problems += [f"{bad['property'] or 'payload'} {bad['message']}" for bad in report["bad_values"]]
    problems += [f"missing {name}" for name in report["missing_properties"]]
    if problems:
        raise eveadm.ValidationError(f"invalid {action} payload: " + "; ".join(problems))


def converge(module, node, result: dict) -> tuple[dict, dict]:
    """Make the domain match the options; returns (before, after) as --diff shows them."""
    params, check = module.params, module.check_mode
    payload = desired_payload(params)
    label = payload.get("alias") or payload.get("uuid")
    current = find(node, payload.get("uuid") or payload.get("alias"))
    before = dict(config_of(current), state=current["state"]) if current else {}
    state = params["state"]

    if state == "absent":
        if current:
            result["changed"] = True
            if not check:
                node.delete(current["uuid"])
        result["domain"] = {}
        return before, {}

    created = False
    if current is None:
        if params["payload"] is None and params["payload_file"] is None:
            raise eveadm.NotFound(f"domain {label} does not exist, and there is no payload to create it")
        create = dict(payload)
        if state == "stopped":
            create.setdefault("autoboot", False)  # it never boots
        if check:
            check_valid(node, create, "create")
            config, now = create, "running" if create.get("autoboot", True) else "stopped"
        else:
            try:
                current = node.create(create)
            except eveadm.EveadmError:
                # a boot that failed leaves the domain recorded (failed): that is a change
                result["changed"] = find(node, payload.get("uuid") or payload.get("alias")) is not None
                raise
            config, now = config_of(current), current["state"]
        result["changed"] = created = True
        result["changed_properties"] = sorted(create)
    else:
        config, now = config_of(current), current["state"]
        from eveadm import apply

        changes, update = apply.domain_changes(config, payload, label,
                                               "remove it (state=absent) and create it again")
        if changes:
            if check:
                check_valid(node, update, "update", current["brand"])
                config = with_changes(config, changes)
            else:
                result["restart_required"] = node.update(current["uuid"], update)["restart_required"]
            result["changed"] = True
            result["changed_properties"] = sorted(changes)

    # starting sets autoboot and stopping clears it (vmadm's rule), which check mode foresees
    if state == "running" and now != "running":
        result["changed"] = True
        if not check:
            node.start(current["uuid"])
        now, config = "running", dict(config, autoboot=True)
    elif state == "stopped" and now != "stopped":
        result["changed"] = True
        if not check:
            node.stop(current["uuid"])
        now, config = "stopped", dict(config, autoboot=False)
    elif state == "restarted" and not created:
        result["changed"] = True
        if not check:
            if now in ACTIVE:
                node.reboot(current["uuid"])
            else:
                node.start(current["uuid"])
        now, config = "running", dict(config, autoboot=True)

    if check:
        result["domain"] = dict(current or {}, **config, state=now)
        return before, dict(config, state=now)
    current = node.get(current["uuid"])
    result["domain"] = current
    return before, dict(config_of(current), state=current["state"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            uuid=dict(type="str"),
            alias=dict(type="str"),
            state=dict(type="str", default="present", choices=list(STATES)),
            payload=dict(type="dict"),
            payload_file=dict(type="path"),
            root=dict(type="path"),
        ),
        mutually_exclusive=[("payload", "payload_file")],
        supports_check_mode=True,
    )
    node = open_node(module)
    result = {"changed": False, "domain": {}, "changed_properties": [], "restart_required": []}
    with reported(module, node, result):
        before, after = converge(module, node, result)
    if module._diff and result["changed"]:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
