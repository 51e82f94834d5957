"""The zoo's MAG-BERT (blueprints/zoo/mag_bert.yaml) equals MMSA 2.2.1's BERT_MAG, per dataset.

MMSA's module is built from its own ``get_config_regression('bert_mag', dataset)`` with a tiny
BERT (``mmsa_oracle.offline_bert``: nothing downloaded) and the datasets' real audio and vision
widths (MOSI 5 / 20, MOSEI 74 / 35); Composer's blueprint with ``--dataset`` and the same BERT
sizes. Every MMSA tensor is copied through the name map ``composer import-weights`` uses
(composer/zoo_import/mag_bert.py), each tensor on both sides once. Then, on a batch whose
sentences have padding (ids 0, mask False, noise in the padded audio and vision steps): equal
parameter counts, predictions within 1e-5 (float32, eval mode) and the gradient of every
parameter within 1e-5. Negative controls: another β, the gate after layer 1 instead of the
embeddings, one perturbed gate weight. Full-size counts (BERT-base) are compared on the meta device.

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

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "mag_bert.yaml"
DATASETS = {"mosi": (5, 20), "mosei": (74, 35)}  # MMSA's (audio, vision) feature_dims of aligned_50
#: the oracle's BERT: TINY_BERT at BERT-base's 512 positions (Composer's size fields leave them) and
#: 128 token ids (the synthetic set writes [CLS] = 101 and [SEP] = 102)
BERT = {**mmsa_oracle.TINY_BERT, "max_position_embeddings": 512, "vocab_size": 128}
SIZES = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
         "intermediate_size": "intermediate_size", "vocab_size": "vocab_size"}
T = 6
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
    loaded = mmsa_oracle.load("MMSA.models.singleTask.BERT_MAG", "MMSA.trains.singleTask.BERT_MAG", "MMSA.config")
    module = loaded["MMSA.models.singleTask.BERT_MAG"]
    module.MAG_BertModel.get_extended_attention_mask = _extended_attention_mask
    module.MAG_BertModel.get_head_mask = _head_mask
    return types.SimpleNamespace(
        module=module, trainer_module=loaded["MMSA.trains.singleTask.BERT_MAG"],
        config=loaded["MMSA.config"].get_config_regression,
    )


def mmsa_config(mmsa, dataset: str, hidden: int = BERT["hidden_size"]):
    config = mmsa.config("bert_mag", dataset)
    config.feature_dims = [hidden, *DATASETS[dataset]]  # MAG's text width is BERT's hidden size
    config.train_mode, config.device = "regression", "cpu"
    return config


def mmsa_module(mmsa, dataset: str, **bert) -> nn.Module:
    sizes = {**BERT, **bert}
    patches = [mock.patch.object(cls, "init_weights", _init_weights)
               for cls in (mmsa.module.MAG_BertModel, mmsa.module.MAG_BertForSequenceClassification)]
    torch.manual_seed(1)
    with mmsa_oracle.offline_bert(**sizes), patches[0], patches[1]:
        module = mmsa.module.BERT_MAG(mmsa_config(mmsa, dataset, sizes["hidden_size"]))
    return module if next(module.parameters()).is_meta else spread(module)


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
    sets += [f"modalities.text.vocab={BERT['vocab_size']}"] + [f"modalities.{m}.length={T}" for m in ("text", "audio", "vision")]
    return sets


def composer_model(dataset: str, *extra: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, [*overrides(dataset), *extra], dataset=dataset))


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def copy_weights(theirs: nn.Module, ours, names: dict[str, str]) -> None:
    """MMSA's tensors into Composer's model through ``names``; every tensor on both sides named once."""
    source, target = theirs.state_dict(), ours.state_dict()
    assert sorted(names) == sorted(source), f"unmapped MMSA tensors: {sorted(set(source) ^ set(names))}"
    assert sorted(names.values()) == sorted(target), f"Composer tensors mapped 0 or 2 times: {sorted(set(target) ^ set(names.values()))}"
    ours.load_state_dict({names[k]: v for k, v in source.items()})


def pair(mmsa, dataset: str, *extra: str):
    theirs, ours = mmsa_module(mmsa, dataset), composer_model(dataset, *extra)
    copy_weights(theirs, ours, NAME_MAPS["mag_bert"](ours))
    ours.eval(), theirs.eval()
    return ours, theirs


def a_batch(dataset: str, batch_size: int = 3, seed: int = 0) -> dict:
    """Sentences of 6, 4 and 3 tokens (ids 0 and mask False after them), random segments, aligned
    audio and vision with noise in the padded steps (BERT's attention mask must keep it out)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 4, 3][:batch_size])
    mask = torch.arange(T)[None] < lengths[:, None]  # (B, T)
    ids = torch.randint(1, BERT["vocab_size"], (batch_size, T), generator=gen).masked_fill(~mask, 0)
    audio, vision = DATASETS[dataset]
    return {
        "text": ids, "text_mask": mask, "text_segment": torch.randint(0, 2, (batch_size, T), generator=gen),
        "audio": torch.randn(batch_size, T, audio, generator=gen), "audio_lengths": lengths,
        "vision": torch.randn(batch_size, T, vision, generator=gen), "vision_lengths": lengths,
        "label": torch.rand(batch_size, generator=gen) * 6 - 3,
    }


def mmsa_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text, audio, vision) as MMSA's loader gives them: ``text_bert`` (B, 3, T) floats."""
    text = torch.stack([batch["text"].float(), batch["text_mask"].float(), batch["text_segment"].float()], dim=1)
    return text, batch["audio"], batch["vision"]


