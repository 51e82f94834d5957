#!/usr/bin/env bash
# Build the documentation site into site/: set up (if needed), refresh the pages generated
# from the code (docs/reference/*.md), then `mkdocs build --strict` (any warning fails).
# Extra arguments go to mkdocs build, e.g. `bash scripts/docs.sh --site-dir /tmp/site`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m composer.docs_gen
python -m mkdocs build --strict "$@"
echo "site built: site/index.html"
