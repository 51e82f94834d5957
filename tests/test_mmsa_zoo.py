"""The zoo's baselines (blueprints/zoo/) equal MMSA 2.2.1's modules (tests/mmsa_oracle.py), per dataset.

For each model and each dataset MMSA configures (``config_regression.json``), MMSA's module is
built from its own configuration (feature widths shrunk to keep the tests fast, every other
setting as shipped) and Composer's blueprint with ``--dataset``; every MMSA tensor is copied
through an explicit name map that uses each tensor once; then the parameter counts are equal,
the predictions on a padded batch agree to 1e-5 (float32, eval mode) and so does the gradient
of every parameter. Composer masks padding where MMSA reads it, so the equality runs Composer's
MMSA options (``padding: include`` of the time averages, ``packed: false`` LSTMs); a second test
shows that Composer's default equals MMSA on a batch without padding and differs on a padded
one. Each model has a negative control: a changed setting breaks the equality.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from composer.testing import padded_batch
from composer.zoo_import.classic import NAME_MAPS, unregistered_vertices

import mmsa_oracle
from mmsa_oracle import trainable

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "blueprints" / "zoo"
DATASETS = ["mosi", "mosei", "sims"]
WIDTHS = {"text": 6, "audio": 3, "vision": 4}  # small features; MMSA's feature_dims order is (text, audio, vision)
LENGTHS = {"text": 7, "audio": 9, "vision": 8}
ALIGNED = 7  # the one time axis of EF-LSTM and Graph-MFN (MMSA's aligned_50 at test size; the text's length)
ONE_TIME_AXIS = {"ef_lstm", "graph_mfn"}  # their modalities share `time: T`, except on CH-SIMS (unaligned only)
MODEL_ALIGNED = {"ef_lstm", "mfn", "graph_mfn"}  # need_model_aligned: AMIO's AlignSubNet (avg_pool) runs before the model
TOLERANCE = 1e-5  # of the predictions; a negative control fails it


@pytest.fixture(scope="module")
def mmsa():
    return mmsa_oracle.models()


# -- building both sides -------------------------------------------------------------------------


def mmsa_module(mmsa, name: str, dataset: str) -> nn.Module:
    """MMSA's model class for ``name`` built from its own regression configuration for ``dataset``."""
    config = mmsa.get_config_regression(name, dataset)
    config.feature_dims = [WIDTHS["text"], WIDTHS["audio"], WIDTHS["vision"]]
    config.train_mode = "regression"
    config.seq_lens = [LENGTHS[m] for m in ("text", "audio", "vision")]  # MMSA takes them from the data
    config.device = "cpu"  # Graph_MFN moves its graph there
    if one_time_axis(name, dataset):
        config.seq_lens = [ALIGNED] * 3
    if name in MODEL_ALIGNED:  # AMIO: the aligner, built before the model
        config.aligner = mmsa.AlignSubNet(config, "avg_pool")
    if name == "ef_lstm":  # AMIO with need_model_aligned: seq_lens becomes AlignSubNet's (text) length
        config.seq_lens = ALIGNED
    torch.manual_seed(1)
    module = with_running_statistics(mmsa_class(mmsa, name)(config))
    module.aligner = config.get("aligner")  # not a submodule: no tensors (avg_pool)
    return module


def mmsa_class(mmsa, name: str) -> type:
    return {"tfn": mmsa.TFN, "lmf": mmsa.LMF, "lf_dnn": mmsa.LF_DNN, "ef_lstm": mmsa.EF_LSTM, "mfn": mmsa.MFN, "graph_mfn": mmsa.Graph_MFN}[name]


