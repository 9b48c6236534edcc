"""The command line: argument parsing and output formatting only; everything else is eveadm.Node.

Data goes to stdout, human messages to stderr, errors are one line
`eveadm: ...` with the exit code of the error's class (eveadm.errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import EveadmError, UsageError, ValidationError

PROG = "eveadm"

EXAMPLES = {
    "create": """examples:
  eveadm create -f web.json              # create and boot (autoboot defaults to true)
  eveadm create --paused -f web.json     # created in the backend, CPUs stopped until `start`
  echo '{"brand":"null","alias":"t1"}' | eveadm create -j""",
    "start": """examples:
  eveadm start web1                      # from stopped/failed: create paused + activate
  eveadm start 6f1c...-...               # from paused: activate (unpause)""",
    "stop": """examples:
  eveadm stop web1                       # graceful, then forced after stop_timeout, then destroy
  eveadm stop web1 -t 5                  # graceful budget of 5 s
  eveadm stop web1 -F                    # skip the graceful request""",
    "reboot": "examples:\n  eveadm reboot web1\n  eveadm reboot web1 -F",
    "kill": "examples:\n  eveadm kill web1             # SIGKILL\n  eveadm kill web1 -s TERM",
    "delete": """examples:
  eveadm delete web1     # stop impatiently, destroy, remove rendered files, disk copies, the record""",
    "get": "examples:\n  eveadm get web1\n  eveadm get web1 | jq .state",
    "list": """examples:
  eveadm list
  eveadm list -o uuid,alias,state,pid -s -ram
  eveadm list state=running alias=~^web
  eveadm list -p -H tags.role=db
  eveadm list -j nics.*.bridge=br0""",
    "lookup": """examples:
  eveadm lookup state=running
  eveadm lookup -1 alias=web1
  eveadm lookup -j -o uuid,state brand=kvm""",
    "info": "examples:\n  eveadm info web1\n  eveadm info web1 --log 50     # last 50 lines of the console log",
    "update": """examples:
  eveadm update web1 ram=512 alias=web-one
  eveadm update web1 -f changes.json
  echo '{"set_tags":{"role":"db"}}' | eveadm update web1 -j""",
    "validate": """examples:
  eveadm validate create -f web.json
  eveadm validate create -f web.json --render   # print the xl cfg / QEMU argv / config.json
  eveadm validate update --brand kvm -f changes.json""",
    "console": "examples:\n  eveadm console web1           # Ctrl-] detaches",
    "events": "examples:\n  eveadm events\n  eveadm events -f -j web1",
    "pci": """examples:
  eveadm pci list
  eveadm pci assignable-add 0000:00:04.0
  eveadm pci assignable-remove 0000:00:04.0""",
    "completion": "examples:\n  source <(eveadm completion bash)",
    "doctor": "examples:\n  eveadm doctor\n  eveadm doctor --fix",
    "agent": "examples:\n  eveadm agent                  # foreground; see contrib/eveadm-agent.service",
}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (try `{self.prog} --help`)")


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Run VMs and containers on this node (kvm, xen, container, rkt, null).",
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="Run `eveadm help COMMAND` for a command's options and examples.")
    p.add_argument("--root", help="state root (default $EVEADM_ROOT, /var/lib/eveadm as root)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def cmd(name, help, aliases=()):
        return sub.add_parser(name, help=help, aliases=list(aliases), epilog=EXAMPLES.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=help)

    c = cmd("create", "create a domain from a JSON payload (file or stdin)")
    c.add_argument("-f", "--file", help="payload file (default: stdin; - for stdin)")
    c.add_argument("--paused", action="store_true", help="create in the backend with CPUs stopped; `start` runs it")
    c.add_argument("-j", "--json", action="store_true", help="print the created domain as JSON")

    c = cmd("start", "start (or activate) a domain", aliases=["boot"])
    c.add_argument("uuid")
    c.add_argument("-j", "--json", action="store_true")

    c = cmd("stop", "stop a domain: graceful, then forced, then destroy", aliases=["halt"])
    c.add_argument("uuid")
    c.add_argument("-F", "--force", action="store_true", help="skip the graceful request")
    c.add_argument("-t", "--timeout", type=_seconds, help="graceful budget in seconds (default: stop_timeout)")
    c.add_argument("-j", "--json", action="store_true")

    c = cmd("reboot", "stop then start a domain")
    c.add_argument("uuid")
    c.add_argument("-F", "--force", action="store_true")
    c.add_argument("-j", "--json", action="store_true")

    c = cmd("kill", "send a signal to the domain's process (VMM / container)")
    c.add_argument("uuid")
    c.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")

    c = cmd("delete", "stop impatiently and remove a domain and the files eveadm made for it", aliases=["destroy"])
    c.add_argument("uuid")

    c = cmd("get", "print a domain as JSON", aliases=["json"])
    c.add_argument("uuid")

    c = cmd("list", "list domains as a table")
    c.add_argument("-p", "--parsable", action="store_true", help="colon-separated, no header")
    c.add_argument("-H", "--no-header", action="store_true")
    c.add_argument("-j", "--json", action="store_true")
    c.add_argument("-o", "--output", help="columns (default uuid,type,ram,state,alias)")
    c.add_argument("-s", "--sort", help="sort fields, -field for descending (default ram,uuid)")
    c.add_argument("filters", nargs="*", metavar="field=value|field=~regex")

    c = cmd("lookup", "print the UUIDs of matching domains")
    c.add_argument("-j", "--json", action="store_true")
    c.add_argument("-1", "--unique", action="store_true", help="exactly one match or an error")
    c.add_argument("-o", "--output", help="with -j: keys to keep")
    c.add_argument("filters", nargs="*", metavar="field=value|field=~regex")

    c = cmd("info", "backend runtime detail (QMP queries, xl list -l, OCI state)")
    c.add_argument("uuid")
    c.add_argument("--log", nargs="?", const=20, type=int, metavar="LINES", help="print the console log's tail")

    c = cmd("update", "change a domain's properties")
    c.add_argument("uuid")
    c.add_argument("-f", "--file", help="JSON payload file (- for stdin)")
    c.add_argument("-j", "--json", action="store_true", help="print the domain and what applies live / at restart")
    c.add_argument("assignments", nargs="*", metavar="key=value")

    c = cmd("validate", "check a payload; print a JSON report and exit 3 when invalid")
    c.add_argument("action", choices=["create", "update"])
    c.add_argument("-f", "--file")
    c.add_argument("--brand", help="brand the update payload is for")
    c.add_argument("--render", action="store_true", help="print what the backend would use (xl cfg, QEMU argv...)")

    c = cmd("console", "attach to the domain's serial console (Ctrl-] detaches)")
    c.add_argument("uuid")

    c = cmd("events", "print the event journal (JSON lines with -j)")
    c.add_argument("uuid", nargs="?")
    c.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    c.add_argument("-j", "--json", action="store_true")

    c = cmd("pci", "PCI devices for passthrough")
    c.add_argument("action", choices=["list", "assignable-add", "assignable-remove"])
    c.add_argument("address", nargs="?")
    c.add_argument("--brand", default="xen", choices=["xen", "kvm", "rkt"], help="whose assignment (default xen)")

    c = cmd("doctor", "find (and with --fix repair) drift between records and reality")
    c.add_argument("--fix", action="store_true")

    c = cmd("agent", "supervise: boot autoboot domains, restart crashed ones, retry failed boots")
    c.add_argument("--interval", type=_seconds, default=5.0, help="seconds between verifications (default 5)")
    c.add_argument("--boot-retry", type=_seconds, default=600.0, help="retry failed boots after (default 600)")

    c = cmd("completion", "print a shell completion script")
    c.add_argument("shell", choices=["bash"])

    c = cmd("help", "show help for a command")
    c.add_argument("topic", nargs="?")

    sub.add_parser("__names", help=argparse.SUPPRESS)
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("seconds must not be negative")
    return value


# -- helpers -------------------------------------------------------------------


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def out_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_payload(path: str | None, for_validate: bool = False):
    if path in (None, "-"):
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no payload: pass -f FILE or pipe JSON on stdin")
        text = sys.stdin.read()
        where = "stdin"
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read payload file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValidationError(f"payload file {path} is not UTF-8 text") from None
        where = path
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        report = {"bad_properties": [], "bad_values": [{"property": "", "message": f"not valid JSON: {exc}"}],
                  "missing_properties": []}
        raise ValidationError(f"payload in {where} is not valid JSON: {exc}", report) from None


def _reject_constant(name: str):
    # NaN and Infinity are not JSON; Python would accept them and `get` would print invalid JSON
    raise ValueError(f"{name} is not a JSON value")


def parse_assignments(items: list[str]) -> dict:
    from . import schema

    payload = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        payload[key] = schema.coerce_cli_value(key, value)
    return payload


def parse_signal(text: str) -> int:
    import signal

    t = text.upper()
    if t.isdigit():
        try:
            return signal.Signals(int(t)).value
        except ValueError:
            raise UsageError(f"unknown signal {text}") from None
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return signal.Signals[name].value
    except KeyError:
        raise UsageError(f"unknown signal {text}") from None


# -- commands ------------------------------------------------------------------


def run(args, node) -> int:
    c = args.command
    if c == "create":
        payload = read_payload(args.file)
        dom = node.create(payload, paused=args.paused)
        state = "paused" if args.paused else dom["state"]
        say(f"Successfully created domain {dom['uuid']} ({state})")
        if args.json:
            out_json(dom)
    elif c in ("start", "boot"):
        rec, did = node.engine.start(args.uuid)
        say(f"Started domain {rec.uuid}" if did else f"Domain {rec.uuid} is already running")
        if args.json:
            out_json(_dict(rec))
    elif c in ("stop", "halt"):
        rec, did = node.engine.stop(args.uuid, force=args.force, timeout=args.timeout)
        say(f"Stopped domain {rec.uuid}" if did else f"Domain {rec.uuid} is already {rec.state}")
        if args.json:
            out_json(_dict(rec))
    elif c == "reboot":
        dom = node.reboot(args.uuid, force=args.force)
        say(f"Rebooted domain {dom['uuid']}")
        if args.json:
            out_json(dom)
    elif c == "kill":
        dom = node.kill(args.uuid, parse_signal(args.signal))
        say(f"Sent SIG{args.signal.upper().removeprefix('SIG')} to domain {dom['uuid']}")
    elif c in ("delete", "destroy"):
        uuid = node.engine.resolve(args.uuid)
        removed = node.delete(uuid)
        for path in removed:
            say(f"removed {path}")
        say(f"Successfully deleted domain {uuid}")
    elif c in ("get", "json"):
        out_json(node.get(args.uuid))
    elif c == "list":
        cmd_list(args, node)
    elif c == "lookup":
        cmd_lookup(args, node)
    elif c == "info":
        if args.log is not None:
            log = node.engine.console_log(args.uuid)
            if not log or not os.path.exists(log):
                raise EveadmError(f"domain {args.uuid} has no console log yet")
            sys.stdout.write(tail(log, args.log))
        else:
            out_json(node.info(args.uuid))
    elif c == "update":
        if args.file is not None and args.assignments:
            raise UsageError("give either -f FILE or key=value pairs, not both")
        payload = parse_assignments(args.assignments) if args.assignments else read_payload(args.file)
        result = node.update(args.uuid, payload)
        uuid = result["domain"]["uuid"]
        say(f"Successfully updated domain {uuid}")
        if result["restart_required"]:
            say(f"takes effect at the next start: {', '.join(result['restart_required'])}")
        if args.json:
            out_json(result)
    elif c == "validate":
        return cmd_validate(args, node)
    elif c == "console":
        return node.engine.console(args.uuid)
    elif c == "events":
        cmd_events(args, node)
    elif c == "pci":
        return cmd_pci(args, node)
    elif c == "doctor":
        return cmd_doctor(args, node)
    elif c == "agent":
        from .agent import Agent

        return Agent(node.engine, interval=args.interval, boot_retry=args.boot_retry).run()
    return 0


def _dict(rec):
    from .lifecycle import to_dict

    return to_dict(rec)


def tail(path, lines: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 256 * 1024))
        data = fh.read().decode(errors="replace")
    kept = data.splitlines()[-lines:] if lines > 0 else []
    return "\n".join(kept) + ("\n" if kept else "")


