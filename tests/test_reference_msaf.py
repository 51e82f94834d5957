"""MSAF: the compiled blueprints equal the plain-PyTorch reference (tests/reference/msaf.py).

Paper preset (blueprints/msaf.yaml) and authors' preset (blueprints/variants/msaf_authors.yaml):
equal parameter counts (689,337 at full size), equal eval outputs and gradients on padded
batches, and, in training mode with one injected BlockDropout mask, equal outputs and
gradients for both BlockDropout styles, plus the authors' semantics checked on the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import composer
import composer.blocks.fusion.msaf as msaf_module
from reference.msaf import reference_for, segment_membership, weight_map

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "blueprints" / "msaf.yaml"
AUTHORS = ROOT / "blueprints" / "variants" / "msaf_authors.yaml"
MODALITIES = ["visual", "audio", "text"]
TINY = [f"modalities.{m}.length=12" for m in MODALITIES] + ["modalities.text.features=40"]
LENGTHS = torch.tensor([12, 9, 4, 7])  # sample 2 is shorter than q = 5: one step per segment, the last empty

CONFIGS = {
    "paper": (PAPER, []),
    "authors": (AUTHORS, []),
    "channel-padding": (PAPER, ["blocks.msaf.channels=12", "blocks.msaf.lowest_attention=0.3", "blocks.msaf.segments=3"]),
    "one-segment": (PAPER, ["blocks.msaf.segments=1", "blocks.msaf.reduction=4"]),
    "head-mlp": (AUTHORS, ["blocks.head.hidden=[8]", "blocks.head.dropout=0.1"]),
}


def tiny(path: Path, overrides: list[str], seed: int = 0):
    torch.manual_seed(seed)
    model = composer.compile_blueprint(composer.load_blueprint(path, TINY + overrides)).eval()
    with torch.no_grad():  # weights large enough that the prediction is O(1), not O(1e-3)
        for p in model.parameters():
            p.uniform_(-0.6, 0.6)
    for module in model.modules():  # eval-mode BatchNorm with non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model


def padded_batch(model, lengths: torch.Tensor = LENGTHS) -> dict[str, torch.Tensor]:
    batch = model.example_inputs(len(lengths), seed=1)
    for m in MODALITIES:
        batch[m][torch.arange(batch[m].shape[1])[None, :] >= lengths[:, None]] = 0.0  # padding holds zeros
        batch[f"{m}_lengths"] = lengths
    return batch


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_same_gradients(model, ref) -> int:
    """Composer's gradients, mapped like the weights, equal the reference's; returns how many tensors were compared."""
    grads = {name: p.grad for name, p in model.named_parameters()}
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    compared = 0
    for key, convert in weight_map(model).items():
        if key not in grads:
            continue  # a buffer (BatchNorm statistics)
        for name, grad in convert(grads[key]).items():
            torch.testing.assert_close(ref_grads[name], grad, atol=1e-5, rtol=1e-4, msg=lambda s: f"{key} -> {name}: {s}")
            compared += 1
    assert compared == len(ref_grads)
    return compared


@pytest.mark.parametrize("path", [PAPER, AUTHORS], ids=["paper", "authors"])
def test_full_size_network_has_689337_parameters_on_both_sides(path):
    model = composer.compile_blueprint(composer.load_blueprint(path))
    ref = reference_for(model)
    assert params(model) == params(ref) == 689_337


@pytest.mark.parametrize("name", CONFIGS)
def test_eval_outputs_equal_on_padded_batches(name):
    path, overrides = CONFIGS[name]
    model = tiny(path, overrides)
    ref = reference_for(model).eval()
    assert params(model) == params(ref)
    batch = padded_batch(model)
    unpadded = {k: v for k, v in batch.items() if not k.endswith("_lengths")}  # the authors' files: whole axis
    masked = {**unpadded, "visual_mask": torch.arange(12)[None, :] < LENGTHS[:, None]}  # a mask instead of lengths
    with torch.no_grad():
        for b in (batch, unpadded, masked):
            got, expected = model(b)["prediction"], ref(b)
            assert got.shape == expected.shape == (4, 1)
            assert (got - expected).abs().max() < 1e-5
        # the padding is honoured: the padded sample differs from the unpadded run
        assert (model(batch)["prediction"][1:] - model(unpadded)["prediction"][1:]).abs().min() > 1e-6


def test_the_name_map_matters_a_permuted_highlight_block_changes_the_output():
    model = tiny(PAPER, [])
    ref = reference_for(model).eval()
    batch = padded_batch(model)
    with torch.no_grad():
        first, second = ref.msaf.segments[0].highlight[0], ref.msaf.segments[0].highlight[1]
        w = first.weight.clone()
        first.weight.copy_(second.weight)
        second.weight.copy_(w)
        assert (model(batch)["prediction"] - ref(batch)).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["paper", "authors", "channel-padding"])
def test_eval_gradients_equal(name):
    path, overrides = CONFIGS[name]
    model = tiny(path, overrides)
    ref = reference_for(model).eval()
    batch = padded_batch(model)
    for net, pred in ((model, lambda b: model(b)["prediction"]), (ref, ref)):
        net.zero_grad()
        torch.nn.functional.mse_loss(pred(batch).squeeze(-1), batch["label"]).backward()
    assert assert_same_gradients(model, ref) == len(list(ref.parameters()))


# -- training mode: BlockDropout with one injected mask ------------------------------------


def fixed_mask(model, batch_size: int) -> torch.Tensor:
    """A BlockDropout mask ``(B, q, N)`` (0 or 1/(1-p)) with visual block 1 of segment 1 dropped for sample 0."""
    cfg = model.blueprint.blocks["msaf"]
    gen = torch.Generator().manual_seed(5)
    blocks = len(model.msaf.segment[0].highlight.bias) // cfg.channels
    keep = torch.bernoulli(torch.full((batch_size, cfg.segments, blocks), 1.0 - cfg.block_dropout), generator=gen)
    keep[0, 1, 1] = 0.0
    keep[0, 1, 0] = 1.0
    return keep / (1.0 - cfg.block_dropout)


def inject(monkeypatch, model, ref, mask: torch.Tensor) -> None:
    def composer_mask(shape, p, like):
        assert tuple(shape) == (*mask.shape, 1)  # one factor per (sample, segment, block)
        return mask[..., None].to(like)

    monkeypatch.setattr(msaf_module, "block_dropout_mask", composer_mask)
    ref.msaf.fixed_block_mask = mask


@pytest.mark.parametrize("style", ["paper", "authors"])
@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_training_mode_with_a_fixed_block_mask_matches(monkeypatch, style, lam):
    model = tiny(AUTHORS, [f"blocks.msaf.block_dropout_style={style}", f"blocks.msaf.lowest_attention={lam}"]).train()
    ref = reference_for(model)
    assert ref.training and ref.msaf.style == style
    batch = padded_batch(model)
    inject(monkeypatch, model, ref, fixed_mask(model, len(LENGTHS)))
    got, expected = model(batch)["prediction"], ref(batch)
    assert (got - expected).abs().max() < 1e-5
    for net, pred in ((model, got), (ref, expected)):
        net.zero_grad()
        torch.nn.functional.mse_loss(pred.squeeze(-1), batch["label"]).backward()
    assert_same_gradients(model, ref)
    with torch.no_grad():  # the mask matters: with BlockDropout off the outputs change
        ref.msaf.p = 0.0
        assert (ref(batch) - expected).abs().max() > 1e-5


def _dropped_steps(model) -> torch.Tensor:
    """Valid steps of segment 1 of sample 0 (the segment whose visual block 1 the mask drops)."""
    averaged, _ = segment_membership(12, model.blueprint.blocks["msaf"].segments, LENGTHS, len(LENGTHS), "cpu")
    return averaged[0, 1]  # (T,)


def test_authors_style_zeroes_a_dropped_block_even_with_lowest_attention(monkeypatch):
    seen = {}
    for style in ("authors", "paper"):
        model = tiny(AUTHORS, [f"blocks.msaf.block_dropout_style={style}", "blocks.msaf.lowest_attention=0.5"]).train()
        inject(monkeypatch, model, reference_for(model), fixed_mask(model, len(LENGTHS)))
        out = model(padded_batch(model))["values"]
        visual_in, visual_out = out["visual_l1"], out["msaf.visual"]
        steps = _dropped_steps(model)
        seen[style] = (visual_out[0, steps, 16:32], visual_in[0, steps, 16:32])
    dropped, inputs = seen["authors"]
    assert inputs.abs().max() > 0 and (dropped == 0).all()  # authors: m² [λ + (1-λ)A] with m = 0
    kept, inputs = seen["paper"]
    torch.testing.assert_close(kept, 0.5 * inputs)  # paper: a dropped block keeps λ


@pytest.mark.parametrize("style,independent", [("authors", True), ("paper", False)])
def test_authors_descriptor_is_computed_on_the_dropped_blocks(monkeypatch, style, independent):
    """Authors' style: a dropped block enters neither the descriptor G nor the output, so noise
    written into it changes nothing; in the paper's style G still sees it."""
    model = tiny(AUTHORS, [f"blocks.msaf.block_dropout_style={style}"]).train()
    inject(monkeypatch, model, reference_for(model), fixed_mask(model, len(LENGTHS)))
    batch = padded_batch(model)
    steps = _dropped_steps(model)
    plain = model(batch)["prediction"]
    noise = torch.randn(int(steps.sum()), 16)

    def perturb(module, args, output):
        output = output.clone()
        output[0, steps, 16:32] += noise  # visual block 1, segment 1, sample 0
        return output

    handle = model.visual_l1.register_forward_hook(perturb)
    try:
        noisy = model(batch)["prediction"]
    finally:
        handle.remove()
    assert torch.allclose(plain, noisy, atol=1e-6) == independent


def test_authors_preset_differs_from_the_paper_preset_only_in_its_commented_fields():
    paper, authors = composer.load_blueprint(PAPER), composer.load_blueprint(AUTHORS)
    assert paper.modalities == authors.modalities and paper.task == authors.task and paper.losses == authors.losses
    blocks = {
        (b, field)
        for b in paper.blocks
        for field, value in paper.blocks[b].model_dump().items()
        if authors.blocks[b].model_dump()[field] != value
    }
    assert set(paper.blocks) == set(authors.blocks) and blocks == {("msaf", "block_dropout_style")}
    training = {f for f, v in paper.training.model_dump().items() if authors.training.model_dump()[f] != v}
    assert training == {"batch_size", "epochs", "early_stop", "seed", "monitor"}
    assert (authors.training.batch_size, authors.training.epochs, authors.training.seed) == (16, 10, 1234)
