# The fleet test's own callback: every task result, as JSON, in the file $EVEADM_TEST_RECORD
# (ansible-core ships no JSON callback; ansible.posix's is not on PyPI by itself).

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: record
type: aggregate
short_description: every task result as JSON in the file $EVEADM_TEST_RECORD
description: For eveadm's fleet test.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.results = []

    def _add(self, result, status):
        self.results.append({"host": result.host.get_name(), "task": result.task.get_name(), "status": status,
                             "result": result.result})

    def v2_runner_on_ok(self, result):
        self._add(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._add(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._add(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._add(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["EVEADM_TEST_RECORD"], "w", encoding="utf-8") as fh:
            json.dump(self.results, fh, default=str)
