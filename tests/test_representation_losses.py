"""Representation losses (CMD, orthogonality, InfoNCE/NT-Xent, KL, JS, cosine, CPC, Gaussian BA)
and per-sample loss weights (``weight_from``).

Each loss is compared with its source where one can be run (MMSA 2.2.1, MIT: MISA's ``CMD`` and
``DiffLoss``, MMIM's ``CPC`` and ``MMILB``; skipped when MMSA is not installed) to 1e-6, values
and gradients, and with a small example computed by hand; negative controls show each test
can fail (a changed setting changes the value).
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import composer
import mmsa_oracle
from composer.blocks._base import Context
from composer.configs._base import SpecError
from composer.losses._base import weighted_mean
from composer.losses.representation import central_moment_discrepancy, js_divergence, kl_divergence, nt_xent, orthogonality
from composer.registry import get_loss
from composer.spec import labels, vector

TOL = dict(atol=1e-6, rtol=1e-6)


def _loss(type_name: str, specs: dict, **fields):
    entry = get_loss(type_name)
    refs = {f: f"x_{f}" for f in entry.config.ref_fields}
    config = entry.config.model_validate({"type": type_name, **refs, **fields})
    return entry.impl(config, specs)


def _pair(*shapes, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(grad) for s in shapes]


def _grads(value, *tensors):
    return torch.autograd.grad(value, tensors)


# -- the oracle: MMSA 2.2.1's classes, loaded without its package __init__ (which needs a GPU library)


@pytest.fixture(scope="module")
def mmsa():
    loaded = mmsa_oracle.load("MMSA.trains.singleTask.MISA", "MMSA.models.singleTask.MMIM")
    misa, mmim = loaded["MMSA.trains.singleTask.MISA"], loaded["MMSA.models.singleTask.MMIM"]
    return types.SimpleNamespace(CMD=misa.CMD, DiffLoss=misa.DiffLoss, CPC=mmim.CPC, MMILB=mmim.MMILB)


# -- CMD (MISA's similarity loss) ----------------------------------------------------------------


def test_cmd_equals_misa_value_and_gradient(mmsa):
    a, b = _pair((6, 4), (6, 4))
    loss = _loss("cmd", {"a": vector(4), "b": vector(4)})
    ours = loss({"a": a, "b": b}, Context())
    theirs = mmsa.CMD()(a, b, 5)
    torch.testing.assert_close(ours, theirs, **TOL)
    for g, h in zip(_grads(ours, a, b), _grads(mmsa.CMD()(a, b, 5), a, b)):
        torch.testing.assert_close(g, h, **TOL)
    assert not torch.allclose(_loss("cmd", {"a": vector(4), "b": vector(4)}, moments=3)({"a": a, "b": b}, Context()), theirs)


def test_cmd_by_hand():
    a = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # means (1, 1) and (1, 0): 1; second moments (1, 0) and (0, 0): 1; third: (0, 0) both: 0
    assert central_moment_discrepancy(a, b, moments=3).item() == pytest.approx(2.0)
    assert central_moment_discrepancy(a, b, moments=1).item() == pytest.approx(1.0)
    assert central_moment_discrepancy(a, b, moments=2, interval=2.0).item() == pytest.approx(0.5 + 0.25)


def test_cmd_of_identical_batches_is_zero_with_finite_gradient():
    (a,) = _pair((5, 3))
    value = central_moment_discrepancy(a, a.detach().clone())
    (grad,) = _grads(value, a)
    assert value.item() == 0.0 and torch.isfinite(grad).all()


# -- orthogonality (MISA's difference loss) ------------------------------------------------------


def test_orthogonality_equals_misa_difference_loss(mmsa):
    a, b = _pair((7, 5), (7, 3), seed=1)
    loss = _loss("orthogonality", {"a": vector(5), "b": vector(3)})
    ours = loss({"a": a, "b": b}, Context())
    torch.testing.assert_close(ours, mmsa.DiffLoss()(a, b), **TOL)
    for g, h in zip(_grads(ours, a, b), _grads(mmsa.DiffLoss()(a, b), a, b)):
        torch.testing.assert_close(g, h, **TOL)


def test_orthogonality_by_hand():
    # unit, centred rows; a's feature column (1, -1, 1, -1) is orthogonal to b's (1, 1, -1, -1)
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0], [0.0, -1.0]])
    assert orthogonality(a, b).item() == pytest.approx(0.0)
    assert orthogonality(a, a).item() == pytest.approx(16 / 4, rel=1e-5)  # AᵀA = [[4, 0], [0, 0]]
    aligned = b[[0, 2, 1, 3]]  # b's column reordered to (1, -1, 1, -1): AᵀB = [[0, 4], [0, 0]]
    assert orthogonality(a, aligned).item() == pytest.approx(16 / 4, rel=1e-5)


# -- InfoNCE / NT-Xent ---------------------------------------------------------------------------


def test_info_nce_by_hand_and_directions():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss = _loss("info_nce", {"a": vector(2), "b": vector(2)}, temperature=1.0, symmetric=False)
    c = 1 / math.sqrt(2)
    # a_0: sims (1, c), positive 1; a_1: sims (0, c), positive c
    expected = (-(1 - math.log(math.exp(1) + math.exp(c))) - (c - math.log(1 + math.exp(c)))) / 2
    assert loss({"a": a, "b": b}, Context()).item() == pytest.approx(expected, rel=1e-6)
    both = _loss("info_nce", {"a": vector(2), "b": vector(2)}, temperature=1.0)({"a": a, "b": b}, Context())
    assert both.item() != pytest.approx(expected)  # the b -> a direction counts


def test_nt_xent_equals_simclr_equation_one():
    a, b = _pair((4, 3), (4, 3), seed=2, grad=False)
    tau = 0.5
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = 4

    def ell(i, j):  # eq. 1 of Chen et al. 2020, one term at a time
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        return -math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator)

    expected = sum(ell(k, k + n) + ell(k + n, k) for k in range(n)) / (2 * n)
    loss = _loss("info_nce", {"a": vector(3), "b": vector(3)}, temperature=tau, variant="nt_xent")
    assert loss({"a": a, "b": b}, Context()).item() == pytest.approx(expected, rel=1e-9)
    assert nt_xent(a, b, tau).shape == (4,)
    info = _loss("info_nce", {"a": vector(3), "b": vector(3)}, temperature=tau)({"a": a, "b": b}, Context())
    assert info.item() != pytest.approx(expected)  # other negatives, another value


# -- KL / JS / cosine ----------------------------------------------------------------------------


def test_kl_by_hand_temperature_and_detached_teacher():
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # p = (3/4, 1/4)
    loss = _loss("kl", {"input": vector(2), "target": vector(2)})
    value = loss({"input": student, "target": teacher}, Context())
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    torch.testing.assert_close(value, F.kl_div(F.log_softmax(student, -1), F.softmax(teacher, -1), reduction="batchmean"))
    hot = _loss("kl", {"input": vector(2), "target": vector(2)}, temperature=2.0)({"input": student, "target": teacher}, Context())
    p = torch.softmax(teacher.detach() / 2, -1)
    expected_hot = 4 * float((p * (p.log() - math.log(0.5))).sum().detach())
    assert hot.item() == pytest.approx(expected_hot, rel=1e-6)


def test_kl_and_js_accept_probabilities_and_agree_with_definitions():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
    assert kl_divergence(p.log(), q.log()).tolist() == pytest.approx([math.log(2.0), 0.0], abs=1e-6)  # 0 log 0 = 0
    m = (p[0] + q[0]) / 2
    by_hand = 0.5 * sum(float(x * math.log(x / y)) for x, y in zip(p[0], m) if x > 0) + 0.5 * sum(float(x * math.log(x / y)) for x, y in zip(q[0], m))
    assert js_divergence(p.log(), q.log())[0].item() == pytest.approx(by_hand, rel=1e-6)
    loss = _loss("js", {"input": vector(3), "target": vector(3)}, inputs_are="probabilities")
    assert loss({"input": p, "target": q}, Context()).item() == pytest.approx(by_hand / 2, rel=1e-5)
    assert js_divergence(q.log(), p.log())[0].item() == pytest.approx(by_hand, rel=1e-6)  # symmetric


def test_cosine_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    value = _loss("cosine", {"a": vector(2), "b": vector(2)})({"a": a, "b": b}, Context())
    assert value.item() == pytest.approx(0.5)  # (1 - 0 + 1 - 1) / 2


# -- MMIM's CPC and Gaussian BA ------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 3])
def test_cpc_equals_mmim(mmsa, layers):
    torch.manual_seed(0)
    theirs = mmsa.CPC(x_size=4, y_size=6, n_layers=layers, activation="Tanh").double()
    loss = _loss("cpc", {"x": vector(4), "context": vector(6)}, layers=layers).double()
    assert [n for n, _ in loss.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    loss.load_state_dict(theirs.state_dict())
    x, z = _pair((5, 4), (5, 6), seed=3)
    ours = loss({"x": x, "context": z}, Context())
    reference = theirs(x, z)
    torch.testing.assert_close(ours, reference, **TOL)
    for g, h in zip(_grads(ours, x, z, *loss.parameters()), _grads(reference, x, z, *theirs.parameters())):
        torch.testing.assert_close(g, h, **TOL)


def test_gaussian_ba_equals_mmim_negative_lld(mmsa):
    torch.manual_seed(0)
    theirs = mmsa.MMILB(x_size=5, y_size=4).double()
    loss = _loss("gaussian_ba", {"x": vector(5), "y": vector(4)}).double()
    state = {k: v for k, v in theirs.state_dict().items() if not k.startswith("entropy_prj")}
    loss.load_state_dict(state)
    x, y = _pair((6, 5), (6, 4), seed=4)
    ours = loss({"x": x, "y": y}, Context())
    lld, _, _ = theirs(x, y)
    torch.testing.assert_close(ours, -lld, **TOL)
    lld, _, _ = theirs(x, y)
    for g, h in zip(_grads(ours, x, y, *loss.parameters()), _grads(-lld, x, y, *(p for n, p in theirs.named_parameters() if not n.startswith("entropy_prj")))):
        torch.testing.assert_close(g, h, **TOL)


def test_gaussian_ba_by_hand():
    loss = _loss("gaussian_ba", {"x": vector(1), "y": vector(1)})
    with torch.no_grad():
        for net, (w, b) in (("mlp_mu", (1.0, 0.0)), ("mlp_logvar", (0.0, math.log(4.0)))):
            getattr(loss, net)[0].weight.fill_(1.0), getattr(loss, net)[0].bias.fill_(0.0)
            getattr(loss, net)[2].weight.fill_(w), getattr(loss, net)[2].bias.fill_(b)
    # μ(x) = relu(x), σ² = 4: ℓ = (relu(x) - y)² / 8
    value = loss({"x": torch.tensor([[2.0], [-1.0]]), "y": torch.tensor([[0.0], [1.0]])}, Context())
    assert value.item() == pytest.approx((4 / 8 + 1 / 8) / 2)


def test_estimator_parameters_are_training_only():
    bp = composer.load_blueprint(_blueprint("""
  - {type: l1, pred: head}
  - {type: cpc, x: t, context: fusion, weight: 0.1}
  - {type: gaussian_ba, x: t, y: a, weight: 0.1}
