"""The zoo's LNLN equals a plain-PyTorch reference of the authors' model and loss (tests/reference/lnln.py).

Composer's ``blueprints/zoo/lnln.yaml`` and the reference are built for the same dataset at test
widths with the tiny BERT of ``mmsa_oracle.TINY_BERT``; every tensor is copied through an
explicit name map (each tensor on both sides used once). One training step is compared: the
Composer model runs in training mode, its ``random_missing`` blocks draw the incomplete inputs and
the completeness labels, and the reference gets the same complete and incomplete inputs and labels
(dropout off on both sides: BERT's would draw differently). Checked: parameter counts (and at full
size, exactly, for the three datasets), the prediction, the completeness scores, every loss term
of eq. 10 and the total, and the gradient of every parameter within 1e-5, on padded text, audio and
vision read as the authors read them (``padding: include``, ``pad_states: keep``), and Composer's masked default on padded text,
audio and vision against the reference run sample by sample; negative controls; the missing-data
rule; training on the synthetic data and on an MMSA-layout pickle.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from composer.graph.size import estimate_size

from reference import lnln as reference
from test_almt import (
    BERT, LENGTHS, PROJ, TINY_BERT, TRAINING_VOCAB, WIDTHS, _RULES, a_batch, assert_gradients_equal, composer_name, mmsa_pickle,
)

transformers = pytest.importorskip("transformers")

BLUEPRINT = Path(__file__).resolve().parents[1] / "blueprints" / "zoo" / "lnln.yaml"
TOLERANCE = 1e-5
D, N = 16, 3
ENCODERS = ("proj_l", "proj_a", "proj_v", "proj_l_c", "proj_a_c", "proj_v_c")
SMALL = [
    *TINY_BERT, f"blocks.text_enc_c.hidden_size={BERT['hidden_size']}", "blocks.text_enc_c.num_layers=2", "blocks.text_enc_c.num_heads=2",
    f"blocks.text_enc_c.intermediate_size={BERT['intermediate_size']}", f"blocks.text_enc_c.vocab_size={BERT['vocab_size']}",
    f"vars.d={D}", f"vars.n={N}", *(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()),
    *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
    *(f"blocks.{PROJ[m]}{c}.frames={n}" for m, n in LENGTHS.items() for c in ("", "_c")),
    *(f"blocks.{b}.{k}={v}" for b in (*ENCODERS, "recon_a", "recon_v", "recon_l", "fusion", "dmc") for k, v in (("heads", 2), ("dim_head", 4))),
    "blocks.ahl.heads=2", "blocks.ahl.dim_head=8", "blocks.ahl.language_heads=2", "blocks.ahl.language_dim_head=4",
    "blocks.disc.hidden=[6]", "blocks.disc_c.hidden=[6]",
    "blocks.drop_text.unk_token=4", "blocks.drop_text.special_tokens=[1, 2, 0]",  # the tiny vocabulary's [UNK], [CLS], [SEP]
]
#: the authors' reading of padding: every step attended to, BERT's states at [PAD] positions handed on
#: (``text_enc_c`` shares ``text_enc``'s settings)
AUTHORS_PADDING = [f"blocks.{b}.padding=include" for b in ENCODERS] + ["blocks.text_enc.pad_states=keep"]


def reference_config(dataset: str, small: bool = True) -> dict:
    """The authors' ``configs/train_<dataset>.yaml`` (model and loss weights), at test widths unless ``small`` is False."""
    fe = "model.feature_extractor."
    changes = {
        "mosi": {},
        "mosei": {fe + "input_length": [50, 500, 500], fe + "input_dims": [768, 35, 74], "model.dmml.fuison_transformer.depth": 4},
        "sims": {fe + "input_length": [39, 55, 400], fe + "input_dims": [768, 709, 33], "model.dmml.fuison_transformer.depth": 4,
                 "base.beta": 0.6},
    }[dataset]
    if small:
        lengths = [LENGTHS["text"], LENGTHS["vision"], LENGTHS["audio"]]
        changes.update({fe + "input_length": lengths, fe + "token_length": [N] * 3, fe + "heads": 2,
                        fe + "input_dims": [BERT["hidden_size"], WIDTHS["vision"], WIDTHS["audio"]], fe + "hidden_dims": [D] * 3, "dim_head": 4})
        dmc, dmml = "model.dmc.", "model.dmml."
        for part, fields in {
            dmc + "proxy_dominant_feature_generator": {"input_length": 3 * N, "token_length": N, "heads": 2, "input_dim": D, "hidden_dim": D},
            dmc + "effectiveness_discriminator": {"input_dim": D, "hidden_dim": 6},
            dmc + "completeness_check": {"input_length": N, "heads": 2, "input_dim": D, "hidden_dim": D},
            "model.reconstructor": {"input_length": N, "heads": 2, "input_dim": D, "hidden_dim": D},
            dmml + "language_encoder": {"input_length": N, "token_length": N, "heads": 2, "input_dim": D, "hidden_dim": D},
            dmml + "hyper_modality_learning": {"heads": 2, "input_dim": D, "hidden_dim": D},
            dmml + "fuison_transformer": {"source_length": N, "tgt_length": N, "heads": 2, "input_dim": D, "hidden_dim": D},
            dmml + "regression": {"input_dim": D},
        }.items():
            changes.update({f"{part}.{k}": v for k, v in fields.items()})
    return reference.model_config(**changes)


