"""The zoo's MISA (blueprints/zoo/misa.yaml) equals MMSA 2.2.1's MISA model and its trainer's loss.

MMSA's module is built from its own ``get_config_regression('misa', dataset)`` (its hidden size 128,
the real structure; the feature widths shrunk and BERT made small: ``mmsa_oracle.offline_bert()``,
768 wide since MMSA's ``project_t`` reads 768 features, one layer, a 60-word vocabulary), Composer's
from the blueprint at the same ``--dataset`` with the same BERT, and every tensor is copied through
the import's name map (``composer/zoo_import/misa.py``; each tensor on both sides used once, MMSA's
``sp_discriminator`` and ``tlayer_norm``, which nothing reads, dropped). Checked on padded batches
in eval mode: parameter counts (also at full size on the meta device), the prediction (1e-5), every
term of MMSA's trainer's loss (``get_diff_loss``, ``get_cmd_loss``, ``get_recon_loss``) and the
total ``cls + diff_weight·diff + sim_weight·sim + recon_weight·recon``, the gradient of every
parameter, and the optimiser's learning rate and weight decay of every parameter. MMSA packs audio
and vision with the text's lengths: the ``limit_length`` blocks say so, and their
``padding: include`` option equals MMSA also where a text is longer than the audio. Negative
controls: the LSTM final states in PyTorch's order, a perturbed weight, the default ``padding:
exclude`` where a text is longer than the audio. The blueprint trains on synthetic data and on an
MMSA-layout pickle with ``text_bert`` ``(N, 3, L)``, and MMSA's saved weights import. MMSA's own
``MISA.do_train`` for an epoch and Composer's trainer (``grad_clip_at: backward``, ``grad_accum_tail:
drop``) end at the same weights from the same start; ``grad_clip_at: step`` elsewhere.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from composer.zoo_import import NAME_MAPS, UNUSED, import_mmsa_weights

import mmsa_oracle

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "misa.yaml"
DATASETS = ["mosi", "mosei", "sims"]
TOLERANCE = 1e-5
WIDTHS = {"audio": 3, "vision": 4}
LENGTHS = {"text": 6, "audio": 8, "vision": 7}
BERT_SIZES = {"hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
              "vocab_size": 60, "max_position_embeddings": 512}  # 512: BertConfig's default, as Composer's `bert` builds
TINY = [
    "blocks.text_bert.hidden_size=768", "blocks.text_bert.num_layers=1", "blocks.text_bert.num_heads=2",
    "blocks.text_bert.intermediate_size=37", "blocks.text_bert.vocab_size=60", "modalities.text.vocab=60",
    *(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()), *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
    *(f"blocks.{m}_rnn.hidden={w}" for m, w in WIDTHS.items()),  # MMSA: hidden_sizes = feature_dims
]
AS_MMSA = ["blocks.audio_cut.padding=include", "blocks.vision_cut.padding=include"]


@pytest.fixture(scope="module")
def mmsa():
    return mmsa_oracle.model_and_trainer("singleTask", "MISA")


# -- building both sides -------------------------------------------------------------------------


def mmsa_config(mmsa, dataset: str, widths=(WIDTHS["audio"], WIDTHS["vision"])):
    config = mmsa.config("misa", dataset)
    config.update(feature_dims=[768, *widths], train_mode="regression", device="cpu")
    return config


def mmsa_module(mmsa, dataset: str) -> nn.Module:
    torch.manual_seed(1)
    with mmsa_oracle.offline_bert(**BERT_SIZES):
        return mmsa.model(mmsa_config(mmsa, dataset))


def composer_model(dataset: str, *overrides: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, [*TINY, *overrides], dataset=dataset))


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def unused(name: str) -> bool:
    return name.startswith(UNUSED["misa"])


def copy_weights(theirs: nn.Module, ours, names: dict) -> None:
    """MMSA's tensors into Composer's model through ``names``: every MMSA tensor named once (the
    unused ones mapped to None), every Composer tensor filled once."""
    assert all((names[k] is None) == unused(k) for k in names), "only MMSA's unused tensors map to None"
    mmsa_oracle.copy_through_map(theirs.state_dict(), ours, names)


def pair(mmsa, dataset: str, *overrides: str):
    theirs, ours = mmsa_module(mmsa, dataset), composer_model(dataset, *overrides)
    copy_weights(theirs, ours, NAME_MAPS["misa"](ours))
    return ours.eval(), theirs.eval()


def a_batch(text=(6, 4, 3), audio=(8, 5, 4), vision=(7, 4, 3), seed: int = 0) -> dict:
    """Three samples with padding in every modality; padded feature steps hold noise (MMSA reads
    none of it while each text is no longer than the audio and vision), padded tokens are 0."""
    gen = torch.Generator().manual_seed(seed)
    B, T = len(text), LENGTHS["text"]
    text_len = torch.tensor(text)
    mask = torch.arange(T)[None] < text_len[:, None]
    ids = torch.randint(3, 60, (B, T), generator=gen).masked_fill(~mask, 0)
    ids[:, 0] = 1
    segments = (torch.rand(B, T, generator=gen) > 0.5).long().masked_fill(~mask, 0)
    batch = {"text": ids, "text_mask": mask, "text_segment": segments, "label": torch.randn(B, generator=gen)}
    for m, lengths in (("audio", audio), ("vision", vision)):
        batch[m] = torch.randn(B, LENGTHS[m], WIDTHS[m], generator=gen)
        batch[f"{m}_lengths"] = torch.tensor(lengths)
    return batch


def mmsa_inputs(batch: dict):
    """(text, audio, vision) as MMSA's loader gives them: text_bert (B, 3, L) of ids, mask, segments."""
    text = torch.stack([batch["text"].float(), batch["text_mask"].float(), batch["text_segment"].float()], dim=1)
    return text, batch["audio"], batch["vision"]


