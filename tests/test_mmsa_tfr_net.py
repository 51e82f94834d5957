"""The zoo's TFR-Net (blueprints/zoo/tfr_net.yaml) equals MMSA 2.2.1's (models/missingTask/TFR_NET,
trains/missingTask/TFR_NET.py).

MMSA's module is built from its own ``get_config_regression('tfr_net', 'mosi')`` (widths, lengths and
heads shrunk, structure kept: three crossmodal layers, three-layer memories and temporal transformers,
three-layer GRUs) with a tiny offline BERT, Composer's from the blueprint with the same sizes; every
tensor is copied through the name map of ``composer/zoo_import/tfr_net.py`` (each used once). The masks
come from MMSA's own data loader (``MMDataset.generate_m``, rate 0.2, seed 1111) and must equal the
blueprint's ``missing`` view. On a batch padded in every modality (text included) in evaluation mode,
with the options that read padding as MMSA does (``pad_states: keep``, ``padding: include``): equal
parameter counts, the prediction on the masked inputs, each modality's reconstruction loss
(``RECLoss``), the trainer's total loss (``pred_loss + gen_loss``) within 1e-5 in float32, and the
gradient of every parameter within 1e-5 (and 1e-8 of its scale) in float64, MMSA's float32 softmax
taken in float64 for that comparison; float32 gradients within twice MMSA's own float32 rounding.
Negative controls break each equality.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

import composer
from composer.errors import BlueprintError
from composer.graph.size import estimate_size
from composer.train.views import make_views
from composer.zoo_import import NAME_MAPS, import_mmsa_weights

import mmsa_oracle
from test_mmsa_zoo import TOLERANCE, copy_weights, trainable, with_running_statistics

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "tfr_net.yaml"
SUFFIX = {"text": "t", "audio": "a", "vision": "v"}
BERT_SIZES = {"vocab_size": 128, "max_position_embeddings": 512}  # tiny BERT (mmsa_oracle.TINY_BERT), ids up to 127
WIDTHS = {"text": 32, "audio": 3, "vision": 5}  # BERT's hidden size, then MMSA's feature_dims
LENGTHS = {"text": 6, "audio": 8, "vision": 4}  # seq_lens: the temporal transformers' embedding widths
D, HEADS, TEMPORAL_HEADS = 4, 2, 2
HIDDEN = {"text": 5, "audio": 3, "vision": 4}  # fusion_t_hid, fusion_a_hid, fusion_v_hid
CLS = 6  # cls_hidden_dim
BATCH = 3
AS_MMSA = ["blocks.align.padding=include"] + [f"blocks.{b}_{s}.padding=include" for s in SUFFIX.values() for b in ("recon", "fuse")]
#: Stand-ins for the packages TFR-Net's modules and trainer import from (see mmsa_oracle.load).
PACKAGES = {
    "MMSA.models.missingTask": ("models/missingTask", {}),
    "MMSA.trains.missingTask": ("trains/missingTask", {}),
    "MMSA.utils.functions": (None, {"dict_to_str": None}),
    "MMSA.utils.metricsTop": (None, {"MetricsTop": None}),
}


@pytest.fixture(scope="module")
def mmsa():
    with mock.patch.dict(mmsa_oracle._PACKAGES, PACKAGES):
        loaded = mmsa_oracle.load(
            "MMSA.models.missingTask.TFR_NET.model", "MMSA.trains.missingTask.TFR_NET", "MMSA.data_loader", "MMSA.config"
        )
    return types.SimpleNamespace(
        model=loaded["MMSA.models.missingTask.TFR_NET.model"].TFR_NET,
        trainer=loaded["MMSA.trains.missingTask.TFR_NET"],
        generate_m=loaded["MMSA.data_loader"].MMDataset.generate_m,
        config=loaded["MMSA.config"].get_config_regression,
        loss=loaded["MMSA.models.missingTask.TFR_NET.model"].RECLoss,
    )


# -- building both sides -------------------------------------------------------------------------


def mmsa_config(mmsa, dataset: str = "mosi"):
    config = mmsa.config("tfr_net", dataset)
    config.update(
        feature_dims=[WIDTHS["text"], WIDTHS["audio"], WIDTHS["vision"]], seq_lens=[LENGTHS[m] for m in SUFFIX],
        dst_feature_dim_nheads=[D, HEADS], num_temporal_head=TEMPORAL_HEADS, cls_hidden_dim=CLS,
        fusion_t_hid=HIDDEN["text"], fusion_a_hid=HIDDEN["audio"], fusion_v_hid=HIDDEN["vision"],
        device=torch.device("cpu"), train_mode="regression",
    )
    return config


def mmsa_module(mmsa, dataset: str = "mosi") -> nn.Module:
    torch.manual_seed(1)
    with mmsa_oracle.offline_bert(**BERT_SIZES):
        return with_running_statistics(mmsa.model(mmsa_config(mmsa, dataset)))


def sizes() -> list[str]:
    bert = mmsa_oracle.TINY_BERT
    out = [f"modalities.text.length={LENGTHS['text']}", f"modalities.text.vocab={BERT_SIZES['vocab_size']}",
           f"blocks.text_enc.hidden_size={bert['hidden_size']}", f"blocks.text_enc.num_layers={bert['num_hidden_layers']}",
           f"blocks.text_enc.num_heads={bert['num_attention_heads']}", f"blocks.text_enc.intermediate_size={bert['intermediate_size']}",
           f"blocks.text_enc.vocab_size={BERT_SIZES['vocab_size']}", f"blocks.align.dim={D}", f"blocks.align.heads={HEADS}",
           f"blocks.head.hidden=[{CLS}]"]
    for m, s in SUFFIX.items():
        out += [f"blocks.recon_{s}.length={LENGTHS[m]}", f"blocks.recon_{s}.heads={TEMPORAL_HEADS}",
                f"blocks.fuse_{s}.hidden={HIDDEN[m]}"]
        if m != "text":
            out += [f"modalities.{m}.features={WIDTHS[m]}", f"modalities.{m}.length={LENGTHS[m]}"]
    return out


def composer_model(*overrides: str, dataset: str = "mosi"):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, [*sizes(), *overrides], dataset=dataset))


def pair(mmsa, *overrides: str, dataset: str = "mosi"):
    theirs, ours = mmsa_module(mmsa, dataset), composer_model(*overrides, dataset=dataset)
    assert theirs.args.weight_gen_loss == [ours.blueprint.losses[i].weight for i in (1, 2, 3)]  # weight_gen_loss
    copy_weights(theirs, ours, NAME_MAPS["tfr_net"](ours))
    return ours.eval(), theirs.eval()


def a_batch(padded: bool = True, text_padded: bool = False, seed: int = 0) -> dict:
    """Token ids as BERT's tokenizer lays them out ([CLS] 101 first, [SEP] 102 last, [PAD] 0 after,
    ordinary ids in between), features zero on padded steps as MMSA's pickles store them."""
    gen = torch.Generator().manual_seed(seed)
    t = LENGTHS["text"]
    text_lengths = torch.tensor([t, t - 2, t - 3] if text_padded else [t] * BATCH)
    ids = torch.randint(1, 100, (BATCH, t), generator=gen)
    ids[:, 0] = 101
    ids[torch.arange(BATCH), text_lengths - 1] = 102
    text_mask = torch.arange(t)[None] < text_lengths[:, None]
    batch = {"text": ids.masked_fill(~text_mask, 0), "text_mask": text_mask, "text_segment": torch.zeros(BATCH, t, dtype=torch.long),
             "label": torch.tensor([1.2, -0.4, 2.6])}
    for m in ("audio", "vision"):
        steps = LENGTHS[m]
        lengths = torch.tensor([steps, steps - 3, 2] if padded else [steps] * BATCH)
        valid = torch.arange(steps)[None] < lengths[:, None]
        batch[m] = torch.randn(BATCH, steps, WIDTHS[m], generator=gen) * valid[..., None]
        batch[f"{m}_lengths"] = lengths
    return batch


