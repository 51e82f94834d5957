#!/usr/bin/env bash
# Set up (if needed), check every shipped blueprint, show one compiled model, and train the
# late-fusion baseline on the built-in synthetic data (about a minute on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
composer validate blueprints/*.yaml
composer build blueprints/late_fusion.yaml
composer train blueprints/late_fusion.yaml --out runs/demo --overwrite "$@"   # the demo owns runs/demo
