"""The CLI's quick parser (no argparse) answers exactly as argparse would, or leaves the line to it."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eveadm import cli, quickparse
from eveadm.errors import UsageError


def quick(argv):
    return quickparse.parse(argv, cli.COMMANDS, cli.ALIASES)


def by_argparse(argv):
    """argparse's namespace for argv (as the CLI builds the parser), or None where it refuses it."""
    for parser in (cli.build_parser(only=cli.command_in(argv)), cli.build_parser()):
        try:
            yield vars(parser.parse_args(argv))
        except (UsageError, SystemExit):
            yield None


@pytest.mark.parametrize("argv", [
    ["get", "web1"], ["json", "web1"], ["get", "-j", "web1"], ["--root", "/tmp/r", "get", "web1"],
    ["--root=/tmp/r", "--debug", "list"], ["list"], ["list", "-H", "-o", "uuid,alias", "--sort=-ram", "state=running"],
    ["list", "-p", "alias=~^web"], ["create", "-f", "-"], ["create", "--file", "web.json", "-j"],
    ["start", "web1"], ["stop", "web1", "-t", "5"], ["stop", "-F", "web1"], ["delete", "web1"],
    ["update", "web1", "ram=512", "alias=x"], ["lookup", "-1", "alias=web1"], ["validate", "create", "-f", "p.json"],
    ["network", "update", "lan", "mtu=1400"], ["events", "-f", "-j"], ["stats", "-w", "2", "web1"],
    ["agent", "--metrics", "9464"], ["completion", "bash"], ["kill", "web1", "-s", "KILL"],
])
def test_plain_lines_are_read_without_argparse_and_as_argparse_reads_them(argv):
    ns = quick(argv)
    assert ns is not None, "a plain command line went to argparse"
    assert all(vars(ns) == theirs for theirs in by_argparse(argv))


@pytest.mark.parametrize("argv", [
    [], ["--version"], ["-h"], ["get", "-h"], ["get"], ["get", "a", "b"], ["get", "--js", "web1"], ["list", "-jH"],
    ["list", "a=1", "-j", "b=2"], ["get", "--", "web1"], ["stop", "web1", "-t", "-5"], ["stop", "web1", "-t", "x"],
    ["validate", "remove"], ["image", "list"], ["info", "web1", "--log"], ["nosuch"], ["get", "web1", "--debug"],
    ["apply"], ["list", "-o"], ["get", "--json=1", "web1"], ["--root", "get", "web1"], ["list", "--output=--"],
])
def test_anything_else_is_left_to_argparse(argv):
    assert quick(argv) is None


WORDS = ["web1", "ram=1", "-", "", "5", "-5", "x", "alias=~^w", "uuid,ram", "create", "update", "list", "get",
         "bash", "kvm", "lan", "-x", "--", "-h", "--js", "-jH", "--json=1", "-o=uuid", "--root", "/r", "--debug",
         "9464", "127.0.0.1:80", "nan", "KILL", "assignable-add"]


def option_strings(command):
    recorder = quickparse._Recorder()
    try:
        cli.COMMANDS[command][2](recorder)
    except quickparse._NotPlain:
        return []
    return [o for a in recorder.arguments for o in a.options]


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(cli.COMMANDS) + sorted(cli.ALIASES)))
    name = cli.ALIASES.get(command, command)
    options = option_strings(name)
    token = st.one_of(st.sampled_from(WORDS), st.sampled_from(options or ["-j"]),
                      st.builds(lambda o, w: f"{o}={w}", st.sampled_from(options or ["--json"]), st.sampled_from(WORDS)))
    before = draw(st.lists(st.sampled_from(["--root", "/r", "--root=/r", "--debug", "-x"]), max_size=3))
    return before + [command] + draw(st.lists(token, max_size=6))


@settings(max_examples=600, deadline=None)
@given(command_lines())
def test_where_the_quick_parser_answers_argparse_answers_the_same(argv):
    ns = quick(argv)
    if ns is not None:
        for theirs in by_argparse(argv):
            assert theirs == vars(ns), argv
