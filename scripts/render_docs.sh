#!/usr/bin/env bash
# Render every shipped blueprint (blueprints/*.yaml) to docs/figures/<name>.svg and .png, and
# those with a fusion block that has weights also to <name>_inside.svg/.png (--expand of those blocks).
# One Python process draws them all (torch is imported once); a blueprint that fails to
# load or draw is reported and the others are still drawn; the exit status is 1 if any failed.
# Usage: scripts/render_docs.sh [BLUEPRINT.yaml ...]   (default: every shipped blueprint)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
command -v dot >/dev/null 2>&1 || { echo "error: graphviz 'dot' not found (apt-get install graphviz / brew install graphviz)" >&2; exit 1; }
if [ "$#" -eq 0 ]; then set -- blueprints/*.yaml; fi
mkdir -p docs/figures
python - "$@" <<'PY'
import sys
from pathlib import Path

from composer.blueprint.load import load_blueprint
from composer.errors import ComposerError
from composer.render import _compile_for_counts, render, write_graph

failed = []
for path in map(Path, sys.argv[1:]):
    try:
        model = _compile_for_counts(load_blueprint(path))
        graph = render(path, model=model)
        for suffix in ("svg", "png"):
            write_graph(graph, Path("docs/figures") / f"{path.stem}.{suffix}", dpi=150)
        print(f"rendered {path} -> docs/figures/{path.stem}.svg, .png")
        # the fusion blocks with weights, expanded one level: <name>_inside.svg/.png
        counts = model.parameter_counts()
        fusion = [n.id for n in model.plan.nodes if n.entry.family == "fusion" and counts.get(n.id)]
        if fusion:
            inside = render(path, model=model, expand=fusion, depth=1)
            for suffix in ("svg", "png"):
                write_graph(inside, Path("docs/figures") / f"{path.stem}_inside.{suffix}", dpi=150)
            print(f"rendered {path} (inside {', '.join(fusion)}) -> docs/figures/{path.stem}_inside.svg, .png")
    except ComposerError as exc:
        failed.append(path)
        print(f"FAILED   {path}: {exc}", file=sys.stderr)
if failed:
    print(f"{len(failed)} of {len(sys.argv) - 1} blueprints failed: {', '.join(map(str, failed))}", file=sys.stderr)
    sys.exit(1)
PY
