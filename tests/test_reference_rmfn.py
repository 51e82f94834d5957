"""RMFN: the compiled blueprints equal the plain-PyTorch reference (tests/reference/rmfn.py).

RMFN has no public code, so there is no authors' preset: the paper preset (blueprints/rmfn.yaml),
its classification form, every variant file and the paper's ablations as overrides are compared
with the reference written from eqs. 1-13: parameter counts at full size, eval outputs on padded
batches, and gradients of every parameter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import composer
from reference.rmfn import LSTHM, hard_sigmoid, reference_for, weight_map

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "blueprints" / "rmfn.yaml"
MODALITIES = ["text", "audio", "vision"]
LENGTHS = torch.tensor([7, 5, 1, 6])
MFP_TINY = ["blocks.rmfn.fusion.hidden=10", "blocks.rmfn.fusion.out=9", "blocks.rmfn.fusion.summarize_hidden=[11]"]
TINY = [f"modalities.{m}.length=7" for m in MODALITIES] + ["modalities.text.features=12", "search=null"]
HIDDEN = ["blocks.rmfn.hidden.text=8", "blocks.rmfn.hidden.audio=4", "blocks.rmfn.hidden.vision=6"]

BLUEPRINTS = {  # name: (file, overrides at test size)
    "rmfn": (PAPER, HIDDEN + MFP_TINY),
    "classification": (ROOT / "blueprints" / "rmfn_classification.yaml", HIDDEN + MFP_TINY),
    "no_mfp": (ROOT / "blueprints" / "variants" / "rmfn_no_mfp.yaml", HIDDEN),
    "iemocap": (ROOT / "blueprints" / "variants" / "rmfn_iemocap.yaml", HIDDEN + MFP_TINY),
    "pom": (ROOT / "blueprints" / "variants" / "rmfn_pom.yaml", HIDDEN + MFP_TINY),
    "no_highlight": (PAPER, HIDDEN + MFP_TINY + ["blocks.rmfn.fusion.highlight=false"]),
    "sigmoid_k1": (PAPER, HIDDEN + MFP_TINY + ["blocks.rmfn.gate=sigmoid", "blocks.rmfn.fusion.stages=1"]),
    "rescale_memory_last": (PAPER, HIDDEN + MFP_TINY + [
        "blocks.rmfn.fusion.rescale=true", "blocks.rmfn.fusion.memory_hidden=[6]", "blocks.rmfn.fusion.summarize_input=last"]),
    "hidden_list": (PAPER, MFP_TINY + ["blocks.rmfn.hidden=[5, 3, 4]", "blocks.rmfn.fusion.dropout=0.0"]),
}


def tiny(name: str, seed: int = 0):
    path, overrides = BLUEPRINTS[name]
    torch.manual_seed(seed)
    model = composer.compile_blueprint(composer.load_blueprint(path, TINY + overrides)).eval()
    with torch.no_grad():  # weights large enough that gates leave their linear range and outputs are O(1)
        for p in model.parameters():
            p.uniform_(-0.8, 0.8)
    return model


def padded_batch(model) -> dict[str, torch.Tensor]:
    batch = model.example_inputs(len(LENGTHS), seed=1)
    for m in MODALITIES:
        batch[m][torch.arange(batch[m].shape[1])[None, :] >= LENGTHS[:, None]] = 0.0
        batch[f"{m}_lengths"] = LENGTHS
    return batch


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def loss_of(model, prediction, batch) -> torch.Tensor:
    kind = model.blueprint.task.kind
    if kind == "classification":
        return torch.nn.functional.cross_entropy(prediction, batch["label"])
    if kind == "multilabel":
        return torch.nn.functional.binary_cross_entropy_with_logits(prediction, batch["label"])
    return torch.nn.functional.mse_loss(prediction, batch["label"].reshape(prediction.shape))  # L1's gradient can cancel on 4 samples


@pytest.mark.parametrize(
    "path,count",
    [(PAPER, 479_217), (ROOT / "blueprints" / "rmfn_classification.yaml", 479_282),
     (ROOT / "blueprints" / "variants" / "rmfn_no_mfp.yaml", 109_377)],
    ids=["rmfn", "classification", "no_mfp"],
)
def test_full_size_parameter_counts_are_equal(path, count):
    model = composer.compile_blueprint(composer.load_blueprint(path))
    assert params(model) == params(reference_for(model)) == count  # docs/rmfn.md "Numbers"


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_eval_outputs_equal_on_padded_batches(name):
    model = tiny(name)
    ref = reference_for(model).eval()
    assert params(model) == params(ref)
    batch = padded_batch(model)
    unpadded = {k: v for k, v in batch.items() if not k.endswith("_lengths")}
    masked = {**unpadded, "audio_mask": torch.arange(7)[None, :] < LENGTHS[:, None]}  # any modality's mask pads T_words
    with torch.no_grad():
        for b in (batch, unpadded, masked):
            got, expected = model(b)["prediction"], ref(b)
            assert got.shape == expected.shape == (len(LENGTHS), model.blueprint.task.outputs)
            assert (got - expected).abs().max() < 1e-5
        assert got.abs().max() > 0.05  # a prediction large enough for 1e-5 to mean something
        # padding is honoured: the padded samples differ from running over their zero padding
        assert (model(batch)["prediction"][1:] - model(unpadded)["prediction"][1:]).abs().amax(-1).min() > 1e-6


@pytest.mark.parametrize("name", ["rmfn", "classification", "no_mfp", "iemocap", "no_highlight"])
def test_eval_gradients_equal(name):
    model = tiny(name)
    ref = reference_for(model).eval()
    batch = padded_batch(model)
    for net, prediction in ((model, lambda b: model(b)["prediction"]), (ref, ref)):
        net.zero_grad()
        loss_of(model, prediction(batch), batch).backward()
    grads = dict(model.named_parameters())
    ref_grads = dict(ref.named_parameters())
    compared = 0
    for key, convert in weight_map(model).items():
        for ref_name, grad in convert(grads[key].grad).items():
            assert grad.abs().sum() > 0, f"{key} gets no gradient"
            torch.testing.assert_close(ref_grads[ref_name].grad, grad, atol=1e-5, rtol=1e-4)
            compared += 1
    assert compared == len(ref_grads)


def test_gate_order_matters_composer_keeps_f_i_o_c():
    """Copying the LSTHM rows without the f,i,o,c̄ -> i,f,o,c̄ permutation changes the output."""
    model = tiny("rmfn")
    ref = reference_for(model).eval()
    with torch.no_grad():
        for i, port in enumerate(MODALITIES):
            for lin in "WUV":
                getattr(ref.lsthm[i], lin).weight.copy_(getattr(model.rmfn.lsthm[port], lin).weight)
        batch = padded_batch(model)
        assert (model(batch)["prediction"] - ref(batch)).abs().max() > 1e-3


def test_lsthm_cell_follows_equations_7_to_12():
    torch.manual_seed(0)
    cell = LSTHM(3, 2, 4, "hard_sigmoid")
    x, h, c, z = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 2), torch.randn(5, 4)
    pre = {g: cell.W(x)[:, k * 2:(k + 1) * 2] + cell.U(h)[:, k * 2:(k + 1) * 2] + cell.V(z)[:, k * 2:(k + 1) * 2]
           for k, g in enumerate("ifoc")}
    c_new = hard_sigmoid(pre["f"]) * c + hard_sigmoid(pre["i"]) * torch.tanh(pre["c"])  # eq. 11
    h_new = hard_sigmoid(pre["o"]) * torch.tanh(c_new)  # eq. 12
    got_h, got_c = cell(x, h, c, z)
    torch.testing.assert_close(got_c, c_new)
    torch.testing.assert_close(got_h, h_new)
    assert hard_sigmoid(torch.tensor([-3.0, 0.0, 1.0, 3.0])).tolist() == pytest.approx([0.0, 0.5, 0.7, 1.0])


def test_a_sample_equals_itself_run_unpadded():
    """Padded steps leave h, c and z unchanged: sample b equals its first L_b steps run alone."""
    model = tiny("rmfn")
    ref = reference_for(model).eval()
    batch = padded_batch(model)
    with torch.no_grad():
        full = ref(batch)
        for b, length in enumerate(LENGTHS.tolist()):
            alone = {m: batch[m][b:b + 1, :length] for m in MODALITIES}
            torch.testing.assert_close(ref(alone), full[b:b + 1], atol=1e-6, rtol=1e-5)
