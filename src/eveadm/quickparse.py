"""Plain command lines parsed without argparse, from the same argument builders the parser uses.

Importing argparse (with `re`, `enum`, `gettext` and `locale`, which parsing pulls in) costs more
than a short command's own work; `eveadm get web1` would spend half its start-up there. So the
CLI first offers the command line to `parse` below. It reads each command's arguments by running
the command's `_args_*` builder against a `_Recorder` (which writes down each `add_argument` call),
and understands only the plain forms: known flags, `--opt VALUE`, `--opt=VALUE`, one unbroken run of
positionals. Anything else (`-h`, an abbreviation, grouped short flags, `--`, a value starting with
`-`, a bad value, a missing argument, a sub-command) returns None and argparse parses the line,
with its messages. Where this parser answers, it answers as argparse would: a test holds the two
side by side over generated command lines.
"""

from __future__ import annotations

GLOBAL_DEFAULTS = {"root": None, "debug": False, "version": False}


class Namespace:
    """What argparse's parse_args returns: the arguments as attributes (`types` is not imported for it)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


class _NotPlain(Exception):
    """Something only argparse handles: a sub-command, an action or nargs this parser does not know."""


class _Argument:
    """One add_argument call, as the recorder saw it."""

    def __init__(self, names: tuple[str, ...], kw: dict):
        action = kw.get("action", "store")
        if action not in ("store", "store_true") or "const" in kw:
            raise _NotPlain(names)
        self.flag = action == "store_true"
        self.options = [n for n in names if n.startswith("-")]
        self.nargs = kw.get("nargs")
        if (self.options and self.nargs is not None) or self.nargs not in (None, "?", "*"):
            raise _NotPlain(names)
        if "dest" in kw:
            self.dest = kw["dest"]
        elif self.options:
            longs = [o for o in self.options if o.startswith("--")]
            self.dest = (longs or self.options)[0].lstrip("-").replace("-", "_")
        else:
            self.dest = names[0]
        self.type = kw.get("type")
        self.choices = kw.get("choices")
        self.required = kw.get("required", False)
        self.default = kw.get("default", False if self.flag else None)
        if isinstance(self.default, str) and self.type is not None:  # as argparse: a string default is converted
            self.default = self.type(self.default)

    def value(self, text: str):
        value = self.type(text) if self.type is not None else text  # any error: argparse says it
        if self.choices is not None and value not in self.choices:
            raise ValueError(text)
        return value


class _Recorder:
    """Stands in for an argparse parser while a command's builder runs."""

    def __init__(self):
        self.arguments: list[_Argument] = []

    def add_argument(self, *names, **kw) -> _Argument:
        arg = _Argument(names, kw)
        self.arguments.append(arg)
        return arg  # builders may set attributes on it (`completer`), as on an argparse Action

    def add_subparsers(self, **_kw):
        raise _NotPlain("sub-commands")


def parse(argv: list[str], commands: dict, aliases: dict):
    """A namespace as argparse would give for `argv`, or None when argparse must parse it."""
    try:
        return _parse(argv, commands, aliases)
    except Exception:  # _NotPlain, a type or choice refused, a builder's own error: argparse decides
        return None


def _parse(argv: list[str], commands: dict, aliases: dict):
    ns = dict(GLOBAL_DEFAULTS)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):  # eveadm's own options, before the command
        word = argv[i]
        if word == "--debug":
            ns["debug"] = True
        elif word == "--root" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            ns["root"] = argv[i + 1]
            i += 1
        elif word.startswith("--root="):
            ns["root"] = word[len("--root="):]
        else:
            return None
        i += 1
    if i == len(argv):
        return None
    command = argv[i]
    name = aliases.get(command, command)
    if name not in commands:
        return None
    recorder = _Recorder()
    commands[name][2](recorder)
    ns["command"] = command
    options, positionals = {}, []
    for arg in recorder.arguments:
        ns[arg.dest] = arg.default
        if arg.options:
            options.update((o, arg) for o in arg.options)
        else:
            positionals.append(arg)
    words, run_ended, seen = [], False, set()
    rest = argv[i + 1:]
    j = 0
    while j < len(rest):
        word = rest[j]
        if word.startswith("-") and word != "-":
            name, eq, text = word.partition("=")
            arg = options.get(name if (eq and name.startswith("--")) else word)
            if arg is None or (eq and arg.flag):
                return None
            if arg.flag:
                ns[arg.dest] = True
            else:
                if not eq:
                    j += 1
                    if j == len(rest) or (rest[j].startswith("-") and rest[j] != "-"):
                        return None
                    text = rest[j]
                if text == "--":  # argparse drops it, and the value with it
                    return None
                ns[arg.dest] = arg.value(text)
            seen.add(arg)
            run_ended = run_ended or bool(words)
        else:
            if run_ended:  # positionals on both sides of an option: argparse reads them its own way
                return None
            words.append(word)
        j += 1
    if any(a.required and a not in seen for a in options.values()):
        return None
    for arg in positionals:
        if arg.nargs is None:
            if not words:
                return None
            ns[arg.dest] = arg.value(words.pop(0))
        elif arg.nargs == "?":
            ns[arg.dest] = arg.value(words.pop(0)) if words else arg.default
        else:
            ns[arg.dest] = [arg.value(w) for w in words] if words else (arg.default if arg.default is not None else [])
            words = []
    if words:
        return None
    return Namespace(ns)
