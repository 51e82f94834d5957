"""The objectives examples (MISA, Self-MM with ULGM, an EMOE-style router, MMIM's stages) are
written without Python: their training-only parts never reach an exported graph or the
inference parameter count."""

from __future__ import annotations

import pytest

import composer
from tests.shipped import ROOT

OBJECTIVES = sorted((ROOT / "examples/objectives").glob("*.yaml"))
SHORT = ["modalities.text.length=6", "modalities.audio.length=6", "modalities.vision.length=6"]


def test_the_four_objectives_are_shipped():
    assert {p.stem for p in OBJECTIVES} >= {"misa", "self_mm", "emoe", "mmim"}


@pytest.mark.parametrize("path", OBJECTIVES, ids=lambda p: p.stem)
def test_an_exported_objective_example_holds_its_inference_graph_only(path):
    from composer.export import trace

    bp = composer.load_blueprint(path, SHORT)
    assert bp.plan.training_only or any(ln.entry.impl for ln in bp.plan.losses)
    model = composer.compile_blueprint(bp).eval()
    sizes = model.parameter_summary()
    assert sizes["training_only"] > 0
    program = trace(model).program
    assert sum(p.numel() for _, p in program.named_parameters()) == sizes["model"]
    names = " ".join(program.state_dict)
    assert not any(f"{b.replace('/', '.')}." in names for b in bp.plan.training_only)