def mmsa_trainer(mmsa, dataset: str, theirs: nn.Module):
    trainer = mmsa.trainer(mmsa_config(mmsa, dataset))  # the trainer's own criterion, DiffLoss, MSE, CMD
    trainer.model = types.SimpleNamespace(Model=theirs)  # get_*_loss read the model under AMIO's `Model`
    return trainer


def mmsa_loss(mmsa, dataset: str, theirs: nn.Module, prediction: torch.Tensor, batch: dict):
    """The terms and the total of MMSA's ``do_train`` for one batch (use_cmd_sim: the CMD)."""
    trainer = mmsa_trainer(mmsa, dataset, theirs)
    args = trainer.args
    assert args.use_cmd_sim and trainer.get_domain_loss() == 0.0
    terms = {"task": trainer.criterion(prediction, batch["label"].view(-1, 1)), "diff": trainer.get_diff_loss(),
             "sim": trainer.get_cmd_loss(), "recon": trainer.get_recon_loss()}
    total = terms["task"] + args.diff_weight * terms["diff"] + args.sim_weight * terms["sim"] + args.recon_weight * terms["recon"]
    return terms, total


def composer_terms(parts: dict) -> dict:
    """Composer's named loss terms, gathered as MMSA's trainer groups them."""
    return {"task": parts["task"], "diff": sum(parts[k] for k in parts if k.startswith("diff_")),
            "sim": sum(parts[k] for k in ("cmd_tv", "cmd_ta", "cmd_av")) / 3,
            "recon": sum(parts[k] for k in ("recon_t", "recon_v", "recon_a")) / 3}


