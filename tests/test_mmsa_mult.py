"""The zoo's MulT (blueprints/zoo/mult.yaml) equals MMSA 2.2.1's ``MULT`` (tests/mmsa_oracle.py), per dataset.

MMSA's module is built from its own ``get_config_regression('mult', dataset)`` (feature widths and
d shrunk for speed; kernels, levels, heads' share of d, dropouts as shipped) and Composer's blueprint with the same
``dataset``; every MMSA tensor is copied through the name map of ``composer import-weights``
(composer/zoo_import/mult.py, each tensor on both sides used once). Then, in eval mode, the
trainable parameter counts are equal, the predictions on zero-padded batches agree to 1e-5
(float32) and so does the gradient of every parameter. MMSA's MulT reads every padded step (it
takes no lengths: the last padded step, attention over padding); Composer masks padding when
the batch gives lengths, and reads every step as MMSA does when it gives none, which is what the
equality runs. A second test shows the masked default equal to MMSA on full-length batches and
different on padded ones; negative controls break the equality.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import composer
from composer.blocks._base import Context
from composer.errors import DataError
from composer.testing import padded_batch
from composer.zoo_import import NAME_MAPS, import_mmsa_weights

import mmsa_oracle
from mmsa_oracle import trainable

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "mult.yaml"
DATASETS = ["mosi", "mosei", "sims"]
WIDTHS = {"text": 6, "audio": 3, "vision": 4}  # MMSA's feature_dims order is (text, audio, vision)
LENGTHS = {"text": 7, "audio": 9, "vision": 8}  # kernel 5 leaves 3, 5 and 4 steps
D, HEADS = 8, 2  # dst_feature_dim_nheads at test size
TOLERANCE = 1e-5
#: MMSA's full feature widths per dataset (datasetCommonParams.*.unaligned.feature_dims)
FULL_WIDTHS = {"mosi": [768, 5, 20], "mosei": [768, 74, 35], "sims": [768, 33, 709]}


@pytest.fixture(scope="module")
def mmsa():
    loaded = mmsa_oracle.load("MMSA.models.singleTask.MULT", "MMSA.config")
    return loaded["MMSA.models.singleTask.MULT"].MULT, loaded["MMSA.config"].get_config_regression


def mmsa_module(mmsa, dataset: str, widths=None, full: bool = False) -> nn.Module:
    MULT, get_config = mmsa
    config = get_config("mult", dataset)
    config.train_mode = "regression"
    config.feature_dims = widths or [WIDTHS[m] for m in ("text", "audio", "vision")]
    if not full:
        config.dst_feature_dim_nheads = [D, HEADS]
    torch.manual_seed(1)
    return MULT(config)


def composer_blueprint(dataset: str, *overrides: str, full: bool = False):
    sizes = [] if full else [
        *(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()),
        *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
        f"vars.d={D}", f"vars.heads={HEADS}",
    ]
    return composer.load_blueprint(BLUEPRINT, [*sizes, *overrides], dataset=dataset)


def pair(mmsa, dataset: str, *overrides: str):
    theirs = mmsa_module(mmsa, dataset)
    torch.manual_seed(0)
    ours = composer.compile_blueprint(composer_blueprint(dataset, *overrides))
    names = NAME_MAPS["mult"](ours)
    source, target = theirs.state_dict(), ours.state_dict()
    assert sorted(names) == sorted(source), f"unmapped MMSA tensors: {sorted(set(source) ^ set(names))}"
    used = [v for v in names.values() if v is not None]
    assert sorted(used) == sorted(target), f"Composer tensors mapped 0 or 2 times: {sorted(set(target) ^ set(used))}"
    assert all(source[k].item() == 2 for k, v in names.items() if v is None)  # the `version` buffers
    ours.load_state_dict({v: source[k] for k, v in names.items() if v is not None})
    return ours.eval(), theirs.eval(), names



def zero_padded(model, seed: int = 0) -> dict:
    """A batch padded as MMSA's pickles are: each sample's steps after its length are zeros."""
    batch = padded_batch(model, 3, seed=seed)
    for m in WIDTHS:
        valid = torch.arange(batch[m].shape[1])[None] < batch[f"{m}_lengths"][:, None]
        assert not valid.all(), f"{m} has no padding"
        batch[m] = batch[m] * valid[..., None]
    return batch


def without_lengths(batch: dict) -> dict:
    """The batch as MMSA's MulT reads it: every padded step a step."""
    return {k: v for k, v in batch.items() if not k.endswith(("_lengths", "_mask"))}