def mmsa_inputs(mmsa, batch: dict) -> tuple:
    """TFR_NET.forward's three tuples, masked by MMSA's own data loader (``generate_m``, the
    configuration's missing_rate 0.2 and missing_seed 1111 for every modality), in the batch's float dtype."""
    dtype = batch["audio"].dtype
    ids, mask, segment = batch["text"].numpy().astype(np.float32), batch["text_mask"].numpy().astype(np.float32), batch["text_segment"].numpy()
    ids_m, _, _, text_kept = mmsa.generate_m(None, ids, mask, None, 0.2, 1111, mode="text")
    text = torch.from_numpy(np.stack([ids, mask, segment], axis=1)).to(dtype)  # (B, 3, T): ids, attention mask, segments
    text_m = torch.from_numpy(np.stack([ids_m, mask, segment], axis=1)).to(dtype)
    out = [(text, text_m, torch.from_numpy(text_kept).to(dtype))]
    for m in ("audio", "vision"):
        x_m, _, valid, kept = mmsa.generate_m(None, batch[m].numpy(), None, batch[f"{m}_lengths"].tolist(), 0.2, 1111, mode=m)
        out.append((batch[m], torch.from_numpy(x_m).to(dtype), torch.from_numpy(valid).to(dtype), torch.from_numpy(kept).to(dtype)))
    return tuple(out)


