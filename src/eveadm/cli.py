"""The command line: argument parsing and output formatting only; everything else is eveadm.Node.

Data goes to stdout, human messages to stderr, errors are one line
`eveadm: ...` with the exit code of the error's class (eveadm.errors). Every
result goes out through `emit`: strict JSON with -j, else the command's human
form. Only the parser of the command being run is built (start-up time);
`help` and shell completion build them all from the same table, so neither can
drift from the parser. Plain command lines are read without argparse at all (eveadm.quickparse:
importing argparse costs more than a short command's work), from the same builders.
"""

from __future__ import annotations

import os
import sys

from .errors import BackendError, EveadmError, UsageError, ValidationError
from .jsontext import dumps

PROG = "eveadm"
SHELLS = ("bash", "zsh", "fish")


def _parser_class():
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(f"{message} (try `{self.prog} --help`)")

    return Parser


def _formatter(prog: str):
    """argparse's formatter with the width given: left to itself it imports shutil (with bz2 and
    lzma) to ask the terminal's size, at every add_argument, which doubled CLI start-up."""
    import argparse

    try:
        width = int(os.environ.get("COLUMNS") or os.get_terminal_size(2).columns)
    except (OSError, ValueError):
        width = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width - 2, 40))


def _bad_value(message: str) -> Exception:
    """The error an argument's type function raises: argparse prints its message as it is."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad_value(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise _bad_value("seconds must be a finite number, not negative")
    return value


def _complete_domains(prefix, parsed_args, **_):
    """UUIDs and aliases from the state root the command line names (--root, else $EVEADM_ROOT)."""
    try:
        from .node import Node

        names = Node(root=getattr(parsed_args, "root", None)).names()
    except Exception:  # completion must never print a traceback into the shell
        return []
    out = [u for u, _ in names] + [a for _, a in names if a]
    return [n for n in out if n.startswith(prefix)]


def _domain_arg(p, nargs=None):
    arg = p.add_argument("uuid", nargs=nargs, help="the domain's UUID or alias")
    arg.completer = _complete_domains


def _json_flag(p, text="print the result as JSON"):
    p.add_argument("-j", "--json", action="store_true", help=text)


def _args_create(p):
    p.add_argument("-f", "--file", help="payload file (default: stdin; - for stdin)")
    p.add_argument("--paused", action="store_true", help="create in the backend with CPUs stopped; `start` runs it")
    p.add_argument("--pull", action="store_true", help="pull the payload's image first when it is not stored")
    _json_flag(p, "print the created domain as JSON")


def _args_start(p):
    _domain_arg(p)
    _json_flag(p)


def _args_stop(p):
    _domain_arg(p)
    p.add_argument("-F", "--force", action="store_true", help="skip the graceful request")
    p.add_argument("-t", "--timeout", type=_seconds, help="graceful budget in seconds (default: stop_timeout)")
    _json_flag(p)


def _args_reboot(p):
    _domain_arg(p)
    p.add_argument("-F", "--force", action="store_true")
    _json_flag(p)


def _args_kill(p):
    _domain_arg(p)
    p.add_argument("-s", "--signal", default="TERM", help="signal name or number (default TERM, as vmadm)")
    _json_flag(p)


def _args_uuid_json(p):
    _domain_arg(p)
    _json_flag(p)


def _args_list(p):
    p.add_argument("-p", "--parsable", action="store_true", help="colon-separated, no header")
    p.add_argument("-H", "--no-header", action="store_true")
    _json_flag(p)
    p.add_argument("-o", "--output", help="columns (default uuid,type,ram,state,alias; `eveadm help list` names all)")
    p.add_argument("-s", "--sort", help="sort fields, -field for descending (default ram,uuid)")
    p.add_argument("filters", nargs="*", metavar="field=value|field=~regex")


def _args_lookup(p):
    _json_flag(p)
    p.add_argument("-1", "--unique", action="store_true", help="exactly one match or an error")
    p.add_argument("-o", "--output", help="with -j: keys to keep")
    p.add_argument("filters", nargs="*", metavar="field=value|field=~regex")


def _args_info(p):
    _domain_arg(p)
    p.add_argument("--log", nargs="?", const=20, type=int, metavar="LINES", help="print the console log's tail")
    _json_flag(p, "print as JSON (the default for info)")


def _args_stats(p):
    _domain_arg(p, nargs="*")
    p.add_argument("-w", "--watch", type=_seconds, metavar="SECONDS", help="redraw every SECONDS until Ctrl-C, as top")
    _json_flag(p, "print one JSON document (with -w: one JSON line per refresh)")


def _args_update(p):
    _domain_arg(p)
    p.add_argument("-f", "--file", help="JSON payload file (- for stdin)")
    _json_flag(p, "print the domain and what applies live / at restart")
    p.add_argument("assignments", nargs="*", metavar="key=value")


def _args_validate(p):
    p.add_argument("action", choices=["create", "update"])
    p.add_argument("-f", "--file")
    p.add_argument("--brand", help="brand the update payload is for")
    p.add_argument("--render", action="store_true", help="print what the backend would use (xl cfg, QEMU argv...)")
    _json_flag(p, "print the report as JSON even when the payload is valid")


def _args_console(p):
    _domain_arg(p)


def _args_events(p):
    _domain_arg(p, nargs="?")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    _json_flag(p, "one JSON object per line")


def _args_pci(p):
    from .backends import PCI, with_capability

    p.add_argument("action", choices=["list", "assignable-add", "assignable-remove"])
    p.add_argument("address", nargs="?")
    p.add_argument("--brand", default="xen", choices=with_capability(PCI), help="whose assignment (default xen)")
    _json_flag(p)


def _args_doctor(p):
    p.add_argument("--fix", action="store_true")
    _json_flag(p)


def _args_network(p):
    p.add_argument("action", choices=["create", "list", "get", "update", "delete", "up", "leases"])
    p.add_argument("name", nargs="?", help="the network (get, update, delete, leases; up: one network)")
    p.add_argument("assignments", nargs="*", metavar="key=value", help="update: uplink=, dns=a,b, mtu=")
    p.add_argument("-f", "--file", help="create/update: JSON payload file (- or absent: stdin)")
    p.add_argument("-H", dest="no_header", action="store_true", help="list: no header line")
    _json_flag(p)


def _args_image(p):
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))

    def action(name, text, target=None):
        a = actions.add_parser(name, help=text, description=text, formatter_class=_formatter)
        if target:
            a.add_argument("target", metavar=target[0], help=target[1])
        _json_flag(a, "print the result as JSON" + (" (progress: JSON lines on stderr)" if name in ("pull", "import")
                                                    else ""))
        return a

    a = action("pull", "copy an image into the store with skopeo",
               ("SOURCE", "docker://REF, a bare REF (docker), oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE"))
    a.add_argument("--name", help="store it under this name (default: the reference it was pulled by)")
    a.add_argument("--tls-verify", choices=["true", "false"], default="true",
                   help="--tls-verify=false for a plain-HTTP registry (skopeo's flag)")
    a = action("import", "store a VM disk image (qcow2, raw, iso), read-only",
               ("FILE|URL", "a file, or an http(s) URL"))
    a.add_argument("--sha256", metavar="HEX", required=True, help="its sha256, checked before it is listed")
    a.add_argument("--name", help="a name for it (NAME[:TAG])")
    a = action("list", "list stored images: name, digest, kind, size, domains using it")
    a.add_argument("-H", dest="no_header", action="store_true", help="no header line")
    action("get", "print a stored image as JSON", ("IMAGE", "a name or (a prefix of) sha256:DIGEST"))
    action("delete", "remove a name, or the image and the files only it used (exit 5 while in use)",
           ("IMAGE", "a name or (a prefix of) sha256:DIGEST"))
    a = action("prune", "remove images, unpacked trees and blobs no domain uses, and partial downloads")
    a.add_argument("-n", "--dry-run", action="store_true", help="say what would go, remove nothing")


def _args_apply(p):
    p.add_argument("-f", "--file", required=True,
                   help="the desired state: networks and domains (YAML or JSON; - for stdin)")
    p.add_argument("-n", "--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--prune", action="store_true", help="also delete what apply made and the file no longer has")
    _json_flag(p, 'print {"steps": [...]} as JSON')


def _listen_address(text: str) -> tuple[str, int]:
    """--metrics: PORT (on 127.0.0.1), HOST:PORT or [IPv6]:PORT; another host only when the operator names it."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _bad_value(f"write an IPv6 address in brackets: [{host}]:{port}")
    if not host:
        raise _bad_value(f"no host before :{port} (127.0.0.1:{port}; 0.0.0.0:{port} for every address)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad_value(f"not a port: {port!r} (give PORT or HOST:PORT)")
    return host, int(port)


def _args_agent(p):
    p.add_argument("--interval", type=_seconds, default=5.0, help="seconds between verifications (default 5)")
    p.add_argument("--boot-retry", type=_seconds, default=600.0, help="retry failed boots after (default 600)")
    p.add_argument("--metrics", type=_listen_address, metavar="[HOST:]PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (default host 127.0.0.1; off unless given)")


def _args_completion(p):
    p.add_argument("shell", choices=SHELLS)


def _args_help(p):
    p.add_argument("topic", nargs="?", help="a command, or `properties`")
    p.add_argument("brand", nargs="?", metavar="BRAND", help="with properties: only what this brand takes")


# name -> (aliases, help, argument builder, examples)
COMMANDS = {
    "create": ((), "create a domain from a JSON payload (file or stdin)", _args_create, """examples:
  eveadm create -f web.json              # create and boot (autoboot defaults to true)
  eveadm create --paused -f web.json     # created in the backend, CPUs stopped until `start`
  echo '{"brand":"null","alias":"t1"}' | eveadm create -j"""),
    "start": (("boot",), "start (or activate) a domain", _args_start, """examples:
  eveadm start web1                      # from stopped/failed: create paused + activate
  eveadm start 6f1c...-...               # from paused: activate (unpause)"""),
    "stop": (("halt",), "stop a domain: graceful, then forced, then destroy", _args_stop, """examples:
  eveadm stop web1                       # graceful, then forced after stop_timeout, then destroy
  eveadm stop web1 -t 5                  # graceful budget of 5 s
  eveadm stop web1 -F                    # skip the graceful request"""),
    "reboot": ((), "stop then start a domain", _args_reboot, "examples:\n  eveadm reboot web1\n  eveadm reboot web1 -F"),
    "kill": ((), "send a signal to the domain's process (VMM / container)", _args_kill,
             "examples:\n  eveadm kill web1             # SIGTERM\n  eveadm kill web1 -s KILL"),
    "delete": (("destroy",), "stop impatiently and remove a domain and the files eveadm made for it", _args_uuid_json,
               "examples:\n  eveadm delete web1     # stop impatiently, destroy, remove rendered files, disk copies,"
               " the record"),
    "get": (("json",), "print a domain as JSON", _args_uuid_json, "examples:\n  eveadm get web1\n"
                                                                   "  eveadm get web1 | jq .state"),
    "list": ((), "list domains as a table", _args_list, """examples:
  eveadm list
  eveadm list -o uuid,alias,state,pid -s -ram
  eveadm list state=running alias=~^web
  eveadm list -p -H tags.role=db
  eveadm list -j nics.*.bridge=br0"""),
    "lookup": ((), "print the UUIDs of matching domains", _args_lookup, """examples:
  eveadm lookup state=running
  eveadm lookup -1 alias=web1
  eveadm lookup -j -o uuid,state brand=kvm"""),
    "info": ((), "backend runtime detail (QMP queries, xl list -l, OCI state)", _args_info,
             "examples:\n  eveadm info web1\n  eveadm info web1 --log 50     # last 50 lines of the console log"),
    "stats": ((), "CPU, memory, disk and network counters of running domains", _args_stats, """examples:
  eveadm stats                           # every active domain, once
  eveadm stats web1 -j                   # as JSON: cpu_seconds, memory_bytes, disk_*, net_*
  eveadm stats -w 2                      # redraw every 2 s with CPU%, as top; Ctrl-C ends it"""),
    "update": ((), "change a domain's properties", _args_update, """examples:
  eveadm update web1 ram=512 alias=web-one
  eveadm update web1 -f changes.json
  echo '{"set_tags":{"role":"db"}}' | eveadm update web1 -j"""),
    "validate": ((), "check a payload; print a JSON report and exit 3 when invalid", _args_validate, """examples:
  eveadm validate create -f web.json
  eveadm validate create -f web.json --render   # print the xl cfg / QEMU argv / config.json
  eveadm validate update --brand kvm -f changes.json"""),
    "console": ((), "attach to the domain's console (Ctrl-] detaches)", _args_console,
                "examples:\n  eveadm console web1           # Ctrl-] detaches"),
    "events": ((), "print the event journal (JSON lines with -j)", _args_events,
               "examples:\n  eveadm events\n  eveadm events -f -j web1"),
    "pci": ((), "PCI devices for passthrough", _args_pci, """examples:
  eveadm pci list
  eveadm pci assignable-add 0000:00:04.0
  eveadm pci assignable-remove 0000:00:04.0 --brand kvm"""),
    "doctor": ((), "find (and with --fix repair) drift between records and reality", _args_doctor,
               "examples:\n  eveadm doctor\n  eveadm doctor --fix -j"),
    "network": ((), "networks domains' nics attach to: switch (a bridge) or local (subnet, DHCP, DNS, NAT)",
                _args_network, """examples:
  eveadm network create -f lan.json      # {"name":"lan","type":"local","subnet":"10.20.0.0/24"}
  eveadm network list
  eveadm network get lan
  eveadm network update lan mtu=1400 dns=192.0.2.53
  eveadm network delete lan              # refused (exit 5) while a domain's nic names it
  eveadm network up                      # recreate bridges, dnsmasq, NAT rules after a reboot
  eveadm network leases lan -j           # {mac: ip} from dnsmasq"""),
    "image": ((), "images: pull from registries, import VM disk images, list, delete, prune (imgadm)", _args_image,
              """examples:
  eveadm image pull docker://127.0.0.1:5000/busybox:1 --tls-verify=false
  eveadm image pull oci:/srv/layout:latest --name web:1
  eveadm image import disk.qcow2 --sha256 9f86d0...  --name debian:12
  eveadm image list
  eveadm image get 127.0.0.1:5000/busybox:1
  eveadm image delete debian:12          # refused (exit 5) while a domain uses it
  eveadm image prune                     # images, unpacked trees and blobs no domain uses"""),
    "apply": ((), "converge the node to a desired state: networks and domains in one file", _args_apply,
              """examples:
  eveadm apply -f node.yaml --dry-run    # the plan: create, update, start, stop, delete
  eveadm apply -f node.yaml              # carry it out; a second run plans nothing
  eveadm apply -f node.yaml --prune -j   # also delete what apply made and the file dropped"""),
    "agent": ((), "supervise: boot autoboot domains, restart crashed ones, retry failed boots", _args_agent,
              "examples:\n  eveadm agent                  # foreground; see contrib/eveadm-agent.service"
              "\n  eveadm agent --metrics 9464    # and Prometheus metrics on http://127.0.0.1:9464/metrics"),
    "completion": ((), "print a shell completion script (bash, zsh, fish)", _args_completion,
                   "examples:\n  source <(eveadm completion bash)\n  eveadm completion fish > "
                   "~/.config/fish/completions/eveadm.fish"),
    "help": ((), "show help for a command, or the payload's properties", _args_help, """examples:
  eveadm help list                       # options, examples and the list columns
  eveadm help properties kvm             # every property kvm takes: type, default, when it may change
  man eveadm                             # all of it in one page"""),
}
ALIASES = {alias: name for name, (aliases, *_rest) in COMMANDS.items() for alias in aliases}


def build_parser(only: str | None = None):
    """The parser of every command; with `only`, of that command alone (what a run needs)."""
    Parser = _parser_class()
    p = Parser(prog=PROG, description="Run VMs and containers on this node (kvm, xen, container, rkt, null).",
               formatter_class=_formatter,
               epilog="Run `eveadm help COMMAND` for a command's options and examples,\n"
                      "`eveadm help properties [BRAND]` for the payload, `man eveadm` for all of it.")
    p.add_argument("--root", help="state root (default $EVEADM_ROOT, /var/lib/eveadm as root)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("--version", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (aliases, text, add_args, examples) in COMMANDS.items():
        if only is None or only == name:
            add_args(sub.add_parser(name, help=text, aliases=list(aliases), epilog=examples, description=text,
                                    formatter_class=_formatter))
    return p


def command_in(argv: list[str]) -> str | None:
    """The command an argv names (its canonical name), found without parsing: skip global options."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--root":
            i += 2
            continue
        if not word.startswith("-"):
            return ALIASES.get(word, word) if (word in COMMANDS or word in ALIASES) else None
        i += 1
    return None


# -- output ---------------------------------------------------------------------


def one_line(text: str) -> str:
    """A message as one printable line: a newline becomes a space, any other control or separator
    character (which a user's argument may carry) is shown escaped, as Python writes it."""
    text = text.replace("\n", " ")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class OutputError(EveadmError):
    """stdout refused a write (a full disk): one line and exit 1, as the launcher says it when the
    write fails later, at the final flush (with PYTHONUNBUFFERED it fails here, in the command)."""


def out(text: str, flush: bool = False) -> None:
    """Every write to stdout goes through here (`flush`: now, for output that streams)."""
    try:
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader went away: main ends quietly
    except OSError as exc:
        sys.stdout = None  # what it holds cannot be written: nothing (the launcher's flush) tries again
        raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


def emit(result, as_json: bool, human=None) -> None:
    """The one output seam: with -j the result as strict JSON on stdout; else `human(result)`, the
    command's text form for people (None: nothing on stdout, the message on stderr says it)."""
    if as_json:
        out(dumps(result) + "\n")
    elif human is not None:
        out(human(result))


# -- input ----------------------------------------------------------------------


def read_payload(path: str | None):
    import json

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
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:  # nesting no payload has; the parser's own limit
        exc = ValueError("nested too deeply")
        report = {"bad_properties": [], "bad_values": [{"property": "", "message": f"not valid JSON: {exc}"}],
                  "missing_properties": []}
        raise ValidationError(f"payload in {where} is not valid JSON: {exc}", report) from None
    except ValueError as exc:
        report = {"bad_properties": [], "bad_values": [{"property": "", "message": f"not valid JSON: {exc}"}],
                  "missing_properties": []}
        raise ValidationError(f"payload in {where} is not valid JSON: {exc}", report) from None


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: Python makes it Infinity, which JSON has not
        raise ValueError(f"number {text} is too large")
    return value


def _reject_constant(name: str):
    # NaN and Infinity are not JSON; Python would accept them and `get` would print invalid JSON
    raise ValueError(f"{name} is not a JSON value")


def parse_assignments(items: list[str], coerce=None) -> dict:
    """key=value pairs -> a payload, each value converted by `coerce(key, text)` (default: the domain
    schema's)."""
    if coerce is None:
        from .schema import coerce_cli_value as coerce

    payload = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        payload[key] = coerce(key, value)
    return payload


def update_payload(args, coerce=None) -> dict:
    """An update's payload: key=value pairs, or a JSON file (-f) or stdin; not both."""
    if args.file is not None and args.assignments:
        raise UsageError("give either -f FILE or key=value pairs, not both")
    return parse_assignments(args.assignments, coerce) if args.assignments else read_payload(args.file)


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


def cmd_create(args, node) -> int:
    node.image_progress(_progress_mode(args))
    dom = node.create(read_payload(args.file), paused=args.paused, pull=args.pull)
    say(f"Successfully created domain {dom['uuid']} ({'paused' if args.paused else dom['state']})")
    emit(dom, args.json)
    return 0


def cmd_start(args, node) -> int:
    dom = node.start(args.uuid)
    say(f"Started domain {dom['uuid']}" if node.changed else f"Domain {dom['uuid']} is already running")
    emit(dom, args.json)
    return 0


def cmd_stop(args, node) -> int:
    dom = node.stop(args.uuid, force=args.force, timeout=args.timeout)
    say(f"Stopped domain {dom['uuid']}" if node.changed else f"Domain {dom['uuid']} is already {dom['state']}")
    emit(dom, args.json)
    return 0


def cmd_reboot(args, node) -> int:
    dom = node.reboot(args.uuid, force=args.force)
    say(f"Rebooted domain {dom['uuid']}")
    emit(dom, args.json)
    return 0


def cmd_kill(args, node) -> int:
    dom = node.kill(args.uuid, parse_signal(args.signal))
    say(f"Sent SIG{args.signal.upper().removeprefix('SIG')} to domain {dom['uuid']}")
    emit(dom, args.json)
    return 0


def cmd_delete(args, node) -> int:
    uuid = node.resolve(args.uuid)
    removed = node.delete(uuid)
    for path in removed:
        say(f"removed {path}")
    say(f"Successfully deleted domain {uuid}")
    emit({"uuid": uuid, "removed": removed}, args.json)
    return 0


def cmd_get(args, node) -> int:
    out(node.get_text(args.uuid) + "\n")  # JSON with or without -j (vmadm), as emit writes it
    return 0


def cmd_list(args, node) -> int:
    from . import listing

    columns = args.output.split(",") if args.output else listing.DEFAULT_COLUMNS
    for col in columns:
        listing.check_column(col, "column")
    objs = node.list(args.filters, args.sort.split(",") if args.sort else None,
                     fields=None if args.json else columns)
    emit(objs, args.json, lambda objs: listing.format_table(
        objs, columns, parsable=args.parsable, header=not (args.no_header or args.parsable)))
    return 0


def cmd_lookup(args, node) -> int:
    from . import listing

    if args.output and not args.json:
        raise UsageError("-o needs -j with lookup")
    keys = args.output.split(",") if args.output else []
    for key in keys:
        listing.check_column(key, "output")
    objs = node.list(args.filters, fields=None if args.json else ["uuid"])
    if args.unique and len(objs) != 1:
        raise EveadmError(f"requested a unique lookup but found {len(objs)} domains")
    if keys:
        objs = [{k: v for k in keys if (v := listing.value_at(o, k)) is not listing.MISSING} for o in objs]
        objs = [o for o in objs if o]
    emit(objs, args.json, lambda objs: "".join(o["uuid"] + "\n" for o in objs))
    return 0


def cmd_info(args, node) -> int:
    if args.log is not None:
        text = node.log_tail(args.uuid, args.log)
        emit({"uuid": node.resolve(args.uuid), "log": text}, args.json, lambda _: text)
    else:
        emit(node.info(args.uuid), True)  # info is JSON with or without -j
    return 0


STATS_COLUMNS = ("UUID", "ALIAS", "BRAND", "STATE", "CPU-SEC", "CPU%", "MEMORY", "DISK-READ", "DISK-WRITE",
                 "NET-RX", "NET-TX")


def _size(n) -> str:
    """Bytes for people, in binary units: 512B, 1.5K, 230M, 12G."""
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" or n >= 100 else f"{n:.1f}{unit}"
        n /= 1024


def _aligned(rows: list[list[str]], widths: list[int] | None = None) -> str:
    """Rows of cells as lines of columns two spaces apart, each column as wide as its widest cell
    (or as `widths` says)."""
    if not rows:
        return ""
    widths = widths or [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)


def _stats_table(rows: list[dict], before: dict | None = None) -> str:
    """One line per domain; CPU% is the share of one CPU since the reading `before` (-w), else -."""
    lines = [list(STATS_COLUMNS)]
    for r in rows:
        cpu, prev = r.get("cpu_seconds"), (before or {}).get(r["uuid"], {})
        share = "-"
        if cpu is not None and prev.get("cpu_seconds") is not None and r["time"] > prev["time"]:
            share = f"{max(0.0, cpu - prev['cpu_seconds']) / (r['time'] - prev['time']) * 100:.1f}"
        lines.append([r["uuid"], r["alias"] or "-", r["brand"], r["state"], "-" if cpu is None else f"{cpu:.2f}",
                      share] + [_size(r.get(k)) for k in ("memory_bytes", "disk_read_bytes", "disk_write_bytes",
                                                          "net_rx_bytes", "net_tx_bytes")])
    return _aligned(lines)


def cmd_stats(args, node) -> int:
    if args.watch is None:
        emit(node.stats(args.uuid or None), args.json, _stats_table)
        return 0
    if args.watch < 0.1:
        raise UsageError("-w needs at least 0.1 seconds between refreshes")
    import time

    from . import interrupts

    before: dict = {}
    while True:  # until Ctrl-C (exit 130, as every interrupted command)
        rows = node.stats(args.uuid or None)
        if args.json:
            out(dumps(rows, indent=None) + "\n", flush=True)
        else:
            out(("\x1b[H\x1b[2J" if sys.stdout.isatty() else "") + _stats_table(rows, before), flush=True)
        before = {r["uuid"]: r for r in rows}
        with interrupts.waiting():
            time.sleep(args.watch)  # the refresh interval the operator asked for


def cmd_update(args, node) -> int:
    result = node.update(args.uuid, update_payload(args))
    say(f"Successfully updated domain {result['domain']['uuid']}")
    for key, how in result["changes"].items():
        if how["applied"] == "pending":
            say(f"{key}: {how['detail']}")
    emit(result, args.json)
    return 0


def cmd_validate(args, node) -> int:
    try:
        payload = read_payload(args.file)
    except ValidationError as exc:
        emit(exc.report, True)
        return 3
    report = node.validate(payload, args.action, args.brand)
    from .schema import is_empty

    if not is_empty(report):
        emit(report, True)
        return 3
    if args.render:
        if args.action != "create":
            raise UsageError("--render goes with validate create")
        text = node.render(payload).rstrip("\n") + "\n"
        emit({"report": report, "rendered": text}, args.json, lambda _: text)
    else:
        emit(report, args.json)  # valid: silent, or the empty report with -j
    return 0


def cmd_console(args, node) -> int:
    return node.console(args.uuid)


def cmd_events(args, node) -> int:
    for ev in node.events(args.uuid, follow=args.follow):
        if args.json:
            out(dumps(ev, indent=None) + "\n", flush=args.follow)
        else:
            detail = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("id", "time", "uuid", "alias", "type"))
            out(f"{ev['time']}  {ev['uuid']}  {(ev['alias'] or '-'):<12}  {ev['type']:<20}  {detail}".rstrip() + "\n",
                flush=args.follow)
    return 0


def cmd_pci(args, node) -> int:
    addresses = node.pci(args.action, args.address, args.brand)
    if args.action == "list":
        emit(addresses, args.json, lambda addrs: "".join(a + "\n" for a in addrs))
        return 0
    say(f"{args.address} is assignable" if args.action == "assignable-add"
        else f"{args.address} is back with its host driver")
    emit({"action": args.action, "address": args.address, "brand": args.brand}, args.json)
    return 0


def cmd_doctor(args, node) -> int:
    findings = node.doctor(fix=args.fix)
    if not findings:
        say("no drift found")
    emit({"findings": findings, "fixed": bool(args.fix and findings)}, args.json,
         lambda r: "".join(line + "\n" for line in r["findings"]))
    return 1 if findings and not args.fix else 0


NETWORK_COLUMNS = (("NAME", "name"), ("TYPE", "type"), ("BRIDGE", "bridge"), ("SUBNET", "subnet"),
                   ("GATEWAY", "gateway"), ("MTU", "mtu"), ("STATE", "state"), ("DOMAINS", "domains"))


def _network_row(net: dict) -> list[str]:
    state = "up" if net.get("up") else "down"
    values = {**net, "state": state, "domains": str(len(net.get("domains") or []))}
    return ["-" if values.get(key) in (None, "") else str(values[key]) for _, key in NETWORK_COLUMNS]


def _network_table(nets: list[dict], header: bool = True) -> str:
    return _aligned(([[title for title, _ in NETWORK_COLUMNS]] if header else []) + [_network_row(n) for n in nets])


def cmd_network(args, node) -> int:
    action, name = args.action, args.name
    needs_name = ("get", "update", "delete", "leases")
    if action in needs_name and not name:
        raise UsageError(f"network {action} needs a network name")
    if action not in needs_name + ("up",) and name:
        raise UsageError(f"network {action} takes no name (got {name!r})")
    if args.assignments and action != "update":
        raise UsageError(f"network {action} takes no key=value pairs")
    if action == "create":
        net = node.network_create(read_payload(args.file))
        say(f"Successfully created network {net['name']} (bridge {net['bridge']})")
        emit(net, args.json)
    elif action == "list":
        nets = node.network_list()
        emit(nets, args.json, lambda ns: _network_table(ns, header=not args.no_header))
    elif action == "get":
        emit(node.network_get(name), True)  # JSON with or without -j, as `get`
    elif action == "update":
        from .network.spec import coerce_cli_value

        result = node.network_update(name, update_payload(args, coerce_cli_value))
        say(f"Successfully updated network {name}" + (f": {', '.join(result['changed'])}" if result["changed"]
                                                      else " (nothing changed)"))
        emit(result, args.json)
    elif action == "delete":
        removed = node.network_delete(name)
        say(f"Successfully deleted network {name}")
        emit({"name": name, "removed": removed}, args.json)
    elif action == "up":
        made = node.network_up(name)
        for net, what in made.items():
            say(f"network {net}: " + (f"remade {', '.join(what)}" if what else "up"))
        emit(made, args.json)
    elif action == "leases":
        emit(node.network_leases(name), args.json,
             lambda ls: "".join(f"{mac}  {ip}\n" for mac, ip in sorted(ls.items())))
    return 0


def _progress_mode(args) -> str:
    if getattr(args, "json", False):
        return "json"
    return "bar" if sys.stderr.isatty() else "quiet"


IMAGE_COLUMNS = (("NAME", 30), ("DIGEST", 19), ("KIND", 4), ("SIZE", 8), ("USED", 4))


def _image_table(images: list[dict], header: bool = True) -> str:
    rows = [[title for title, _ in IMAGE_COLUMNS]] if header else []
    for img in images:
        size = img.get("size") or 0
        cells = [img["digest"][:19], img["kind"], f"{size / 1e6:.1f}M", str(len(img["domains"]))]
        rows += [[name] + cells for name in img["names"] or ["-"]]
    return _aligned(rows, [w for _, w in IMAGE_COLUMNS])


def cmd_image(args, node) -> int:
    action, target = args.action, getattr(args, "target", None)
    node.image_progress(_progress_mode(args))
    if action == "pull":
        img = node.image_pull(target, args.name, tls_verify=args.tls_verify == "true")
        say(f"Successfully pulled {', '.join(img['names']) or target} ({img['digest'][:19]}, "
            f"{(img.get('size') or 0) / 1e6:.1f} MB)")
        emit(img, args.json)
    elif action == "import":
        img = node.image_import(target, args.sha256, args.name)
        say(f"Successfully imported {', '.join(img['names']) or img['digest']} ({img['format']}, "
            f"{(img.get('size') or 0) / 1e6:.1f} MB)")
        emit(img, args.json)
    elif action == "list":
        emit(node.image_list(), args.json, lambda imgs: _image_table(imgs, header=not args.no_header))
    elif action == "get":
        emit(node.image_get(target), True)  # JSON with or without -j, as `get`
    elif action == "delete":
        removed = node.image_delete(target)
        say(f"Successfully deleted image {target}" + ("" if removed else " (the name; the image keeps its others)"))
        emit({"removed": removed}, args.json)
    else:
        result = node.image_prune(dry_run=args.dry_run)
        verb = "Would remove" if args.dry_run else "Removed"
        say(f"{verb} {len(result['images'])} image(s) and {len(result['removed'])} file(s), "
            f"{result['freed_bytes'] / 1e6:.1f} MB")
        emit(result, args.json)
    return 0


def cmd_apply(args, node) -> int:
    from . import apply

    result = node.apply(apply.load(args.file), dry_run=args.dry_run, prune=args.prune)

    def human(res) -> str:
        if not res["steps"]:
            return "nothing to do: the node matches the desired state\n"
        return "".join(f"{s['status']:<9} {s['action']:<15} {s['target']}"
                       + (f"  ({s['detail']})" if s["detail"] else "")
                       + (f": {s['error']}" if s.get("error") else "") + "\n" for s in res["steps"])

    emit(result, args.json, human)
    if result["error"]:
        raise BackendError(f"apply stopped: {result['error']}")
    return 0


def cmd_agent(args, node) -> int:
    from .agent import Agent

    return Agent(node, interval=args.interval, boot_retry=args.boot_retry, metrics=args.metrics).run()


# commands that need no state root
def cmd_completion(args) -> int:
    import argcomplete

    out(argcomplete.shellcode([PROG], shell=args.shell))
    return 0


def cmd_help(args) -> int:
    from . import reference  # only help pays for the reference

    out(reference.help_text(build_parser(), args.topic, args.brand))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer from the full parser
            import argcomplete

            argcomplete.autocomplete(build_parser())
            return 0
        args = _parse(argv)
        return _run(args)
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0
    except EveadmError as exc:  # an error eveadm means: one line, with or without --debug
        sys.stderr.write(f"{PROG}: {one_line(str(exc))}\n")
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
        if args is not None and args.debug:
            raise
        sys.stderr.write(f"{PROG}: internal error: {type(exc).__name__}: {one_line(str(exc))} "
                         "(run with --debug for details)\n")
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


def _parse(argv: list[str]):
    from . import quickparse

    argv = _glue_sort(argv)
    args = quickparse.parse(argv, COMMANDS, ALIASES)  # plain lines: no argparse to import
    if args is None:
        parser = build_parser(only=command_in(argv))
        args = parser.parse_args(argv)
        if args.command is None and not args.version:
            parser.print_help(sys.stderr)
            raise SystemExit(2)
    if args.command in ALIASES:
        args.command = ALIASES[args.command]
    return args


# Commands that run without interrupts.install(): the agent handles its own signals (it ends
# between two steps); the reads change nothing a signal could leave half-done, so Python's own
# handling (Ctrl-C: exit 130) is enough and they skip importing `signal`.
UNGUARDED = frozenset({"agent", "get", "list", "lookup", "info", "validate"})


def _run(args) -> int:
    if args.version:
        from importlib.metadata import version

        out(version("eveadm") + "\n")
        return 0
    if args.command in ("completion", "help"):
        return globals()["cmd_" + args.command](args)
    from . import interrupts
    from .node import Node

    if args.command not in UNGUARDED:
        interrupts.install()
    os.umask(0o077)  # whatever eveadm (or a tool it runs) writes is its owner's alone
    node = Node(root=args.root)
    node.on_progress(say)
    try:
        code = globals()["cmd_" + args.command](args, node)
        interrupts.check()  # a signal that came after the last safe point still ends with its code
        return code
    finally:
        for w in node.warnings:
            say(f"{PROG}: warning: {w}")
