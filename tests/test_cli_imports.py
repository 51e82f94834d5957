"""The commands that only read blueprints answer without PyTorch (issue #16: a CLI that answers
at once): ``validate``, ``schema``, ``blocks`` and ``render`` (without insides) never import
torch, transformers or numpy. Each runs in a fresh interpreter that reports what it imported."""

import subprocess
import sys

import pytest

from shipped import ROOT

HEAVY = ("torch", "transformers", "numpy")
PROBE = """
import sys
from composer.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
sys.exit(code)
"""

COMMANDS = {
    "validate-paper-blueprints": ["validate", "-q", *(f"blueprints/{n}.yaml" for n in ("glomo", "emt_dlfr", "hct_mg", "mult", "msaf", "rmfn", "late_fusion"))],
    "validate-shares-and-templates": ["validate", "-q", "examples/hybrids/shared_encoder.yaml", "examples/templates/hct_mg_text_primary.yaml", "examples/hybrids/mult_experts_mfp_dlfr.yaml"],
    "schema": ["schema"],
    "blocks": ["blocks", "--details", "glomo*"],
    "render": ["render", "blueprints/hct_mg.yaml", "-o", "{tmp}/hct_mg.dot"],
}


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_reading_commands_do_not_import_torch(args, tmp_path):
    args = [a.format(tmp=tmp_path) for a in args]
    run = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    heavy = run.stdout.rsplit("HEAVY:", 1)[1].strip()
    assert heavy == "", f"composer {' '.join(args)} imported {heavy}"


def test_building_a_model_imports_the_modules_on_demand(tmp_path):
    probe = (
        "import sys\n"
        "from composer import load_blueprint\n"
        "bp = load_blueprint('blueprints/late_fusion.yaml')\n"
        "assert 'torch' not in sys.modules\n"
        "import composer\n"
        "model = composer.compile_blueprint(bp)\n"
        "print(type(model).__name__, 'composer.blocks.projection' in sys.modules or 'composer.blocks.heads' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["ComposedModel", "True"]