# -- the name map: the authors' LNLN names -> ALMT's (the same layers) or LNLN's own blocks -> Composer ----

_TO_ALMT = [(r"^dmml\.0\.", "l_encoder."), (r"^dmml\.1\.", "h_hyper_layer."), (r"^dmml\.2\.", "fusion_layer."), (r"^dmml\.3\.", "regression_layer.0.")]
_RECON = {"0": "recon_a", "1": "recon_v", "2": "recon_l"}
_OWN = [
    (r"^h_p$", "dmc.proxy_tokens"),
    (r"^proxy_dominate_modality_generator\.(pos_embedding|extra_token)$", r"dmc.proxy_generator.\1"),
    (r"^proxy_dominate_modality_generator\.encoder\.layers\.", "dmc.proxy_generator.layers."),
    (r"^completeness_check\.0\.(pos_embedding|extra_token)$", r"dmc.completeness_encoder.\1"),
    (r"^completeness_check\.0\.encoder\.layers\.", "dmc.completeness_encoder.layers."),
    (r"^completeness_check\.1\.", "dmc.completeness_score."),
    (r"^effective_discriminator\.", "disc.net."),
    (r"^reconstructor\.(\d)\.pos_embedding$", lambda m: f"{_RECON[m[1]]}.encoder.pos_embedding"),
    (r"^reconstructor\.(\d)\.encoder\.layers\.", lambda m: f"{_RECON[m[1]]}.encoder.layers."),
]


def lnln_name(name: str) -> str:
    import re

    for pattern, replacement in _TO_ALMT:
        name = re.sub(pattern, replacement, name)
    return composer_name(name, rules=(*_OWN, *_RULES))


def composer_model(dataset: str, *overrides: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, [*SMALL, *overrides], dataset=dataset))


def no_dropout(model: nn.Module) -> nn.Module:
    """Dropout off (BERT's 0.1; LNLN's own layers have none): the two sides cannot share its draws."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def pair(dataset: str, *overrides: str):
    torch.manual_seed(1)
    theirs = reference.LNLN(reference_config(dataset), transformers.BertModel(transformers.BertConfig(**BERT)))
    ours = composer_model(dataset, *overrides)
    source, target = theirs.state_dict(), ours.state_dict()
    names = {k: lnln_name(k) for k in source}
    assert sorted(names.values()) == sorted(target), f"mapped 0 or 2 times: {sorted(set(target) ^ set(names.values()))}"
    ours.load_state_dict({names[k]: v for k, v in source.items()})
    return no_dropout(ours).train(), no_dropout(theirs).train(), names


def text3(ids, batch):
    """The authors' ``text`` layout ``(B, 3, T)``: ids, attention mask, segments."""
    return torch.stack([ids.float(), batch["text_mask"].float(), batch["text_segment"].float()], dim=1)


def sample(inputs, i: int, batch: dict):
    """Sample ``i`` of ``(vision, audio, text (B, 3, T))`` alone, cut to its own lengths."""
    vision, audio, text = inputs
    nv, na, nt = int(batch["vision_lengths"][i]), int(batch["audio_lengths"][i]), int(batch["text_mask"][i].sum())
    return vision[i : i + 1, :nv], audio[i : i + 1, :na], text[i : i + 1, :, :nt]