def cmd_list(args, node) -> None:
    from . import listing

    columns = args.output.split(",") if args.output else listing.DEFAULT_COLUMNS
    for col in columns:
        listing.check_column(col, "column")
    objs = node.list(args.filters, args.sort.split(",") if args.sort else None)
    if args.json:
        out_json(objs)
        return
    sys.stdout.write(listing.format_table(objs, columns, parsable=args.parsable,
                                          header=not (args.no_header or args.parsable)))


def cmd_lookup(args, node) -> None:
    from . import listing

    if args.output and not args.json:
        raise UsageError("-o needs -j with lookup")
    keys = args.output.split(",") if args.output else []
    for key in keys:
        listing.check_column(key, "output")
    objs = node.list(args.filters)
    if args.unique and len(objs) != 1:
        raise EveadmError(f"requested a unique lookup but found {len(objs)} domains")
    if args.json:
        if keys:
            objs = [{k: v for k in keys if (v := listing.value_at(o, k)) is not listing.MISSING} for o in objs]
            objs = [o for o in objs if o]
        out_json(objs)
    else:
        sys.stdout.write("".join(o["uuid"] + "\n" for o in objs))


def cmd_validate(args, node) -> int:
    try:
        payload = read_payload(args.file)
    except ValidationError as exc:
        out_json(exc.report)
        return 3
    report = node.validate(payload, args.action, args.brand)
    from .schema import is_empty

    if not is_empty(report):
        out_json(report)
        return 3
    if args.render:
        if args.action != "create":
            raise UsageError("--render goes with validate create")
        sys.stdout.write(node.render(payload).rstrip("\n") + "\n")
    return 0


