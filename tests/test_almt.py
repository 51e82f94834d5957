"""The zoo's ALMT equals a plain-PyTorch reference of the authors' model (tests/reference/almt.py).

Composer's ``blueprints/zoo/almt.yaml`` and the reference are built for the same dataset (the
authors' ``configs/<dataset>.yaml`` structure: fusion depth, lengths) at test widths, with the
tiny BERT of ``mmsa_oracle.TINY_BERT``; every tensor is copied through an explicit name map (each
tensor on both sides used once). Checked: parameter counts (and at full size, exactly, for the
three datasets), predictions, the MSE loss and the gradient of every parameter within 1e-5 on
padded batches, with the authors' padding (``padding: include``) and with Composer's masked
default against the reference run sample by sample; negative controls; training on the
synthetic data and on an MMSA-layout pickle.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from composer.graph.size import estimate_size

import mmsa_oracle
from reference import almt as reference

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "almt.yaml"
TOLERANCE = 1e-5
D, N = 16, 3  # model width and tokens
WIDTHS = {"audio": 5, "vision": 7}
LENGTHS = {"text": 6, "audio": 5, "vision": 4}
PROJ = {"text": "proj_l", "audio": "proj_a", "vision": "proj_v"}  # each modality's token encoder
BERT = {**mmsa_oracle.TINY_BERT, "max_position_embeddings": 512}  # 512: BertConfig's default, as Composer's `bert` builds
TINY_BERT = [
    f"blocks.text_enc.hidden_size={BERT['hidden_size']}", "blocks.text_enc.num_layers=2", "blocks.text_enc.num_heads=2",
    f"blocks.text_enc.intermediate_size={BERT['intermediate_size']}", f"blocks.text_enc.vocab_size={BERT['vocab_size']}",
    f"modalities.text.vocab={BERT['vocab_size']}",
]
#: test widths, the same on both sides (heads 2 of width 4 in the token encoders, language encoder and fusion)
SMALL = [
    *TINY_BERT, f"vars.d={D}", f"vars.n={N}", *(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()),
    *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
    *(f"blocks.{PROJ[m]}.frames={n}" for m, n in LENGTHS.items()),
    *(f"blocks.{b}.{k}={v}" for b in ("proj_l", "proj_a", "proj_v", "fusion") for k, v in (("heads", 2), ("dim_head", 4), ("mlp", 12))),
    "blocks.ahl.heads=2", "blocks.ahl.dim_head=4", "blocks.ahl.language_heads=2", "blocks.ahl.language_dim_head=4", "blocks.ahl.language_mlp=12",
]
#: the authors' reading of padding: every step attended to, BERT's states at [PAD] positions handed on
AUTHORS_PADDING = [f"blocks.{b}.padding=include" for b in ("proj_l", "proj_a", "proj_v")] + ["blocks.text_enc.pad_states=keep"]
#: the authors' configs/<dataset>.yaml fields that differ between datasets (model section)
DATASET_FIELDS = {"mosi": {"fusion_layer_depth": 2}, "mosei": {"fusion_layer_depth": 4}, "sims": {"fusion_layer_depth": 4}}


def reference_args(dataset: str, small: bool = True):
    """The authors' model section for ``dataset``, at test widths unless ``small`` is False."""
    full = {"mosi": {"a_input_dim": 5, "v_input_dim": 20}, "mosei": {"a_input_dim": 74, "v_input_dim": 35, "a_input_length": 500},
            "sims": {"a_input_dim": 33, "v_input_dim": 709, "l_input_length": 39, "a_input_length": 400, "v_input_length": 55}}[dataset]
    fields = {**full, **DATASET_FIELDS[dataset]}
    if small:
        fields.update(l_input_dim=BERT["hidden_size"], a_input_dim=WIDTHS["audio"], v_input_dim=WIDTHS["vision"],
                      l_proj_dst_dim=D, a_proj_dst_dim=D, v_proj_dst_dim=D, token_len=N, token_length=N, token_dim=D, proj_input_dim=D,
                      l_input_length=LENGTHS["text"], a_input_length=LENGTHS["audio"], v_input_length=LENGTHS["vision"],
                      proj_heads=2, proj_mlp_dim=12, l_enc_heads=2, l_enc_mlp_dim=12, ahl_heads=2, ahl_dim_head=4, fusion_heads=2,
                      fusion_mlp_dim=12, dim_head=4)
    return reference.model_args(**fields)


