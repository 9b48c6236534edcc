#!/usr/bin/env bash
# run.sh [ansible-test sanity options]: `ansible-test sanity` on this collection, without docker and
# without ansible-test's own pip bootstrap download (its host is often unreachable): on a copy of
# the collection in a temporary directory (ansible-test writes tests/output/ beside what it tests),
# with its requirements installed from PyPI into a virtualenv there. Needs python3 >= 3.11 and PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ansible_collections/eveadm"
cp -r "$here" "$work/ansible_collections/eveadm/edge"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "ansible-core>=2.19,<2.20"
reqs="$("$work/venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_data/requirements"
for t in ansible-doc import pep8 pylint runtime-metadata validate-modules yamllint; do
  "$work/venv/bin/pip" install -q --disable-pip-version-check -r "$reqs/sanity.$t.txt"
done
# ansible-test bootstraps pip in each test's virtualenv with a get-pip script it downloads; this
# stand-in, where it looks first, uses the pip that ships with Python instead
mkdir -p "$work/home/.ansible/test/cache"
cat > "$work/home/.ansible/test/cache/get_pip_24_2.py" <<'PY'
import runpy
import subprocess
import sys

subprocess.run([sys.executable, "-m", "ensurepip"], check=True)  # in-process, it would hide pip's config
sys.argv = ["pip", "install"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
PY
cd "$work/ansible_collections/eveadm/edge"
HOME="$work/home" PATH="$work/venv/bin:$PATH" ansible-test sanity --local --python 3.11 "$@"
