"""What the eveadm.edge tests share: ansible-core from this environment, with the collection from
this checkout, everything Ansible writes kept in the test's directory, and every task result
recorded as JSON (callback_plugins/record.py) in the file $EVEADM_TEST_RECORD."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]  # holds ansible_collections/eveadm/edge
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    """The directory of ansible and ansible-playbook."""
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-core is not installed in this environment (pip install -e '.[test]')")
    return BIN


@pytest.fixture
def ansible_env(tmp_path, ansible_bin) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "EVEADM_ROOT"}
    home = tmp_path / "ansible"
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(REPO),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TMP": str(home / "remote-tmp"),
        "ANSIBLE_PIPELINING": "true",
        # sshd passes LANG/LC_* on; a locale the host never generated stops ansible: C.UTF-8 always exists
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",  # no connection outlives the run
        "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "record",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "true",  # ad-hoc `ansible` too
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
        "ANSIBLE_LOCALHOST_WARNING": "false",
    })
    return env
