#!/usr/bin/env bash
# Everything to measure on a CUDA machine, in one command (scripts/bench_gpu.py says what):
# paper blueprints and their references, fp32/bf16, eager/compile/CUDA graphs, batch 24/64/256,
# MMSA's MulT side by side when the MMSA package is there. Appends rows to docs/performance.md.
#
#   bash scripts/bench_gpu.sh                  # a machine with a package index
#   WHEELS=.whl bash scripts/bench_gpu.sh      # no index: torch, transformers, networkx, numpy
#                                              # present; the rest as wheels in $WHEELS
# Make the wheel folder where pip works (Python 3.12, manylinux):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl pydantic pydantic-core typing-extensions typing-inspection \
#     annotated-types pyyaml safetensors typer click rich markdown-it-py mdurl pygments shellingham \
#     optuna alembic sqlalchemy colorlog tqdm packaging mako markupsafe greenlet graphviz
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/composer-site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/composer-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif ! python3 -c "import composer" 2>/dev/null; then
    python3 -m pip install -q -e . || python3 -m pip install -q --no-deps -e .
fi
exec python3 -u scripts/bench_gpu.py "$@"
