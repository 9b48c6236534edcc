"""Shared fixtures (helpers live in clitest.py so test modules can import them by a unique name)."""

import pytest

from clitest import Cli


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path / "root")
