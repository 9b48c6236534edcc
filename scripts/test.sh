#!/bin/bash
# test.sh [pytest args]: install what the tests need (idempotent) and run the whole suite:
# fast unit tests of the CLI/engine (null brand), then real QEMU, real runc/crun, the rkt simulator,
# and a real Xen booted nested in QEMU. Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests --xen
export EVEADM_ARTIFACTS=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
exec .venv/bin/python -m pytest -ra --durations=15 "${@:-tests}"