def one_step(ours, theirs, batch, args, seed: int = 5, *, per_sample: bool = False):
    """Composer's forward and loss terms in training mode, and the reference's on the same inputs
    (with ``per_sample``: each sample alone at its own lengths, the outputs joined along the batch)."""
    torch.manual_seed(seed)
    out = ours(batch)
    total, parts = ours.compute_loss({"main": out}, {"main": batch})
    values = out["values"]
    complete = (batch["vision"], batch["audio"], text3(batch["text"], batch))
    incomplete = (values["drop_vision.out"], values["drop_audio.out"], text3(values["drop_text.out"], batch))
    B = len(batch["label"])
    if per_sample:
        alone = [theirs(sample(complete, i, batch), sample(incomplete, i, batch)) for i in range(B)]
        expected = {key: torch.cat([a[key] for a in alone]) for key in alone[0]}
        classes = torch.cat([reference.effectiveness_labels(1, N) for _ in range(B)])  # each sample's rows: its H_d, then its complete H_l
    else:
        expected = theirs(complete, incomplete)
        classes = reference.effectiveness_labels(B, N)
    labels = {"sentiment_labels": batch["label"].view(-1, 1), "completeness_labels": values["drop_text.completeness"],
              "effectiveness_labels": classes}
    return out, total, parts, expected, reference.multimodal_loss(args, expected, labels)


