#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite (installing the PostgreSQL server the
# shared-study search tests start on loopback, when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PostgreSQL server binaries for the shared-study search tests (started on loopback by the tests)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
        echo "installing postgresql (server for the search tests) with apt-get ..."
        $SUDO apt-get install -y -q postgresql >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q postgresql >/dev/null; } \
            || echo "warning: could not install postgresql; the PostgreSQL search tests will be skipped" >&2
    fi
fi

. .venv/bin/activate
# Two worker processes (pytest-xdist; each test file stays in one process, so its module fixtures
# are built once): about 5 minutes on the 2-core CI machine, against about 9 in one process.
# COMPOSER_TEST_WORKERS=0 runs in this process; the slowest tests are listed at the end.
exec python -m pytest -n "${COMPOSER_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