def run_both(mmsa, ours, theirs, batch: dict):
    """Composer's views, outputs, total loss and terms; MMSA's prediction, gen_loss, the trainer's loss
    (``pred_loss + gen_loss``, epochs > 1) and each modality's ``RECLoss`` (from hooks on the generators
    and on the text encoder's second call, BERT on the complete tokens)."""
    batches = make_views(batch, ours.blueprint, torch.Generator().manual_seed(0))
    mine = {view: ours(b, training_branches=True) for view, b in batches.items()}
    total, parts = ours.compute_loss(mine, batches)
    inputs = mmsa_inputs(mmsa, batch)
    seen = {}
    hooks = [getattr(theirs, f"generator_{s}").register_forward_hook(lambda mod, a, out, s=s: seen.__setitem__(s, out)) for s in "tav"]
    hooks.append(theirs.text_model.register_forward_hook(lambda mod, a, out: seen.setdefault("bert", []).append(out)))
    try:
        prediction, gen_loss = theirs(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    label = batch["label"].view(-1, 1)
    expected = nn.L1Loss()(prediction, label) + gen_loss  # TFR_NET.do_train: loss = pred_loss + gen_loss
    (text, _, text_kept), (audio, _, audio_valid, audio_kept), (vision, _, vision_valid, vision_kept) = inputs
    rec = {
        "text": theirs.gen_loss(seen["t"], seen["bert"][1], text[:, 1] - text_kept),
        "audio": theirs.gen_loss(seen["a"], audio, audio_valid - audio_kept),
        "vision": theirs.gen_loss(seen["v"], vision, vision_valid - vision_kept),
    }
    return types.SimpleNamespace(batches=batches, mine=mine, total=total, parts=parts, prediction=prediction, gen_loss=gen_loss,
                                 expected=expected.squeeze(), rec=rec, inputs=inputs)


# -- equality ------------------------------------------------------------------------------------


def test_tfr_net_views_are_mmsas_missing_masks(mmsa):
    """The ``missing`` view (rates 0.2, resample: split, seeds 1111) drops exactly the steps MMSA's
    data loader drops on a split of the same samples: ids -> [UNK], features -> 0, [CLS]/[SEP] kept."""
    ours = composer_model()
    batch = a_batch(text_padded=True)
    view = make_views(batch, ours.blueprint, torch.Generator())["missing"]
    (_, text_m, text_kept), *features = mmsa_inputs(mmsa, batch)
    assert torch.equal(view["text"], text_m[:, 0].long())
    assert torch.equal(view["view_masks"]["text"], batch["text_mask"] & (text_kept == 0))
    for m, (_, x_m, valid, kept) in zip(("audio", "vision"), features):
        assert torch.equal(view[m], x_m)
        assert torch.equal(view["view_masks"][m], (valid - kept).bool())
    assert sum(int(v.sum()) for v in view["view_masks"].values()) > 0


def in_float64(ours, theirs, batch: dict) -> dict:
    """Both models and the batch in float64; MMSA's ``RECLoss.eps``, a float32 tensor it keeps
    (``torch.FloatTensor([1e-4])``, 1e-4 rounded to 9.99999975e-05), becomes 1e-4 in float64 as
    Composer's ``eps`` is (the float32 rounding alone moves the losses by 1e-11 in float64)."""
    ours.double(), theirs.double()
    theirs.gen_loss.eps = torch.tensor([1e-4], dtype=torch.float64)
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


@contextlib.contextmanager
def mmsa_softmax_in_float64(theirs: nn.Module):
    """MMSA's ``MultiheadAttention.forward`` takes its softmax as ``F.softmax(attn_weights.float(),
    dim=-1).type_as(attn_weights)``: in float32 even when the model is float64 (the one ``.float()``
    of that method). For the float64 comparison only, each of MMSA's attention modules runs with
    ``Tensor.float`` leaving a float64 tensor as it is, so its softmax is taken in float64; the
    patch lives only inside those calls and is undone on exit. Nothing else of MMSA changes."""
    cast = torch.Tensor.float

    def keep_float64(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else cast(self, *args, **kwargs)

    def in_float64(forward):
        def call(*args, **kwargs):
            with mock.patch.object(torch.Tensor, "float", keep_float64):
                return forward(*args, **kwargs)
        return call

    attentions = [m for m in theirs.modules() if type(m).__name__ == "MultiheadAttention" and type(m).__module__.startswith("MMSA.")]
    assert len(attentions) == 12 * 3, len(attentions)  # 12 transformers of 3 layers (the test's nlevels = 3)
    for m in attentions:
        m.forward = in_float64(m.forward)
    try:
        yield
    finally:
        for m in attentions:
            del m.forward  # the instance attribute: the class's forward again


def gradients(ours, theirs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Composer name -> (Composer's gradient, MMSA's) of every parameter both sides train, through
    the name map; BERT's pooler (computed, never used) has none on either side."""
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    out = {}
    for mmsa_name, mine_name in NAME_MAPS["tfr_net"](ours).items():
        if mine_name is None or mmsa_name not in twins:
            continue  # fairseq's buffers, BatchNorm statistics
        grad, reference = params[mine_name].grad, twins[mmsa_name].grad
        if reference is None:
            assert "pooler" in mine_name and (grad is None or not grad.any()), mine_name
            continue
        out[mine_name] = (grad.detach().clone(), reference.detach().clone())
    assert len(out) == len([n for n, _ in ours.named_parameters() if "pooler" not in n])
    return out


def worst(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], scales: dict[str, float]) -> tuple[float, str]:
    """The largest ``max|a - b| / scale`` over the tensors, and its tensor."""
    return max(((a.double() - b.double()).abs().max().item() / scales[n], n) for n, (a, b) in pairs.items())


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_tfr_net_equals_mmsa_on_padded_batches(mmsa, dataset):
    """A batch padded in every modality (texts of 6, 4 and 3 tokens with BERT's states at their
    [PAD] positions handed on: ``pad_states: keep``). float32: parameter counts, the prediction,
    each reconstruction loss and the total within 1e-5.

    Gradients, float64 on both sides with MMSA's float32 softmax taken in float64
    (:func:`mmsa_softmax_in_float64`): every parameter's gradient within 1e-5, and within 1e-8 of
    its tensor's largest entry (measured on mosi: 1.3e-6 absolute on gradients up to 4.9e4, 3e-11
    relative; a BERT key bias, whose true gradient is 0 as softmax ignores it, 1e-19). That float32
    softmax was the former 1e-4 (relative) gap in float64; the only difference in Composer's
    computation was the CMD's norm (MMSA's ``sqrt(‖Δ‖² + 1e-12)``, now ``norm_eps``), 1e-11 here.
    Loss weights, the undetached BERT target and every other path carry the same gradients.

    Gradients in float32: the batch holds a sample whose only vision step is dropped, so the
    vision memory transformer reads a sequence of zero rows; LayerNorm's gradient on a
    zero-variance row is γ/√ε·(g − mean g) (316× per norm, 7 norms deep), the gradients there
    reach 5e4 and float32 rounding moves them by up to 1% of their tensor's scale, in MMSA as in
    Composer. Composer's float32 gradient of every tensor is required within 2ρ of its scale, ρ
    being MMSA's own float32 error (the largest over tensors of ``|g32 − g64| / scale``, measured
    here against the float64 gradients just proven equal): Composer's float32 computation is no
    farther from MMSA's than twice MMSA's own rounding (measured: 1.5e-2 against ρ = 9.9e-3 on
    mosi, 1.7e-4 against 7.2e-4 on mosei)."""
    ours, theirs = pair(mmsa, *AS_MMSA, dataset=dataset)
    assert trainable(ours) == trainable(theirs)
    batch = a_batch(text_padded=True)
    r = run_both(mmsa, ours, theirs, batch)
    torch.testing.assert_close(r.mine["missing"]["prediction"], r.prediction, atol=TOLERANCE, rtol=0)
    for m in SUFFIX:
        assert r.rec[m].item() > 0, m
        torch.testing.assert_close(r.parts[f"rec_{m}"], r.rec[m].squeeze(), atol=TOLERANCE, rtol=1e-5, msg=lambda e: f"rec_{m}: {e}")
    torch.testing.assert_close(r.total, r.expected, atol=TOLERANCE, rtol=1e-5)
    r.total.backward()
    r.expected.backward()
    in32 = gradients(ours, theirs)
    ours.zero_grad(set_to_none=True), theirs.zero_grad(set_to_none=True)

    with mmsa_softmax_in_float64(theirs):
        r = run_both(mmsa, ours, theirs, in_float64(ours, theirs, batch))
        torch.testing.assert_close(r.mine["missing"]["prediction"], r.prediction, atol=1e-12, rtol=0)
        torch.testing.assert_close(r.total, r.expected, atol=1e-12, rtol=1e-12)
        r.total.backward()
        r.expected.backward()
    in64 = gradients(ours, theirs)
    scales = {n: reference.abs().max().item() for n, (_, reference) in in64.items()}
    for name, (grad, reference) in in64.items():
        torch.testing.assert_close(grad, reference, atol=min(TOLERANCE, 1e-8 * scales[name] + 1e-12), rtol=0, msg=lambda e: f"{name}: {e}")

    scales = {n: max(s, 1e-6) for n, s in scales.items()}  # a key bias: 0 in exact arithmetic
    rho, where = worst({n: (in32[n][1], in64[n][1]) for n in in64}, scales)  # MMSA's own float32 rounding
    assert 1e-6 < rho < 0.05, (rho, where)
    for name, (grad, reference) in in32.items():
        torch.testing.assert_close(grad, reference, atol=2 * rho * scales[name], rtol=0, msg=lambda e: f"{name} (float32): {e}")


def test_tfr_net_negative_controls_break_each_equality(mmsa):
    """A perturbed weight (the classifier's hidden layer) breaks the prediction; the batch-first token reading of the temporal
    transformer breaks the reconstruction loss; a detached BERT target breaks BERT's gradients (float64, softmax in float64,
    beyond the equality test's tolerance); MMSA's float32 softmax, left in place, breaks the float64 gradients by far more than
    that tolerance (it was the whole gap); ``pad_states: zero`` breaks the prediction on padded text."""
    ours, theirs = pair(mmsa, *AS_MMSA)
    with torch.no_grad():
        ours.block("head").net[0].weight.add_(0.1)
        r = run_both(mmsa, ours, theirs, a_batch())
    assert (r.mine["missing"]["prediction"] - r.prediction).abs().max() > TOLERANCE

    ours, theirs = pair(mmsa, *AS_MMSA, "blocks.recon_t.tokens=features")
    with torch.no_grad():
        r = run_both(mmsa, ours, theirs, a_batch())
    torch.testing.assert_close(r.mine["missing"]["prediction"], r.prediction, atol=TOLERANCE, rtol=0)
    assert (r.parts["rec_text"] - r.rec["text"].squeeze()).abs() > TOLERANCE

    ours, theirs = pair(mmsa, *AS_MMSA, "blocks.text_enc.pad_states=zero")
    with torch.no_grad():
        r = run_both(mmsa, ours, theirs, a_batch(text_padded=True))
        assert (r.mine["missing"]["prediction"] - r.prediction).abs().max() > TOLERANCE
        r = run_both(mmsa, ours, theirs, a_batch(text_padded=False))
        torch.testing.assert_close(r.mine["missing"]["prediction"], r.prediction, atol=TOLERANCE, rtol=0)

    name = "embeddings.word_embeddings.weight"
    ours, theirs = pair(mmsa, *AS_MMSA, "losses.rec_text.detach_target=true")
    with mmsa_softmax_in_float64(theirs):
        r = run_both(mmsa, ours, theirs, in_float64(ours, theirs, a_batch(text_padded=True)))
        r.total.backward()
        r.expected.backward()
    grad, reference = gradients(ours, theirs)[f"text_enc.bert.{name}"]
    assert (grad - reference).abs().max() > TOLERANCE

    ours, theirs = pair(mmsa, *AS_MMSA)
    r = run_both(mmsa, ours, theirs, in_float64(ours, theirs, a_batch(text_padded=True)))  # MMSA's softmax in float32
    r.total.backward()
    r.expected.backward()
    gap = max((g - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6) for g, ref in gradients(ours, theirs).values())
    assert gap > 1e-6, gap  # measured 1.5e-4


def test_tfr_net_default_masks_padding_and_equals_mmsa_without_padding(mmsa):
    """Composer's defaults (padding masked) compute MMSA's prediction and losses on unpadded
    batches and differ on padded ones."""
    ours, theirs = pair(mmsa)
    with torch.no_grad():
        r = run_both(mmsa, ours, theirs, a_batch(padded=False))
        torch.testing.assert_close(r.mine["missing"]["prediction"], r.prediction, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(r.total, r.expected, atol=TOLERANCE, rtol=1e-5)
        padded = run_both(mmsa, ours, theirs, a_batch())
    assert (padded.mine["missing"]["prediction"] - padded.prediction).abs().max() > TOLERANCE


def test_tfr_net_full_size_parameter_counts(mmsa):
    """At MOSI's and MOSEI's real widths and lengths with BERT-base, Composer's count (the model plus
    the training-only reconstruction branch) is MMSA's (built on the meta device)."""
    base = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "max_position_embeddings": 512}
    for dataset, (audio, vision), lengths in (("mosi", (5, 20), [50, 375, 500]), ("mosei", (74, 35), [50, 500, 375])):
        config = mmsa.config("tfr_net", dataset)
        config.update(feature_dims=[768, audio, vision], seq_lens=lengths, device=torch.device("meta"), train_mode="regression")
        with torch.device("meta"), mmsa_oracle.offline_bert(**base):
            theirs = mmsa.model(config)
        size = estimate_size(composer.load_blueprint(BLUEPRINT, dataset=dataset).plan)
        assert size.model_params + size.training_params == trainable(theirs), dataset
        recon = sum(p.numel() for n, p in theirs.named_parameters() if n.startswith(("align_subnet.Model.trans_l_final", "align_subnet.Model.trans_a_final", "align_subnet.Model.trans_v_final", "generator_")))
        assert size.training_params == recon, dataset


def test_tfr_net_sims_cannot_be_built_by_mmsa_and_is_refused_with_the_reason(mmsa):
    """MMSA's own CH-SIMS configuration (``get_config_regression('tfr_net', 'sims')``, nothing
    changed but the device): lengths 39 words, 400 and 55 frames, ``num_temporal_head`` 25. The
    temporal transformers take the lengths as embedding widths, and 39 and 55 are not multiples of
    25: MMSA's MultiheadAttention asserts while the model is built, and Composer's validate names
    both blocks and the rule."""
    config = mmsa.config("tfr_net", "sims")
    assert (config.seq_lens, config.num_temporal_head) == ([39, 400, 55], 25)
    config.update(device=torch.device("meta"), train_mode="regression")
    with torch.device("meta"), mmsa_oracle.offline_bert(), pytest.raises(AssertionError, match="divisible"):
        mmsa.model(config)
    lengths = dict(zip(SUFFIX, config.seq_lens))
    sims = [f"{key}={n}" for m, n in lengths.items() for key in (f"modalities.{m}.length", f"blocks.recon_{SUFFIX[m]}.length")]
    with pytest.raises(BlueprintError) as refused:
        composer.load_blueprint(BLUEPRINT, sims)
    assert re.search(r"blocks.recon_t.*length 39.*not divisible by heads=25", str(refused.value))
    assert re.search(r"blocks.recon_v.*length 55.*not divisible by heads=25", str(refused.value))
    assert "recon_a" not in str(refused.value)


def test_tfr_net_optimiser_settings_of_every_parameter_are_mmsas(mmsa, monkeypatch):
    """MMSA's three Adam groups (BERT with decay, BERT's biases and LayerNorms without, the rest):
    every parameter's learning rate and weight decay, from the optimiser ``do_train`` builds."""
    from composer.train.optim import build_optimizer

    class Built(Exception):
        pass

    seen = {}

    def record(groups, *args, **kwargs):
        for group in groups:
            for p in group["params"]:
                assert id(p) not in seen
                seen[id(p)] = (group["lr"], group["weight_decay"])
        raise Built

    theirs = mmsa_module(mmsa)
    monkeypatch.setattr(mmsa.trainer, "optim", types.SimpleNamespace(Adam=record))
    trainer = object.__new__(mmsa.trainer.TFR_NET)  # its __init__ builds MMSA's metrics, which the oracle leaves out
    trainer.args = mmsa_config(mmsa)
    with pytest.raises(Built):
        trainer.do_train(types.SimpleNamespace(Model=theirs, named_parameters=theirs.named_parameters), {"train": []})
    ours = composer_model()
    optimizer = build_optimizer(ours, ours.blueprint.training)
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for mmsa_name, mine_name in NAME_MAPS["tfr_net"](ours).items():
        if mmsa_name in twins:
            assert mine[id(params[mine_name])] == pytest.approx(seen[id(twins[mmsa_name])]), mine_name
    assert len(seen) == len(twins) == len(mine)


# -- import, data and training -------------------------------------------------------------------


def test_tfr_net_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    theirs = mmsa_module(mmsa)
    path = tmp_path / "tfr_net-mosi.pth"
    torch.save({f"Model.{k}": v for k, v in theirs.state_dict().items()}, path)
    ours = composer.load_model(import_mmsa_weights(path, BLUEPRINT, tmp_path / "w.safetensors", dataset="mosi", overrides=[*sizes(), *AS_MMSA]))
    ours.eval(), theirs.eval()
    batch = a_batch()
    with torch.no_grad():
        mine = ours(make_views(batch, ours.blueprint, torch.Generator())["missing"])["prediction"]
        reference, _ = theirs(*mmsa_inputs(mmsa, batch))
    torch.testing.assert_close(mine, reference, atol=TOLERANCE, rtol=0)


def mosi_pickle(path: Path, n: int = 6, seed: int = 0) -> None:
    """An MMSA-layout unaligned pickle at test sizes: text_bert (ids, mask, segments), padded features."""
    rng = np.random.default_rng(seed)
    data = {}
    for split in ("train", "valid", "test"):
        t = LENGTHS["text"]
        lengths = rng.integers(3, t + 1, size=n)
        ids = rng.integers(1, 100, size=(n, t))
        ids[:, 0] = 101
        ids[np.arange(n), lengths - 1] = 102
        mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
        d = {"text_bert": np.stack([ids * mask, mask, np.zeros((n, t))], axis=1).astype(np.float32)}
        for m in ("audio", "vision"):
            steps = LENGTHS[m]
            d[f"{m}_lengths"] = rng.integers(2, steps + 1, size=n).tolist()
            valid = np.arange(steps)[None] < np.array(d[f"{m}_lengths"])[:, None]
            d[m] = (rng.standard_normal((n, steps, WIDTHS[m])) * valid[..., None]).astype(np.float32)
        d["regression_labels"] = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    path.write_bytes(pickle.dumps(data))


def small(*overrides: str):
    return composer.load_blueprint(BLUEPRINT, [*sizes(), "training.batch_size=3", *overrides])


def _last_train_row(run) -> dict:
    """Epoch 2's train row: the reconstruction losses start at epoch 2 (`from_epoch`, tests/test_loss_from_epoch.py)."""
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"][-1]


def test_tfr_net_trains_on_synthetic_data(tmp_path):
    run = composer.train(small("training.data.samples={train: 6, valid: 3, test: 3}"), out=tmp_path / "run", epochs=2, progress=False)
    row = _last_train_row(run)
    assert all(f"loss/rec_{m}" in row for m in SUFFIX) and "loss/task" in row, row


def test_tfr_net_trains_on_an_mmsa_layout_pickle(tmp_path):
    mosi_pickle(tmp_path / "mosi.pkl")
    run = composer.train(small(*AS_MMSA), tmp_path / "mosi.pkl", out=tmp_path / "run", epochs=2, progress=False)
    assert "loss/rec_vision" in _last_train_row(run)


# -- the blocks on their own ---------------------------------------------------------------------


def test_tfr_reconstruction_equals_mmsas_recloss_where_moments_agree_and_where_nothing_is_dropped(mmsa):
    """``tfr_reconstruction`` against MMSA's ``RECLoss`` (``combine``) alone, float64: values and
    gradients within 1e-12 on a mask with dropped steps, on one where the generated steps equal
    the targets but one (the CMD's moment gaps near 0, where ``sqrt(‖Δ‖² + 1e-12)`` and ``‖Δ‖``
    part), and on an empty mask (MMSA's loss is then λ·K·1e-6 / 1e-4 = 0.15). With ``norm_eps: 0``
    (the plain norm, which Composer's CMD took before) the last two differ."""
    from composer.blocks._base import Context
    from composer.configs.losses.tfr import TFRReconstructionConfig
    from composer.losses.tfr import TFRReconstructionLoss
    from composer.spec import Spec, sequence

    args = mmsa_config(mmsa)
    recloss = mmsa.loss(args)
    recloss.eps = torch.tensor([1e-4], dtype=torch.float64)  # its FloatTensor([1e-4]) as the float64 1e-4 Composer keeps
    specs = {"pred": sequence(5, 3), "target": sequence(5, 3), "mask": Spec("tokens", ("B", 5), dtype="bool")}
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    dropped = torch.rand(2, 5, generator=gen) < 0.5
    near = target.clone()
    near[0, 1] += 1e-4  # equal but one value, and that step dropped
    cases = {"dropped": (torch.randn(2, 5, 3, generator=gen, dtype=torch.float64), dropped),
             "near": (near, dropped | (torch.arange(5) == 1)[None]), "empty": (target + 1, torch.zeros(2, 5, dtype=torch.bool))}
    for norm_eps, equal in ((1e-12, True), (0.0, False)):
        config = TFRReconstructionConfig.model_validate(
            {"name": "rec", "pred": "p", "target": "t", "mask": "m", "generator": "none", "norm_eps": norm_eps})
        loss = TFRReconstructionLoss(config, specs)
        for case, (generated, mask) in cases.items():
            mine, theirs = generated.clone().requires_grad_(True), generated.clone().requires_grad_(True)
            value = loss({"pred": mine, "target": target, "mask": mask}, Context())
            reference = recloss(theirs, target, mask.double())
            value.backward(), reference.backward()
            gap = max(abs(value.item() - reference.item()), (mine.grad - theirs.grad).abs().max().item())
            if equal:
                assert gap < 1e-12, (case, value.item(), reference.item(), gap)
            elif case != "dropped":  # there the plain norm parts from MMSA's by 1e-12 only
                assert gap > 1e-6, (case, value.item(), reference.item(), gap)
        if equal:
            assert reference.item() == pytest.approx(5.0 * 3 * 1e-6 / 1e-4)  # the empty mask: λ_sim · K · √1e-12 / ε


def test_bert_pad_states_keep_hands_on_berts_states_at_pad_positions():
    """``pad_states: keep`` (the blueprint's, MMSA's): ``seq`` is BERT's last layer everywhere, [PAD]
    positions included; ``zero`` (the block's default) zeroes those and keeps the rest."""
    batch = a_batch(text_padded=True)
    pad = ~batch["text_mask"]
    seq = {}
    for states in ("keep", "zero"):
        ours = composer_model(f"blocks.text_enc.pad_states={states}").eval()
        with torch.no_grad():
            seq[states] = ours(batch)["values"]["text_enc.seq"]
            bert = ours.block("text_enc").bert
            last = bert(input_ids=batch["text"], attention_mask=batch["text_mask"].long(), token_type_ids=batch["text_segment"]).last_hidden_state
    assert pad.any() and bool(seq["keep"][pad].abs().min() > 0)
    torch.testing.assert_close(seq["keep"], last, atol=1e-6, rtol=0)
    torch.testing.assert_close(seq["zero"], last.masked_fill(pad[..., None], 0.0), atol=1e-6, rtol=0)


def test_transposed_transformer_mixes_samples_only_when_its_tokens_are_samples():
    """``tokens: samples`` (MMSA's layout) lets a sample's output depend on the other samples of
    its batch (under the causal mask, the samples before it), ``tokens: features`` does not."""
    from composer.blocks.tfr_net import TransposedTransformer
    from composer.blocks._base import Context
    from composer.configs.tfr_net import TransposedTransformerConfig
    from composer.spec import sequence

    torch.manual_seed(0)
    x = torch.randn(3, 6, 4)
    changed = x.clone()
    changed[0] = torch.randn(6, 4)  # the first sample, which sample 1 attends to when samples are tokens
    for tokens, mixes in (("samples", True), ("features", False)):
        config = TransposedTransformerConfig.model_validate({"in": "x", "length": 6, "heads": 2, "layers": 1, "tokens": tokens, "causal": True})
        block = TransposedTransformer(config, {"in": sequence(6, 4)}).eval()
        with torch.no_grad():
            a, b = block({"in": x}, Context()), block({"in": changed}, Context())
        assert not torch.allclose(a[0], b[0], atol=1e-6)
        assert (not torch.allclose(a[1], b[1], atol=1e-6)) == mixes, tokens


def test_tfr_blocks_refuse_bad_settings_with_the_reason():
    with pytest.raises(BlueprintError, match=r"kernels must be odd.*'audio': 4"):
        composer.load_blueprint(BLUEPRINT, ["blocks.align.kernels={text: 1, audio: 4, vision: 3}"])
    with pytest.raises(BlueprintError, match=r"kernels / attn_dropout name ports \['speech'\]"):
        composer.load_blueprint(BLUEPRINT, ["blocks.align.attn_dropout={speech: 0.1}"])
    with pytest.raises(BlueprintError, match=r"generator 'none' needs equal widths"):
        composer.load_blueprint(BLUEPRINT, ["losses.rec_audio.generator=none"])
    ours = composer_model()
    batch = a_batch(padded=False)
    batch["audio"] = torch.cat([batch["audio"], torch.randn(BATCH, 2, WIDTHS["audio"])], dim=1)  # 2 valid steps beyond length
    batch["audio_lengths"] = torch.full((BATCH,), LENGTHS["audio"] + 2)
    from composer.errors import DataError

    with pytest.raises(DataError, match=r"more than length=8 \(its embedding width\), and some are valid"):
        ours(batch, training_branches=True)


def test_tfr_net_view_rate_is_the_one_robustness_protocols_set():
    """``composer robustness --protocol per_rate`` sets ``training.views.<view>.rate``: the ``missing``
    view reads it for all three modalities, and its masks are nested across rates (``resample: split``)."""
    batch = a_batch()
    masks = {}
    for rate in (0.2, 0.6):
        bp = composer.load_blueprint(BLUEPRINT, [*sizes(), f"training.views.missing.rate={rate}"])
        masks[rate] = make_views(batch, bp, torch.Generator())["missing"]["view_masks"]
    for m in SUFFIX:
        assert (masks[0.2][m] <= masks[0.6][m]).all() and masks[0.6][m].sum() > masks[0.2][m].sum(), m