def assert_step_equal(ours, theirs, names, out, total, parts, expected, loss) -> None:
    """The prediction, the completeness scores, every term of eq. 10, the total and every gradient within 1e-5."""
    torch.testing.assert_close(out["prediction"], expected["sentiment_preds"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(out["values"]["dmc.completeness"], expected["w"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(parts["sentiment"], loss["l_sp"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(parts["completeness"], loss["l_cc"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(parts["adversarial"], loss["l_adv"], atol=TOLERANCE, rtol=0)
    rec = (parts["rec_audio"] + parts["rec_vision"] + parts["rec_language"]) / 3
    torch.testing.assert_close(rec, loss["l_rec"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(total, loss["loss"], atol=TOLERANCE, rtol=0)
    total.backward(), loss["loss"].backward()
    assert_gradients_equal(ours, theirs, names)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_lnln_training_step_equals_the_reference(dataset):
    ours, theirs, names = pair(dataset, *AUTHORS_PADDING)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    batch = a_batch(ours, text_padding=True)
    out, total, parts, expected, loss = one_step(ours, theirs, batch, reference_config(dataset))
    values = out["values"]
    assert not torch.equal(values["drop_audio.out"], batch["audio"]) or not torch.equal(values["drop_text.out"], batch["text"])  # something dropped
    assert_step_equal(ours, theirs, names, out, total, parts, expected, loss)


def test_lnln_default_masks_padding_and_equals_the_reference_sample_by_sample():
    """Composer's default on a batch with padded text, audio and vision equals the reference run on
    each sample alone at its own lengths (the same incomplete inputs and labels)."""
    ours, theirs, names = pair("mosei")
    batch = a_batch(ours, text_padding=True)
    assert_step_equal(ours, theirs, names, *one_step(ours, theirs, batch, reference_config("mosei"), per_sample=True))


def test_lnln_negative_controls_break_the_equality():
    ours, theirs, names = pair("mosi", *AUTHORS_PADDING)
    batch = a_batch(ours, text_padding=False)
    args = reference_config("mosi")
    # the gradient reversal: without it the proxy generator's gradient differs
    ours_plain, _, _ = pair("mosi", *AUTHORS_PADDING, "blocks.dmc.grl=0.0")
    ours_plain.load_state_dict(ours.state_dict())
    for model in (ours, ours_plain):
        _, total, _, _, _ = one_step(model, theirs, batch, args)
        total.backward()
    key = "dmc.proxy_generator.layers.0.attn.to_q.weight"
    assert (dict(ours.named_parameters())[key].grad - dict(ours_plain.named_parameters())[key].grad).abs().max() > 1e-6
    # the discriminator's classes swapped: the adversarial term differs
    swapped, theirs, _ = pair("mosi", *AUTHORS_PADDING, "losses.adversarial.positive=disc_c", "losses.adversarial.negative=disc")
    _, _, parts, _, loss = one_step(swapped, theirs, batch, args)
    assert (parts["adversarial"] - loss["l_adv"]).abs() > 1e-4
    # one weight perturbed
    with torch.no_grad():
        weight = swapped.block("dmc").completeness_score[0].weight
        weight.add_(0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))
    out, _, _, expected, _ = one_step(swapped, theirs, batch, args)
    assert (out["values"]["dmc.completeness"] - expected["w"]).abs().max() > 1e-4


def test_random_missing_drops_valid_steps_at_each_samples_rate():
    """The authors' rule (core/dataset.py ``generate_m``): a sample's rate r (0 for about half the
    samples), every valid step dropped with probability r, [CLS] / [SEP] / padding kept, dropped
    tokens [UNK], dropped frames zero; ``completeness`` is 1 - r; evaluation passes the input."""
    bp = composer.load_blueprint("""
blueprint: 1
name: drop
task: {kind: regression, outputs: 1}
modalities: {text: {kind: tokens, length: 40, vocab: 200}, audio: {features: 3, length: 40}}
blocks:
  drop_t: {type: random_missing, in: text}
  drop_a: {type: random_missing, in: audio}
  pooled: {type: pool, in: drop_a, mode: mean}
  head: {type: linear, in: pooled, out: 1}
losses: [{type: mse, pred: head}, {type: mse, pred: drop_t.completeness, target: drop_a.completeness}]
""")
    model = composer.compile_blueprint(bp).train()
    batch = model.example_inputs(400, seed=2)
    batch["text"][:, 0], batch["text"][:, -1] = 101, 102
    torch.manual_seed(0)
    values = model(batch)["values"]
    kept = values["drop_t.completeness"].squeeze(1)  # (B,) 1 - r
    ids, frames = values["drop_t.out"], values["drop_a.out"]
    assert 0.4 < (kept == 1).float().mean() < 0.6  # about half the samples complete
    assert torch.equal(ids[:, [0, -1]], batch["text"][:, [0, -1]])  # special tokens kept
    dropped = ids != batch["text"]
    assert (ids[dropped] == 100).all()
    complete = kept == 1
    assert not dropped[complete].any()
    rate = dropped[~complete].float().sum() / (38 * (~complete).sum())
    expected = (1 - kept[~complete]).mean()
    assert abs(rate - expected) < 0.03  # the dropped fraction follows the samples' rates
    valid = torch.arange(40)[None] < batch["audio_lengths"][:, None]
    zeroed = (frames == 0).all(-1) & (batch["audio"] != 0).any(-1)
    assert not (zeroed & ~valid).any()  # padding is never 'dropped'
    assert zeroed.any()
    model.eval()
    values = model(batch, training_branches=True)["values"]
    assert torch.equal(values["drop_t.out"], batch["text"]) and torch.equal(values["drop_a.out"], batch["audio"]) and (values["drop_t.completeness"] == 1).all()


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_lnln_full_size_parameter_counts(dataset):
    """At the authors' sizes (BERT-base with its pooler; bert-base-chinese's vocabulary on CH-SIMS) the
    model and its training-only networks hold as many parameters as the authors' LNLN."""
    vocab = {"sims": 21128}.get(dataset, 30522)
    with torch.device("meta"):
        theirs = reference.LNLN(reference_config(dataset, small=False), transformers.BertModel(transformers.BertConfig(vocab_size=vocab)))
    size = estimate_size(composer.load_blueprint(BLUEPRINT, dataset=dataset).plan)
    assert size.model_params + size.training_params == sum(p.numel() for p in theirs.parameters())


def small_blueprint(*overrides: str):
    return composer.load_blueprint(BLUEPRINT, [*SMALL, *TRAINING_VOCAB, "blocks.text_enc_c.vocab_size=120",
                                               "training.batch_size=4", "training.scheduler.warmup_steps=1", *overrides])


def test_lnln_trains_on_synthetic_data(tmp_path):
    run = composer.train(small_blueprint("training.data.samples={train: 8, valid: 4, test: 4}"), out=tmp_path / "run", epochs=1, progress=False)
    text = str(run.summary)
    assert all(f"loss/{name}" in text for name in ("sentiment", "completeness", "adversarial", "rec_audio")), text[:500]


def test_lnln_trains_on_an_mmsa_layout_pickle(tmp_path):
    mmsa_pickle(tmp_path / "mosi.pkl")
    run = composer.train(small_blueprint(), tmp_path / "mosi.pkl", out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)