def cmd_events(args, node) -> None:
    for ev in node.events(args.uuid, follow=args.follow):
        if args.json:
            sys.stdout.write(json.dumps(ev, sort_keys=True) + "\n")
        else:
            detail = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("id", "time", "uuid", "alias", "type"))
            sys.stdout.write(f"{ev['time']}  {ev['uuid']}  {(ev['alias'] or '-'):<12}  {ev['type']:<20}  "
                             f"{detail}".rstrip() + "\n")
        if args.follow:
            sys.stdout.flush()


def cmd_pci(args, node) -> int:
    from . import schema

    if args.action != "list":
        if not args.address:
            raise UsageError(f"pci {args.action} needs an address DDDD:BB:DD.F")
        if not schema.PCI_RE.match(args.address):
            raise UsageError(f"{args.address!r} is not a PCI address DDDD:BB:DD.F (lowercase hex)")
    backend = node.engine.backend(args.brand)
    if args.action == "list":
        for addr in backend.pci_list():
            print(addr)
        return 0
    if args.action == "assignable-add":
        backend.pci_assignable_add(args.address)
        say(f"{args.address} is assignable")
    else:
        backend.pci_assignable_remove(args.address)
        say(f"{args.address} is back with its host driver")
    return 0


def cmd_doctor(args, node) -> int:
    findings = node.engine.doctor(fix=args.fix)
    for line in findings:
        print(line)
    if not findings:
        say("no drift found")
    return 1 if findings and not args.fix else 0


