#!/usr/bin/env bash
# Create .venv and install Composer with its test, demo and tracking extras (TensorBoard and MLflow:
# wheels only, about 1.5 minutes on 2 cores); install Debian's
# graphviz (the `dot` program used by `composer render`) when it is missing.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
        echo "installing graphviz (dot) with apt-get ..."
        $SUDO apt-get install -y -q graphviz >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q graphviz >/dev/null; } \
            || echo "warning: could not install graphviz; rendering will be unavailable" >&2
    else
        echo "warning: graphviz 'dot' not found and apt-get unavailable; install graphviz for rendering" >&2
    fi
fi

# pip without the noise of this machine's local-index warnings; keeps pip's exit status
pip_install() {
    python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
    return "${PIPESTATUS[0]}"
}

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.composer-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # The CPU build of torch 2.13.0 lies on local disk; installing it first keeps pip from
    # fetching a multi-GB CUDA build to satisfy the project's torch range.
    pip_install "torch==2.13.0" || pip_install "torch>=2.2,<2.15"
    pip_install -e ".[dev,demo,sdk,docs,export,tracking]"
    touch "$stamp"
fi
# The MMSA oracle of the zoo's equality tests (tests/mmsa_oracle.py, `pytest -k mmsa`): MMSA 2.2.1
# (MIT) and the one module its config loader imports, both without dependencies (MMSA's own pins
# would replace torch); the tests load its model classes around its package __init__.
if ! python -c "import importlib.util as u, sys; sys.exit(u.find_spec('MMSA') is None or u.find_spec('easydict') is None)"; then
    pip_install --no-deps "mmsa==2.2.1" "easydict==1.14" || echo "warning: could not install mmsa 2.2.1; the MMSA equality tests will be skipped" >&2
fi
