"""The build writes the man page from the code it ships (eveadm.reference: the parser and the schema), so
the wheel's share/man/man8/eveadm.8 always matches its eveadm. Everything else is in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))
from eveadm import reference  # noqa: E402  (from this source tree, not an installed eveadm)

reference.write(str(HERE), only=("man/eveadm.8",))
setup()