COMPLETION_BASH = r"""# bash completion for eveadm: source <(eveadm completion bash)
_eveadm() {
    local cur prev cmd
    cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd="${COMP_WORDS[1]}"
    local cmds="create start stop reboot kill delete destroy get list lookup info update validate console events pci doctor agent completion help"
    if [ "$COMP_CWORD" -eq 1 ]; then COMPREPLY=($(compgen -W "$cmds --root --debug --version" -- "$cur")); return; fi
    case "$prev" in -f|--file) COMPREPLY=($(compgen -f -- "$cur")); return;; esac
    local opts=""
    case "$cmd" in
        create) opts="-f --file --paused -j --json";;
        start|boot) opts="-j --json";;
        stop|halt) opts="-F --force -t --timeout -j --json";;
        reboot) opts="-F --force -j";;
        kill) opts="-s --signal";;
        list) opts="-p -H -j -o -s";;
        lookup) opts="-j -1 -o";;
        info) opts="--log";;
        update) opts="-f --file -j";;
        validate) opts="create update -f --file --render --brand";;
        events) opts="-f --follow -j --json";;
        pci) opts="list assignable-add assignable-remove --brand";;
        doctor) opts="--fix";;
        agent) opts="--interval --boot-retry";;
        help) opts="$cmds";;
    esac
    case "$cmd" in
        start|boot|stop|halt|reboot|kill|delete|destroy|get|json|info|update|console|events)
            opts="$opts $(eveadm __names 2>/dev/null)";;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _eveadm eveadm
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return _main(argv)
    except EveadmError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        msg = str(exc).replace("\n", " ")
        sys.stderr.write(f"{PROG}: {msg}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = None  # nothing more can be written
        finally:
            return 0
    except Exception as exc:  # a bug: still one line, unless --debug
        if debug:
            raise
        sys.stderr.write(f"{PROG}: internal error: {type(exc).__name__}: {exc} (run with --debug for details)\n")
        return 1


def _glue_sort(argv: list[str]) -> list[str]:
    """vmadm writes `-s -ram` for descending; argparse would read -ram as an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("-s", "--sort") and i + 1 < len(argv) and argv[i + 1].startswith("-") and "list" in argv[:i]:
            out.append(f"--sort={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_sort(argv))
    if args.version:
        from importlib.metadata import version

        print(version("eveadm"))
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "help":
        if args.topic:
            choices = parser._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse has no public API)
            if args.topic not in choices:
                raise UsageError(f"no command {args.topic!r}")
            choices[args.topic].print_help()
        else:
            parser.print_help()
        return 0
    if args.command == "completion":
        sys.stdout.write(COMPLETION_BASH)
        return 0
    from .node import Node

    node = Node(root=args.root)
    node.engine.progress = say
    if args.command == "__names":
        for uuid, alias in node.engine.store.names():
            print(uuid)
            if alias:
                print(alias)
        return 0
    try:
        return run(args, node)
    finally:
        for w in node.warnings:
            say(f"{PROG}: warning: {w}")
