"""Property-based fuzzing (hypothesis) of payloads, updates, argv and the Python API: never a traceback,
only documented exit codes, the store unchanged after each refusal, every JSON output strict JSON."""

import contextlib
import io
import json
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eveadm
from eveadm import cli, schema

EXIT_CODES = {0, 1, 2, 3, 4, 5, 6}
FUZZ = settings(max_examples=int(__import__("os").environ.get("EVEADM_FUZZ_EXAMPLES", "250")), deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=12)
python_values = st.one_of(json_values, st.tuples(scalars), st.frozensets(st.integers(), max_size=2),
                          st.binary(max_size=4), st.dictionaries(st.integers(), scalars, max_size=2))
keys = st.sampled_from(sorted(schema.PROPERTIES) + sorted(schema.UPDATE_VERBS) + ["bogus", "nics.0.x"])
payloads = st.one_of(st.dictionaries(keys, st.one_of(json_values, python_values), max_size=6).map(
    lambda d: {"brand": "null", **d}), json_values)


def strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    return eveadm.Node(root=tmp_path_factory.mktemp("fuzz") / "root")


@FUZZ
@given(payload=payloads)
def test_create_and_validate_take_anything_and_answer_with_documented_errors(node, payload):
    before = len(node.list())
    report = node.validate(payload)
    assert set(report) == {"bad_properties", "bad_values", "missing_properties"}
    strict(json.dumps(report, allow_nan=False))
    try:
        dom = node.create(payload)
    except eveadm.EveadmError as exc:
        assert exc.exit_code in EXIT_CODES
        assert len(node.list()) == before                       # a refusal changes nothing
        return
    assert schema.is_empty(report)
    strict(json.dumps(node.get(dom["uuid"]), allow_nan=False))
    node.delete(dom["uuid"])


@FUZZ
@given(change=st.one_of(st.dictionaries(keys, st.one_of(json_values, python_values), max_size=4), json_values))
def test_update_takes_anything_and_a_refusal_changes_nothing(node, change):
    uuid = node.lookup(["alias=fuzzed"])[0] if node.lookup(["alias=fuzzed"]) else \
        node.create({"brand": "null", "alias": "fuzzed"})["uuid"]
    before = node.get(uuid)
    try:
        node.update(uuid, change)
    except eveadm.EveadmError as exc:
        assert exc.exit_code in EXIT_CODES
        after = node.get(uuid)
        assert {k: v for k, v in after.items() if k != "last_modified"} == \
               {k: v for k, v in before.items() if k != "last_modified"}
        return
    strict(json.dumps(node.get(uuid), allow_nan=False))
    if node.get(uuid).get("alias") != "fuzzed":
        node.update(uuid, {"alias": "fuzzed"})


words = st.sampled_from(["create", "get", "list", "lookup", "update", "stop", "start", "delete", "validate",
                         "info", "events", "doctor", "pci", "kill", "help", "-j", "-o", "-s", "-p", "-H", "-f",
                         "-t", "-F", "--debug", "--root", "state=running", "alias=~[", "ram=x", "uuid,state",
                         "-ram", "nics.*.mac", "tags.a=1", "fuzzy", "--log", "-1", "create", "update", "--brand",
                         "null", "0000:00:04.0", "-s", "KILL", "--fix", "--render"])
argvs = st.lists(st.one_of(words, st.text(max_size=8)), max_size=6)


@FUZZ
@given(argv=argvs, stdin=st.one_of(st.just(""), json_values.map(lambda v: json.dumps(v)), st.text(max_size=20)))
def test_any_argv_gets_a_documented_exit_code_one_line_and_strict_json(tmp_path_factory, argv, stdin):
    root = str(tmp_path_factory.getbasetemp() / "argv-root")
    if "--root" in argv or ("events" in argv and ("-f" in argv or "--follow" in argv)):
        return  # the root under test is the fixture's; events -f follows the journal until interrupted
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stdin_obj = io.StringIO(stdin)
    real_stdin = cli.sys.stdin
    try:
        cli.sys.stdin = stdin_obj
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--root", root, *[a for a in argv if a not in ("console", "agent")]])
    finally:
        cli.sys.stdin = real_stdin
        for s, h in handlers.items():
            signal.signal(s, h)
    assert code in EXIT_CODES, (argv, code, err.getvalue())
    assert "Traceback (most recent" not in err.getvalue() and "internal error:" not in err.getvalue(), \
        (argv, err.getvalue())
    if code not in (0, 3) and "usage:" not in err.getvalue():
        last = err.getvalue().split("\n")[-2]          # the error: one printable line
        assert last.startswith("eveadm: ") and last.isprintable(), (argv, err.getvalue())
    if code == 0 and "-j" in argv and out.getvalue().strip() and "events" not in argv and "help" not in argv:
        strict(out.getvalue())
