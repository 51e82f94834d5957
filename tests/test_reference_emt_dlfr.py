"""EMT-DLFR: Composer's blueprints against the plain-PyTorch reference (tests/reference/emt_dlfr.py).

For the paper preset (``blueprints/emt_dlfr.yaml``, also with every sharing flag off and the
plain ReLU FFN) and the authors' presets (``variants/emt_dlfr_authors.yaml`` and its MOSEI and
CH-SIMS versions), built tiny, with
the weights copied into the reference: equal parameter counts, equal eval-mode predictions on a
padded batch, equal gradients, and equal DLFR loss terms (eqs. 10-16) for the complete batch and
the incomplete view the trainer builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import composer
from composer.train.views import temporal_mask
from reference.emt_dlfr import MODALITIES, build_reference, mask_inputs, reference_for, weight_map

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints"
PAPER = BLUEPRINTS / "emt_dlfr.yaml"
AUTHORS = BLUEPRINTS / "variants" / "emt_dlfr_authors.yaml"
AUTHORS_MOSEI = BLUEPRINTS / "variants" / "emt_dlfr_authors_mosei.yaml"
AUTHORS_SIMS = BLUEPRINTS / "variants" / "emt_dlfr_authors_sims.yaml"
LENGTHS = {"text": 7, "audio": 9, "vision": 6}
TINY = [
    *(f"modalities.{m}.length={t}" for m, t in LENGTHS.items()), "modalities.text.vocab=200",
    "blocks.text_enc.hidden_size=16", "blocks.text_enc.num_layers=2", "blocks.text_enc.num_heads=2",
    "blocks.text_enc.intermediate_size=32", "blocks.text_enc.vocab_size=200", "blocks.emt.heads=2",
]
PAPER_D = [f"blocks.{b}.out=16" for m in MODALITIES for b in (f"{m}_proj", f"{m}_utt")]
MOSI_WIDTHS = ["modalities.audio.features=5", "modalities.vision.features=20"]
UNSHARED = ["blocks.emt.share_directions=false", "blocks.emt.share_modalities=false", "blocks.emt.share_layers=false"]
PRESETS = {
    "paper": (PAPER, PAPER_D),
    "paper-unshared-relu": (PAPER, PAPER_D + UNSHARED + ["blocks.emt.ffn=relu", "blocks.emt.layers=2"]),
    "paper-lambdas": (PAPER, PAPER_D + ["loss_groups.lambda1=0.5", "loss_groups.lambda2=2.0"]),
    "authors": (AUTHORS, ["vars.d=16"]),
    # the MOSEI / CH-SIMS structure on MOSI-wide inputs (the padded batch below has 5 / 20 features)
    "authors-mosei": (AUTHORS_MOSEI, ["vars.d=16", *MOSI_WIDTHS]),
    "authors-sims": (AUTHORS_SIMS, ["vars.d=16", *MOSI_WIDTHS]),
}
TERMS = ["task", "recon_text", "recon_audio", "recon_vision", "attr_text", "attr_audio", "attr_vision", "attr_global", "attr_task"]


def build(preset: str, dtype=torch.float32):
    path, overrides = PRESETS[preset]
    torch.manual_seed(0)
    model = composer.compile_blueprint(composer.load_blueprint(path, TINY + overrides)).eval().to(dtype)
    return model, reference_for(model).eval()


@pytest.fixture(scope="module", params=list(PRESETS))
def pair(request):
    return request.param, *build(request.param)


def padded_batch(dtype=torch.float32, seed: int = 1) -> dict:
    """Three samples of different lengths in every modality, noise in the padded steps."""
    g = torch.Generator().manual_seed(seed)
    lengths = {"text": torch.tensor([7, 5, 3]), "audio": torch.tensor([9, 6, 4]), "vision": torch.tensor([4, 6, 2])}
    ids = torch.randint(103, 200, (3, LENGTHS["text"]), generator=g)
    ids[:, 0] = 101  # [CLS]
    for i, n in enumerate(lengths["text"].tolist()):
        ids[i, n - 1], ids[i, n:] = 102, 0  # [SEP], [PAD]
    batch = {"text": ids, "text_mask": torch.arange(LENGTHS["text"])[None] < lengths["text"][:, None],
             "text_segment": torch.zeros_like(ids), "label": torch.rand(3, generator=g, dtype=dtype) * 6 - 3}
    for m, features in (("audio", 5), ("vision", 20)):
        batch[m] = torch.randn(3, LENGTHS[m], features, generator=g, dtype=dtype)
        batch[f"{m}_lengths"] = lengths[m]
    return batch


def grads_by_composer_key(model, ref) -> list[tuple[str, torch.Tensor | None, torch.Tensor | None]]:
    """(key, Composer gradient, reference gradient joined as the map splits it) for every parameter."""
    params, ref_params = dict(model.named_parameters()), dict(ref.named_parameters())
    out = []
    for key, ref_keys in weight_map(model):
        if key not in params:
            continue  # a buffer (BatchNorm statistics)
        parts = [ref_params[k].grad for k in ref_keys]
        ref_grad = None if any(p is None for p in parts) else torch.cat(parts) if len(parts) > 1 else parts[0]
        out.append((key, params[key].grad, ref_grad))
    return out


def assert_same_grads(model, ref, rtol: float, atol: float) -> int:
    compared = 0
    for key, grad, ref_grad in grads_by_composer_key(model, ref):
        if grad is None or ref_grad is None:  # e.g. BERT's unused pooler: no gradient on either side
            assert grad is None and ref_grad is None, f"{key}: gradient on one side only"
            continue
        torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")
        compared += 1
    return compared


# -- the prediction network --------------------------------------------------------------------


def test_parameter_counts_match(pair):
    _, model, ref = pair
    summary = model.parameter_summary()
    assert ref.inference_parameters() == summary["model"]
    assert sum(p.numel() for p in ref.parameters()) == summary["model"] + summary["training_only"]


def test_eval_predictions_match_on_a_padded_batch(pair):
    _, model, ref = pair
    batch = padded_batch()
    with torch.no_grad():
        out = model(batch)
        feats = ref.features(batch)
    assert (out["prediction"] - feats["prediction"]).abs().max() < 1e-5
    assert (out["values"]["emt.global"] - feats["g"]).abs().max() < 1e-5
    for m in MODALITIES:  # promoted local sequences H_m^[L] at the valid steps
        valid = feats["valid"][m]
        assert (out["values"][f"emt.{m}"][valid] - feats["Z"][m][valid]).abs().max() < 1e-5
    assert feats["prediction"].std() > 1e-3  # the samples differ: the comparison is not of constants


def test_prediction_gradients_match(pair):
    _, model, ref = pair
    batch = padded_batch()
    for net, pred in ((model, model(batch)["prediction"]), (ref, ref(batch))):
        net.zero_grad()
        (pred.squeeze(-1) - batch["label"]).abs().mean().backward()
    assert assert_same_grads(model, ref, rtol=1e-4, atol=1e-6) > 20


# -- dual-level feature restoration (eqs. 10-16) -----------------------------------------------


def views(model, dtype=torch.float32):
    """The complete batch and the incomplete view the trainer builds (Composer's temporal_mask)."""
    batch = padded_batch(dtype)
    incomplete = temporal_mask(batch, model.blueprint, 0.5, torch.Generator().manual_seed(3))
    return batch, incomplete, incomplete["view_masks"]


def loss_pair(model, ref, batch, incomplete, drops):
    """Composer's (total, terms) and the reference's for the same views; loss networks in
    training mode (BatchNorm on batch statistics, one pass per view), encoders in eval mode."""
    model.losses.train()
    ref.restoration.train()
    batches = {"main": batch, "incomplete": incomplete}
    total, parts = model.compute_loss({v: model(b) for v, b in batches.items()}, batches)
    terms = ref.restoration.terms(ref.features(batch), ref.features(mask_inputs(batch, drops)), batch, drops, batch["label"])
    return total, parts, ref.restoration.total(terms), terms


def test_incomplete_view_is_the_papers_mask_function():
    model, _ = build("paper")
    batch, incomplete, drops = views(model)
    ids = batch["text"]
    special = (ids == 101) | (ids == 102) | ~batch["text_mask"]
    assert drops["text"].any() and not (drops["text"] & special).any()  # [CLS], [SEP], [PAD] never dropped
    for m in ("audio", "vision"):
        assert drops[m].any() and not (drops[m] & ~(torch.arange(LENGTHS[m]) < batch[f"{m}_lengths"][:, None])).any()
    rebuilt = mask_inputs(batch, drops)
    for m in MODALITIES:
        assert torch.equal(rebuilt[m], incomplete[m])


def test_dlfr_terms_and_total_match(pair):
    _, model, ref = pair
    batch, incomplete, drops = views(model)
    with torch.no_grad():
        total, parts, ref_total, terms = loss_pair(model, ref, batch, incomplete, drops)
    assert list(parts) == TERMS
    for name in TERMS:
        assert abs(float(parts[name]) - float(terms[name])) < 1e-5, name
        assert float(terms[name]) != 0.0, name  # every term is live on this batch
    assert abs(float(total) - float(ref_total)) < 1e-5


def test_dlfr_gradients_match_in_float64():
    """All parameters, the training-only networks included. BatchNorm over three samples
    amplifies float32 rounding (up to 2e-4 absolute in BERT's embedding gradients), so the
    comparison runs in float64, where the largest difference is about 1e-12."""
    for preset in ("paper", "authors"):
        model, ref = build(preset, torch.float64)
        batch, incomplete, drops = views(model, torch.float64)
        model.zero_grad()
        ref.zero_grad()
        total, _, ref_total, _ = loss_pair(model, ref, batch, incomplete, drops)
        total.backward()
        ref_total.backward()
        assert assert_same_grads(model, ref, rtol=1e-9, atol=1e-10) > 40, preset


# -- sizes and the weight map ----------------------------------------------------------------


@pytest.mark.parametrize("path, inference, training_only", [
    (PAPER, 110_243_778, 1_583_017),  # SimSiam predictor hidden D/2 (Composer's default)
    (AUTHORS, 110_468_146, 1_336_873),  # Table 9's 110.5M; predictors 256 / 8 / 16 / 128 as config_regression.py
    (AUTHORS_MOSEI, 110_250_114, 1_347_709),  # config_regression.py 'mosei' (no published figure)
    (AUTHORS_SIMS, 102_722_402, 1_071_862),  # 'sims': a Chinese BERT-base (vocabulary 21128), d = 32
])
def test_reference_sizes_at_bert_base(path, inference, training_only):
    bp = composer.load_blueprint(path)
    with torch.device("meta"):
        ref = build_reference(composer.compile_blueprint(bp))
    assert ref.inference_parameters() == inference
    assert sum(p.numel() for p in ref.restoration.parameters()) == training_only


def test_weight_map_refuses_a_weight_it_does_not_know():
    model, _ = build("paper")
    model.head.register_buffer("stray", torch.zeros(1))
    with pytest.raises(KeyError, match="head.stray"):
        reference_for(model)


def test_reference_refuses_settings_it_does_not_implement():
    path, overrides = PRESETS["paper"]
    model = composer.compile_blueprint(composer.load_blueprint(path, TINY + overrides + ["blocks.emt.pooling=avg"]))
    with pytest.raises(AssertionError, match="pooling"):
        reference_for(model)


def test_authors_preset_exempts_exactly_berts_biases_and_layernorms_from_decay():
    """trains/missingTask/EMT_DLFR.py: no decay for BERT names containing bias / LayerNorm.*, decay elsewhere."""
    bp = composer.load_blueprint(AUTHORS)
    with torch.device("meta"):
        model = composer.compile_blueprint(bp)
    names = [n for n, _ in model.named_parameters()]
    exempt = {n for n in names if any(s in n for s in bp.training.no_weight_decay)}
    authors = {n for n in names if n.startswith("text_enc.") and ("bias" in n or "LayerNorm" in n)}
    assert exempt == authors and len(authors) == 123