def difference(ours, theirs, batch: dict) -> float:
    with torch.no_grad():
        return (ours(batch)["prediction"] - theirs(*mmsa_inputs(batch))["M"]).abs().max().item()


# -- equality ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_mag_bert_outputs_and_gradients_equal_mmsa_on_padded_batches(mmsa, dataset):
    ours, theirs = pair(mmsa, dataset)
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters())
    config, block = mmsa_config(mmsa, dataset), ours.block("text_enc")
    assert block.gate.beta_shift == config.beta_shift and block.gate.dropout.p == config.dropout_prob
    assert ours.block("drop").config.p == theirs.model.dropout.p  # hidden_dropout_prob before the classifier
    batch = a_batch(dataset)
    prediction, reference = ours(batch)["prediction"], theirs(*mmsa_inputs(batch))["M"]
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
        torch.testing.assert_close(theirs(*mmsa_inputs(longer))["M"], theirs(*mmsa_inputs(batch))["M"], atol=TOLERANCE, rtol=0)
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
    """At BERT-base (MMSA's bert-base-uncased) and the datasets' real widths the counts agree exactly;
    MOSI's 110,705,665 is also the MAGBERT count in GLoMo's Table 5."""
    base = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "max_position_embeddings": 512}
    with torch.device("meta"):
        theirs = mmsa_module(mmsa, dataset, **base)
    ours = estimate_size(composer.load_blueprint(BLUEPRINT, dataset=dataset).plan).model_params
    assert ours == trainable(theirs) == {"mosi": 110_705_665, "mosei": 110_834_689}[dataset]


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


def mmsa_pickle(path: Path, n: int = 6, seed: int = 0) -> None:
    """An MMSA-layout aligned pickle at test size: ``text_bert`` (N, 3, T) ids / mask / segments with
    [CLS] first and padding after, BERT features in ``text``, aligned audio and vision, no lengths."""
    rng = np.random.default_rng(seed)
    audio, vision = DATASETS["mosi"]
    data = {}
    for split in ("train", "valid", "test"):
        lengths = rng.integers(3, T + 1, size=n)
        mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
        ids = rng.integers(1, BERT["vocab_size"], size=(n, T)) * mask
        ids[:, 0] = 2  # the test vocabulary's [CLS]
        data[split] = {
            "text_bert": np.stack([ids, mask, np.zeros((n, T))], axis=1).astype(np.float32),
            "text": rng.standard_normal((n, T, 8)).astype(np.float32),
            "audio": (rng.standard_normal((n, T, audio)) * mask[..., None]).astype(np.float32),
            "vision": (rng.standard_normal((n, T, vision)) * mask[..., None]).astype(np.float32),
            "regression_labels": np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32),
            "id": np.array([f"{split}_{i}" for i in range(n)]),
        }
    path.write_bytes(pickle.dumps(data))


def test_mag_bert_trains_on_synthetic_data(tmp_path):
    bp = composer.load_blueprint(BLUEPRINT, [*overrides("mosi"), "training.data.samples={train: 8, valid: 4, test: 4}", "training.batch_size=4"])
    run = composer.train(bp, out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)


def test_mag_bert_trains_on_an_mmsa_layout_pickle_with_bert_text(tmp_path):
    mmsa_pickle(tmp_path / "mosi.pkl")
    bp = composer.load_blueprint(BLUEPRINT, [*overrides("mosi"), "training.batch_size=3"])
    from composer.data import load_data

    train = load_data(bp, tmp_path / "mosi.pkl")["train"].tensors
    assert train["text"].dtype == torch.long and train["text_mask"].dtype == torch.bool and "text_segment" in train
    run = composer.train(bp, tmp_path / "mosi.pkl", out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)
