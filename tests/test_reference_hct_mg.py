"""HCT-MG: the compiled blueprints equal the plain-PyTorch reference (tests/reference/hct_mg.py).

``blueprints/hct_mg.yaml`` and its variants (MOSEI, IEMOCAP), built tiny, with each fixed primary
(Table 4, no gate) and with the gate (the primary picked by the weights, both ``gate_scale`` forms,
scaling at the inputs and at the outputs, the tie rule at initialisation, a frozen gate): equal
parameter counts, equal eval-mode predictions on a padded batch, equal gradients of every weight
(the gate logits included).
"""

from pathlib import Path

import pytest
import torch

from composer import compile_blueprint, load_blueprint
from equivalence import assert_equivalent as check_equivalent, n_params
from reference.hct_mg import reference_for

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "blueprints/hct_mg.yaml"
VARIANTS = sorted((ROOT / "blueprints/variants").glob("hct_mg_*.yaml"))
LENGTHS = {"text": [5, 3, 4], "audio": [7, 2, 5], "vision": [6, 6, 1]}  # every modality padded somewhere
FAVOUR = {"text": [0.9, 0.1, -0.4], "audio": [0.2, 0.7, -0.1], "vision": [-0.3, 0.0, 0.5]}  # gate logits


def tiny(path: Path, *extra: str):
    """The blueprint at d=4 (2 heads; its own depths, eq. 5 self-attention at max(layers, 3)), short inputs."""
    overrides = [f"blocks.{m}_enc.hidden=4" for m in LENGTHS]
    overrides += ["blocks.fusion.heads=2", "blocks.head.hidden=[10]"]
    overrides += ["modalities.text.features=6", "modalities.audio.features=3", "modalities.vision.features=5"]
    overrides += [f"modalities.{m}.length={max(lengths)}" for m, lengths in LENGTHS.items()]
    return compile_blueprint(load_blueprint(path, overrides=[*overrides, *extra])).eval()


def padded_batch(model) -> dict[str, torch.Tensor]:
    batch = model.example_inputs(3)
    for m, lengths in LENGTHS.items():
        batch[f"{m}_lengths"] = torch.tensor(lengths)
    return batch


def set_logits(model, logits):
    with torch.no_grad():
        model.fusion.gate.logits.copy_(torch.tensor(logits))


def assert_equivalent(model):
    return check_equivalent(model, reference_for, padded_batch(model))


@pytest.mark.parametrize("path", [PAPER, *VARIANTS], ids=lambda p: p.stem)
@pytest.mark.parametrize("primary", ["text", "audio", "vision"])
def test_fixed_primary_equals_reference(path, primary):
    model = tiny(path, f"blocks.fusion.primary={primary}")
    assert model.fusion.roles()[2] == primary
    assert_equivalent(model)


@pytest.mark.parametrize("path", [PAPER, *VARIANTS], ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["weights", "relative"])
@pytest.mark.parametrize("primary", ["text", "audio", "vision"])
def test_gated_primary_equals_reference(path, scale, primary):
    model = tiny(path, f"blocks.fusion.gate_scale={scale}")
    set_logits(model, FAVOUR[primary])
    assert model.fusion.roles()[2] == primary
    reference = assert_equivalent(model)
    assert reference.gate()[0] == reference.ports.index(primary)


@pytest.mark.parametrize("scale", ["weights", "relative"])
def test_gate_at_outputs_equals_reference(scale):
    model = tiny(PAPER, "blocks.fusion.gate_at=outputs", f"blocks.fusion.gate_scale={scale}")
    set_logits(model, FAVOUR["vision"])
    assert_equivalent(model)


@pytest.mark.parametrize("tie_break, primary", [("first", "text"), ("audio", "audio"), ("vision", "vision")])
def test_tie_rule_at_initialisation_equals_reference(tie_break, primary):
    model = tiny(PAPER, f"blocks.fusion.tie_break={tie_break}")
    assert torch.equal(model.fusion.gate.logits, torch.zeros(3))  # all weights tie at 1/3
    assert model.fusion.roles()[2] == primary
    reference = assert_equivalent(model)
    assert reference.gate()[0] == reference.ports.index(primary)


def test_partial_tie_goes_to_the_first_of_the_largest():
    model = tiny(PAPER, "blocks.fusion.tie_break=text")
    set_logits(model, [0.0, 0.4, 0.4])  # the preferred text is not among the largest
    assert model.fusion.roles()[2] == "audio"
    assert_equivalent(model)


def test_frozen_gate_keeps_its_primary_in_the_reference():
    model = tiny(PAPER)
    set_logits(model, FAVOUR["audio"])
    model.fusion.gate.freeze()
    set_logits(model, FAVOUR["vision"])  # the weights move, the frozen primary does not
    reference = reference_for(model).eval()
    assert model.fusion.roles()[2] == "audio" and reference.gate()[0] == 1
    batch = padded_batch(model)
    torch.testing.assert_close(model(batch)["prediction"], reference(batch), atol=1e-5, rtol=0)


def test_the_primary_changes_the_prediction():
    """The per-primary comparisons are not vacuous: another primary gives another output."""
    batch = padded_batch(tiny(PAPER))
    outputs = []
    for primary in ("text", "audio", "vision"):
        torch.manual_seed(0)
        outputs.append(tiny(PAPER, f"blocks.fusion.primary={primary}")(batch)["prediction"])
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4 and (outputs[1] - outputs[2]).abs().max() > 1e-4


def test_full_size_reference_has_the_blueprint_count():
    model = compile_blueprint(load_blueprint(PAPER))
    assert n_params(reference_for(model)) == n_params(model) == 556_724