"""))
    model = composer.compile_blueprint(bp)
    summary = model.parameter_summary()
    assert summary["training_only"] == (8 * 4 + 4) + 2 * (4 * 4 + 4 + 4 * 4 + 4)
    shapes = {name: tuple(p.shape) for name, p in model.losses[1].named_parameters()}
    assert shapes == bp.losses[1].parameter_shapes({"x": vector(4), "context": vector(8)})


# -- checks ------------------------------------------------------------------------------------


def test_checks_name_the_field_and_expectation():
    with pytest.raises(SpecError, match="one width") as err:
        get_loss("cmd").config.model_validate({"type": "cmd", "a": "x", "b": "y"}).check({"a": vector(3), "b": vector(4)})
    assert err.value.field == "b"
    with pytest.raises(SpecError, match="at least 2"):
        get_loss("kl").config.model_validate({"type": "kl", "input": "x", "target": "y"}).check({"input": vector(1), "target": vector(1)})
    get_loss("orthogonality").config.model_validate({"type": "orthogonality", "a": "x", "b": "y"}).check({"a": vector(3), "b": vector(4)})


# -- weight_from ---------------------------------------------------------------------------------


def _blueprint(losses: str) -> str:
    return f"""
blueprint: 1
name: weighted
task: {{kind: regression, outputs: 1}}
modalities:
  text: {{kind: vector, features: 3}}
  audio: {{kind: vector, features: 5}}