def predictions(ours, theirs, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return ours(batch)["prediction"], theirs(batch["text"], batch["audio"], batch["vision"])["M"]


def max_difference(ours, theirs, batch: dict) -> float:
    with torch.no_grad():
        mine, reference = predictions(ours, theirs, batch)
    return (mine - reference).abs().max().item()


@pytest.mark.parametrize("dataset", DATASETS)
def test_mult_equals_mmsa_on_padded_batches_with_every_gradient(mmsa, dataset):
    ours, theirs, names = pair(mmsa, dataset)
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters())
    batch = without_lengths(zero_padded(ours))
    mine, reference = predictions(ours, theirs, batch)
    assert mine.shape == reference.shape == (3, 1)
    torch.testing.assert_close(mine, reference, atol=TOLERANCE, rtol=0)
    mine.square().mean().backward()
    reference.square().mean().backward()
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for mmsa_name, name in names.items():
        if name is None:
            continue
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
        torch.testing.assert_close(params[name].grad, twins[mmsa_name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_mult_settings_per_dataset_are_mmsas(mmsa):
    """Kernels (hence lengths), levels and dropouts follow the configuration: the time each conv leaves."""
    for dataset, steps in {"mosi": (3, 5, 4), "mosei": (3, 9, 6), "sims": (3, 9, 8)}.items():
        ours, theirs, _ = pair(mmsa, dataset)
        with torch.no_grad():
            x = zero_padded(ours)
            assert tuple(ours.block(f"proj_{c}")({"x": x[m]}, Context()).shape[1] for c, m in zip("tav", WIDTHS)) == steps
        assert len(ours.block("branch_t.memory").encoder.layers) == len(theirs.trans_l_mem.layers) == max(theirs.layers, 3)
        assert ours.block("head").config.dropout == theirs.output_dropout
        assert ours.block("text_drop").config.p == theirs.text_dropout
        assert ours.block("branch_a.cm1").encoder.layers[0].attn.dropout == theirs.attn_dropout  # text attended


def test_valid_convolution_on_a_padded_axis_shortens_the_mask_by_the_kernel_span():
    """MMSA's Conv1d(padding=0) as `conv1d` with `padding: valid`: `T_text` becomes `T_text-4`,
    a sample with L valid steps has L - 4 valid outputs (at least 1), each the convolution of
    valid steps only (equal to the same sample without padding)."""
    from composer.blocks._base import length_mask
    from composer.registry import get_block
    from composer.spec import sequence
    from composer.testing import make_config

    inputs = {"in": sequence("T_text", 3)}
    config = make_config("conv1d", {"out": 2, "kernel": 5, "padding": "valid", "bias": False}, ["in"])
    block = get_block("conv1d").impl(config, inputs)
    assert block.out_specs["out"].time == "T_text-4"
    x, lengths = torch.randn(3, 9, 3), torch.tensor([9, 6, 2])
    ctx = Context(masks={"T_text": length_mask(lengths, 9)})
    with torch.no_grad():
        out = block({"in": x}, ctx)
        assert out.shape == (3, 5, 2) and ctx.masks["T_text-4"].sum(1).tolist() == [5, 2, 1]
        alone = block({"in": x[1:2, :6]}, Context())  # the 6-step sample, unpadded
    torch.testing.assert_close(out[1:2, :2], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("control", [
    "blocks.branch_t.positions=true",  # the authors' sinusoidal positions, which MMSA's copy leaves out
    "blocks.branch_t.in={target: proj_t, source1: proj_v, source2: proj_a}",  # text attended by vision first
])
def test_mult_negative_control_a_changed_setting_breaks_the_equality(mmsa, control):
    ours, theirs, _ = pair(mmsa, "mosi", control)
    assert max_difference(ours, theirs, without_lengths(zero_padded(ours))) > TOLERANCE


def test_mult_default_masks_padding_and_equals_mmsa_without_padding(mmsa):
    """With lengths Composer masks the padding (attention never reads it, the last *valid* step is
    pooled): equal to MMSA on full-length samples, different once samples are padded."""
    ours, theirs, _ = pair(mmsa, "mosi")
    padded = zero_padded(ours)
    full = {**padded, **{f"{m}_lengths": torch.full_like(padded[f"{m}_lengths"], padded[m].shape[1]) for m in WIDTHS}}
    full.update({m: padded_batch(ours, 3)[m] for m in WIDTHS})
    assert max_difference(ours, theirs, full) < TOLERANCE
    assert max_difference(ours, theirs, padded) > TOLERANCE


@pytest.mark.parametrize("dataset", DATASETS)
def test_mult_full_size_parameter_counts(mmsa, dataset):
    """At each dataset's real widths and d the counts agree exactly (Composer's on the meta device)."""
    from composer.graph.size import estimate_size

    theirs = mmsa_module(mmsa, dataset, widths=FULL_WIDTHS[dataset], full=True)
    ours = composer_blueprint(dataset, full=True)
    assert estimate_size(ours.plan).model_params == trainable(theirs) == {"mosi": 2_571_551, "mosei": 982_951, "sims": 1_870_701}[dataset]


def test_mult_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    theirs = mmsa_module(mmsa, "sims")
    wrapper = nn.Module()
    wrapper.Model = theirs  # MMSA's AMIO: names under Model.
    torch.save(wrapper.state_dict(), tmp_path / "mult-sims.pth")
    sizes = [*(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()), *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
             f"vars.d={D}", f"vars.heads={HEADS}"]
    out = import_mmsa_weights(tmp_path / "mult-sims.pth", BLUEPRINT, tmp_path / "w.safetensors", dataset="sims", overrides=sizes)
    ours = composer.load_model(out).eval()
    theirs.eval()
    assert max_difference(ours, theirs, without_lengths(zero_padded(ours))) < TOLERANCE
    with pytest.raises(DataError, match="does not match blueprint 'mult'"):  # MOSI's kernels and levels
        import_mmsa_weights(tmp_path / "mult-sims.pth", BLUEPRINT, tmp_path / "x.safetensors", dataset="mosi", overrides=sizes)


def test_mult_import_refuses_the_authors_blueprint_of_the_same_name(mmsa, tmp_path):
    from composer.errors import ComposerError

    wrapper = nn.Module()
    wrapper.Model = mmsa_module(mmsa, "mosi")
    torch.save(wrapper.state_dict(), tmp_path / "mult-mosi.pth")
    with pytest.raises(ComposerError, match="map onto blueprints/zoo/mult.yaml .* no block branch_a, branch_t, branch_v"):
        import_mmsa_weights(tmp_path / "mult-mosi.pth", ROOT / "blueprints" / "mult.yaml", tmp_path / "x.safetensors")


def test_mult_reported_numbers_are_metrics_composer_computes():
    from composer.metric_names import metric_names

    bp = composer.load_blueprint(BLUEPRINT).blueprint
    assert "MMSA" in bp.reported[0].source and "Tsai" in bp.reported[1].source
    for entry in bp.reported:
        assert set(entry.metrics) <= set(metric_names(bp.task)) - {"loss"}


def mmsa_pickle(path: Path, n: int = 6) -> None:
    """An MMSA-layout unaligned pickle at test widths (zero padding, audio and vision lengths)."""
    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        d = {m: rng.standard_normal((n, LENGTHS[m], WIDTHS[m])).astype(np.float32) for m in WIDTHS}
        for m in ("audio", "vision"):
            d[f"{m}_lengths"] = rng.integers(5, LENGTHS[m] + 1, size=n).tolist()
            d[m][np.arange(LENGTHS[m])[None] >= np.array(d[f"{m}_lengths"])[:, None]] = 0
        d["regression_labels"] = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    path.write_bytes(pickle.dumps(data))


def test_mult_trains_on_synthetic_data_and_on_an_mmsa_layout_pickle(tmp_path):
    bp = composer_blueprint("mosi", "training.data.samples={train: 8, valid: 4, test: 4}", "training.batch_size=4", "training.grad_accum=1")
    assert "mae" in str(composer.train(bp, out=tmp_path / "synthetic", epochs=1, progress=False).summary)
    mmsa_pickle(tmp_path / "mosi.pkl")
    bp = composer_blueprint("mosi", "training.batch_size=4")
    assert "mae" in str(composer.train(bp, tmp_path / "mosi.pkl", out=tmp_path / "pickle", epochs=1, progress=False).summary)