# -- equality ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_misa_prediction_losses_and_gradients_equal_mmsa_on_padded_batches(mmsa, dataset):
    ours, theirs = pair(mmsa, dataset)
    dropped = sum(p.numel() for n, p in theirs.named_parameters() if unused(n))
    assert dropped == 4 * 128 + 4 + 2 * 2 * 768  # sp_discriminator Linear(128, 4), tlayer_norm LayerNorm(1536)
    assert trainable(ours) == trainable(theirs) - dropped
    batch = a_batch()
    mine = ours(batch, training_branches=True)
    reference = theirs(*mmsa_inputs(batch))["M"]
    assert mine["prediction"].shape == reference.shape == (3, 1)
    torch.testing.assert_close(mine["prediction"], reference, atol=TOLERANCE, rtol=0)
    total, parts = ours.compute_loss({"main": mine}, {"main": batch})
    terms, expected = mmsa_loss(mmsa, dataset, theirs, reference, batch)
    for key, value in composer_terms(parts).items():
        torch.testing.assert_close(value, terms[key].detach(), atol=TOLERANCE, rtol=1e-5, msg=lambda m: f"{key}: {m}")
    torch.testing.assert_close(total, expected, atol=TOLERANCE, rtol=1e-5)
    total.backward()
    expected.backward()
    twins, params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    compared = 0
    for mmsa_name, mine_name in NAME_MAPS["misa"](ours).items():
        if mine_name is None:
            assert twins[mmsa_name].grad is None  # nothing reads them
            continue
        grad, reference_grad = params[mine_name].grad, twins[mmsa_name].grad
        if reference_grad is None:  # BERT's pooler: computed, never read
            assert grad is None and ".pooler." in mine_name, mine_name
            continue
        torch.testing.assert_close(grad, reference_grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{mine_name}: {m}")
        compared += 1
    assert compared == len(params) - 2  # all but the pooler's weight and bias


def test_misa_text_longer_than_audio_equals_mmsa_with_padding_include_only(mmsa):
    """MMSA packs audio and vision with the text's lengths; where a text is longer than the audio's
    valid steps it reads the audio's padding. ``padding: include`` does the same; the default stops
    at the audio's own length (padding invariant) and so differs there, and only there."""
    longer = a_batch(text=(6, 5, 3), audio=(8, 3, 2), vision=(7, 5, 3))
    ours, theirs = pair(mmsa, "mosi", *AS_MMSA)
    with torch.no_grad():
        reference = theirs(*mmsa_inputs(longer))["M"]
        torch.testing.assert_close(ours(longer)["prediction"], reference, atol=TOLERANCE, rtol=0)
        default, _ = pair(mmsa, "mosi")
        differs = (default(longer)["prediction"] - reference).abs()[:, 0]
    assert differs[0] < TOLERANCE and differs[1] > TOLERANCE and differs[2] > TOLERANCE  # sample 0's text fits its audio


def test_misa_negative_control_final_states_in_pytorchs_order(mmsa):
    """MMSA joins the final states as [h1_fwd; h2_fwd; h1_bwd; h2_bwd]; PyTorch's [h1_fwd; h1_bwd; h2_fwd; h2_bwd] differs."""
    ours, theirs = pair(mmsa, "mosi", "blocks.audio_rnn.final.in=[h1.fwd, h1.bwd, h2.fwd, h2.bwd]")
    batch = a_batch()
    with torch.no_grad():
        difference = (ours(batch)["prediction"] - theirs(*mmsa_inputs(batch))["M"]).abs().max().item()
    assert difference > TOLERANCE


def test_misa_negative_control_a_perturbed_weight_breaks_the_equality(mmsa):
    ours, theirs = pair(mmsa, "mosi")
    batch = a_batch()
    with torch.no_grad():
        ours.block("shared_t_lin").linear.weight[:, 0] += 0.5  # the shared encoder: every term reads it
        mine, reference = ours(batch, training_branches=True), theirs(*mmsa_inputs(batch))["M"]
        assert (mine["prediction"] - reference).abs().max().item() > TOLERANCE
        total, parts = ours.compute_loss({"main": mine}, {"main": batch})
        terms, expected = mmsa_loss(mmsa, "mosi", theirs, reference, batch)
    assert abs(float(total - expected)) > TOLERANCE
    for key in ("diff", "sim", "recon"):
        assert abs(float(composer_terms(parts)[key] - terms[key])) > 1e-3 * abs(float(terms[key])), key


@pytest.mark.parametrize("dataset", DATASETS)
def test_misa_full_size_parameter_counts(mmsa, dataset):
    """At the real widths (BERT-base; bert-base-chinese's 21128 words for sims) the counts agree:
    MMSA's minus its unused sp_discriminator and tlayer_norm (MMSA's module built on the meta device)."""
    from composer.configs.text import BERT_BASE
    from composer.graph.size import estimate_size

    widths = {"mosi": (5, 20), "mosei": (74, 35), "sims": (33, 709)}[dataset]
    base = {**BERT_BASE, "vocab_size": 21128 if dataset == "sims" else 30522}
    with torch.device("meta"), mmsa_oracle.offline_bert(**base):
        theirs = mmsa.model(mmsa_config(mmsa, dataset, widths=widths))
    dropped = sum(p.numel() for n, p in theirs.named_parameters() if unused(n))
    size = estimate_size(composer.load_blueprint(BLUEPRINT, dataset=dataset).plan)
    assert size.model_params + size.training_params == trainable(theirs) - dropped
    assert size.training_params == 3 * (128 * 128 + 128)  # the reconstruction decoders


def test_misa_optimiser_settings_of_every_parameter_are_mmsas(mmsa, monkeypatch):
    """MMSA: ``optim.Adam(filter(requires_grad, model.parameters()), lr=learning_rate)`` (no weight
    decay, although mosei and sims configure one); Composer's optimiser: the same for every parameter."""
    from composer.train.optim import build_optimizer

    for dataset in DATASETS:
        theirs = mmsa_module(mmsa, dataset)
        seen = {}

        class Built(Exception):
            pass

        def record(params, lr, weight_decay=0.0):
            seen.update({id(p): (lr, weight_decay) for p in params})
            raise Built

        monkeypatch.setattr(mmsa.trainer_module, "optim", types.SimpleNamespace(Adam=record))
        trainer = mmsa_trainer(mmsa, dataset, theirs)
        with pytest.raises(Built):
            trainer.do_train(theirs, {"train": []})
        assert len(seen) == len(list(theirs.parameters()))
        ours = composer_model(dataset)
        optimizer = build_optimizer(ours, ours.blueprint.training)
        mine = {(g["lr"], g["weight_decay"]) for g in optimizer.param_groups if g["params"]}
        assert mine == set(seen.values()) == {(1e-4, 0.0)}, dataset


def test_misa_training_settings_are_mmsas(mmsa):
    """Batch size, gradient clipping by value, a step every update_epochs batches on the summed
    gradients, early stopping on the validation loss, and the loss weights, per dataset."""
    for dataset in DATASETS:
        args = mmsa_config(mmsa, dataset)
        bp = composer.load_blueprint(BLUEPRINT, dataset=dataset).blueprint
        t = bp.training
        assert (t.batch_size, t.lr, t.grad_clip_value, t.grad_accum, t.grad_accum_reduction, t.early_stop) == (
            args.batch_size, args.learning_rate, args.grad_clip, args.update_epochs, "sum", args.early_stop)
        assert t.grad_clip is None and t.weight_decay == 0 and args.KeyEval == "Loss"
        assert (t.monitor.metric, t.monitor.direction) == ("loss/task", "minimize")  # do_test's loss: the criterion alone
        assert bp.loss_groups == {"similarity": args.sim_weight, "difference": args.diff_weight, "reconstruction": args.recon_weight}
        assert bp.blocks["head"].dropout == args.dropout and args.hidden_size == bp.vars["d"]


# -- importing MMSA's weights --------------------------------------------------------------------


def test_misa_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    """``composer import-weights`` reads MISA's saved state dict (``Model.`` names, its unused
    sp_discriminator and tlayer_norm included and dropped) and predicts as MMSA's module does."""
    theirs = mmsa_module(mmsa, "mosei")
    path = tmp_path / "misa-mosei.pth"
    torch.save({f"Model.{k}": v for k, v in theirs.state_dict().items()}, path)
    ours = composer.load_model(import_mmsa_weights(path, BLUEPRINT, tmp_path / "w.safetensors", dataset="mosei", overrides=TINY))
    ours.eval(), theirs.eval()
    batch = a_batch(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(ours(batch)["prediction"], theirs(*mmsa_inputs(batch))["M"], atol=TOLERANCE, rtol=0)


# -- training ------------------------------------------------------------------------------------


def misa_pickle(path: Path, n: int = 6, seed: int = 0) -> None:
    """An MMSA-layout pickle at test widths: unaligned, BERT tokens in ``text_bert`` (N, 3, L)."""
    mmsa_oracle.write_bert_pickle(path, LENGTHS, WIDTHS, n=n, seed=seed)


def small(*overrides: str):
    """At test size; a vocabulary of 200 holds the synthetic set's [CLS] (101) and [SEP] (102)."""
    sizes = ["vars.d=8", "blocks.transformer.ff_dim=16", "blocks.text_bert.vocab_size=200", "modalities.text.vocab=200"]
    return composer.load_blueprint(BLUEPRINT, [*TINY, *sizes, *overrides])


def test_misa_trains_on_synthetic_data(tmp_path):
    run = composer.train(small("training.data.samples={train: 8, valid: 4, test: 4}", "training.batch_size=4"),
                         out=tmp_path / "run", epochs=1, progress=False)
    text = str(run.summary)
    assert all(f"loss/{name}" in text for name in ("task", "cmd_tv", "diff_tv", "recon_a")), text[:500]


def test_misa_trains_on_an_mmsa_layout_pickle(tmp_path):
    misa_pickle(tmp_path / "mosi.pkl")
    run = composer.train(small("training.batch_size=4"), tmp_path / "mosi.pkl", out=tmp_path / "run", epochs=1, progress=False)
    assert "mae" in str(run.summary)


def test_misa_training_equals_mmsas_trainer_with_clipping_biting(mmsa, tmp_path, monkeypatch):
    """MMSA's own ``MISA.do_train`` (trains/singleTask/MISA.py: the loss cls + diff_weight·diff +
    sim_weight·cmd + recon_weight·recon, ``clip_grad_value_`` after every backward, a step every
    ``update_epochs`` batches, an epoch's incomplete group never stepped) for one epoch, against
    Composer's trainer on the zoo blueprint at ``--dataset mosi`` (test sizes, every dropout 0, text
    no longer than audio and vision so ``padding: include`` and MMSA read the same steps) from the same
    weights on the same batches in the same order, both with plain SGD (``mmsa_oracle.mmsa_one_epoch``):
    threshold 0.02, 7 batches in groups of 2 (3 steps, a dropped tail). ``grad_clip_at: backward``
    ends at MMSA's weights; the negative control ``step`` (one clip before each step) elsewhere."""
    misa_pickle(tmp_path / "mosi.pkl", n=14)
    settings = ["blocks.transformer.dropout=0.0", "blocks.head.dropout=0.0", "training.grad_clip_value=0.02",
                "training.epochs=1", "training.cpu_threads=1", "training.optimizer=sgd", "training.momentum=0.0", "training.lr=0.1",
                "training.batch_size=2"]

    theirs = mmsa_module(mmsa, "mosi")
    mmsa_oracle.no_dropout(theirs)
    for module in theirs.modules():  # nn.TransformerEncoderLayer's attention keeps its rate as a float
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    start = {k: v.clone() for k, v in theirs.state_dict().items()}

    def composer_weights(at: str):
        bp = composer.load_blueprint(BLUEPRINT, [*TINY, *AS_MMSA, *settings, f"training.grad_clip_at={at}"], dataset="mosi")
        names = NAME_MAPS["misa"](composer.compile_blueprint(bp))  # head dropout 0: the head's layers renumbered
        return mmsa_oracle.trained_from(bp, start, names, tmp_path / at, tmp_path / "mosi.pkl", monkeypatch, prepare=mmsa_oracle.no_dropout), bp

    ours, bp = composer_weights("backward")
    cfg = bp.training
    assert cfg.reinit is None and cfg.grad_accum_tail == "drop" and cfg.grad_accum == 2 and cfg.grad_accum_reduction == "sum"

    batches = mmsa_oracle.epoch_batches(bp, tmp_path / "mosi.pkl", lambda b: mmsa_inputs(b)[0])
    assert len(batches) == 7
    args = mmsa_config(mmsa, "mosi")
    assert (args.update_epochs, args.diff_weight, args.sim_weight, args.recon_weight) == (2, 0.1, 0.3, 1.0)  # MMSA's mosi weights, unchanged
    args.update(grad_clip=cfg.grad_clip_value, learning_rate=cfg.lr, KeyEval="Loss")

    class AMIO(nn.Module):  # MMSA's wrapper: the trainer's loss terms read the model's `Model`
        def __init__(self, model):
            super().__init__()
            self.Model = model

        def forward(self, *inputs):
            return self.Model(*inputs)

    mmsa_oracle.mmsa_one_epoch(mmsa, args, AMIO(theirs), batches, monkeypatch)
    reference = theirs.state_dict()
    moved = [k for k in ours if not torch.equal(reference[k], start[k])]
    assert len(moved) > len(ours) // 2  # MMSA's three steps moved the weights
    worst = max((ours[k] - reference[k]).abs().max().item() for k in ours)
    assert worst < TOLERANCE, worst
    once, _ = composer_weights("step")  # negative control: one clip before the step ends elsewhere
    assert max((once[k] - reference[k]).abs().max().item() for k in once) > 10 * TOLERANCE