blocks:
  t: {{type: linear, in: text, out: 4}}
  a: {{type: linear, in: audio, out: 4}}
  router: {{type: router, in: {{text: t, audio: a}}}}
  fusion: {{type: concat, in: [t, a]}}   # the router feeds only the losses' weights
  head: {{type: linear, in: fusion, out: 1}}
losses:{losses}"""


def test_weighted_mean_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0])
    w = torch.tensor([[1.0], [0.0], [3.0]])
    assert weighted_mean(losses, w).item() == pytest.approx(10 / 4)
    assert weighted_mean(losses, w, "batch").item() == pytest.approx(10 / 3)
    assert weighted_mean(losses, torch.zeros(3)).item() == 0.0


def test_weight_from_makes_the_task_loss_a_weighted_mean_through_the_model():
    bp = composer.load_blueprint(_blueprint("\n  - {type: mse, pred: head, weight_from: router.weight_text}"))
    torch.manual_seed(0)
    model = composer.compile_blueprint(bp)
    batch = model.example_inputs(batch_size=4)
    out = model(batch)
    total, parts = model.compute_loss({"main": out}, {"main": batch})
    w = out["values"]["router.weight_text"].reshape(-1)
    per_sample = (out["prediction"].reshape(-1) - batch["label"]) ** 2
    torch.testing.assert_close(total, (w * per_sample).sum() / w.sum())
    assert not torch.allclose(total, per_sample.mean())  # the negative control: unweighted differs
    total.backward()
    assert model.router.gate[0].weight.grad.abs().sum() > 0  # the weights learn through the loss
    detached = composer.load_blueprint(_blueprint("\n  - {type: mse, pred: head, weight_from: router.weight_text, detach_weight: true, weight_mean: batch}"))
    torch.manual_seed(0)
    model = composer.compile_blueprint(detached)
    out = model(batch)
    total, _ = model.compute_loss({"main": out}, {"main": batch})
    torch.testing.assert_close(total, (w.detach() * per_sample).mean())
    total.backward()
    assert model.router.gate[0].weight.grad is None  # no path left to the router


def test_unweighted_task_losses_are_unchanged():
    pred, target = _pair((5, 3), (5, 3), seed=5, grad=False)
    specs = {"pred": vector(3), "target": vector(3)}
    for name, reference in (("l1", F.l1_loss), ("mse", F.mse_loss), ("smooth_l1", F.smooth_l1_loss), ("bce", F.binary_cross_entropy_with_logits)):
        target_ = target.sigmoid() if name == "bce" else target
        torch.testing.assert_close(_loss(name, specs)({"pred": pred, "target": target_}, Context()), reference(pred, target_))
    classes = torch.tensor([0, 2, 1, 1, 0])
    ce = _loss("ce", {"pred": vector(3), "target": labels()}, label_smoothing=0.1)
    torch.testing.assert_close(ce({"pred": pred, "target": classes}, Context()), F.cross_entropy(pred, classes, label_smoothing=0.1))


def test_weight_from_must_be_one_weight_per_sample():
    with pytest.raises(composer.BlueprintError, match=r"weight_from 'router.weights' must hold one weight per sample.*vector\[B, 2\]"):
        composer.load_blueprint(_blueprint("\n  - {type: mse, pred: head, weight_from: router.weights}"))


def test_batch_level_losses_refuse_weight_from():
    with pytest.raises(ValidationError, match="computed over the whole batch"):
        get_loss("cmd").config.model_validate({"type": "cmd", "a": "t", "b": "a", "weight_from": "router.weight_text"})
    with pytest.raises(composer.BlueprintError, match="whole batch"):
        composer.load_blueprint(_blueprint("\n  - {type: l1, pred: head}\n  - {type: orthogonality, a: t, b: a, weight_from: router.weight_text}"))


def test_representation_losses_train_in_a_blueprint():
    bp = composer.load_blueprint(_blueprint("""
  - {type: l1, pred: head}
  - {type: cmd, a: t, b: a, weight: 0.5}
  - {type: orthogonality, a: t, b: a}
  - {type: info_nce, a: t, b: a, weight_from: router.weight_audio}
  - {type: cosine, a: t, b: a}
  - {type: js, input: t, target: a}"""))
    torch.manual_seed(0)
    model = composer.compile_blueprint(bp)
    batch = model.example_inputs(batch_size=4)
    total, parts = model.compute_loss({"main": model(batch)}, {"main": batch})
    assert set(parts) == {"l1_0", "cmd_1", "orthogonality_2", "info_nce_3", "cosine_4", "js_5"}
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.t.parameters())