def mmsa_state(theirs: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of an MMSA module: its state dict, and for Graph_MFN the DFG vertex networks
    it keeps outside it (composer.zoo_import.unregistered_vertices)."""
    extra = unregistered_vertices(theirs) if hasattr(theirs, "graph_mfn") else {}
    return {**theirs.state_dict(), **extra}


def with_running_statistics(module: nn.Module) -> nn.Module:
    """Every BatchNorm given random affine weights and running statistics, so evaluation tests them."""
    gen = torch.Generator().manual_seed(2)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm1d):
            with torch.no_grad():
                n = norm.num_features
                norm.weight.copy_(1 + 0.5 * torch.randn(n, generator=gen))
                norm.bias.copy_(0.5 * torch.randn(n, generator=gen))
                norm.running_mean.copy_(torch.randn(n, generator=gen))
                norm.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                norm.num_batches_tracked.fill_(3)
    return module


def one_time_axis(name: str, dataset: str) -> bool:
    """Aligned data: EF-LSTM and Graph-MFN on MOSI and MOSEI (CH-SIMS has no aligned release)."""
    return name in ONE_TIME_AXIS and dataset != "sims"


def composer_model(name: str, dataset: str, *overrides: str):
    sizes = [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()]
    if one_time_axis(name, dataset):  # MMSA's seq_lens come from the data: the test's aligned length
        sizes += [f"modalities.{m}.length={ALIGNED}" for m in WIDTHS]
    else:
        sizes += [f"modalities.{m}.length={n}" for m, n in LENGTHS.items()]
    sizes += [f"blocks.norm.steps={ALIGNED}"] if name == "ef_lstm" else []  # the text's length, AlignSubNet's
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(ZOO / f"{name}.yaml", [*sizes, *overrides], dataset=dataset))



def copy_weights(theirs: nn.Module, ours: nn.Module, names: dict[str, str]) -> None:
    """Load MMSA's tensors into Composer's model through ``names`` (MMSA name -> Composer name, or
    None for MMSA's frozen constants that are config values in Composer); every tensor on both
    sides is named exactly once."""
    mmsa_oracle.copy_through_map(mmsa_state(theirs), ours, names)


def zero_padding(batch: dict) -> dict:
    """Padded steps set to zero, as MMSA's pickles store them."""
    out = dict(batch)
    for m in WIDTHS:
        if f"{m}_lengths" in batch:
            valid = torch.arange(batch[m].shape[1])[None] < batch[f"{m}_lengths"][:, None]
            out[m] = batch[m] * valid[..., None]
    return out


def mmsa_inputs(batch: dict, normalized: bool, aligner=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text, audio, vision) as MMSA's data loader gives them: with ``need_normalized`` the audio and
    vision sequences are averaged over every (padded) step, ``(B, 1, D)``; then AMIO's aligner
    (need_model_aligned) where the model has one."""
    text, audio, vision = batch["text"], batch["audio"], batch["vision"]
    if normalized:
        audio, vision = audio.mean(1, keepdim=True), vision.mean(1, keepdim=True)
    return aligner(text, audio, vision) if aligner is not None else (text, audio, vision)


def assert_equal_to_mmsa(ours, theirs, names: dict[str, str], batch: dict, normalized: bool) -> None:
    """Equal predictions (1e-5) and equal gradients of every parameter, in eval mode."""
    ours.eval(), theirs.eval()
    prediction = ours(batch)["prediction"]
    reference = theirs(*mmsa_inputs(batch, normalized, theirs.aligner))["M"]
    assert prediction.shape == reference.shape == (len(batch["label"]), 1)
    torch.testing.assert_close(prediction, reference, atol=TOLERANCE, rtol=0)
    prediction.square().mean().backward()
    reference.square().mean().backward()
    twins = dict(theirs.named_parameters())
    for mmsa_name, name in names.items():
        if mmsa_name not in twins or name is None:
            continue  # a buffer (BatchNorm running statistics) or a tensor MMSA never trains (Graph_MFN's vertices)
        param = dict(ours.named_parameters())[name]
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        torch.testing.assert_close(param.grad, twins[mmsa_name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def max_difference(ours, theirs, batch: dict, normalized: bool) -> float:
    ours.eval(), theirs.eval()
    with torch.no_grad():
        return (ours(batch)["prediction"] - theirs(*mmsa_inputs(batch, normalized, theirs.aligner))["M"]).abs().max().item()


# -- name maps: the ones `composer import-weights` uses (composer/zoo_import/) ------------------

NAMES = NAME_MAPS  # the classic single-task models' maps (composer/zoo_import/classic.py)


SUBNETS_AS_MMSA = ["blocks.audio_net.padding=include", "blocks.vision_net.padding=include", "blocks.text_net.packed=false"]
ALIGNERS_AS_MMSA = ["blocks.align_audio.padding=include", "blocks.align_vision.padding=include"]  # AlignSubNet on padded lengths
MMSA_OPTIONS = {  # Composer reading padding as MMSA does
    "tfn": SUBNETS_AS_MMSA, "lmf": SUBNETS_AS_MMSA, "lf_dnn": SUBNETS_AS_MMSA,
    "ef_lstm": [*ALIGNERS_AS_MMSA, "blocks.norm.padding=include", "blocks.lstm.packed=false"],
    "mfn": ["blocks.audio_mean.padding=include", "blocks.vision_mean.padding=include", "blocks.memory.padding=include"],
    "graph_mfn": [*ALIGNERS_AS_MMSA, "blocks.memory.padding=include"],
}
NORMALIZED = {"tfn": True, "lmf": True, "lf_dnn": True, "ef_lstm": False, "mfn": True, "graph_mfn": False}  # need_normalized: audio and vision averaged by the data loader
CONTROLS = {  # a setting that must break the equality
    "tfn": "blocks.fusion.one=last",
    "lmf": "blocks.fusion.one=last",
    "lf_dnn": "blocks.fusion.in=[vision_net, audio_net, text_net]",
    "ef_lstm": "blocks.joined.in=[audio, text, vision]",
    # the same LSTMs, their states concatenated audio first (the hidden widths follow the ports)
    "mfn": ["blocks.memory.in={audio: audio_mean, text: text, vision: vision_mean}", "blocks.memory.hidden=[32, 256, 256]"],
    "graph_mfn": "edges",  # the DFG's edges in another order: see _pair
}


def _pair(mmsa, name: str, dataset: str, *overrides: str):
    theirs = mmsa_module(mmsa, name, dataset)
    ours = composer_model(name, dataset, *[o for o in overrides if o != "edges"])
    copy_weights(theirs, ours, NAMES[name](ours))
    if "edges" in overrides:  # Graph-MFN's control: the efficacies α read in reverse edge order
        efficacy = ours.block("memory").graph.efficacy[2]
        with torch.no_grad():
            efficacy.weight.copy_(efficacy.weight.flip(0)), efficacy.bias.copy_(efficacy.bias.flip(0))
    return ours, theirs


def _controls(name: str) -> list[str]:
    control = CONTROLS[name]
    return control if isinstance(control, list) else [control]


def _frozen(theirs: nn.Module) -> int:
    return sum(p.numel() for p in theirs.parameters() if not p.requires_grad)


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,dataset", [(n, d) for n in sorted(NAMES) for d in DATASETS])
def test_mmsa_options_equal_mmsa_on_padded_batches(mmsa, name, dataset):
    ours, theirs = _pair(mmsa, name, dataset, *MMSA_OPTIONS[name])
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters()) - _frozen(theirs)
    batch = zero_padding(padded_batch(ours, 4))
    assert (batch["audio_lengths"] < batch["audio"].shape[1]).any() and (batch["text_lengths"] < batch["text"].shape[1]).any()
    assert_equal_to_mmsa(ours, theirs, NAMES[name](ours), batch, NORMALIZED[name])


@pytest.mark.parametrize("name", sorted(NAMES))
def test_mmsa_negative_control_a_changed_setting_breaks_the_equality(mmsa, name):
    ours, theirs = _pair(mmsa, name, "mosi", *MMSA_OPTIONS[name], *_controls(name))
    assert max_difference(ours, theirs, zero_padding(padded_batch(ours, 4)), NORMALIZED[name]) > TOLERANCE


@pytest.mark.parametrize("name", sorted(NAMES))
def test_mmsa_default_masks_padding_and_equals_mmsa_without_padding(mmsa, name):
    """Composer's default (masked) equals MMSA on full-length samples and differs once samples are padded."""
    ours, theirs = _pair(mmsa, name, "mosi")
    full = {k: v for k, v in padded_batch(ours, 4).items() if not k.endswith("_lengths")}
    assert max_difference(ours, theirs, full, NORMALIZED[name]) < TOLERANCE
    assert max_difference(ours, theirs, zero_padding(padded_batch(ours, 4)), NORMALIZED[name]) > TOLERANCE


@pytest.mark.parametrize("name", sorted(ONE_TIME_AXIS))
def test_mmsa_sims_aligner_default_equals_mmsa_without_padding_and_include_matters(mmsa, name):
    """On CH-SIMS the `align` blocks are AMIO's AlignSubNet: the masked default (each sample's own
    lengths) equals MMSA on full-length samples; on padded ones only `padding: include` does."""
    ours, theirs = _pair(mmsa, name, "sims")
    full = {k: v for k, v in padded_batch(ours, 4).items() if not k.endswith("_lengths")}
    assert max_difference(ours, theirs, full, NORMALIZED[name]) < TOLERANCE
    others = [o for o in MMSA_OPTIONS[name] if o not in ALIGNERS_AS_MMSA]
    ours, theirs = _pair(mmsa, name, "sims", *others)  # the aligners masked, everything else as MMSA
    assert max_difference(ours, theirs, zero_padding(padded_batch(ours, 4)), NORMALIZED[name]) > TOLERANCE


def test_mmsa_tfn_output_constants_are_the_configs_bounds(mmsa):
    theirs = mmsa_module(mmsa, "tfn", "mosi")
    out = composer.load_blueprint(ZOO / "tfn.yaml").blueprint.blocks["out"]
    assert theirs.output_range.item() == out.high - out.low and theirs.output_shift.item() == out.low


@pytest.mark.parametrize("name", sorted(NAMES))
def test_mmsa_full_size_parameter_counts_on_mosi(mmsa, name):
    """At MOSI's real widths (GloVe 300, COVAREP 5, FACET 20) the counts agree exactly."""
    config = mmsa.get_config_regression(name, "mosi")
    config.feature_dims, config.train_mode = [300, 5, 20], "regression"
    config.seq_lens = 50 if name == "ef_lstm" else [50, 50, 50] if name in MODEL_ALIGNED else [50, 375, 500]
    config.device = "cpu"
    theirs = mmsa_class(mmsa, name)(config)
    ours = composer.load_blueprint(ZOO / f"{name}.yaml", dataset="mosi")
    from composer.graph.size import estimate_size

    assert estimate_size(ours.plan).model_params == trainable(theirs)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_mmsa_zoo_reported_numbers_are_metrics_composer_computes(name):
    from composer.metric_names import metric_names

    bp = composer.load_blueprint(ZOO / f"{name}.yaml").blueprint
    assert bp.reported and "MMSA" in bp.reported[0].source
    for entry in bp.reported:
        assert set(entry.metrics) <= set(metric_names(bp.task)) - {"loss"}
        for metric, value in entry.metrics.items():
            assert (0 <= value <= 1.5) if metric in ("mae", "corr") else (1 < value <= 100), (metric, value)


@pytest.mark.parametrize("name", sorted(ONE_TIME_AXIS))
def test_mmsa_full_size_parameter_counts_on_sims(mmsa, name):
    """At CH-SIMS' real widths (768 / 33 / 709, aligned to the text's 39 steps) the counts agree exactly."""
    from composer.graph.size import estimate_size

    config = mmsa.get_config_regression(name, "sims")
    config.feature_dims, config.train_mode, config.device = [768, 33, 709], "regression", "cpu"
    config.seq_lens = 39 if name == "ef_lstm" else [39, 39, 39]  # AMIO: AlignSubNet's length
    theirs = mmsa_class(mmsa, name)(config)
    ours = composer.load_blueprint(ZOO / f"{name}.yaml", dataset="sims")
    assert estimate_size(ours.plan).model_params == trainable(theirs) == {"ef_lstm": 215_695, "graph_mfn": 2_724_860}[name]


# -- the aligner on its own: the `align` block against MMSA's AlignSubNet ----------------------------


def align_block(inputs: dict, **fields):
    from composer.registry import get_block
    from composer.testing import make_config

    torch.manual_seed(3)
    return get_block("align").impl(make_config("align", fields, list(inputs)), inputs).eval()


def alignsubnet(mmsa, lengths: tuple[int, int, int], mode: str = "avg_pool", widths=(3, 4, 5)):
    import easydict

    torch.manual_seed(4)
    return mmsa.AlignSubNet(easydict.EasyDict(feature_dims=list(widths), seq_lens=list(lengths)), mode)


@pytest.mark.parametrize("lengths", [(7, 9, 8), (39, 400, 55), (5, 15, 3), (6, 6, 6)])  # CH-SIMS' own: 39 / 400 / 55
def test_align_include_equals_alignsubnet_avg_pool(mmsa, lengths):
    from composer.blocks._base import Context
    from composer.spec import sequence

    gen = torch.Generator().manual_seed(5)
    text, audio, vision = (torch.randn(2, n, w, generator=gen) for n, w in zip(lengths, (3, 4, 5)))
    _, ref_audio, ref_vision = alignsubnet(mmsa, lengths)(text, audio, vision)
    for source, reference in ((audio, ref_audio), (vision, ref_vision)):
        block = align_block({"target": sequence("T_t", 3), "source": sequence("T_s", source.shape[2])}, padding="include")
        out = block({"target": text, "source": source}, Context())
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
        if source.shape[1] > 2 * lengths[0]:  # negative control: contiguous windows are not MMSA's interleaved rows
            rows = -(-source.shape[1] // lengths[0])
            padded = torch.cat([source, source[:, -1:].expand(-1, rows * lengths[0] - source.shape[1], -1)], 1)
            contiguous = padded.view(2, lengths[0], rows, -1).mean(2)
            assert (contiguous - reference).abs().max() > 1e-3


def test_align_default_aligns_each_sample_by_its_own_lengths(mmsa):
    """Masked (the default): a padded sample's valid outputs are AlignSubNet's on the sample cut to
    its own lengths; its padded target steps are zero."""
    from composer.blocks._base import Context, length_mask
    from composer.spec import sequence

    gen = torch.Generator().manual_seed(6)
    text, audio = torch.randn(3, 7, 3, generator=gen), torch.randn(3, 20, 4, generator=gen)
    text_len, audio_len = torch.tensor([7, 5, 3]), torch.tensor([20, 11, 3])
    ctx = Context(masks={"T_t": length_mask(text_len, 7), "T_s": length_mask(audio_len, 20)})
    out = align_block({"target": sequence("T_t", 3), "source": sequence("T_s", 4)})({"target": text, "source": audio}, ctx)
    for b, (n_t, n_a) in enumerate(zip(text_len.tolist(), audio_len.tolist())):
        vision = torch.zeros(1, 2, 5)
        _, expected, _ = alignsubnet(mmsa, (n_t, n_a, 2))(text[b:b + 1, :n_t], audio[b:b + 1, :n_a], vision)
        torch.testing.assert_close(out[b:b + 1, :n_t], expected, atol=1e-6, rtol=0)
        assert not out[b, n_t:].any()


def test_align_ctc_equals_mults_ctc_module(mmsa):
    """Mode ctc is AlignNets.CTCModule (MulT's): the same LSTM weights give the same alignment; padded
    source steps (masked) add nothing."""
    from composer.blocks._base import Context, length_mask
    from composer.spec import sequence

    net = alignsubnet(mmsa, (5, 9, 8), "ctc")
    block = align_block({"target": sequence("T_t", 3), "source": sequence("T_s", 4)}, mode="ctc", steps=5)
    assert trainable(block) == trainable(net.ctc_a)
    block.ctc.load_state_dict(net.ctc_a.pred_output_position_inclu_blank.state_dict())
    gen = torch.Generator().manual_seed(7)
    text, audio = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 9, 4, generator=gen)
    torch.testing.assert_close(block({"target": text, "source": audio}, Context()), net.ctc_a(audio), atol=1e-6, rtol=0)
    ctx = Context(masks={"T_t": torch.ones(2, 5, dtype=torch.bool), "T_s": length_mask(torch.tensor([9, 6]), 9)})
    masked = block({"target": text, "source": audio}, ctx)
    torch.testing.assert_close(masked[1:], net.ctc_a(audio[1:, :6]), atol=1e-6, rtol=0)
    from composer.errors import DataError

    with pytest.raises(DataError, match="the target has 6 padded steps, but the block was built for 5"):
        block({"target": torch.randn(2, 6, 3), "source": audio}, Context())


def test_align_conv1d_is_alignsubnets_map_over_positions(mmsa):
    """Mode conv1d is AlignSubNet's ``conv1d_A`` applied to the audio (MMSA 2.2.1 applies it to the
    text, which fails unless the lengths agree; AMIO never selects the mode)."""
    from composer.blocks._base import Context
    from composer.spec import sequence

    net = alignsubnet(mmsa, (5, 9, 8), "conv1d")
    block = align_block({"target": sequence(5, 3), "source": sequence(9, 4)}, mode="conv1d", steps=5, source_steps=9)
    assert trainable(block) == trainable(net.conv1d_A)
    block.conv.load_state_dict(net.conv1d_A.state_dict())
    audio = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(block({"target": torch.randn(2, 5, 3), "source": audio}, Context()), net.conv1d_A(audio), atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 5, 3), audio, torch.randn(2, 8, 5))  # MMSA's own conv1d mode: conv1d_A(text_x)


@pytest.mark.parametrize("name", sorted(ONE_TIME_AXIS))
def test_mmsa_sims_variants_train_on_synthetic_data_and_an_unaligned_pickle(name, tmp_path):
    """EF-LSTM and Graph-MFN on CH-SIMS read unaligned data (each modality its own length)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        d = {m: rng.standard_normal((4, LENGTHS[m], WIDTHS[m])).astype(np.float32) for m in WIDTHS}
        for m in ("audio", "vision"):
            d[f"{m}_lengths"] = rng.integers(2, LENGTHS[m] + 1, size=4).tolist()
        d["regression_labels"] = np.round(rng.uniform(-1, 1, size=4), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(4)])
        data[split] = d
    (tmp_path / "sims.pkl").write_bytes(pickle.dumps(data))
    sizes = [*(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()), *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
             "training.batch_size=4", *([f"blocks.norm.steps={ALIGNED}"] if name == "ef_lstm" else [])]
    bp = composer.load_blueprint(ZOO / f"{name}.yaml", [*sizes, "training.data.samples={train: 8, valid: 4, test: 4}"], dataset="sims")
    assert "mae" in str(composer.train(bp, out=tmp_path / "synthetic", epochs=1, progress=False).summary)
    bp = composer.load_blueprint(ZOO / f"{name}.yaml", sizes, dataset="sims")
    assert "mae" in str(composer.train(bp, tmp_path / "sims.pkl", out=tmp_path / "pickle", epochs=1, progress=False).summary)
