"""MulT: the compiled blueprints equal the plain-PyTorch reference (tests/reference/mult.py).

For ``blueprints/mult.yaml`` with the future mask (its default, the public code's) and without it
(the paper's equations), built tiny: equal parameter counts, equal eval-mode predictions on a
padded batch, equal gradients of every weight. Plus the full-size count (1,071,211). MulT as MMSA
runs it is ``blueprints/zoo/mult.yaml``, proven equal to MMSA's own module (tests/test_mmsa_mult.py).
"""

from pathlib import Path

import pytest
import torch

from composer import compile_blueprint, load_blueprint
from composer.graph.plan import plan
from composer.graph.size import estimate_size
from equivalence import assert_equivalent as check_equivalent, n_params
from reference.mult import copy_weights, reference_for

ROOT = Path(__file__).resolve().parents[1]
MULT = ROOT / "blueprints/mult.yaml"
TRANSFORMERS = ["cm_t_a", "cm_t_v", "cm_a_t", "cm_a_v", "cm_v_t", "cm_v_a", "mem_t", "mem_a", "mem_v"]
LENGTHS = {"text": [5, 3, 4], "audio": [7, 2, 5], "vision": [6, 6, 1]}  # every modality padded somewhere


def tiny(path: Path, *extra: str):
    """The blueprint at d=4 (2 heads, 2 layers per transformer), short inputs, a small head."""
    overrides = [f"blocks.{p}.out=4" for p in ("proj_t", "proj_a", "proj_v")]
    overrides += [f"blocks.{b}.{field}=2" for b in TRANSFORMERS for field in ("heads", "layers")]
    overrides += ["modalities.text.features=6", "modalities.audio.features=3", "modalities.vision.features=5"]
    overrides += [f"modalities.{m}.length={max(lengths)}" for m, lengths in LENGTHS.items()]
    overrides += ["blocks.head.hidden=[10]", *extra]
    return compile_blueprint(load_blueprint(path, overrides=overrides)).eval()


def padded_batch(model) -> dict[str, torch.Tensor]:
    """Random features everywhere (padded steps hold noise too) and per-sample lengths."""
    batch = model.example_inputs(3)
    for m, lengths in LENGTHS.items():
        batch[f"{m}_lengths"] = torch.tensor(lengths)
    return batch


def assert_equivalent(model):
    return check_equivalent(model, reference_for, padded_batch(model))


def test_mult_with_future_mask_equals_reference():
    model = tiny(MULT)
    assert all(model.blueprint.blocks[b].causal for b in TRANSFORMERS)
    assert_equivalent(model)


def test_mult_without_future_mask_equals_reference():
    model = tiny(MULT, *(f"blocks.{b}.causal=false" for b in TRANSFORMERS))
    assert not any(model.blueprint.blocks[b].causal for b in TRANSFORMERS)
    assert_equivalent(model)


def test_future_mask_changes_the_prediction():
    """The causal on/off comparisons are not vacuous: the mask matters on this batch."""
    causal = tiny(MULT)
    plain = tiny(MULT, *(f"blocks.{b}.causal=false" for b in TRANSFORMERS))
    plain.load_state_dict(causal.state_dict())
    batch = padded_batch(causal)
    assert (causal(batch)["prediction"] - plain(batch)["prediction"]).abs().max() > 1e-3


def test_full_size_reference_has_the_blueprint_counts():
    model = compile_blueprint(load_blueprint(MULT))
    assert n_params(reference_for(model)) == n_params(model) == 1_071_211


def test_weight_copy_refuses_an_unmapped_key():
    model = tiny(MULT)
    reference = reference_for(model)
    names = {k: k for k in model.state_dict()}  # Composer names are not the reference's
    with pytest.raises(KeyError, match="reference key does not exist"):
        copy_weights(reference, model, names)
    with pytest.raises(KeyError, match="Composer key not mapped: proj_t.conv.weight"):
        copy_weights(reference, model, {})
