"""The zoo's generative and translation baselines equal MMSA 2.2.1's: MFM (blueprints/zoo/mfm.yaml)
and MCTN (blueprints/zoo/mctn.yaml, at the end of this file).

MMSA's module is built from its own ``get_config_regression('mfm', dataset)`` (feature widths
shrunk, every other setting as shipped, mosi, mosei and sims at their real structure) and Composer's
blueprint with ``--dataset``; on CH-SIMS (unaligned: each modality its own length) MMSA's side runs
AMIO's ``AlignSubNet(config, "avg_pool")`` before the model (need_model_aligned) and Composer's the
``align`` blocks; every MMSA tensor is copied through the name map that
``composer import-weights`` uses (composer/zoo_import/generative.py), each tensor on both sides
used once. On a padded batch in evaluation mode: equal trainable parameter counts (MMSA's are
larger by exactly its MFN's unused output layers), predictions within 1e-5, the total training
loss of MMSA's trainer (L1 + the weighted reconstructions + λ_mmd · the four MMDs, the same
prior samples from one seed) within 1e-5, and the gradient of every parameter within 1e-5.
Composer masks padding where MMSA reads it, so the equality runs Composer's MMSA options
(``packed: false`` encoders, ``padding: include`` MFN and decoders). Negative controls break it.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import composer
from composer.zoo_import import UNUSED, import_mmsa_weights
from composer.zoo_import.generative import NAME_MAPS
from composer.graph.size import estimate_size

import mmsa_oracle
from mmsa_oracle import trainable

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "blueprints" / "zoo"
WIDTHS = {"text": 6, "audio": 3, "vision": 4}  # MMSA's feature_dims order (text, audio, vision)
STEPS = 5  # the one (aligned) time axis
VALID = [5, 3, 4]  # valid steps per sample of the padded batch
SIMS_STEPS = {"text": 5, "audio": 9, "vision": 7}  # CH-SIMS unaligned at test size (MMSA's seq_lens order)
SIMS_VALID = {"text": [5, 4, 3], "audio": [9, 6, 2], "vision": [7, 3, 5]}
DATASETS = ["mosi", "mosei", "sims"]
TOLERANCE = 1e-5
MODALITIES = ("text", "audio", "vision")
MFM_AS_MMSA = [  # Composer reading padding as MMSA does
    *[f"blocks.{m}_factor.packed=false" for m in MODALITIES],
    *[f"blocks.{m}_decoder.padding=include" for m in MODALITIES],
    "blocks.memory.padding=include",
    "blocks.align_audio.padding=include", "blocks.align_vision.padding=include",  # AlignSubNet on padded lengths
]


@pytest.fixture(scope="module")
def mmsa():
    return load_mmsa()


def load_mmsa() -> types.SimpleNamespace:
    """MMSA's MFM and MCTN, AMIO's aligner, MFM's trainer module and ``get_config_regression``
    (also scripts/bench_mmsa.py's oracle)."""
    loaded = mmsa_oracle.load("MMSA.models.singleTask.MFM", "MMSA.trains.singleTask.MFM", "MMSA.models.singleTask.MCTN",
                              "MMSA.models.subNets.AlignNets", "MMSA.config")
    return types.SimpleNamespace(
        MFM=loaded["MMSA.models.singleTask.MFM"].MFM,
        MCTN=loaded["MMSA.models.singleTask.MCTN"].MCTN,
        AlignSubNet=loaded["MMSA.models.subNets.AlignNets"].AlignSubNet,
        trainer=loaded["MMSA.trains.singleTask.MFM"],
        config=loaded["MMSA.config"].get_config_regression,
    )


# -- building both sides -------------------------------------------------------------------------


def mmsa_config(mmsa, dataset: str):
    config = mmsa.config("mfm", dataset)
    config.feature_dims = [WIDTHS[m] for m in MODALITIES]
    # aligned: AMIO's avg_pool aligner is the identity at one length; CH-SIMS: the data's own lengths
    config.seq_lens = [SIMS_STEPS[m] for m in MODALITIES] if dataset == "sims" else [STEPS] * 3
    config.train_mode, config.device = "regression", "cpu"
    return config


def mmsa_mfm(mmsa, dataset: str, config=None) -> nn.Module:
    """MMSA's MFM as AMIO builds it: ``AlignSubNet(args, "avg_pool")`` first (no tensors; ``seq_lens``
    becomes its length), kept beside the model as ``aligner`` (not a submodule: the state dict is MFM's).
    ``config``: MMSA's configuration as given (default: :func:`mmsa_config`'s test sizes)."""
    config = mmsa_config(mmsa, dataset) if config is None else config
    aligner = mmsa.AlignSubNet(config, "avg_pool")
    config.seq_lens = aligner.get_seq_len()
    torch.manual_seed(1)
    module = mmsa.MFM(config)
    object.__setattr__(module, "aligner", aligner)
    return module


def mmsa_forward(theirs: nn.Module, batch: dict):
    """AMIO.forward: the aligner, then the model."""
    return theirs(*theirs.aligner(batch["text"], batch["audio"], batch["vision"]))


def size_overrides(dataset: str = "mosi") -> list[str]:
    steps = SIMS_STEPS if dataset == "sims" else dict.fromkeys(MODALITIES, STEPS)
    return [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()] + [f"modalities.{m}.length={steps[m]}" for m in MODALITIES]


def composer_mfm(dataset: str, *overrides: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(ZOO / "mfm.yaml", [*size_overrides(dataset), *overrides], dataset=dataset))



def unused_count(theirs: nn.Module) -> int:
    return sum(v.numel() for k, v in theirs.state_dict().items() if k.startswith(UNUSED["mfm"]))


def copy_weights(theirs: nn.Module, ours, names: dict[str, str | None]) -> None:
    """MMSA's tensors into Composer's model through ``names``; every tensor on both sides named once
    (None: MMSA's unused MFN output layers, which have no Composer counterpart)."""
    source, target = theirs.state_dict(), ours.state_dict()
    assert sorted(names) == sorted(source), f"unmapped MMSA tensors: {sorted(set(source) ^ set(names))}"
    assert all(k.startswith(UNUSED["mfm"]) for k, v in names.items() if v is None)
    used = [v for v in names.values() if v is not None]
    assert sorted(used) == sorted(target), f"Composer tensors mapped 0 or 2 times: {sorted(set(target) ^ set(used))}"
    ours.load_state_dict({names[k]: v for k, v in source.items() if names[k] is not None})


def pair(mmsa, dataset: str, *overrides: str):
    theirs, ours = mmsa_mfm(mmsa, dataset), composer_mfm(dataset, *overrides)
    copy_weights(theirs, ours, NAME_MAPS["mfm"](ours))
    return ours.eval(), theirs.eval()


def a_batch(valid: list[int] | dict[str, list[int]] = VALID, seed: int = 3, dataset: str = "mosi") -> dict:
    """Sequences padded with zeros after each sample's valid steps (MMSA's pickles): aligned (one
    length, ``valid`` a list), or on CH-SIMS each modality its own length (``valid`` per modality)."""
    gen = torch.Generator().manual_seed(seed)
    steps = SIMS_STEPS if dataset == "sims" else dict.fromkeys(MODALITIES, STEPS)
    valid = valid if isinstance(valid, dict) else dict.fromkeys(MODALITIES, valid)
    batch = {}
    for m, w in WIDTHS.items():
        lengths = torch.tensor(valid[m])
        mask = (torch.arange(steps[m])[None] < lengths[:, None])[..., None]
        batch[m], batch[f"{m}_lengths"] = torch.randn(len(lengths), steps[m], w, generator=gen) * mask, lengths
    batch["label"] = torch.rand(len(valid["text"]), generator=gen) * 6 - 3
    return batch


def padded(dataset: str) -> dict:
    """The test's padded batch: aligned (mosi, mosei), or unaligned with each modality's own padding (sims)."""
    return a_batch(SIMS_VALID, dataset="sims") if dataset == "sims" else a_batch()


def full(dataset: str) -> dict:
    """A batch without padding: every sample at each modality's padded length."""
    steps = SIMS_STEPS if dataset == "sims" else dict.fromkeys(MODALITIES, STEPS)
    return a_batch({m: [steps[m]] * 3 for m in MODALITIES}, dataset=dataset)


def mmsa_loss(config, theirs: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """MMSA's trainer's step (trains/singleTask/MFM.py): ``disc_loss + gen_loss + lda_mmd · mmd_loss``."""
    pred, gen_loss, mmd_loss, missing_loss = mmsa_forward(theirs, batch)
    pred = pred.squeeze(1)
    loss = F.l1_loss(pred, batch["label"].view(-1, 1).squeeze()) + gen_loss + config.lda_mmd * mmd_loss + missing_loss
    return pred, loss


def our_loss(ours, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    outputs = ours(batch, training_branches=True)
    total, _ = ours.compute_loss({"main": outputs}, {"main": batch})
    return outputs["prediction"].squeeze(1), total


def compare(mmsa, ours, theirs, dataset: str, batch: dict) -> tuple[float, float]:
    """(max prediction difference, loss difference) with the same prior samples (one seed each)."""
    torch.manual_seed(7)
    reference, their_total = mmsa_loss(mmsa_config(mmsa, dataset), theirs, batch)
    torch.manual_seed(7)
    prediction, total = our_loss(ours, batch)
    return (prediction - reference).abs().max().item(), (total - their_total).abs().item(), total, their_total


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_mfm_prediction_loss_and_gradients_equal_mmsa_on_padded_batches(mmsa, dataset):
    ours, theirs = pair(mmsa, dataset, *MFM_AS_MMSA)
    assert unused_count(theirs) > 0 and trainable(ours) == trainable(theirs) - unused_count(theirs)
    batch = padded(dataset)
    assert all((batch[f"{m}_lengths"] < batch[m].shape[1]).any() for m in MODALITIES)
    if dataset == "sims":  # unaligned: the aligners average (audio 9 -> 5 steps, vision 7 -> 5)
        assert len({batch[m].shape[1] for m in MODALITIES}) == 3
    prediction_gap, loss_gap, total, their_total = compare(mmsa, ours, theirs, dataset, batch)
    assert prediction_gap < TOLERANCE and loss_gap < TOLERANCE, (prediction_gap, loss_gap)
    total.backward(), their_total.backward()
    twins, params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    for mmsa_name, name in NAME_MAPS["mfm"](ours).items():
        if name is None:  # the MFN's output layers: never read, no gradient in MMSA either
            assert twins[mmsa_name].grad is None
            continue
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
        torch.testing.assert_close(params[name].grad, twins[mmsa_name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_mfm_negative_controls_break_the_equality(mmsa):
    # the decoder's code read as [f_l; f_y] instead of [f_y; f_l]: same widths, other loss
    swapped = "blocks.text_decoder.in={discriminative: text_factor, generative: discriminative, x: text}"
    ours, theirs = pair(mmsa, "mosi", *MFM_AS_MMSA, swapped)
    prediction_gap, loss_gap, *_ = compare(mmsa, ours, theirs, "mosi", a_batch())
    assert prediction_gap < TOLERANCE and loss_gap > TOLERANCE
    # one perturbed weight of the discriminative factor: another prediction
    ours, theirs = pair(mmsa, "mosi", *MFM_AS_MMSA)
    with torch.no_grad():
        ours.block("discriminative/z").linear.weight[0, 0] += 0.5
    prediction_gap, loss_gap, *_ = compare(mmsa, ours, theirs, "mosi", a_batch())
    assert prediction_gap > TOLERANCE and loss_gap > TOLERANCE
    # other prior samples: the MMD terms differ
    ours, theirs = pair(mmsa, "mosi", *MFM_AS_MMSA)
    torch.manual_seed(7)
    _, their_total = mmsa_loss(mmsa_config(mmsa, "mosi"), theirs, a_batch())
    torch.manual_seed(8)
    assert (our_loss(ours, a_batch())[1] - their_total).abs() > TOLERANCE


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_mfm_default_masks_padding_and_equals_mmsa_without_padding(mmsa, dataset):
    ours, theirs = pair(mmsa, dataset)
    prediction_gap, loss_gap, *_ = compare(mmsa, ours, theirs, dataset, full(dataset))
    assert prediction_gap < TOLERANCE and loss_gap < TOLERANCE
    prediction_gap, loss_gap, *_ = compare(mmsa, ours, theirs, dataset, padded(dataset))
    assert prediction_gap > TOLERANCE and loss_gap > TOLERANCE
    if dataset == "sims":  # negative control: the aligners masked, everything else as MMSA
        ours, theirs = pair(mmsa, "sims", *[o for o in MFM_AS_MMSA if not o.startswith("blocks.align_")])
        prediction_gap, loss_gap, *_ = compare(mmsa, ours, theirs, "sims", padded("sims"))
        assert prediction_gap > TOLERANCE and loss_gap > TOLERANCE


def test_mfm_full_size_parameter_counts(mmsa):
    """At MOSI's, MOSEI's and CH-SIMS' real widths the counts agree, MMSA's MFN output layers aside
    (CH-SIMS: 768 / 33 / 709, aligned to the text's 39 steps; AlignSubNet's avg_pool has no tensors)."""
    for dataset, widths in (("mosi", [300, 5, 20]), ("mosei", [300, 74, 35]), ("sims", [768, 33, 709])):
        config = mmsa.config("mfm", dataset)
        config.feature_dims, config.train_mode, config.device = widths, "regression", "cpu"
        with torch.device("meta"):
            theirs = mmsa.MFM(config)
        size = estimate_size(composer.load_blueprint(ZOO / "mfm.yaml", dataset=dataset).plan)
        assert size.model_params + size.training_params == trainable(theirs) - unused_count(theirs), dataset
        assert (size.model_params, size.training_params, trainable(theirs)) == FULL_SIZE[dataset]


FULL_SIZE = {  # inference, training-only (Composer); MMSA's count (docs/zoo.md)
    "mosi": (490_129, 475_861, 1_011_303), "mosei": (3_959_871, 899_113, 5_015_145), "sims": (655_601, 2_788_214, 3_478_888),
}


def test_mfm_optimiser_settings_are_mmsas(mmsa, monkeypatch):
    """MMSA's trainer: ``Adam(model.parameters(), weight_decay=...)``, its lr Adam's default 1e-3."""
    from composer.train.optim import build_optimizer

    class Built(Exception):
        pass

    seen = {}

    def record(params, lr=1e-3, weight_decay=0.0):
        seen.update((id(p), (lr, weight_decay)) for p in params)
        raise Built

    monkeypatch.setattr(mmsa.trainer, "optim", types.SimpleNamespace(Adam=record))
    for dataset in DATASETS:
        theirs, trainer = mmsa_mfm(mmsa, dataset), object.__new__(mmsa.trainer.MFM)
        trainer.args = mmsa_config(mmsa, dataset)
        with pytest.raises(Built):
            trainer.do_train(theirs, {"train": []})
        ours = composer_mfm(dataset)
        optimizer = build_optimizer(ours, ours.blueprint.training)
        mine = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
        params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
        for mmsa_name, name in NAME_MAPS["mfm"](ours).items():
            if name is not None:
                assert mine[id(params[name])] == pytest.approx(seen[id(twins[mmsa_name])]), (dataset, name)


class AMIO(nn.Module):
    """MMSA's AMIO wrapper as its trainers save it: the model under ``Model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.Model = model


def test_mfm_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    theirs = mmsa_mfm(mmsa, "mosei").eval()
    torch.save(AMIO(theirs).state_dict(), tmp_path / "mfm-mosei.pth")
    sizes = size_overrides()
    out = import_mmsa_weights(tmp_path / "mfm-mosei.pth", ZOO / "mfm.yaml", tmp_path / "w.safetensors", dataset="mosei",
                              overrides=[*sizes, *MFM_AS_MMSA])
    ours = composer.load_model(out).eval()
    batch = a_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(batch)["prediction"].squeeze(1), mmsa_forward(theirs, batch)[0].squeeze(1),
                                   atol=TOLERANCE, rtol=0)
    # a file without the MFN's (unused) output layers is not a file MMSA writes: refused, naming them
    state = {k: v for k, v in AMIO(theirs).state_dict().items() if "out_fc1" not in k}
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(composer.errors.DataError, match=r"missing 2 tensor\(s\).*mfn_encoder.out_fc1.bias"):
        import_mmsa_weights(tmp_path / "cut.pth", ZOO / "mfm.yaml", tmp_path / "x.safetensors", dataset="mosei",
                            overrides=[*sizes, *MFM_AS_MMSA])


# -- training ------------------------------------------------------------------------------------


def small(*overrides: str, dataset: str = "mosi"):
    tiny = ["blocks.memory.hidden=[8, 4, 8]", "blocks.memory.memory=8", "vars.fy=8", "blocks.discriminative.code=8",
            *[f"blocks.{m}_factor.code=8" for m in MODALITIES], *[f"blocks.{m}_factor.width=8" for m in MODALITIES],
            "blocks.memory.update_hidden=8", "training.batch_size=4"]
    return composer.load_blueprint(ZOO / "mfm.yaml", [*size_overrides(dataset), *tiny, *overrides], dataset=dataset)


def aligned_pickle(path: Path, n: int = 8, seed: int = 0, widths: dict[str, int] = WIDTHS) -> None:
    """An MMSA-layout aligned pickle (MOSI's aligned_50 at test size): one length for every modality."""
    rng = np.random.default_rng(seed)
    data = {}
    for split in ("train", "valid", "test"):
        d = {m: rng.standard_normal((n, STEPS, w)).astype(np.float32) for m, w in widths.items()}
        lengths = rng.integers(2, STEPS + 1, size=n)
        for m in ("text", "audio", "vision"):
            d[m][np.arange(STEPS)[None] >= lengths[:, None]] = 0.0
        d["audio_lengths"] = lengths.tolist()
        d["vision_lengths"] = lengths.tolist()
        d["regression_labels"] = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    path.write_bytes(pickle.dumps(data))


def test_mfm_trains_on_synthetic_data_and_on_an_mmsa_layout_pickle(tmp_path):
    run = composer.train(small("training.data.samples={train: 8, valid: 4, test: 4}"), out=tmp_path / "synthetic", epochs=1, progress=False)
    assert "loss/mmd_y" in str(run.summary) and "loss/recon_audio" in str(run.summary), str(run.summary)[:400]
    aligned_pickle(tmp_path / "aligned.pkl")
    run = composer.train(small(*MFM_AS_MMSA), tmp_path / "aligned.pkl", out=tmp_path / "pickle", epochs=1, progress=False)
    assert "loss/mmd_text" in str(run.summary)


def unaligned_pickle(path: Path, n: int = 4, seed: int = 0) -> None:
    """An MMSA-layout CH-SIMS pickle (unaligned_39 at test size): each modality its own length,
    audio and vision with their valid lengths."""
    rng = np.random.default_rng(seed)
    data = {}
    for split in ("train", "valid", "test"):
        d = {m: rng.standard_normal((n, SIMS_STEPS[m], w)).astype(np.float32) for m, w in WIDTHS.items()}
        for m in ("audio", "vision"):
            lengths = rng.integers(2, SIMS_STEPS[m] + 1, size=n)
            d[m][np.arange(SIMS_STEPS[m])[None] >= lengths[:, None]] = 0.0
            d[f"{m}_lengths"] = lengths.tolist()
        d["regression_labels"] = np.round(rng.uniform(-1, 1, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    path.write_bytes(pickle.dumps(data))


def test_mfm_sims_trains_on_synthetic_data_and_on_an_unaligned_pickle(tmp_path):
    bp = small("training.data.samples={train: 4, valid: 4, test: 4}", dataset="sims")
    assert "loss/recon_vision" in str(composer.train(bp, out=tmp_path / "synthetic", epochs=1, progress=False).summary)
    unaligned_pickle(tmp_path / "sims.pkl")
    run = composer.train(small(*MFM_AS_MMSA, dataset="sims"), tmp_path / "sims.pkl", out=tmp_path / "pickle", epochs=1, progress=False)
    assert "loss/mmd_audio" in str(run.summary)


# -- MCTN ----------------------------------------------------------------------------------------
# MMSA configures MCTN for mosi only. Its translations need the text's width on every side
# (output_dim): the test's text is 8 wide and audio and vision are padded to 8.

TEXT = 8
MCTN_SIZES = [f"modalities.text.features={TEXT}", f"modalities.audio.features={WIDTHS['audio']}",
              f"modalities.vision.features={WIDTHS['vision']}", *[f"modalities.{m}.length={STEPS}" for m in MODALITIES],
              f"blocks.vision_wide.width={TEXT}", f"blocks.audio_wide.width={TEXT}"]
MCTN_AS_MMSA = [f"blocks.{b}.recur_over=batch" for b in ("cycle", "second", "head")]


def mmsa_mctn(mmsa, widths=(TEXT, WIDTHS["audio"], WIDTHS["vision"]), meta: bool = False) -> nn.Module:
    config = mmsa.config("mctn", "mosi")
    config.feature_dims, config.output_dim, config.train_mode, config.device = list(widths), widths[0], "regression", "cpu"
    torch.manual_seed(1)
    with torch.device("meta" if meta else "cpu"):
        theirs = mmsa.MCTN(config)
    theirs.seq2seq1.device = theirs.seq2seq2.device = "cpu"  # MMSA hard-codes 'cuda' for its output buffers
    return theirs


def composer_mctn(*overrides: str):
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(ZOO / "mctn.yaml", [*MCTN_SIZES, *overrides]))


def mctn_pair(mmsa, *overrides: str):
    theirs, ours = mmsa_mctn(mmsa), composer_mctn(*overrides)
    names = NAME_MAPS["mctn"](ours)
    assert sorted(names) == sorted(theirs.state_dict()), "every MMSA tensor name (aliases included) is mapped"
    canonical = {k: names[k] for k, _ in theirs.named_parameters()}  # each tensor once
    assert sorted(canonical.values()) == sorted(ours.state_dict()), "every Composer tensor mapped exactly once"
    ours.load_state_dict({v: theirs.state_dict()[k] for k, v in canonical.items()})
    return ours.eval(), theirs.eval(), canonical


def mctn_batch(batch_size: int = 3, seed: int = 3) -> dict:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(VALID[:batch_size] if batch_size <= 3 else [STEPS] * batch_size)
    mask = (torch.arange(STEPS)[None] < lengths[:, None])[..., None]
    widths = {"text": TEXT, "audio": WIDTHS["audio"], "vision": WIDTHS["vision"]}
    batch = {m: torch.randn(batch_size, STEPS, w, generator=gen) * mask for m, w in widths.items()}
    batch.update({f"{m}_lengths": lengths for m in MODALITIES})
    batch["label"] = torch.rand(batch_size, generator=gen) * 6 - 3
    return batch


def mctn_compare(ours, theirs, batch: dict):
    """MMSA's forward returns the trainer's loss itself (``loss_all``) and the prediction."""
    their_total, reference = theirs(batch["text"], batch["audio"], batch["vision"], batch["label"].view(-1, 1), lengths=None)
    prediction, total = our_loss(ours, batch)
    return (prediction - reference.squeeze(1)).abs().max().item(), (total - their_total).abs().item(), total, their_total


def test_mctn_prediction_loss_and_gradients_equal_mmsa_on_padded_batches(mmsa):
    ours, theirs, canonical = mctn_pair(mmsa, *MCTN_AS_MMSA)
    assert trainable(ours) == trainable(theirs)
    prediction_gap, loss_gap, total, their_total = mctn_compare(ours, theirs, mctn_batch())
    assert prediction_gap < TOLERANCE and loss_gap < TOLERANCE, (prediction_gap, loss_gap)
    total.backward(), their_total.backward()
    params = dict(ours.named_parameters())
    for (mmsa_name, param), name in zip(theirs.named_parameters(), canonical.values()):
        # the decoder runs each step from a zero state (MMSA's Decoder): its W_hh never acts, in both
        never_acts = ".decoder.rnn.weight_hh_l0" in name
        assert params[name].grad is not None and (params[name].grad.abs().sum() > 0) != never_acts, name
        torch.testing.assert_close(params[name].grad, param.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_mctn_negative_controls_break_the_equality(mmsa):
    # one perturbed output bias of the cycle's decoder (training-only): other translations, the same prediction
    ours, theirs, _ = mctn_pair(mmsa, *MCTN_AS_MMSA)
    with torch.no_grad():
        ours.block("cycle/there/decoder").out.bias[0] += 0.5  # the translations, not the prediction
    prediction_gap, loss_gap, *_ = mctn_compare(ours, theirs, mctn_batch())
    assert prediction_gap < TOLERANCE and loss_gap > TOLERANCE
    ours, theirs, _ = mctn_pair(mmsa, *MCTN_AS_MMSA)
    # one perturbed weight of the regression's LSTM: another prediction
    with torch.no_grad():
        ours.block("head").rnn.weight_ih_l0[:8] += 1.0  # the input gates of 8 units
    prediction_gap, loss_gap, *_ = mctn_compare(ours, theirs, mctn_batch())
    assert prediction_gap > TOLERANCE and loss_gap > TOLERANCE


def test_mctn_default_recurs_over_time_and_mmsa_over_the_batch(mmsa):
    """MMSA's LSTMs read the batch axis as time: a sample's prediction changes with another sample
    of its batch. The default (the paper's recurrence over time) does not, nor with its padding."""
    ours, theirs, _ = mctn_pair(mmsa)
    batch, other = mctn_batch(), mctn_batch()
    other["text"] = other["text"].clone()
    other["text"][2] += 1.0  # only the last sample changes
    with torch.no_grad():
        assert torch.allclose(ours(batch)["prediction"][:2], ours(other)["prediction"][:2], atol=1e-6)
        mine = theirs(batch["text"], batch["audio"], batch["vision"], batch["label"].view(-1, 1), None)[1]
        changed = theirs(other["text"], other["audio"], other["vision"], other["label"].view(-1, 1), None)[1]
    assert (mine[:2] - changed[:2]).abs().max() > TOLERANCE
    assert mctn_compare(ours, theirs, batch)[0] > TOLERANCE


def test_mctn_full_size_parameter_count_on_mosi(mmsa):
    theirs = mmsa_mctn(mmsa, widths=(768, 5, 20), meta=True)
    size = estimate_size(composer.load_blueprint(ZOO / "mctn.yaml", dataset="mosi").plan)
    assert size.model_params + size.training_params == trainable(theirs)


def test_mctn_optimiser_and_clipping_are_mmsas(mmsa):
    """MMSA's trainer: ``Adam(trainable parameters, lr=init_lr)`` (no weight decay) and
    ``clip_grad_norm_(parameters, grad_clip)`` before every step."""
    from composer.train.optim import build_optimizer

    config = mmsa.config("mctn", "mosi")
    ours = composer_mctn()
    optimizer = build_optimizer(ours, ours.blueprint.training)
    assert {(g["lr"], g["weight_decay"]) for g in optimizer.param_groups} == {(config.init_lr, 0.0)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(ours.parameters()))
    assert ours.blueprint.training.grad_clip == config.grad_clip and ours.blueprint.training.batch_size == config.batch_size


def test_mctn_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    theirs = mmsa_mctn(mmsa).eval()
    torch.save(AMIO(theirs).state_dict(), tmp_path / "mctn-mosi.pth")  # every alias of every tensor, as MMSA saves it
    out = import_mmsa_weights(tmp_path / "mctn-mosi.pth", ZOO / "mctn.yaml", tmp_path / "w.safetensors", dataset="mosi",
                              overrides=[*MCTN_SIZES, *MCTN_AS_MMSA])
    ours = composer.load_model(out).eval()
    batch = mctn_batch()
    with torch.no_grad():
        reference = theirs(batch["text"], batch["audio"], batch["vision"], batch["label"].view(-1, 1), None)[1]
        torch.testing.assert_close(ours(batch)["prediction"], reference, atol=TOLERANCE, rtol=0)


def test_mctn_trains_on_synthetic_data_and_on_an_mmsa_layout_pickle(tmp_path):
    def small(*overrides):
        tiny = [*MCTN_SIZES, "blocks.cycle.hidden=4", "blocks.second.hidden=4", "training.batch_size=4"]
        return composer.load_blueprint(ZOO / "mctn.yaml", [*tiny, *overrides])

    run = composer.train(small("training.data.samples={train: 8, valid: 4, test: 4}"), out=tmp_path / "synthetic", epochs=1, progress=False)
    assert "loss/cycle_text" in str(run.summary), str(run.summary)[:400]
    aligned_pickle(tmp_path / "aligned.pkl", widths={"text": TEXT, "audio": WIDTHS["audio"], "vision": WIDTHS["vision"]})
    run = composer.train(small(*MCTN_AS_MMSA), tmp_path / "aligned.pkl", out=tmp_path / "pickle", epochs=1, progress=False)
    assert "loss/translation_audio" in str(run.summary)