def reference_model(dataset: str) -> reference.ALMT:
    torch.manual_seed(1)
    return reference.ALMT(reference_args(dataset), transformers.BertModel(transformers.BertConfig(**BERT)))


def composer_model(dataset: str, *overrides: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, [*SMALL, *overrides], dataset=dataset))


# -- the name map: reference (the authors' names) -> Composer --------------------------------------

_RULES = [
    (r"^h_hyper$", "ahl.hyper_tokens"),
    (r"^bertmodel\.model\.", "text_enc.bert."),
    (r"^proj_([lav])\.0\.", r"proj_\1.project."),
    (r"^proj_([lav])\.1\.(pos_embedding|extra_token)$", r"proj_\1.encoder.\2"),
    (r"^proj_([lav])\.1\.encoder\.layers\.", r"proj_\1.encoder.layers."),
    (r"^l_encoder\.pos_embedding$", "ahl.language_encoder.pos_embedding"),
    (r"^l_encoder\.encoder\.layers\.", "ahl.language_encoder.layers."),
    (r"^h_hyper_layer\.layers\.(\d+)\.0\.norm([1-4])\.", lambda m: f"ahl.hyper_layers.{m[1]}.norm_{('language', 'audio', 'vision', 'hyper')[int(m[2]) - 1]}."),
    (r"^h_hyper_layer\.layers\.(\d+)\.0\.fn\.to_([kv])_t([av])\.", lambda m: f"ahl.hyper_layers.{m[1]}.to_{m[2]}_{'audio' if m[3] == 'a' else 'vision'}."),
    (r"^h_hyper_layer\.layers\.(\d+)\.0\.fn\.to_q\.", r"ahl.hyper_layers.\1.to_q."),
    (r"^h_hyper_layer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"ahl.hyper_layers.\1.to_out."),
    (r"^fusion_layer\.(pos_embedding_[st]|extra_token)$", r"fusion.\1"),
    (r"^fusion_layer\.CrossTransformerEncoder\.layers\.", "fusion.layers."),
    (r"^regression_layer\.0\.", "head.linear."),
]
#: inside an encoder layer: the authors' PreNorm wrappers -> Composer's attn / ffn
_LAYER = [
    (r"\.(\d+)\.0\.norm_([qkv])\.", r".\1.attn.norm_\2."),
    (r"\.(\d+)\.0\.fn\.to_([qkv])\.", r".\1.attn.to_\2."),
    (r"\.(\d+)\.0\.fn\.to_out\.0\.", r".\1.attn.to_out."),
    (r"\.(\d+)\.1\.norm\.", r".\1.ffn.norm."),
    (r"\.(\d+)\.1\.fn\.net\.0\.", r".\1.ffn.fc1."),
    (r"\.(\d+)\.1\.fn\.net\.3\.", r".\1.ffn.fc2."),
]


def composer_name(name: str, rules=tuple(_RULES)) -> str:
    """The Composer parameter a reference parameter is (``rules``: pattern -> replacement, first match)."""
    for pattern, replacement in rules:
        if re.search(pattern, name):
            name = re.sub(pattern, replacement, name)
            break
    else:
        raise KeyError(f"no rule for {name}")
    if ".layers." in name and not name.startswith(("text_enc.", "ahl.hyper_layers.")):  # an encoder layer
        for pattern, replacement in _LAYER:
            name = re.sub(pattern, replacement, name)
    return name


def copy_weights(theirs: nn.Module, ours: nn.Module) -> dict[str, str]:
    """Copy every reference tensor into Composer's model; each tensor on both sides used once."""
    source, target = theirs.state_dict(), ours.state_dict()
    names = {k: composer_name(k) for k in source}
    assert sorted(names.values()) == sorted(target), f"mapped 0 or 2 times: {sorted(set(target) ^ set(names.values()))}"
    ours.load_state_dict({names[k]: v for k, v in source.items()})
    return names


def pair(dataset: str, *overrides: str):
    theirs, ours = reference_model(dataset), composer_model(dataset, *overrides)
    names = copy_weights(theirs, ours)
    return ours.eval(), theirs.eval(), names


def a_batch(model, *, text_padding: bool, seed: int = 0) -> dict:
    """A padded batch: audio and vision padded (zeros after their lengths, as the pickles store
    them; the last sample at most half long); the text padded too when ``text_padding``."""
    batch = model.example_inputs(3, seed=seed)
    for m in WIDTHS:
        T = batch[m].shape[1]
        batch[f"{m}_lengths"] = torch.tensor([T, max(1, T - 1), max(1, T // 2)])
        batch[m] = batch[m] * (torch.arange(T)[None] < batch[f"{m}_lengths"][:, None])[..., None]
    if text_padding:
        lengths = torch.tensor([LENGTHS["text"], 4, 3])
        batch["text_mask"] = torch.arange(LENGTHS["text"])[None] < lengths[:, None]
        batch["text"] = batch["text"].masked_fill(~batch["text_mask"], 0)
        batch["text"][torch.arange(3), lengths - 1] = 2  # a [SEP]-like last token
    return batch


def reference_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vision, audio, text (B, 3, T)) as the authors' data loader gives them."""
    text = torch.stack([batch["text"].float(), batch["text_mask"].float(), batch["text_segment"].float()], dim=1)
    return batch["vision"], batch["audio"], text


def assert_gradients_equal(ours, theirs, names: dict[str, str]) -> int:
    """Every gradient of the reference within 1e-5 of Composer's twin (through ``names``); a
    parameter without a gradient (BERT's pooler: built, never used) has none or zero on both sides.
    Returns how many gradients were compared."""
    mine = dict(ours.named_parameters())
    compared = 0
    for their_name, param in theirs.named_parameters():
        grad = mine[names[their_name]].grad
        if param.grad is None:
            assert grad is None or grad.abs().max() == 0, their_name
            continue
        torch.testing.assert_close(grad, param.grad, atol=TOLERANCE, rtol=1e-4, msg=lambda m: f"{their_name}: {m}")
        compared += 1
    return compared


def assert_equal(ours, theirs, names: dict[str, str], batch: dict, *, per_sample: bool) -> float:
    """Predictions, the authors' MSE loss and every gradient within 1e-5; returns the largest prediction difference."""
    prediction = ours(batch)["prediction"]
    expected = theirs(*reference_inputs(batch), per_sample=per_sample, audio_lengths=batch["audio_lengths"], vision_lengths=batch["vision_lengths"])
    torch.testing.assert_close(prediction, expected, atol=TOLERANCE, rtol=0)
    ours_loss = torch.nn.functional.mse_loss(prediction, batch["label"].view(-1, 1))
    theirs_loss = reference.mse(expected, batch["label"])
    torch.testing.assert_close(ours_loss, theirs_loss, atol=TOLERANCE, rtol=0)
    ours_loss.backward(), theirs_loss.backward()
    assert assert_gradients_equal(ours, theirs, names) > 0.95 * len(list(ours.parameters()))
    return (prediction - expected).abs().max().item()


# -- equality ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_almt_authors_padding_equals_the_reference_on_padded_batches(dataset):
    """``padding: include`` on the token encoders: text, audio and vision padded (audio and vision
    with zeros), read by the attention as the authors' code reads them; the authors hand BERT's
    states at [PAD] positions on, as ``pad_states: keep`` does (the `bert` block's default zeroes them)."""
    ours, theirs, names = pair(dataset, *AUTHORS_PADDING)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert assert_equal(ours, theirs, names, a_batch(ours, text_padding=True), per_sample=False) < TOLERANCE


def test_almt_default_masks_padding_and_equals_the_reference_sample_by_sample():
    """Composer's default on a batch with padded text, audio and vision equals the reference run on
    each sample alone at its own lengths, and differs from the authors' padded computation."""
    ours, theirs, names = pair("mosei")
    batch = a_batch(ours, text_padding=True)
    assert_equal(ours, theirs, names, batch, per_sample=True)
    with torch.no_grad():
        padded = theirs(*reference_inputs(batch))
        assert (ours(batch)["prediction"] - padded)[1:].abs().max() > 1e-3  # the padded samples differ
        torch.testing.assert_close(ours(batch)["prediction"][0], padded[0], atol=TOLERANCE, rtol=0)  # the full one does not


def test_almt_negative_controls_break_the_equality():
    ours, theirs, _ = pair("mosi", *AUTHORS_PADDING)
    batch = a_batch(ours, text_padding=False)
    with torch.no_grad():
        expected = theirs(*reference_inputs(batch))
        weight = ours.block("ahl").hyper_layers[1].to_k_audio.weight
        weight.add_(0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))  # one weight perturbed
        assert (ours(batch)["prediction"] - expected).abs().max() > 1e-4
    swapped, theirs, _ = pair("mosi", *AUTHORS_PADDING, "blocks.ahl.in={language: proj_l, audio: proj_v, vision: proj_a}")
    with torch.no_grad():
        assert (swapped(batch)["prediction"] - theirs(*reference_inputs(batch))).abs().max() > 1e-4  # audio and vision swapped


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_almt_full_size_parameter_counts(dataset):
    """At the authors' sizes (BERT-base with its pooler; bert-base-chinese's vocabulary on CH-SIMS) the counts agree exactly."""
    vocab = {"sims": 21128}.get(dataset, 30522)
    with torch.device("meta"):
        theirs = reference.ALMT(reference_args(dataset, small=False), transformers.BertModel(transformers.BertConfig(vocab_size=vocab)))
    ours = composer.load_blueprint(BLUEPRINT, dataset=dataset)
    assert estimate_size(ours.plan).model_params == sum(p.numel() for p in theirs.parameters())


def test_almt_reported_numbers_are_metrics_composer_computes():
    from composer.metric_names import metric_names

    bp = composer.load_blueprint(BLUEPRINT).blueprint
    assert bp.reported and "ALMT" in bp.reported[0].source
    assert set(bp.reported[0].metrics) <= set(metric_names(bp.task)) - {"loss"}


# -- training ------------------------------------------------------------------------------------


def mmsa_pickle(path: Path, n: int = 6, seed: int = 0, *, vocab: int = BERT["vocab_size"]) -> None:
    """An MMSA-layout unaligned pickle at test widths: BERT tokens in ``text_bert`` (N, 3, L)."""
    mmsa_oracle.write_bert_pickle(path, LENGTHS, WIDTHS, n=n, seed=seed, vocab=vocab)


#: the synthetic set draws BERT's special tokens (101, 102): a vocabulary above them
TRAINING_VOCAB = ["modalities.text.vocab=120", "blocks.text_enc.vocab_size=120"]


def small_blueprint(*overrides: str):
    return composer.load_blueprint(BLUEPRINT, [*SMALL, *TRAINING_VOCAB, "training.batch_size=4", "training.scheduler.warmup_steps=1", *overrides])


def test_almt_trains_on_synthetic_data(tmp_path):
    run = composer.train(small_blueprint("training.data.samples={train: 8, valid: 4, test: 4}"), out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)


def test_almt_trains_on_an_mmsa_layout_pickle(tmp_path):
    mmsa_pickle(tmp_path / "mosi.pkl")
    run = composer.train(small_blueprint(), tmp_path / "mosi.pkl", out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)
