"""GLoMo: the Composer blueprints against the plain-PyTorch reference (tests/reference/glomo.py).

For the paper preset (blueprints/glomo.yaml) and the authors' preset
(blueprints/variants/glomo_authors.yaml), built tiny: equal parameter counts, equal eval
outputs on a padded batch (the reference runs every sample alone at its own length), equal
gradients of the L1 loss for every parameter; the parameter figures with BERT-base; the
reference's weight map failing loudly; each authors' option changing the function."""

from pathlib import Path

import pytest
import torch

from composer import compile_blueprint, load_blueprint
from composer.blocks._base import Context
from composer.registry import get_block
from composer.spec import vector
from composer.testing import make_config
from reference.glomo import NoisyTopKMoE, build_reference, reference_for, weight_map
from test_glomo import tiny

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints"
PRESETS = {
    "paper": BLUEPRINTS / "glomo.yaml",
    "authors": BLUEPRINTS / "variants/glomo_authors.yaml",
}
LENGTHS = {"text": [8, 5, 3, 6], "audio": [7, 4, 2, 5], "vision": [6, 3, 1, 5]}  # tiny(): T = 8, 7, 6


def tiny_pair(preset: str):
    """A tiny compiled model (weights perturbed so no LayerNorm or gate is at its initial value) and its reference."""
    torch.manual_seed(0)
    model = compile_blueprint(load_blueprint(PRESETS[preset], tiny())).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, reference_for(model).eval()


def padded_batch(model, av_lengths: bool = True) -> dict[str, torch.Tensor]:
    """Four samples of different lengths per modality (one vision sample a single frame)."""
    batch = model.example_inputs(4, seed=1)
    mask = torch.arange(batch["text"].shape[1])[None] < torch.tensor(LENGTHS["text"])[:, None]
    batch["text"], batch["text_mask"] = batch["text"].masked_fill(~mask, 0), mask
    for m in ("audio", "vision"):
        batch[f"{m}_lengths"] = torch.tensor(LENGTHS[m])
        if not av_lengths:  # as the authors feed them: zero rows, no lengths
            valid = torch.arange(batch[m].shape[1])[None] < batch.pop(f"{m}_lengths")[:, None]
            batch[m] = batch[m] * valid[..., None]
    return batch


def l1(prediction: torch.Tensor, batch) -> torch.Tensor:
    return (prediction.squeeze(-1) - batch["label"]).abs().mean()


CASES = [("paper", True), ("authors", True), ("authors", False)]


@pytest.mark.parametrize("preset,av_lengths", CASES, ids=["paper", "authors", "authors-no-av-lengths"])
def test_reference_equals_the_blueprint_in_size_outputs_and_gradients(preset, av_lengths):
    model, reference = tiny_pair(preset)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    batch = padded_batch(model, av_lengths)
    ours = model(batch)["prediction"]
    theirs = reference(batch)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert ours.std() > 1e-3  # the samples differ: a constant output would prove nothing
    l1(ours, batch).backward()
    l1(theirs, batch).backward()
    named = dict(reference.named_parameters())
    compared = 0
    for key, ref_key in _weight_pairs(model, reference):
        ours_grad, theirs_grad = model.get_parameter(key).grad, named[ref_key].grad
        if ours_grad is None or theirs_grad is None:  # e.g. W_noise: unused in eval mode
            assert ours_grad is None and theirs_grad is None, key
            continue
        torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-5, rtol=1e-4, msg=lambda m, k=key: f"{k}: {m}")
        compared += 1
    assert compared > 200  # every BERT, coding, MoE and fusion tensor with a gradient


def _weight_pairs(model, reference):
    """(Composer parameter name, reference parameter name) for every parameter (buffers left out)."""
    parameters = {name for name, _ in model.named_parameters()}
    return [(k, v) for k, v in weight_map(model, reference).items() if k in parameters]


@pytest.mark.parametrize(
    "option",
    ["text join over padding", "log-space MoE", "bare-Linear MLPs"],
)
def test_each_authors_option_changes_the_prediction(option):
    """The equivalence above can fail: undo one authors' setting in the reference and it no longer matches."""
    model, reference = tiny_pair("authors")
    if option == "text join over padding":
        reference.text.include_padding = False
    elif option == "log-space MoE":
        for moe in reference.moe.values():
            moe.combine = "weighted_sum"
    else:
        reference.fusion.activation = True
    batch = padded_batch(model)
    with torch.no_grad():
        gap = (model(batch)["prediction"] - reference(batch)).abs().max().item()
    assert gap > 1e-3, f"{option}: {gap:.2e}"


@pytest.mark.parametrize("combine", ["weighted_sum", "log_sum_exp"])
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_moe_block_equals_the_reference_combination(combine, top_k):
    """Eq. 6 and the authors' log Σ g·exp(E) (MoE.py's exp / weighted sum / log, ε for exact zeros)."""
    fields = {"out": 5, "experts": 4, "top_k": top_k, "combine": combine}
    block = get_block("moe").impl(make_config("moe", fields, ["in"]), {"in": vector(6)}).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 1.0)
    reference = NoisyTopKMoE(6, 5, 4, top_k, 5, True, 0.01, combine).eval()
    layer = {"0": "hidden", "2": "out"}  # experts.<j>.<Sequential index>.<p> -> experts.<j>.<name>.<p>
    state = {}
    for key, value in block.state_dict().items():
        parts = key.split(".")
        state[key if len(parts) == 1 else f"experts.{parts[1]}.{layer[parts[2]]}.{parts[3]}"] = value
    reference.load_state_dict(state)
    x = 2.0 * torch.randn(9, 6)
    torch.testing.assert_close(block({"in": x}, Context())["out"], reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "path,dataset,figure",
    [
        ("glomo.yaml", None, 109_818_887),
        ("variants/glomo_authors.yaml", None, 109_818_887),
        ("glomo.yaml", "mosei", 115_949_447),
        ("variants/glomo_authors.yaml", "mosei", 115_949_447),
    ],
)
def test_bert_base_parameter_figures_of_blueprint_and_reference(path, dataset, figure):
    bp = load_blueprint(BLUEPRINTS / path, dataset=dataset)
    with torch.device("meta"):  # shapes only: BERT-base is never allocated
        model = compile_blueprint(bp)
        reference = build_reference(model.blueprint)
    assert model.parameter_summary()["model"] == figure
    assert sum(p.numel() for p in reference.parameters()) == figure


def test_weight_map_fails_loudly_on_an_unmapped_tensor():
    model = compile_blueprint(load_blueprint(PRESETS["paper"], tiny()))
    model.fusion.register_parameter("stray", torch.nn.Parameter(torch.zeros(2)))
    with pytest.raises(KeyError, match="unmapped.*fusion.stray"):
        reference_for(model)


def test_reference_refuses_a_fusion_ablation():
    model = compile_blueprint(load_blueprint(PRESETS["paper"], tiny() + ["blocks.fusion.mixup=attention"]))
    with pytest.raises(ValueError, match="paper's fusion only"):
        reference_for(model)
